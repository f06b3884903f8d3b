"""The text an item is embedded from: a configurable template over its catalog fields."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping

import pandas as pd

from ml.constants import ATTRIBUTES, CATEGORIES, CATEGORY_SEPARATOR, DESCRIPTION, ITEM_ID, TITLE

DEFAULT_TEXT_TEMPLATE = "{title}. Categories: {categories}. {description} {attributes}"
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_SPACES = re.compile(r"\s+")
_EMPTY_LABELS = re.compile(r"(?:^|(?<=\.\s))[A-Z][a-z]+:\s*\.(?:\s|$)")


def _attribute_text(raw: object) -> str:
    if not isinstance(raw, str) or not raw.strip():
        return ""
    try:
        parsed = json.loads(raw)
    except ValueError:
        return ""
    if not isinstance(parsed, Mapping):
        return ""
    parts = [f"{name}: {value}" for name, value in parsed.items() if value not in (None, "")]
    return ". ".join(parts)


def item_text(fields: Mapping[str, object], template: str = DEFAULT_TEXT_TEMPLATE) -> str:
    """Fill ``template`` with an item's fields; missing fields become empty and spaces collapse."""
    values: dict[str, str] = {}
    for name in _PLACEHOLDER.findall(template):
        raw = fields.get(name)
        if name == ATTRIBUTES:
            values[name] = _attribute_text(raw)
        elif raw is None or (isinstance(raw, float) and pd.isna(raw)):
            values[name] = ""
        elif name == CATEGORIES:
            values[name] = ", ".join(
                part.strip() for part in str(raw).split(CATEGORY_SEPARATOR) if part.strip()
            )
        else:
            values[name] = str(raw)
    text = template.format(**values)
    text = _EMPTY_LABELS.sub("", text)
    return _SPACES.sub(" ", text).strip()


def item_texts(items: pd.DataFrame, template: str = DEFAULT_TEXT_TEMPLATE) -> pd.Series:
    """One text per item row, indexed by item_id."""
    columns = [column for column in (TITLE, CATEGORIES, DESCRIPTION, ATTRIBUTES) if column in items]
    records = items[columns].to_dict("records")
    texts = [item_text(record, template) for record in records]
    return pd.Series(texts, index=items[ITEM_ID].astype(str).to_numpy(), name="text")


def content_hash(text: str, model_name: str) -> str:
    """Identifies an embedding: the same text under the same model never needs embedding again."""
    return hashlib.sha256(f"{model_name}\x1f{text}".encode()).hexdigest()
