"""Pseudonyms: HMAC-SHA256 known answers, Python and DuckDB SQL agree, idempotent, key checks."""

from __future__ import annotations

import hashlib
import hmac

import duckdb
import pytest

from orchestration.privacy.pseudonyms import Pseudonymiser, canonical_user_text

KEY = b"a-test-key-of-enough-length"


def sql_values(pseudonymiser: Pseudonymiser, values: list[str | None]) -> list[str | None]:
    with duckdb.connect() as con:
        con.execute("CREATE TABLE ids (position INTEGER, user_id VARCHAR)")
        con.executemany("INSERT INTO ids VALUES (?, ?)", list(enumerate(values)))
        expression = pseudonymiser.sql("user_id")
        return [
            row[0] for row in con.sql(f"SELECT {expression} FROM ids ORDER BY position").fetchall()
        ]


def test_pseudonym_is_the_documented_hmac() -> None:
    digest = hmac.new(KEY, b"user:u1", hashlib.sha256).hexdigest()[:32]
    check = hmac.new(KEY, f"check:{digest}".encode(), hashlib.sha256).hexdigest()[:8]
    assert Pseudonymiser(KEY).pseudonym("u1") == f"p{digest}{check}"


@pytest.mark.parametrize("key", [KEY, b"k" * 100])  # a key longer than a block is hashed first
def test_sql_and_python_agree(key: bytes) -> None:
    pseudonymiser = Pseudonymiser(key)
    values = ["u1", "007", "7", "ünïcödé", "x" * 300, None, "p" + "0" * 40]
    expected = [None if value is None else pseudonymiser.pseudonym(value) for value in values]
    assert sql_values(pseudonymiser, values) == expected


def test_a_pseudonym_is_kept_and_a_lookalike_is_hashed() -> None:
    pseudonymiser = Pseudonymiser(KEY)
    made = pseudonymiser.pseudonym("u1")
    lookalike = "p" + "0" * 40
    assert pseudonymiser.pseudonym(made) == made
    assert sql_values(pseudonymiser, [made]) == [made]
    assert pseudonymiser.pseudonym(lookalike) != lookalike
    # Another key's pseudonym is an ordinary id to this one.
    other = Pseudonymiser(b"another-key-of-enough-length").pseudonym("u1")
    assert not pseudonymiser.is_pseudonym(other)
    assert pseudonymiser.pseudonym(other) != other


def test_ids_are_stripped_and_distinct() -> None:
    pseudonymiser = Pseudonymiser(KEY)
    assert pseudonymiser.pseudonym(" u1 ") == pseudonymiser.pseudonym("u1")
    assert pseudonymiser.pseudonym("007") != pseudonymiser.pseudonym("7")


def test_short_key_is_refused_and_empty_means_off() -> None:
    with pytest.raises(ValueError, match="FRESHRANK_PSEUDONYMISE_KEY must be at least 16"):
        Pseudonymiser.from_secret("short")
    assert Pseudonymiser.from_secret("  ") is None
    assert Pseudonymiser.from_secret(None) is None


@pytest.mark.parametrize(
    ("value", "text"),
    [(" u1 ", "u1"), (7, "7"), (7.0, "7"), (7.5, None), (True, None), (None, None), ("  ", None)],
)
def test_canonical_user_text(value: object, text: str | None) -> None:
    assert canonical_user_text(value) == text
