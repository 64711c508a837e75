"""Who is calling: API keys (``VIDSERVE_API_KEYS``), what each key owns, its quotas, and the
origins a browser may call from.

When keys are configured, every ``/v1`` route and websocket needs one: ``Authorization:
Bearer KEY``, or, from a browser (which cannot set headers on a websocket), the
``Sec-WebSocket-Protocol`` values ``vidserve, bearer.KEY`` (the server answers with
``vidserve``, never echoing the key). A session or job belongs to the key that made it;
another key is told it does not exist (404, never 403). Probes (``/healthz``, ``/readyz``,
``/metrics``) and the demo page stay open. Without keys the server runs open, as one
anonymous caller.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

PROTECTED_PREFIX = "/v1"  # everything under it needs a key; probes and the demo page do not
SUBPROTOCOL = "vidserve"  # what a browser's websocket offers beside its key, and gets back
KEY_PROTOCOL_PREFIX = "bearer."  # Sec-WebSocket-Protocol: vidserve, bearer.KEY
# why these: a key must be an HTTP token, to travel as a websocket subprotocol
KEY_CHARACTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
MIN_KEY_LENGTH = 16  # why: a key is a bearer secret; shorter ones are guessable
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class KeyLimits(BaseModel):
    """One key's name and quotas, as ``VIDSERVE_API_KEYS`` gives them."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, description="who the key is, in logs and metrics")
    max_sessions: int | None = Field(None, ge=0, le=100_000, description="open sessions (default: none)")
    max_jobs: int | None = Field(None, ge=0, le=100_000, description="jobs held (default: none)")


def check_keys(keys: dict[str, KeyLimits]) -> dict[str, KeyLimits]:
    """Keys usable as bearer tokens and websocket subprotocols, with distinct names."""
    for key in keys:
        if len(key) < MIN_KEY_LENGTH or any(c not in KEY_CHARACTERS for c in key):
            raise ValueError(
                f"API keys must be at least {MIN_KEY_LENGTH} characters of A–Z, a–z, 0–9 and -._~ "
                "(so they travel in a header and a websocket subprotocol); one is not"
            )
    names = [limits.name for limits in keys.values()]
    if len(set(names)) != len(names):
        raise ValueError("two API keys have the same name; each key's name must be its own")
    return keys


@dataclass(frozen=True)
class Caller:
    """Who a request comes from: a key's name and limits, or the anonymous caller of an open
    server (who owns everything, as before keys existed)."""

    name: str | None  # the key's name; None when the server runs without keys
    max_sessions: int | None = None
    max_jobs: int | None = None

    def owns(self, owner: str | None) -> bool:
        return self.name is None or owner == self.name


ANONYMOUS = Caller(None)


class Unauthorized(Exception):
    """No key, or a key the server does not know (401)."""

    status = 401
    code = "unauthorized"


class OriginNotAllowed(Exception):
    """A browser page of another origin tried to change state or open a stream (403)."""

    status = 403
    code = "origin_not_allowed"


class UntrustedHost(Exception):
    """A ``Host`` the server does not answer to: it would decide where ``stream_url`` sends
    clients (and their keys) (400)."""

    status = 400
    code = "untrusted_host"


class QuotaExceeded(Exception):
    """The key holds all the sessions or jobs it may (429, with an honest Retry-After)."""

    status = 429
    code = "quota_exceeded"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def caller_of(keys: dict[str, KeyLimits] | None, headers: Headers) -> Caller:
    """The caller a request's headers name; raises ``Unauthorized`` when keys are on and it
    brings none, or an unknown one."""
    if not keys:
        return ANONYMOUS
    given = bearer(headers) or protocol_key(headers)
    if given is None:
        raise Unauthorized("this server needs an API key: send 'Authorization: Bearer KEY'")
    for key, limits in keys.items():
        if hmac.compare_digest(key.encode(), given.encode()):  # why: no timing oracle on the key
            return Caller(limits.name, limits.max_sessions, limits.max_jobs)
    raise Unauthorized("the API key is not one this server knows")


def bearer(headers: Headers) -> str | None:
    scheme, _, value = headers.get("authorization", "").partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def offered_protocols(headers: Headers) -> list[str]:
    return [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",") if p.strip()]


def protocol_key(headers: Headers) -> str | None:
    for value in offered_protocols(headers):
        if value.startswith(KEY_PROTOCOL_PREFIX):
            return value[len(KEY_PROTOCOL_PREFIX) :]
    return None


LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
ANY_ADDRESS = ("0.0.0.0", "::", "")  # what a bind-all host is named


def trusted_hosts(settings: Any) -> set[str]:
    """Host names a request may name: loopback, the bound address, ``VIDSERVE_PUBLIC_URL``'s,
    and ``VIDSERVE_ALLOWED_HOSTS`` ('*': any)."""
    hosts = {*LOOPBACK_HOSTS, *(h.lower() for h in settings.allowed_hosts)}
    if settings.host not in ANY_ADDRESS:
        hosts.add(settings.host.lower())
    if settings.public_url:
        hosts.add((urlsplit(settings.public_url).hostname or "").lower())
    return hosts


def host_allowed(host: str, trusted: set[str]) -> bool:
    """``host`` is a Host header (name[:port], IPv6 in brackets)."""
    name = urlsplit(f"//{host}").hostname or ""
    return "*" in trusted or name in trusted


def origin_of(url: str) -> str:
    """scheme://host[:port] of a URL, lower-cased, as browsers send ``Origin``."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def allowed_origin(origin: str, own: str, allowed: list[str]) -> bool:
    """A browser's ``Origin`` may change state: the server's own, or one configured."""
    origin = origin.lower().rstrip("/")
    return origin == own or origin in {o.lower().rstrip("/") for o in allowed} or "*" in allowed


def own_origin(public_url: str | None, scope: Scope) -> str:
    """The server's own origin: ``VIDSERVE_PUBLIC_URL``'s, else the one this request reached."""
    if public_url:
        return origin_of(public_url)
    headers = Headers(scope=scope)
    secure = scope.get("scheme") in ("https", "wss")
    return f"{'https' if secure else 'http'}://{headers.get('host', '')}".lower()


class Access:
    """ASGI middleware: the caller of every ``/v1`` request and websocket (into
    ``scope["state"]["caller"]``), and the origin check of browsers' state-changing requests
    and websocket handshakes. An HTTP request it refuses gets its JSON error here; a
    websocket is refused by its route, after accepting, so the close code carries a reason
    (``scope["state"]["access_error"]``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        settings = scope["app"].state.server.settings
        scope.setdefault("state", {})
        is_protected = scope["path"].startswith(PROTECTED_PREFIX)
        try:
            if is_protected:  # why not probes: an orchestrator's Host is the pod's address
                self.check_host(scope, settings)
            self.check_origin(scope, settings)
            caller = caller_of(settings.api_keys, Headers(scope=scope)) if is_protected else ANONYMOUS
            scope["state"]["caller"] = caller
        except (Unauthorized, OriginNotAllowed, UntrustedHost) as exc:
            if scope["type"] == "websocket":
                scope["state"]["access_error"] = exc
                scope["state"]["caller"] = ANONYMOUS
            else:
                await refuse(exc, send)
                return
        await self.app(scope, receive, send)

    @staticmethod
    def check_host(scope: Scope, settings: Any) -> None:
        host = Headers(scope=scope).get("host", "").lower()
        if not host_allowed(host, trusted_hosts(settings)):
            raise UntrustedHost(
                f"Host {host[:100]!r} is not one this server answers to; set VIDSERVE_PUBLIC_URL "
                "(or VIDSERVE_ALLOWED_HOSTS)"
            )

    @staticmethod
    def check_origin(scope: Scope, settings: Any) -> None:
        origin = Headers(scope=scope).get("origin")
        is_state_changing = scope["type"] == "websocket" or scope.get("method") in STATE_CHANGING
        if origin is None or not is_state_changing:  # why: non-browser clients send no Origin
            return
        if not allowed_origin(origin, own_origin(settings.public_url, scope), settings.allowed_origins):
            raise OriginNotAllowed(
                f"requests from origin {origin[:100]!r} are not allowed (VIDSERVE_ALLOWED_ORIGINS)"
            )


async def refuse(exc: Exception, send: Send) -> None:
    from fastapi.responses import JSONResponse

    from server.api.errors import error_body

    headers = {"WWW-Authenticate": 'Bearer realm="vidserve"'} if isinstance(exc, Unauthorized) else None
    status, code = exc.status, exc.code  # type: ignore[attr-defined]
    response = JSONResponse(error_body(code, str(exc)), status_code=status, headers=headers)
    await response({"type": "http"}, _nothing, send)


async def _nothing() -> dict[str, Any]:
    return {"type": "http.disconnect"}
