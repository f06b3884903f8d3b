"""Process environment variables that a block may change only for its own length."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager


@contextmanager
def environment_restored(names: Iterable[str]) -> Iterator[None]:
    """The block may set or unset the variables ``names``; afterwards each is as it was (set
    to its old value, or unset)."""
    saved = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
