"""sandbox-operator: Sandbox custom resources become locked-down pods."""

__version__ = "0.1.0"
