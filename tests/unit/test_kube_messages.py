"""API error messages are passed on to status and Events without the input values they quote."""

import json

import pytest

from sandbox_operator.k8s.redaction import redact


def test_quoted_invalid_values_are_redacted() -> None:
    message = ('Pod "sbx-a" is invalid: spec.containers[0].env[0].value: Invalid value: "hunter2 \\"x\\"": too long, '
               'spec.restartPolicy: Unsupported value: "Sometimes": supported values: "Always"')
    redacted = redact(message)
    assert "hunter2" not in redacted and "Sometimes" not in redacted
    assert "spec.containers[0].env[0].value: Invalid value: (value redacted): too long" in redacted


def test_messages_without_values_are_unchanged() -> None:
    message = 'pods "sbx-a" is forbidden: exceeded quota: q, requested: cpu=500m, used: cpu=1, limited: cpu=1'
    assert redact(message) == message


SECRET = "s3cr3t-Ünïcode \"quoted\" value that is long enough to be cut short by a server"


@pytest.mark.parametrize(
    "message",
    [
        f"admission webhook denied: env API_KEY={SECRET} is not allowed",
        f"ValidatingAdmissionPolicy 'p' denied request: value {SECRET!r} looks like a key",
        'denied: {"env": "' + SECRET.replace('"', '\\"') + '"}',
        "denied: " + json.dumps(SECRET)[1:-1],  # Go's strconv.QuoteToASCII spells it the same way
        f"denied: value starts with {SECRET[:30]}... (truncated)",
    ],
)
def test_an_env_value_never_survives_in_any_form_a_message_may_carry_it(message: str) -> None:
    redacted = redact(message, [SECRET])
    assert "s3cr3t" not in redacted
    assert "(value redacted)" in redacted


def test_values_too_short_to_be_secret_leave_quota_messages_readable() -> None:
    message = 'pods "sbx-a" is forbidden: exceeded quota: q, requested: pods=1, used: pods=1, limited: pods=1'
    assert redact(message, ["1", "on"]) == message
