"""The MCP server's settings and limits, from SANDBOX_MCP_* environment variables; every refusal names its limit."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class McpSettings(BaseSettings):
    """How the MCP server runs and what it allows one call or one session."""

    model_config = SettingsConfigDict(env_prefix="SANDBOX_MCP_", frozen=True)

    namespace: str | None = Field(
        None,
        description="Namespace of the sandboxes; default: the kubeconfig context's (stdio), the caller's own for a "
        "service account (HTTP), else 'default'.",
    )
    image: str = Field("python:3.11-slim", description="Image of sandboxes created without one.")
    template: str | None = Field(
        None,
        description="SandboxTemplate of sandboxes created without an image (instead of image, cpu and memory): they "
        "start from a warm pod when a SandboxPool of it has one.",
        max_length=63,
    )
    ttl_seconds: int = Field(3600, ge=60, le=7 * 86400, description="Lifetime of a session's sandbox.")
    idle_timeout_seconds: int = Field(
        900, ge=10, le=86400, description="A session's sandbox is removed this long after its last use."
    )
    cpu: str = Field("500m", description="CPU limit of sandboxes the server creates.")
    memory: str = Field("512Mi", description="Memory limit of sandboxes the server creates.")
    default_command_seconds: float = Field(60, gt=0, description="Timeout of a command that names none.")
    max_command_seconds: float = Field(600, gt=0, description="Longest timeout a command may ask for.")
    max_output_bytes: int = Field(256 * 1024, ge=1024, description="Output kept per stream of a command.")
    max_file_bytes: int = Field(8 * 1024 * 1024, ge=1, description="Largest file read_file or write_file moves.")
    max_request_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="Largest HTTP request body.")
    max_concurrent_calls: int = Field(4, ge=1, le=256, description="Tool calls one session may run at once.")
    ready_timeout_seconds: float = Field(180, gt=0, description="How long a tool waits for a sandbox to be Ready.")
    # HTTP only
    host: str = Field("127.0.0.1", description="Address the HTTP server listens on (0.0.0.0 in a pod).")
    port: int = Field(8090, ge=1, le=65535, description="Port of the HTTP server.")
    public_url: str = Field(
        "http://127.0.0.1:8090", description="URL clients reach the server at (OAuth protected-resource metadata)."
    )
    token_issuer: str = Field(
        "https://kubernetes.default.svc.cluster.local",
        description="Issuer of the tokens callers present, advertised in the protected-resource metadata.",
    )
    token_audiences: list[str] = Field(
        default_factory=lambda: ["sandbox-mcp"],
        description="Audiences a caller's token must carry (TokenReview): a token made for this server cannot be "
        "replayed against the API server, and the reverse. Empty: the API server's own (not recommended).",
    )
    identity_cache_seconds: float = Field(
        60, ge=0, le=600, description="How long a reviewed token's identity is reused before it is reviewed again."
    )
