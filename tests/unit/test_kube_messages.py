"""API error messages are passed on to status and Events without the input values they quote."""

from sandbox_operator.kube import redact


def test_quoted_invalid_values_are_redacted() -> None:
    message = ('Pod "sbx-a" is invalid: spec.containers[0].env[0].value: Invalid value: "hunter2 \\"x\\"": too long, '
               'spec.restartPolicy: Unsupported value: "Sometimes": supported values: "Always"')
    redacted = redact(message)
    assert "hunter2" not in redacted and "Sometimes" not in redacted
    assert "spec.containers[0].env[0].value: Invalid value: (value redacted): too long" in redacted


def test_messages_without_values_are_unchanged() -> None:
    message = 'pods "sbx-a" is forbidden: exceeded quota: q, requested: cpu=500m, used: cpu=1, limited: cpu=1'
    assert redact(message) == message
