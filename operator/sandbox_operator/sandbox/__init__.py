"""The Sandbox kind: expiry, rendering and the decision (pure), and the Kopf handlers that apply it."""
