"""The privacy and key commands through the `freshrank` CLI."""

from __future__ import annotations

import json
from datetime import datetime

import duckdb
import pandas as pd
import pytest
from click.testing import CliRunner

from orchestration.app.cli import main
from orchestration.ingest.landing import land_file, load_pending
from orchestration.serving.store import ServingStore
from orchestration.settings import Settings
from tests.orchestration.privacy.stores import EVENTS, KEY, NOW


def run(*arguments: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(arguments))
    return result.exit_code, result.output


def test_api_key_create_list_revoke(settings: Settings) -> None:
    code, output = run("api-key", "create", "--name", "checkout", "--scope", "read")
    assert code == 0, output
    key = output.strip().splitlines()[-1]
    key_id = key.split("_")[1]
    code, output = run("api-key", "list")
    assert code == 0 and key_id in output and "checkout" in output and "active" in output
    assert key.split("_", 2)[2] not in output  # the secret is shown once only
    assert run("api-key", "revoke", key_id)[0] == 0
    assert "revoked" in run("api-key", "list")[1]
    code, output = run("api-key", "revoke", key_id)
    assert code == 1 and "no active key" in output
    assert run("api-key", "create", "--name", "x", "--scope", "admin")[0] == 2


def test_forget_and_retention_commands(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    source = settings.home / "events.csv"
    source.write_text(EVENTS, encoding="utf-8")
    land_file(source, "events", settings)
    load_pending("events", settings, "b1", now=NOW)

    code, output = run("forget", "alice", "--json")
    assert code == 0, output
    report = json.loads(output)
    assert report["warehouse_rows"]["raw.events"] == 2 and "alice" not in output
    assert run("forget", " ")[0] == 2

    code, output = run("retention")
    assert code == 1 and "FRESHRANK_RETENTION_DAYS" in output
    monkeypatch.setenv("FRESHRANK_RETENTION_DAYS", "30")
    code, output = run("retention", "--json")
    assert code == 0 and json.loads(output)["warehouse_rows"]["raw.events"] == 3
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM raw.events").fetchone() == (0,)


def test_recommend_hashes_the_id(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRESHRANK_PSEUDONYMISE_KEY", KEY)
    pseudonymiser = Settings.from_env().pseudonymiser
    assert pseudonymiser is not None
    store = ServingStore(settings.serving_url)
    lists = pd.DataFrame(
        {
            "user_id": [pseudonymiser.pseudonym("u1")],
            "rank": [1],
            "item_id": ["i9"],
            "score": [1.0],
            "reason": ["popular now"],
            "model_version": ["1"],
            "generated_at": [datetime(2026, 1, 1)],
        }
    )
    store.publish(lists)
    store.dispose()
    code, output = run("recommend", "u1", "--json")
    assert code == 0 and json.loads(output)["items"][0]["item_id"] == "i9"
