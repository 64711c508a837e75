"""Sessions' state and leases in Redis: what lets any replica resume a session, and only one
hold it at a time.

Keys, all with a TTL so the store's memory is bounded without a sweeper:
- ``vidserve:state:{id}``: the session's last checkpoint (``models/state_file.py`` bytes),
  expiring with the session's idle TTL;
- ``vidserve:lease:{id}``: the replica that holds the session (``SET NX PX``), renewed while
  it lives there; renewing and releasing check the holder in one script, so a replica whose
  lease lapsed can never extend or delete another's;
- ``vidserve:gone:{id}``: ``closed``/``expired`` and the owner, so another replica answers
  410 rather than 404, as this one does;
- ``vidserve:wanted:{id}``: another replica was asked for the session, so its holder lets it
  go as soon as no stream is attached (a lease period at most).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

PREFIX = "vidserve"

# why scripts: "is it still mine?" and "extend/delete it" must be one step, or a lease that
# lapsed between them could be taken by another replica and then extended or deleted by us
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class StoreUnavailable(RuntimeError):
    """The state store cannot be reached or refused a command; the message says which."""

    status = 503
    code = "state_store_unavailable"
    retry_after_s = 1.0


@dataclass(frozen=True)
class LeaseHolder:
    replica: str  # VIDSERVE_REPLICA_ID of the holder
    ms_left: int  # until it expires unless renewed


def _key(kind: str, session_id: str) -> str:
    return f"{PREFIX}:{kind}:{session_id}"


class RedisStateStore:
    """The state store over one Redis database (``redis://host:port/db``)."""

    def __init__(self, url: str) -> None:
        self.url = url
        # why no decode: states are bytes; the few text values are decoded where read
        self._redis = aioredis.Redis.from_url(url, decode_responses=False, socket_timeout=30)
        self._renew = self._redis.register_script(_RENEW)
        self._release = self._redis.register_script(_RELEASE)

    async def close(self) -> None:
        await self._redis.aclose()

    async def ping(self) -> None:
        await self._call(self._redis.ping())

    async def put(self, session_id: str, blob: bytes, ttl_s: float) -> None:
        await self._call(self._redis.set(_key("state", session_id), blob, px=max(1, int(ttl_s * 1000))))

    async def get(self, session_id: str) -> bytes | None:
        value = await self._call(self._redis.get(_key("state", session_id)))
        return None if value is None else bytes(value)

    async def delete(self, session_id: str) -> None:
        keys = [_key(kind, session_id) for kind in ("state", "lease", "wanted")]
        await self._call(self._redis.delete(*keys))

    async def acquire(self, session_id: str, replica: str, ttl_s: float) -> bool:
        """Take the session's lease if nobody holds it (or we already do); True if ours."""
        key = _key("lease", session_id)
        taken = await self._call(self._redis.set(key, replica, nx=True, px=_ms(ttl_s)))
        if taken:  # why: the ask was answered; left, it would make the new holder let go too
            await self._call(self._redis.delete(_key("wanted", session_id)))
        return bool(taken) or await self.renew(session_id, replica, ttl_s)

    async def renew(self, session_id: str, replica: str, ttl_s: float) -> bool:
        """Extend our lease; False when it lapsed (and may be another's now)."""
        renewed = await self._call(self._renew(keys=[_key("lease", session_id)], args=[replica, _ms(ttl_s)]))
        return bool(renewed)

    async def release(self, session_id: str, replica: str) -> None:
        await self._call(self._release(keys=[_key("lease", session_id)], args=[replica]))

    async def holder(self, session_id: str) -> LeaseHolder | None:
        key = _key("lease", session_id)
        replica = await self._call(self._redis.get(key))
        if replica is None:
            return None
        ms_left = await self._call(self._redis.pttl(key))
        return LeaseHolder(bytes(replica).decode(), max(0, int(ms_left)))

    async def want(self, session_id: str, ttl_s: float) -> None:
        """Ask the session's holder to let it go once no stream is attached there (a client
        came back through another replica, as after a failback)."""
        await self._call(self._redis.set(_key("wanted", session_id), b"1", px=_ms(ttl_s)))

    async def wanted(self, session_ids: list[str]) -> set[str]:
        """Which of these sessions another replica asked for."""
        if not session_ids:
            return set()
        values = await self._call(self._redis.mget([_key("wanted", i) for i in session_ids]))
        return {i for i, value in zip(session_ids, values, strict=True) if value is not None}

    async def mark_gone(self, session_id: str, state: str, owner: str | None, ttl_s: float) -> None:
        value = json.dumps({"state": state, "owner": owner})
        await self._call(self._redis.set(_key("gone", session_id), value, px=_ms(ttl_s)))

    async def gone(self, session_id: str) -> tuple[str, str | None] | None:
        """(``closed`` or ``expired``, owner) of a session ended on some replica, or None."""
        value = await self._call(self._redis.get(_key("gone", session_id)))
        if value is None:
            return None
        fields = json.loads(value)
        return str(fields["state"]), fields.get("owner")

    async def _call(self, command: Any) -> Any:
        try:
            return await command
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"the state store {self._where()} failed: {exc}") from exc

    def _where(self) -> str:
        # why not the URL itself: it may carry a password
        pool = self._redis.connection_pool.connection_kwargs
        return f"{pool.get('host', '?')}:{pool.get('port', '?')}/{pool.get('db', 0)}"


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))
