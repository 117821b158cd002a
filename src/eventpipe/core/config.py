"""Settings: the only way configuration reaches eventpipe (environment, prefix EVENTPIPE_)."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, PostgresDsn, RedisDsn, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "EVENTPIPE_"
_BOOTSTRAP_ENTRY = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.\-_]+):(\d{1,5})$")

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
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
    redis_url: RedisDsn | None = None
    database_url: PostgresDsn | None = None

    http_host: str = "127.0.0.1"
    http_port: Port = 8000
    partitions: Annotated[int, Field(ge=1, le=1000)] = 12

    events_topic: str = "eventpipe.events"
    dlq_topic: str = "eventpipe.events.dlq"
    processor_group: str = "eventpipe-processors"
    # How long a readiness probe waits for each dependency before calling it down.
    probe_timeout_s: Annotated[float, Field(gt=0, le=30)] = 2.0

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

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


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once; tests call `get_settings.cache_clear()`."""
    return Settings()


def describe_error(error: ValidationError) -> str:
    """One line naming the first wrong variable, for humans: no traceback, no secret values."""
    first = error.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else "?"
    variable = ENV_PREFIX + field.upper()
    return f"invalid setting {variable}: {first['msg']}"
