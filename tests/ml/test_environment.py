"""environment_restored: what a block sets or unsets comes back as it was."""

from __future__ import annotations

import os

import pytest

from ml.environment import environment_restored


def test_set_and_unset_variables_come_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRESHRANK_TEST_KEPT", "before")
    monkeypatch.delenv("FRESHRANK_TEST_ABSENT", raising=False)

    with environment_restored(["FRESHRANK_TEST_KEPT", "FRESHRANK_TEST_ABSENT"]):
        os.environ["FRESHRANK_TEST_KEPT"] = "during"
        os.environ["FRESHRANK_TEST_ABSENT"] = "during"
        assert os.environ["FRESHRANK_TEST_ABSENT"] == "during"

    assert os.environ["FRESHRANK_TEST_KEPT"] == "before"
    assert "FRESHRANK_TEST_ABSENT" not in os.environ


def test_a_failing_block_restores_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRESHRANK_TEST_KEPT", "before")
    with pytest.raises(RuntimeError), environment_restored(["FRESHRANK_TEST_KEPT"]):
        del os.environ["FRESHRANK_TEST_KEPT"]
        raise RuntimeError("the block failed")
    assert os.environ["FRESHRANK_TEST_KEPT"] == "before"
