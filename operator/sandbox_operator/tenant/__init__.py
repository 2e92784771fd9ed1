"""The Tenant kind: rendering, the admission policy and the decision (pure), and the Kopf handlers that apply it."""
