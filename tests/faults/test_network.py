"""Network faults between each role and each server it uses, injected by Toxiproxy on loopback:
latency, a stalled connection (bytes accepted, never answered), a reset mid-request, and the
proxy down (connection refused).

Every scenario checks that nothing hangs (each api request answers within its bound, every role
is still running after) and that each role notices the fault and recovers once it is lifted;
those that carry events end with the checker (nothing acknowledged lost or doubled). The checker
line of each scenario carries how long each role took to notice and to recover, in seconds.

The default run has one scenario per server; the whole matrix runs with `-m nightly`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, replace

import pytest

from eventpipe.core.config import Settings
from eventpipe.local.kafka import start_kafka
from eventpipe.local.process import free_port
from eventpipe.local.stack import StackUrls
from tests.faults.checker import check
from tests.faults.load import Answer, Load
from tests.faults.network_support import Roles, faulted_roles, host_port, run_ping, through
from tests.faults.toxiproxy import Proxy, running_toxiproxy
from tests.faults.watch import JobOutcomes, Watch, answers_ok, live_count, median_request_s
from tests.integration.support import healthy, wait_for

# Every api request answers within this, faults or not: the slowest legitimate path is a Redis
# call that times out (5 s) before ingest fails open, well under the load's 15 s.
REQUEST_BOUND_S = 10.0
NOTICE_TIMEOUT_S = 45.0
RECOVER_TIMEOUT_S = 90.0
# Requests the api answers while a fault holds, so that the fault spans real traffic.
ANSWERS_DURING_FAULT = 30
# ... or, should requests hang, this long: past the bound, so that a hang shows.
HOLD_MAX_S = REQUEST_BOUND_S + 5
LATENCY_MS = 250

FAULTS: dict[str, Callable[[Proxy], None]] = {
    "latency": lambda proxy: proxy.latency(LATENCY_MS),
    "stall": lambda proxy: proxy.stall(),
    "reset": lambda proxy: proxy.reset_peer(),
    "down": lambda proxy: proxy.disable(),
}
# Who talks to each server. Kafka tells its clients where to connect, one address for all: the
# api and the processor share its proxy. Every other (role, server) pair has a proxy of its own.
USERS = {
    "kafka": ("api", "processor"),
    "redis": ("api", "processor", "worker"),
    "postgres": ("api", "processor", "worker"),
}
# The probes that must turn when a role's path to a server is faulted (a latency under every
# timeout: none). The processor's readiness tells of its sinks only, not of Kafka; the worker's
# of PostgreSQL, and its alert evaluations (each second) of Redis.
SIGNALS = {
    ("api", "kafka"): ["api"], ("api", "redis"): ["api"], ("api", "postgres"): ["api"],
    ("processor", "kafka"): [], ("processor", "redis"): ["processor"],
    ("processor", "postgres"): ["processor"],
    ("worker", "redis"): ["worker.alerts"], ("worker", "postgres"): ["worker"],
}  # fmt: skip
Case = tuple[tuple[str, ...], str, str]  # the roles cut off, the server, the fault
DEFAULT: list[Case] = [
    (USERS["redis"], "redis", "stall"),
    (USERS["postgres"], "postgres", "reset"),
    (USERS["kafka"], "kafka", "stall"),
]
NIGHTLY: list[Case] = [
    *[((role,), server, fault) for server in ("redis", "postgres") for role in USERS[server]
      for fault in FAULTS],
    *[(USERS["kafka"], "kafka", fault) for fault in FAULTS if fault != "stall"],
]  # fmt: skip


def _case_id(case: Case) -> str:
    return f"{'+'.join(case[0])}-{case[1]}-{case[2]}"


@dataclass(frozen=True)
class Target:
    """A server, the roles whose path to it is faulted, and those paths' proxies."""

    server: str
    cut_off: tuple[str, ...]
    proxies: list[Proxy]
    roles: Roles

    @property
    def name(self) -> str:
        return f"{'+'.join(self.cut_off)} {self.server}"


