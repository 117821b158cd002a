from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from eventpipe.core.config import Settings, describe_error


def _error_line(**env: str) -> str:
    with pytest.raises(ValidationError) as caught:
        Settings.model_validate({key.lower(): value for key, value in env.items()})
    return describe_error(caught.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("HTTP_PORT", "70000"),
        ("HTTP_PORT", "eighty"),
        ("LOG_LEVEL", "LOUD"),
        ("REDIS_URL", "http://example"),
        ("DATABASE_URL", "not a url"),
        ("KAFKA_BOOTSTRAP", "localhost"),
        ("KAFKA_BOOTSTRAP", "a:1,b:99999"),
        ("PARTITIONS", "0"),
    ],
)
def test_wrong_value_names_the_variable(field: str, value: str) -> None:
    line = _error_line(**{field: value})
    assert line.startswith(f"invalid setting EVENTPIPE_{field}:")
    assert "\n" not in line


def test_good_values_are_parsed() -> None:
    settings = Settings(
        http_port=8080, log_level="debug", kafka_bootstrap=" a:1, [::1]:9092", partitions=3
    )
    assert settings.http_port == 8080
    assert settings.log_level == "DEBUG"
    assert settings.kafka_bootstrap == "a:1,[::1]:9092"


@pytest.mark.parametrize(
    ("variable", "value"),
    [("EVENTPIPE_HTTP_PORT", "0"), ("EVENTPIPE_LOG_LEVEL", "chatty")],
)
def test_cli_exits_2_with_one_line(variable: str, value: str) -> None:
    env = {**os.environ, variable: value}
    result = subprocess.run(
        [sys.executable, "-m", "eventpipe", "doctor"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"eventpipe: invalid setting {variable}:")
    assert "Traceback" not in result.stdout
