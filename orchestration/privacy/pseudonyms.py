"""Pseudonymised user ids: a keyed hash (HMAC-SHA256) that replaces a user id before it is stored.

A pseudonym is ``p`` + 32 hex digits of HMAC(key, "user:" + id) + 8 hex digits of
HMAC(key, "check:" + those 32). The check digits make pseudonymising idempotent and safe: text
that already is a pseudonym made with this key is kept as it is (the API hashes the ids of
posted events before it lands them, and ingestion must not hash them twice), while text that
only looks like one cannot pass without the key. The same function exists twice, in Python (the
API, the CLI) and as DuckDB SQL (ingestion, where a Python call per row would cost throughput);
a test holds them equal.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import duckdb

from ml.constants import USER_ID

KEY_VARIABLE = "FRESHRANK_PSEUDONYMISE_KEY"
MIN_KEY_CHARACTERS = 16
PREFIX = "p"
DIGEST_HEX_DIGITS = 32
CHECK_HEX_DIGITS = 8
PSEUDONYM_PATTERN = f"^{PREFIX}[0-9a-f]{{{DIGEST_HEX_DIGITS + CHECK_HEX_DIGITS}}}$"
_PSEUDONYM = re.compile(PSEUDONYM_PATTERN)
LOOKUP_TABLE = "user_pseudonyms"
_BLOCK_BYTES = 64  # SHA-256's block size, which HMAC pads the key to


@dataclass(frozen=True)
class Pseudonymiser:
    """Turns user ids into pseudonyms with one secret key."""

    key: bytes

    def __post_init__(self) -> None:
        if len(self.key) < MIN_KEY_CHARACTERS:
            raise ValueError(
                f"{KEY_VARIABLE} must be at least {MIN_KEY_CHARACTERS} characters of secret text "
                f"(got {len(self.key)}); e.g. python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))'"
            )

    @classmethod
    def from_secret(cls, secret: str | None) -> Pseudonymiser | None:
        """The pseudonymiser of a configured secret; None when pseudonymisation is off."""
        if secret is None or not secret.strip():
            return None
        return cls(secret.strip().encode("utf-8"))

    def pseudonym(self, user_id: str) -> str:
        """The pseudonym of a user id (stripped, as ingestion strips it); a pseudonym stays."""
        text = user_id.strip()
        if self.is_pseudonym(text):
            return text
        digest = self._hex(f"user:{text}")[:DIGEST_HEX_DIGITS]
        return PREFIX + digest + self._hex(f"check:{digest}")[:CHECK_HEX_DIGITS]

    def is_pseudonym(self, text: str) -> bool:
        """Whether ``text`` is a pseudonym made with this key (its check digits match)."""
        if not _PSEUDONYM.match(text):
            return False
        digest, check = text[1 : 1 + DIGEST_HEX_DIGITS], text[1 + DIGEST_HEX_DIGITS :]
        return hmac.compare_digest(check, self._hex(f"check:{digest}")[:CHECK_HEX_DIGITS])

    def sql(self, text: str) -> str:
        """DuckDB SQL of ``pseudonym`` over a text expression that is already stripped (NULL
        stays NULL)."""
        user_hash = self._sql_hex("'user:' || " + text)
        digest = f"left({user_hash}, {DIGEST_HEX_DIGITS})"
        given_digest = f"substr({text}, 2, {DIGEST_HEX_DIGITS})"
        given_check = self._sql_hex("'check:' || " + given_digest)
        made_check = self._sql_hex("'check:' || " + digest)
        already = (
            f"regexp_full_match({text}, '{PSEUDONYM_PATTERN[1:-1]}') "
            f"AND right({text}, {CHECK_HEX_DIGITS}) = left({given_check}, {CHECK_HEX_DIGITS})"
        )
        made = f"'{PREFIX}' || {digest} || left({made_check}, {CHECK_HEX_DIGITS})"
        return f"CASE WHEN {text} IS NULL THEN NULL WHEN {already} THEN {text} ELSE {made} END"

    def lookup(self, con: duckdb.DuckDBPyConnection, texts: str) -> Callable[[str], str]:
        """Pseudonymise the distinct values of ``texts`` (SQL of a query with one stripped text
        column) once each, into a temporary table of ``con``; returns SQL of a text
        expression's pseudonym read from that table. A log repeats each user many times, so
        this costs a fraction of hashing every row (measured in benchmarks/README.md)."""
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {LOOKUP_TABLE} AS "
            f"SELECT user_text, {self.sql('user_text')} AS pseudonym "
            f"FROM (SELECT DISTINCT * FROM ({texts}) AS given(user_text) "
            "WHERE user_text IS NOT NULL)"
        )
        return lambda text: f"(SELECT pseudonym FROM {LOOKUP_TABLE} WHERE user_text = {text})"

    def _hex(self, message: str) -> str:
        return hmac.new(self.key, message.encode("utf-8"), hashlib.sha256).hexdigest()

    def _sql_hex(self, message: str) -> str:
        """HMAC-SHA256 as hex in DuckDB SQL, from its definition: H(K^opad || H(K^ipad || m)).
        DuckDB's sha256 takes a BLOB and returns hex; the padded keys are constants."""
        inner_pad, outer_pad = _padded_keys(self.key)
        inner = f"unhex(sha256(unhex('{inner_pad.hex()}') || encode({message})))"
        return f"sha256(unhex('{outer_pad.hex()}') || {inner})"


def _padded_keys(key: bytes) -> tuple[bytes, bytes]:
    """HMAC's key XOR ipad and key XOR opad (RFC 2104), a long key hashed first."""
    if len(key) > _BLOCK_BYTES:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK_BYTES, b"\0")
    return bytes(byte ^ 0x36 for byte in key), bytes(byte ^ 0x5C for byte in key)


def canonical_user_text(value: object) -> str | None:
    """A posted user id as ingestion reads it (stripped text; whole numbers without a point),
    or None for a value only ingestion should interpret (it pseudonymises those itself)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e18:
        return str(int(value))
    return None


def pseudonymised_events(
    events: list[dict[str, Any]], pseudonymiser: Pseudonymiser
) -> list[dict[str, Any]]:
    """Posted events with their user ids replaced by pseudonyms, where the id reads as
    ingestion would read it; any other value is left for ingestion, which pseudonymises it."""
    replaced = []
    for event in events:
        text = canonical_user_text(event.get(USER_ID))
        replaced.append(
            event if text is None else {**event, USER_ID: pseudonymiser.pseudonym(text)}
        )
    return replaced