@dataclass(frozen=True)
class Faulted:
    """One set of roles, each reaching each server through a proxy of its own (Kafka: one for
    both of its users): scenarios differ by the proxies they fault and the project they send
    as, not by processes."""

    roles: Roles
    proxies: dict[tuple[str, str], Proxy]  # (role, server) -> proxy

    def target(self, cut_off: tuple[str, ...], server: str) -> Target:
        proxies = {id(p): p for p in (self.proxies[(role, server)] for role in cut_off)}
        return Target(server, cut_off, list(proxies.values()), self.roles)


@pytest.fixture(scope="module")
def faulted(stack_urls: StackUrls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faulted]:
    base = tmp_path_factory.mktemp("network")
    with ExitStack() as exits:
        toxiproxy = exits.enter_context(running_toxiproxy(base / "toxiproxy.log"))
        # A broker of this module's own advertises its proxy's port: no client goes around it.
        port = free_port()
        kafka = toxiproxy.proxy("kafka", f"127.0.0.1:{port}")
        bootstrap, broker = start_kafka(
            base / "kafka-state", Settings().cache_dir, port=port, advertised_port=kafka.port
        )
        exits.callback(broker.stop, 20)
        direct = replace(stack_urls, kafka_bootstrap=bootstrap)
        proxies = {(role, "kafka"): kafka for role in USERS["kafka"]}
        reach = {}
        for role in USERS["redis"]:
            for server, field in (("redis", "redis_url"), ("postgres", "database_url")):
                url = getattr(direct, field)
                proxies[(role, server)] = toxiproxy.proxy(f"{role}-{server}", host_port(url))
            reach[role] = replace(
                direct,
                redis_url=through(direct.redis_url, proxies[(role, "redis")].address),
                database_url=through(direct.database_url, proxies[(role, "postgres")].address),
            )
        roles = exits.enter_context(faulted_roles(direct, reach, base))
        yield Faulted(roles, proxies)


def _probes(roles: Roles) -> dict[str, Callable[[], bool]]:
    return {
        "api": lambda: answers_ok(f"{roles.api_url}/readyz"),
        "processor": lambda: answers_ok(f"http://127.0.0.1:{roles.processor_port}/readyz"),
        "worker": lambda: answers_ok(f"http://127.0.0.1:{roles.worker.port}/readyz"),
        "worker.alerts": JobOutcomes(roles.worker, "evaluate_alerts"),
    }


def scenario(target: Target, fault: str) -> None:
    """Load through the api while `fault` holds between the cut-off roles and the server."""
    roles = target.roles
    project, key = roles.new_project(f"{target.name} {fault}")
    load = Load(roles.api_url, key, rate=200, batch=10, connections=8).start()
    watch = Watch(_probes(roles), live_count(roles.stored, project))
    try:
        with watch:
            timings = _inject_and_lift(target, load, watch, fault)
    finally:
        for proxy in target.proxies:
            proxy.clear()  # a failed scenario must not leave its fault to the next one
        result = load.stop()
    timings["longest_request"] = result.longest_request_s()
    name = f"network {target.name} {fault}"
    tally = check(name, result, roles.stored, project, timings=timings)
    tally.assert_exact()
    assert result.longest_request_s() < REQUEST_BOUND_S, tally.line()
    # A network fault is absorbed or answered 503 (retry later), never as an internal error.
    assert not {"500", "RemoteProtocolError", "ReadError"} & set(result.refused), tally.line()
    assert watch.longest_probe_s() < REQUEST_BOUND_S, f"a probe hung: {watch.summary()}"
    assert roles.alive() == ["api", "processor", "worker"], roles.logs()
    assert healthy(roles.api_url), roles.logs()


