"""Kept delivery files rewritten by retention and forgetting stay in the form they came in."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from orchestration.privacy.landed_files import rewrite_events_file
from orchestration.privacy.pseudonyms import Pseudonymiser
from tests.orchestration.privacy.stores import EVENTS, JSON_EVENTS, KEY


def _alice(user: str, _moment: str) -> str:
    return f"{user} = 'alice'"


@pytest.mark.parametrize(("name", "text"), [("e.csv.gz", EVENTS), ("e.jsonl.gz", JSON_EVENTS)])
def test_a_gzip_file_stays_gzip_without_the_dropped_rows(
    tmp_path: Path, name: str, text: str
) -> None:
    path = tmp_path / name
    path.write_bytes(gzip.compress(text.encode("utf-8")))
    lines_before = len(text.splitlines())

    rewritten = rewrite_events_file(path, drop=_alice)

    kept = gzip.decompress(path.read_bytes()).decode("utf-8")  # still gzip
    assert "alice" not in kept and "bob" in kept
    assert rewritten.changed and rewritten.rows_after < rewritten.rows_before
    assert len(kept.splitlines()) < lines_before
    assert not [other for other in tmp_path.iterdir() if other != path]  # no partial left


def test_a_pseudonymised_gzip_csv_holds_no_original_id(tmp_path: Path) -> None:
    path = tmp_path / "e.csv.gz"
    path.write_bytes(gzip.compress(EVENTS.encode("utf-8")))

    rewritten = rewrite_events_file(path, pseudonymiser=Pseudonymiser.from_secret(KEY))

    kept = gzip.decompress(path.read_bytes()).decode("utf-8")
    assert rewritten.rows_after == rewritten.rows_before == len(EVENTS.splitlines()) - 1
    assert not {"alice", "bob", "carol"} & set(kept.replace(",", "\n").split())
