"""Who is calling: over HTTP, a bearer token reviewed by the API server (TokenReview); the caller then acts through
impersonation, so RBAC and audit logs see the caller, never the server."""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
from kubernetes_asyncio.client import ApiClient, AuthenticationV1Api, V1TokenReview, V1TokenReviewSpec
from kubernetes_asyncio.client.exceptions import ApiException
from mcp.server.auth.provider import AccessToken

from sandbox_operator.sdk import Impersonation

log = logging.getLogger("sandbox_operator.mcp")

MAX_CACHED_IDENTITIES: Final = 4096
SERVICE_ACCOUNT_PREFIX: Final = "system:serviceaccount:"


@dataclass(frozen=True)
class Caller:
    """An authenticated caller, as the API server reported it."""

    username: str
    uid: str | None
    groups: tuple[str, ...]
    extra: dict[str, tuple[str, ...]]

    @property
    def impersonation(self) -> Impersonation:
        """The identity every Kubernetes call made for this caller acts as (extra fields are not forwarded)."""
        return Impersonation(self.username, self.groups, self.uid)

    @property
    def service_account_namespace(self) -> str | None:
        """The namespace of a service account caller."""
        if self.username.startswith(SERVICE_ACCOUNT_PREFIX):
            return self.username[len(SERVICE_ACCOUNT_PREFIX) :].split(":", 1)[0] or None
        return None

    def claims(self) -> dict[str, Any]:
        """The caller as AccessToken claims (the MCP SDK carries them to the tools)."""
        return {
            "username": self.username,
            "uid": self.uid,
            "groups": list(self.groups),
            "extra": {k: list(v) for k, v in self.extra.items()},
        }

    @classmethod
    def from_claims(cls, claims: dict[str, Any]) -> Caller:
        """The caller carried in an AccessToken's claims."""
        return cls(
            username=str(claims["username"]),
            uid=claims.get("uid"),
            groups=tuple(claims.get("groups") or ()),
            extra={k: tuple(v) for k, v in (claims.get("extra") or {}).items()},
        )


class TokenReviewVerifier:
    """The MCP SDK's TokenVerifier: a token is valid when the API server's TokenReview authenticates it. Results are
    reused for a short while (keyed by the token's hash; the token itself is never stored or logged)."""

    def __init__(self, api_client: ApiClient, audiences: list[str], cache_seconds: float) -> None:
        self._api = AuthenticationV1Api(api_client)
        self._audiences, self._cache_seconds = audiences, cache_seconds
        self._cache: OrderedDict[str, tuple[float, Caller | None]] = OrderedDict()

    async def verify_token(self, token: str) -> AccessToken | None:
        """The caller's access token, or None (the SDK answers 401) when the API server does not authenticate it."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and now - cached[0] < self._cache_seconds:
            caller = cached[1]
        else:
            try:
                caller = await self._review(token)
            except ReviewUnavailable:
                return None  # refused this once, not remembered: the next call asks again
            self._cache[digest] = (now, caller)
            self._cache.move_to_end(digest)
            while len(self._cache) > MAX_CACHED_IDENTITIES:
                self._cache.popitem(last=False)
        if caller is None:
            return None
        return AccessToken(
            token=token, client_id=caller.username, scopes=[], subject=caller.uid, claims=caller.claims()
        )

    async def _review(self, token: str) -> Caller | None:
        """The API server's answer: the caller, or None for a token it does not authenticate (for one of our
        audiences, when we have some). ReviewUnavailable when it could not answer."""
        spec = V1TokenReviewSpec(token=token, audiences=self._audiences or None)
        try:
            review = await self._api.create_token_review(V1TokenReview(spec=spec))
        except ApiException as error:
            log.warning("TokenReview failed (HTTP %s); the call is refused", error.status)
            raise ReviewUnavailable() from None
        except (aiohttp.ClientError, TimeoutError) as error:
            log.warning("TokenReview failed (%s); the call is refused", type(error).__name__)
            raise ReviewUnavailable() from None
        status = review.status
        if status is None or not status.authenticated or status.user is None or not status.user.username:
            return None
        if self._audiences and not set(status.audiences or ()) & set(self._audiences):
            return None  # authenticated for someone else: a token for the API server is not one for us
        user = status.user
        return Caller(
            username=user.username,
            uid=user.uid,
            groups=tuple(user.groups or ()),
            extra={k: tuple(v) for k, v in (user.extra or {}).items()},
        )


class ReviewUnavailable(Exception):
    """The API server could not review a token (throttled, down, unreachable)."""