def _inject_and_lift(target: Target, load: Load, watch: Watch, fault: str) -> dict[str, float]:
    roles = target.roles

    def state() -> str:
        return f"{watch.summary()}\nrefused so far: {dict(load.result.refused)}\n{roles.logs()}"

    wait_for(
        lambda: load.acknowledged_count() >= 100 and all(watch.ok_now(p, 0) for p in watch.probes),
        60, "load acknowledged and every role ready (an earlier scenario may have broken one)",
        state,
    )  # fmt: skip
    started = time.monotonic()
    wait_for(lambda: len(load.answers_since(started)) >= ANSWERS_DURING_FAULT, 30, "a baseline")
    fault_at = time.monotonic()
    for proxy in target.proxies:
        FAULTS[fault](proxy)
    expected = [] if fault == "latency" else _signals(target)
    wait_for(
        lambda: all(_noticed_at(p, watch, load, fault_at) for p in expected),
        NOTICE_TIMEOUT_S, f"{', '.join(expected) or 'nobody'} to notice the fault", state,
    )  # fmt: skip
    # Traffic under the fault; a request that hangs shows up as the longest request, checked last.
    wait_for(
        lambda: len(load.answers_since(fault_at)) >= ANSWERS_DURING_FAULT
        or time.monotonic() - fault_at > HOLD_MAX_S,
        HOLD_MAX_S + 5, "requests answered under the fault",
    )  # fmt: skip
    acknowledged = load.acknowledged_count()
    clear_at = time.monotonic()
    for proxy in target.proxies:
        proxy.clear()
    wait_for(
        lambda: all(watch.ok_now(p, clear_at) for p in watch.probes)
        and any(a.status == 200 for a in load.answers_since(clear_at))
        and watch.counted_at(acknowledged, clear_at) is not None,
        RECOVER_TIMEOUT_S, "every role recovered and the count caught up", state,
    )  # fmt: skip
    timings = _notices_and_recoveries(watch, load, fault_at, clear_at, expected)
    timings["processor.caught_up"] = (watch.counted_at(acknowledged, clear_at) or 0) - clear_at
    # The worker's readiness asks PostgreSQL on a connection of its own: a job it runs tells
    # that its queue loop recovered too.
    timings["worker.ping"] = run_ping(roles.stored.database_url, RECOVER_TIMEOUT_S) - clear_at
    if fault == "latency":
        timings["api.median_before"] = median_request_s(load, started, fault_at)
        timings["api.median_during"] = median_request_s(load, fault_at, clear_at)
    return timings


def _signals(target: Target) -> list[str]:
    return [probe for role in target.cut_off for probe in SIGNALS[(role, target.server)]]


def _noticed_at(probe: str, watch: Watch, load: Load, since: float) -> float | None:
    """When a role first told of the fault: by its probe, and the api by a refused request."""
    at = watch.first_failure(probe, since)
    if probe == "api":
        refused = [a.at + a.took_s for a in load.answers_since(since) if a.status != 200]
        at = min([t for t in [at, *refused] if t is not None], default=None)
    return at


def _notices_and_recoveries(
    watch: Watch, load: Load, fault_at: float, clear_at: float, expected: list[str]
) -> dict[str, float]:
    """Seconds from the fault to each probe's first failure, and from the fault's removal to its
    recovery, for the probes that failed (those in `expected` must have)."""
    timings = {}
    for probe in watch.probes:
        at = _noticed_at(probe, watch, load, fault_at)
        assert at is not None or probe not in expected, f"{probe} never noticed"
        if at is None:
            continue
        timings[f"{probe}.notice"] = at - fault_at
        recovered = watch.recovered_at(probe, clear_at)
        if probe == "api":  # its readiness, and requests answered 200 again
            recovered = max(recovered, _ingest_recovered_at(load.answers_since(0), clear_at))
        timings[f"{probe}.recover"] = recovered - clear_at
    return timings


def _ingest_recovered_at(answers: list[Answer], since: float) -> float:
    """When requests were answered 200 again, for good, after `since`."""
    ends = sorted((a.at + a.took_s, a.status == 200) for a in answers if a.at + a.took_s >= since)
    last_bad = max((i for i, (_, ok) in enumerate(ends) if not ok), default=-1)
    assert last_bad + 1 < len(ends), "no request was answered 200 after the fault"
    return max(ends[last_bad + 1][0], since)


@pytest.mark.parametrize("case", DEFAULT, ids=_case_id)
def test_network_fault(case: Case, faulted: Faulted) -> None:
    cut_off, server, fault = case
    scenario(faulted.target(cut_off, server), fault)


@pytest.mark.nightly
@pytest.mark.parametrize("case", NIGHTLY, ids=_case_id)
def test_network_fault_matrix(case: Case, faulted: Faulted) -> None:
    cut_off, server, fault = case
    scenario(faulted.target(cut_off, server), fault)
