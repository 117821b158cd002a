from __future__ import annotations

import pytest
from pydantic import ValidationError

from eventpipe.core.config import Settings, describe_error
from eventpipe.core.kafka import security_config


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


def test_a_sasl_protocol_without_a_username_names_the_missing_variable() -> None:
    with pytest.raises(ValidationError) as caught:
        Settings.model_validate(
            {
                "kafka_security_protocol": "SASL_SSL",
                "kafka_sasl_mechanism": "PLAIN",
                "kafka_sasl_password": "hunter2-secret",
            }
        )
    line = describe_error(caught.value)
    assert "EVENTPIPE_KAFKA_SASL_USERNAME" in line
    assert "EVENTPIPE_KAFKA_SECURITY_PROTOCOL=SASL_SSL" in line
    assert "EVENTPIPE_KAFKA_SASL_PASSWORD" not in line  # given: not reported missing
    assert "hunter2-secret" not in line


def test_sasl_credentials_without_a_sasl_protocol_are_refused() -> None:
    # Set but silently unused, they would hide a security protocol left at PLAINTEXT.
    with pytest.raises(ValidationError) as caught:
        Settings.model_validate({"kafka_sasl_mechanism": "SCRAM-SHA-512"})
    line = describe_error(caught.value)
    assert "EVENTPIPE_KAFKA_SASL_MECHANISM" in line
    assert "EVENTPIPE_KAFKA_SECURITY_PROTOCOL" in line
    # Blank variables, as a chart leaves them, are not set.
    blank = Settings.model_validate({"kafka_sasl_username": "", "kafka_ssl_ca_location": ""})
    assert blank.kafka_sasl_username is None and blank.kafka_ssl_ca_location is None


def test_the_sasl_password_stays_out_of_repr_and_reaches_librdkafka_only() -> None:
    settings = Settings.model_validate(
        {
            "kafka_security_protocol": "SASL_SSL",
            "kafka_sasl_mechanism": "SCRAM-SHA-256",
            "kafka_sasl_username": "app",
            "kafka_sasl_password": "hunter2-secret",
            "kafka_ssl_ca_location": "/etc/kafka/ca.pem",
        }
    )
    assert "hunter2-secret" not in repr(settings)
    assert "hunter2-secret" not in str(settings)
    assert security_config(settings) == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": "app",
        "sasl.password": "hunter2-secret",
        "ssl.ca.location": "/etc/kafka/ca.pem",
    }


def test_security_config_defaults_to_plaintext_and_carries_client_certificates() -> None:
    assert security_config(Settings()) == {"security.protocol": "PLAINTEXT"}
    mutual_tls = Settings.model_validate(
        {
            "kafka_security_protocol": "SSL",
            "kafka_ssl_ca_location": "/certs/ca.pem",
            "kafka_ssl_certificate_location": "/certs/service.cert",
            "kafka_ssl_key_location": "/certs/service.key",
        }
    )
    assert security_config(mutual_tls) == {
        "security.protocol": "SSL",
        "ssl.ca.location": "/certs/ca.pem",
        "ssl.certificate.location": "/certs/service.cert",
        "ssl.key.location": "/certs/service.key",
    }
