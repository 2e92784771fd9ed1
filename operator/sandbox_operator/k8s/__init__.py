"""Plumbing every kind shares: the one door to the API server, comparing and hashing manifests, redacting messages."""
