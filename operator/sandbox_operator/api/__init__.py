"""The API of sandbox-operator.io: names, schema pieces and the models of every resource, and the CRDs generated from
them. Clients (SDK, CLI, MCP server) import this package; it imports neither Kopf nor a Kubernetes client."""
