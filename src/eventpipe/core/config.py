"""Settings: the only way configuration reaches eventpipe (environment, prefix EVENTPIPE_)."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AnyHttpUrl,
    Field,
    IPvAnyNetwork,
    PostgresDsn,
    RedisDsn,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "EVENTPIPE_"
_BOOTSTRAP_ENTRY = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.\-_]+):(\d{1,5})$")

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
KafkaSaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
Port = Annotated[int, Field(ge=1, le=65535)]


def _default_state_dir() -> Path:
    return Path.home() / ".local" / "state" / "eventpipe"


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "eventpipe"


class Settings(BaseSettings):
    """Every setting of every role; an unset server URL means `eventpipe up` starts one."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    environment: Literal["development", "production"] = "development"
    log_level: LogLevel = "INFO"
    state_dir: Path = Field(default_factory=_default_state_dir)
    # Downloads kept between runs (Kafka's jars): outside the repo and the state directory.
    cache_dir: Path = Field(default_factory=_default_cache_dir)

    kafka_bootstrap: str | None = None
    # How every Kafka client of every role connects (librdkafka's security.protocol): managed
    # services want SASL_SSL (Confluent Cloud: PLAIN; MSK: SCRAM) or SSL with client certificates.
    kafka_security_protocol: KafkaSecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: KafkaSaslMechanism | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    # PEM files. Without a CA, SSL trusts the system's CAs (enough for public cloud services);
    # a certificate and key authenticate this client (mutual TLS, as Aiven and Heroku do).
    kafka_ssl_ca_location: Path | None = None
    kafka_ssl_certificate_location: Path | None = None
    kafka_ssl_key_location: Path | None = None
    redis_url: RedisDsn | None = None
    database_url: PostgresDsn | None = None

    http_host: str = "127.0.0.1"
    http_port: Port = 8000
    # Slow clients (docs/configuration.md#slow-clients): a connection is cut when its request's
    # head is not complete this long after the connection opened (or after the request's first
    # byte, on a kept-alive connection), or its body this long after the head: total deadlines,
    # not idle timeouts, so a byte now and then does not keep a connection open.
    http_header_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    http_body_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    # Proxies (addresses or networks, comma-separated) whose X-Forwarded-For and
    # X-Forwarded-Proto are believed; from anyone else those headers are ignored.
    trusted_proxies: Annotated[list[IPvAnyNetwork], NoDecode] = []
    # The URL browsers reach the api at, for the SDK settings it serves (apiHost, dataPlaneUrl);
    # unset: the URL each request came in on.
    public_url: AnyHttpUrl | None = None
    partitions: Annotated[int, Field(ge=1, le=1000)] = 12

    events_topic: str = "eventpipe.events"
    dlq_topic: str = "eventpipe.events.dlq"
    processor_group: str = "eventpipe-processors"
    # How long a readiness probe waits for each dependency before calling it down.
    probe_timeout_s: Annotated[float, Field(gt=0, le=30)] = 2.0

    # Auth: access tokens are EdDSA (Ed25519) JWTs; keys live outside the repo (files or env).
    jwt_issuer: str = "eventpipe"
    jwt_audience: str = "eventpipe-api"
    # PEM files named <kid>.pem (private: can sign) or <kid>.pub.pem (retired: verify only).
    jwt_keys_dir: Path | None = None
    # One private key given inline, as a Kubernetes secret exposed as a variable would be.
    jwt_private_key: SecretStr | None = None
    jwt_active_kid: str | None = None
    access_token_ttl_s: Annotated[int, Field(ge=30, le=86_400)] = 900
    refresh_token_ttl_s: Annotated[int, Field(ge=300, le=90 * 86_400)] = 30 * 86_400
    allow_signup: bool = False
    # First run: lets a browser that is not on this machine create the first account in the
    # dashboard (`eventpipe up` generates one and prints it); refused once any account exists.
    setup_code: SecretStr | None = None
    # Argon2id cost; changing it makes the next successful login rehash the password.
    password_time_cost: Annotated[int, Field(ge=1, le=20)] = 3
    password_memory_kib: Annotated[int, Field(ge=8 * 1024, le=1024 * 1024)] = 64 * 1024
    login_failures_per_account: Annotated[int, Field(ge=1, le=1000)] = 5
    login_failures_per_address: Annotated[int, Field(ge=1, le=100_000)] = 50
    login_failure_window_s: Annotated[int, Field(ge=1, le=86_400)] = 900

    # Ingest: the api answers 503 when Kafka has not acknowledged a request's events in this time.
    ingest_ack_timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    # How long the producer waits to fill a batch per partition (librdkafka's linger.ms): longer
    # is fewer, larger produce requests, less CPU in the api and the broker, and that much more
    # latency per request. 20 ms, as PostHog's capture: against 5 ms, the broker's CPU per event
    # is 2-2.5x lower and p99 at half the maximum rate stays under 50 ms (docs/performance.md).
    ingest_linger_ms: Annotated[float, Field(ge=0, le=1000)] = 20.0
    # Events per second per write key (0: no limit); over it, 429 with Retry-After.
    ingest_rate_limit_per_s: Annotated[int, Field(ge=0)] = 50_000
    # How long an api process trusts its cached answer for a write key (revocation delay).
    write_key_cache_s: Annotated[float, Field(ge=0, le=300)] = 10.0
    # While PostgreSQL cannot be reached, ingest keeps accepting a key found valid this recently.
    write_key_stale_s: Annotated[float, Field(ge=0, le=86_400)] = 3_600.0

    # Live stream: a client whose socket takes no data for this long is dropped; sign-out and
    # token expiry end a stream within `live_auth_check_s`.
    live_send_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    live_auth_check_s: Annotated[float, Field(gt=0, le=60)] = 2.0

    # Processor: batches pulled at its own pace; a message id seen within the window is dropped.
    processor_batch_size: Annotated[int, Field(ge=1, le=100_000)] = 5_000
    processor_batch_wait_s: Annotated[float, Field(gt=0, le=10)] = 0.1
    dedupe_window_s: Annotated[int, Field(ge=60, le=30 * 86_400)] = 86_400
    archive_retention_days: Annotated[int, Field(ge=1, le=3650)] = 90
    archive_days_ahead: Annotated[int, Field(ge=1, le=60)] = 7
    # PostgreSQL connections a processor writes the archive through, one batch each at a time:
    # with two, one batch's INSERT runs while the next one's COPY streams in.
    archive_connections: Annotated[int, Field(ge=1, le=8)] = 2
    # How long the group waits for a silent processor (a crash, an OOM kill) before its
    # partitions move on: librdkafka's default, 45 s, stalls them that long. Broker minimum 6 s.
    processor_session_timeout_ms: Annotated[int, Field(ge=6_000, le=300_000)] = 10_000
    # How long a processor may go without polling Kafka before the group gives its partitions
    # away (max.poll.interval.ms, librdkafka's default). While a sink is down it keeps polling its
    # paused partitions, so an outage does not count; a Redis call that hangs (10 s timeout) does.
    processor_max_poll_interval_ms: Annotated[int, Field(ge=10_000, le=86_400_000)] = 300_000
    # Prometheus metrics, /healthz and /readyz of the processor (0: none).
    processor_metrics_port: Annotated[int, Field(ge=0, le=65535)] = 9464
    # /healthz, /readyz (and metrics) of the worker (0: none).
    worker_metrics_port: Annotated[int, Field(ge=0, le=65535)] = 9465
    # Jobs (docs/jobs.md): a worker runs this many at once; on SIGTERM it lets them run this
    # long, then hands the rest back to the queue (below the pod's 60 s grace period).
    worker_concurrency: Annotated[int, Field(ge=1, le=64)] = 4
    worker_shutdown_grace_s: Annotated[float, Field(ge=0, le=3600)] = 45.0
    # A SIGKILLed worker's jobs run again once its heartbeat is this old, found by a sweep that
    # runs this often: the bound is stale + sweep + a poll, 30 + 15 + 5 s by default.
    worker_heartbeat_s: Annotated[float, Field(gt=0, le=60)] = 10.0
    worker_stale_after_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    worker_sweep_every_s: Annotated[int, Field(ge=1, le=60)] = 15
    worker_poll_s: Annotated[float, Field(gt=0, le=60)] = 5.0

    # Exports: files in this directory (shared by the api and the workers), or in an S3 bucket.
    export_dir: Path | None = None
    export_s3_bucket: str | None = None
    export_s3_endpoint_url: AnyHttpUrl | None = None
    export_s3_region: str | None = None
    export_s3_access_key_id: str | None = None
    export_s3_secret_access_key: SecretStr | None = None
    export_s3_prefix: str = "exports/"
    export_batch_rows: Annotated[int, Field(ge=100, le=100_000)] = 5_000
    # How long a download link works, and how long a finished file is kept.
    export_link_ttl_s: Annotated[int, Field(ge=60, le=7 * 86_400)] = 3_600
    export_retention_days: Annotated[int, Field(ge=1, le=365)] = 7

    # Alerts: rules are evaluated this often (a divisor of 60, in seconds); a webhook waits this
    # long for an answer and is retried on this schedule (seconds, jittered by ±20 %).
    alert_evaluate_every_s: Annotated[int, Field(ge=1, le=60)] = 60
    webhook_timeout_s: Annotated[float, Field(gt=0, le=60)] = 10.0
    webhook_retry_schedule_s: Annotated[list[float], NoDecode] = [5, 300, 1800, 7200, 18000, 36000]
    # An endpoint is disabled after this many failed attempts in a row (at once on 410 Gone).
    webhook_failures_to_disable: Annotated[int, Field(ge=1, le=1000)] = 15
    # Webhooks to private, loopback and link-local addresses: refused unless this is set.
    webhook_allow_private: bool = False

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: object) -> object:
        if isinstance(value, str):
            return [entry.strip() for entry in value.split(",") if entry.strip()]
        return value

    @field_validator(
        "kafka_sasl_mechanism",
        "kafka_sasl_username",
        "kafka_sasl_password",
        "kafka_ssl_ca_location",
        "kafka_ssl_certificate_location",
        "kafka_ssl_key_location",
        mode="before",
    )
    @classmethod
    def _empty_kafka_security_is_unset(cls, value: object) -> object:
        # An empty variable (a chart's value left blank) means not set, not "" or the path ".".
        return None if value == "" else value

    @field_validator("webhook_retry_schedule_s", mode="before")
    @classmethod
    def _split_schedule(cls, value: object) -> object:
        if isinstance(value, str):
            return [entry.strip() for entry in value.split(",") if entry.strip()]
        return value

    @field_validator("webhook_retry_schedule_s")
    @classmethod
    def _check_schedule(cls, value: list[float]) -> list[float]:
        if len(value) > 50 or any(not 0 <= delay <= 7 * 86_400 for delay in value):
            raise ValueError("expected at most 50 delays, each from 0 to 604800 seconds")
        return value

    @field_validator("alert_evaluate_every_s")
    @classmethod
    def _divides_a_minute(cls, value: int) -> int:
        # The period is a cron seconds field (*/N): only divisors of 60 keep it regular.
        if 60 % value:
            raise ValueError("expected a divisor of 60 (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60)")
        return value

    @property
    def export_path(self) -> Path:
        return self.export_dir or self.state_dir / "exports"

    @field_validator("kafka_bootstrap")
    @classmethod
    def _check_bootstrap(cls, value: str | None) -> str | None:
        if value is None:
            return None
        entries = [entry.strip() for entry in value.split(",")]
        for entry in entries:
            match = _BOOTSTRAP_ENTRY.match(entry)
            if match is None or not 1 <= int(match.group(2)) <= 65535:
                raise ValueError(f"expected host:port[,host:port...], got {entry!r}")
        return ",".join(entries)

    @model_validator(mode="after")
    def _poll_interval_covers_session(self) -> Settings:
        # librdkafka refuses the consumer's configuration otherwise.
        if self.processor_max_poll_interval_ms < self.processor_session_timeout_ms:
            raise ValueError(
                "EVENTPIPE_PROCESSOR_MAX_POLL_INTERVAL_MS must be at least "
                "EVENTPIPE_PROCESSOR_SESSION_TIMEOUT_MS"
            )
        return self

    @model_validator(mode="after")
    def _kafka_sasl_complete(self) -> Settings:
        # librdkafka would only fail at the first connection, as an authentication error logged
        # again and again; a half-configured SASL is a mistake best named at start.
        sasl = self.kafka_security_protocol.startswith("SASL_")
        given = {
            "EVENTPIPE_KAFKA_SASL_MECHANISM": self.kafka_sasl_mechanism is not None,
            "EVENTPIPE_KAFKA_SASL_USERNAME": self.kafka_sasl_username is not None,
            "EVENTPIPE_KAFKA_SASL_PASSWORD": self.kafka_sasl_password is not None,
        }
        if sasl:
            missing = [name for name, is_set in given.items() if not is_set]
            if missing:
                raise ValueError(
                    f"EVENTPIPE_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} "
                    f"also needs {', '.join(missing)}"
                )
        else:
            extra = [name for name, is_set in given.items() if is_set]
            if extra:
                # Set but silently unused, they would hide a protocol left at its default.
                raise ValueError(
                    f"{', '.join(extra)} set, but EVENTPIPE_KAFKA_SECURITY_PROTOCOL is "
                    f"{self.kafka_security_protocol}: use SASL_SSL or SASL_PLAINTEXT"
                )
        return self

    @model_validator(mode="after")
    def _keys_in_production(self) -> Settings:
        # Development may generate a key in the state directory; production must bring its own.
        if self.environment == "production" and not (self.jwt_keys_dir or self.jwt_private_key):
            raise ValueError(
                "EVENTPIPE_JWT_KEYS_DIR or EVENTPIPE_JWT_PRIVATE_KEY is required in production"
            )
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once; tests call `get_settings.cache_clear()`."""
    return Settings()


def describe_error(error: ValidationError) -> str:
    """One line naming the first wrong variable, for humans: no traceback, no secret values."""
    first = error.errors()[0]
    message = first["msg"].removeprefix("Value error, ")
    if not first["loc"]:
        # A model-level rule: its message names the variables itself.
        return f"invalid settings: {message}"
    variable = ENV_PREFIX + str(first["loc"][0]).upper()
    return f"invalid setting {variable}: {message}"
