from __future__ import annotations

import pandas as pd

from ml.text import content_hash, item_text, item_texts


def test_template_fills_fields_and_drops_empty_ones() -> None:
    text = item_text(
        {
            "title": "Toy Story",
            "categories": "Adventure|Animation",
            "attributes": '{"year": "1995"}',
        }
    )
    assert text == "Toy Story. Categories: Adventure, Animation. year: 1995"
    assert item_text({"title": "Heat", "description": "A heist."}) == "Heat. A heist."


def test_custom_template() -> None:
    assert item_text({"title": "Heat", "categories": "Crime"}, "{categories} | {title}") == (
        "Crime | Heat"
    )


def test_texts_are_indexed_by_string_ids() -> None:
    items = pd.DataFrame({"item_id": ["007", "7"], "title": ["A", "B"]})
    texts = item_texts(items)
    assert texts.index.tolist() == ["007", "7"]
    assert texts["7"] == "B."


def test_content_hash_depends_on_text_and_model() -> None:
    assert content_hash("a", "m1") == content_hash("a", "m1")
    assert content_hash("a", "m1") != content_hash("a", "m2")
    assert content_hash("a", "m1") != content_hash("b", "m1")
