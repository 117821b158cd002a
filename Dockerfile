# syntax=docker/dockerfile:1
#
# eventpipe: one image for every role, chosen by the command:
#   api (the default), processor, worker, migrate (one-shot: schema and topics).
#
# Both stages start from the same official base, pinned by tag. To pin its content as well,
# append the digest to both FROM lines, e.g.
#   FROM python:3.11-slim-bookworm@sha256:<digest> AS builder
# (`docker buildx imagetools inspect python:3.11-slim-bookworm` prints it); the tests build on a
# stand-in base committed under this exact name, so keep the name itself as it is.

# --- builder: uv, the locked dependencies, then the project, into /app/.venv -------------------
FROM python:3.11-slim-bookworm AS builder

# uv from PyPI, pinned, in a venv of its own that never leaves this stage.
RUN python -m venv /opt/uv \
    && /opt/uv/bin/pip install --no-cache-dir uv==0.13.9

ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv

WORKDIR /app

# The locked dependencies alone, in a layer of their own: rebuilt only when uv.lock or
# pyproject.toml change. The cache mount keeps downloaded wheels between builds without
# putting them in any layer.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=/app/uv.lock \
    --mount=type=bind,source=pyproject.toml,target=/app/pyproject.toml \
    /opt/uv/bin/uv sync --locked --no-install-project --no-dev

# Then the project itself, installed as a wheel (not editable): the final stage needs no source.
COPY pyproject.toml uv.lock README.md ./
COPY src ./src
RUN --mount=type=cache,target=/root/.cache/uv \
    /opt/uv/bin/uv sync --locked --no-dev --no-editable

# --- final: the base, a non-root user and the venv; no uv, no compiler, no cache ----------------
FROM python:3.11-slim-bookworm

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown

LABEL org.opencontainers.image.title="eventpipe" \
      org.opencontainers.image.description="Self-hosted real-time event pipeline: Segment-compatible ingest into Kafka, live analytics in Redis, archive in PostgreSQL." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim-bookworm"

# uid and gid 1001; the state directory and the export files are the only places it may write
# (a volume mounted on /var/lib/eventpipe-exports takes the directory's owner when it is new).
RUN groupadd --system --gid 1001 eventpipe \
    && useradd --system --no-log-init --uid 1001 --gid 1001 \
        --home-dir /var/lib/eventpipe --shell /usr/sbin/nologin eventpipe \
    && install -d -o 1001 -g 1001 -m 0750 /var/lib/eventpipe /var/lib/eventpipe-exports

# Owned by root: the app user can run the code but not change it.
COPY --from=builder /app/.venv /app/.venv

ENV PATH="/app/.venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    EVENTPIPE_HTTP_HOST=0.0.0.0 \
    EVENTPIPE_HTTP_PORT=8000 \
    EVENTPIPE_STATE_DIR=/var/lib/eventpipe \
    EVENTPIPE_CACHE_DIR=/var/lib/eventpipe/cache \
    EVENTPIPE_EXPORT_DIR=/var/lib/eventpipe-exports

USER 1001:1001
WORKDIR /var/lib/eventpipe

# 8000: the api; 9464 and 9465: /healthz, /readyz and /metrics of the processor and the worker.
EXPOSE 8000 9464 9465

# The api's liveness (curl is not in the image). It fits the api role only: compose and the
# Helm chart give the processor and the worker checks of their own.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('EVENTPIPE_HTTP_PORT', '8000') + '/healthz', timeout=4)"]

ENTRYPOINT ["eventpipe"]
CMD ["api"]
