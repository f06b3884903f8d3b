"""API keys and the per-key rate limit of the HTTP API.

Keys live in the serving store's ``api_keys`` table as a salted SHA-256 of their secret part (a
key is 32 random bytes, so a slow password hash would add latency without adding safety); the
plain key is shown once, when it is created. A key is ``frk_<key id>_<secret>``: the id finds
its row, the secret is compared in constant time. Scopes: ``read`` (GET endpoints) and
``write`` (POST /events, and reads). Writes need a key once any key exists
(``FRESHRANK_API_REQUIRE_KEYS=auto``), or always (``always``); reads need one only with
``FRESHRANK_API_KEYS_FOR_READS=1``. Each key (or all callers without one, together) has a token
bucket for POST /events, per API process.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from fastapi import HTTPException, Request

from orchestration.settings import Settings

READ = "read"
WRITE = "write"
SCOPES = (READ, WRITE)
KEY_PREFIX = "frk"
KEY_HEADER = "X-API-Key"
ANONYMOUS = "anonymous"
CACHE_SECONDS = 2.0  # how long a revoked key may still be accepted by a running API
NAME_LENGTH = 255  # characters of a key's name (its column's VARCHAR)
_HOW_TO_SEND = f"send it as 'Authorization: Bearer <key>' or '{KEY_HEADER}: <key>'"

_metadata = sa.MetaData()
api_keys_table = sa.Table(
    "api_keys",
    _metadata,
    sa.Column("key_id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(NAME_LENGTH), nullable=False),
    sa.Column("scope", sa.String(16), nullable=False),
    sa.Column("salt", sa.String(64), nullable=False),
    sa.Column("secret_hash", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("revoked_at", sa.DateTime, nullable=True),
)


@dataclass(frozen=True)
class ApiKey:
    """A stored key, without its secret."""

    key_id: str
    name: str
    scope: str
    salt: str
    secret_hash: str

    def allows(self, scope: str) -> bool:
        return self.scope == WRITE or scope == READ


def _secret_hash(salt: str, secret: str) -> str:
    return hashlib.sha256(f"{salt}:{secret}".encode()).hexdigest()


def create_key(engine: sa.Engine, name: str, scope: str) -> tuple[str, str]:
    """Store a new key; returns (key id, the plain key, which is not stored anywhere)."""
    if scope not in SCOPES:
        raise ValueError(f"scope {scope!r} must be one of: {', '.join(SCOPES)}")
    if not name.strip():
        raise ValueError("a key needs a name that says who uses it (e.g. --name checkout-service)")
    if len(name.strip()) > NAME_LENGTH:
        raise ValueError(f"a key's name may be at most {NAME_LENGTH} characters")
    _metadata.create_all(engine)
    key_id, secret, salt = secrets.token_hex(6), secrets.token_urlsafe(32), secrets.token_hex(16)
    with engine.begin() as connection:
        connection.execute(
            api_keys_table.insert().values(
                key_id=key_id,
                name=name.strip(),
                scope=scope,
                salt=salt,
                secret_hash=_secret_hash(salt, secret),
                created_at=datetime.now(UTC).replace(tzinfo=None),
            )
        )
    return key_id, f"{KEY_PREFIX}_{key_id}_{secret}"


def list_keys(engine: sa.Engine) -> list[dict[str, object]]:
    """Every key's id, name, scope, creation and revocation time (never the hash)."""
    _metadata.create_all(engine)
    table = api_keys_table
    query = sa.select(
        table.c.key_id, table.c.name, table.c.scope, table.c.created_at, table.c.revoked_at
    ).order_by(table.c.created_at)
    with engine.connect() as connection:
        return [dict(row) for row in connection.execute(query).mappings().all()]


def revoke_key(engine: sa.Engine, key_id: str) -> bool:
    """Revoke a key by its id; False when no active key has that id."""
    _metadata.create_all(engine)
    table = api_keys_table
    with engine.begin() as connection:
        revoked = connection.execute(
            table.update()
            .where(table.c.key_id == key_id, table.c.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC).replace(tzinfo=None))
        )
    return bool(revoked.rowcount)


