from __future__ import annotations

import pytest
from pydantic import ValidationError

from eventpipe.core.config import Settings, describe_error


def test_max_poll_interval_defaults_to_librdkafkas() -> None:
    assert Settings.model_fields["processor_max_poll_interval_ms"].default == 300_000


def test_max_poll_interval_below_the_session_timeout_is_refused() -> None:
    # librdkafka would refuse the consumer's configuration at start; say so at once instead.
    with pytest.raises(ValidationError) as caught:
        Settings(processor_session_timeout_ms=20_000, processor_max_poll_interval_ms=15_000)
    line = describe_error(caught.value)
    assert "EVENTPIPE_PROCESSOR_MAX_POLL_INTERVAL_MS" in line
    assert "EVENTPIPE_PROCESSOR_SESSION_TIMEOUT_MS" in line


def test_max_poll_interval_has_a_floor() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(processor_max_poll_interval_ms=5_000)
    assert describe_error(caught.value).startswith(
        "invalid setting EVENTPIPE_PROCESSOR_MAX_POLL_INTERVAL_MS:"
    )


def test_trusted_proxies_are_a_comma_separated_list_of_networks() -> None:
    settings = Settings.model_validate({"trusted_proxies": "10.0.0.0/8, 127.0.0.1,::1"})
    assert [str(n) for n in settings.trusted_proxies] == ["10.0.0.0/8", "127.0.0.1/32", "::1/128"]
    assert Settings().trusted_proxies == []  # nobody's X-Forwarded-For is believed by default
    with pytest.raises(ValidationError) as caught:
        Settings.model_validate({"trusted_proxies": "10.0.0.0/8,proxy.example"})
    assert describe_error(caught.value).startswith("invalid setting EVENTPIPE_TRUSTED_PROXIES:")