class KeyRing:
    """The active keys, read from the store at most every CACHE_SECONDS."""

    def __init__(self, engine: sa.Engine, cache_seconds: float = CACHE_SECONDS) -> None:
        self._engine = engine
        self._cache_seconds = cache_seconds
        self._keys: dict[str, ApiKey] = {}
        self._read_at = -math.inf
        self._lock = threading.Lock()
        _metadata.create_all(engine)

    def active(self) -> dict[str, ApiKey]:
        with self._lock:
            if time.monotonic() - self._read_at >= self._cache_seconds:
                table = api_keys_table
                query = sa.select(
                    table.c.key_id, table.c.name, table.c.scope, table.c.salt, table.c.secret_hash
                ).where(table.c.revoked_at.is_(None))
                with self._engine.connect() as connection:
                    rows = connection.execute(query).all()
                self._keys = {row.key_id: ApiKey(*row) for row in rows}
                self._read_at = time.monotonic()
            return self._keys

    def find(self, presented: str) -> ApiKey | None:
        """The active key a presented key is, or None."""
        prefix, _, rest = presented.partition("_")
        key_id, _, secret = rest.partition("_")
        if prefix != KEY_PREFIX or not secret:
            return None
        key = self.active().get(key_id)
        if key is None or not hmac.compare_digest(key.secret_hash, _secret_hash(key.salt, secret)):
            return None
        return key


class RateLimiter:
    """A token bucket per caller: ``burst`` requests at once, refilled at ``per_second``."""

    def __init__(self, per_second: float, burst: int) -> None:
        self.per_second = per_second
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}  # caller -> (tokens, at)
        self._lock = threading.Lock()

    def wait_seconds(self, caller: str, now: float | None = None) -> float:
        """Take a token: 0 when the request may go, else how long until one is free."""
        moment = time.monotonic() if now is None else now
        with self._lock:
            tokens, at = self._buckets.get(caller, (float(self.burst), moment))
            tokens = min(float(self.burst), tokens + (moment - at) * self.per_second)
            if tokens >= 1:
                self._buckets[caller] = (tokens - 1, moment)
                return 0.0
            self._buckets[caller] = (tokens, moment)
            return (1 - tokens) / self.per_second


class Access:
    """Who may call what: FastAPI dependencies for reads and writes."""

    def __init__(
        self,
        engine: sa.Engine,
        require_keys: str,
        keys_for_reads: bool,
        limiter: RateLimiter,
    ) -> None:
        self.keys = KeyRing(engine)
        self.require_keys = require_keys
        self.keys_for_reads = keys_for_reads
        self.limiter = limiter

    @classmethod
    def from_settings(cls, engine: sa.Engine, settings: Settings) -> Access:
        limiter = RateLimiter(settings.api_events_per_second, settings.api_events_burst)
        return cls(engine, settings.api_require_keys, settings.api_keys_for_reads, limiter)

    # Both are coroutines, so FastAPI calls them on the event loop. A plain function would be
    # handed to a worker thread on every request, and that thread then waits for the GIL
    # while the loop serves other requests: up to the 5 ms switch interval a read, under load.
    # The work is a header lookup, and at most every CACHE_SECONDS one small indexed read.

    async def reader(self, request: Request) -> str:
        """Allow a read: any valid key when reads are keyed; returns the caller."""
        return self._caller(request, READ, required=self.keys_for_reads)

    async def writer(self, request: Request) -> str:
        """Allow a write within the caller's rate; returns the caller."""
        required = self.require_keys == "always" or bool(self.keys.active())
        caller = self._caller(request, WRITE, required=required)
        wait = self.limiter.wait_seconds(caller)
        if wait > 0:
            retry_after = max(1, math.ceil(wait))
            raise HTTPException(
                429,
                f"rate limit reached for {_shown(caller)}: {self.limiter.per_second:g} "
                f"request(s) per second, bursts of {self.limiter.burst} "
                "(FRESHRANK_API_EVENTS_PER_SECOND, FRESHRANK_API_EVENTS_BURST); "
                f"retry after {retry_after} s",
                headers={"Retry-After": str(retry_after)},
            )
        return caller

    def _caller(self, request: Request, scope: str, required: bool) -> str:
        presented = _presented_key(request)
        if presented is None:
            if required:
                raise _unauthorised(
                    f"{request.method} {request.url.path} needs an API key with scope {scope}: "
                    f"{_HOW_TO_SEND} (create one with `freshrank api-key create --name NAME "
                    f"--scope {scope}`)"
                )
            return ANONYMOUS
        key = self.keys.find(presented)
        if key is None:
            raise _unauthorised(f"unknown or revoked API key; {_HOW_TO_SEND}")
        if not key.allows(scope):
            raise HTTPException(
                403,
                f"API key '{key.name}' ({key.key_id}) has scope {key.scope}; "
                f"{request.method} {request.url.path} needs scope {scope}",
            )
        return key.key_id


def _presented_key(request: Request) -> str | None:
    """The key in ``Authorization: Bearer`` or ``X-API-Key``, or None when neither is sent."""
    authorization = request.headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.headers.get(KEY_HEADER, "").strip() or None


def _unauthorised(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def _shown(caller: str) -> str:
    return "callers without a key" if caller == ANONYMOUS else f"API key {caller}"
