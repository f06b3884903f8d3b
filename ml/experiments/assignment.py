"""Which variant of an experiment a user sees: a stable hash of (experiment name, user id).

The hash is SHA-256, not Python's `hash` (salted per process), so every process, every restart
and every machine puts a user in the same variant. Hashing the experiment name with the user id
makes experiments independent: being in variant B of one says nothing about the next one.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from itertools import accumulate

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
VARIANT_SPEC_EXAMPLE = "champion=0.5 or challenger:7=0.5"
_SHARE_TOLERANCE = 1e-9
_BUCKET_BITS = 64


@dataclass(frozen=True)
class Variant:
    """One arm: a name, its share of users, and the registered model version it serves.

    ``model`` is what a person asked for: a version number or an alias of the registered model
    (champion, challenger). ``version`` is what it resolved to when the experiment started.
    """

    name: str
    share: float
    model: str
    version: str | None = None

    def __post_init__(self) -> None:
        _require_name(self.name, "variant name")
        if not self.model.strip():
            raise ValueError(f"variant {self.name!r}: the model (version or alias) is empty")
        if not (math.isfinite(self.share) and 0 < self.share <= 1):
            raise ValueError(
                f"variant {self.name!r}: share {self.share!r} must lie in (0, 1], e.g. 0.5"
            )


@dataclass(frozen=True)
class ExperimentDesign:
    """An experiment's name and its variants; the first variant is the control.

    Shares add up to at most 1; users beyond the total are not enrolled (they get what everyone
    gets, and nothing is logged for them).
    """

    name: str
    variants: tuple[Variant, ...]

    def __post_init__(self) -> None:
        _require_name(self.name, "experiment name")
        if len(self.variants) < 2:
            raise ValueError(
                f"experiment {self.name!r} needs at least two variants, got {len(self.variants)}"
            )
        names = [variant.name for variant in self.variants]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"experiment {self.name!r}: variant names repeat: {repeated}")
        total = math.fsum(variant.share for variant in self.variants)
        if total > 1 + _SHARE_TOLERANCE:
            raise ValueError(
                f"experiment {self.name!r}: the variants' shares add up to {total:g}, over 1"
            )

    @property
    def control(self) -> Variant:
        return self.variants[0]

    @property
    def enrolled_share(self) -> float:
        return math.fsum(variant.share for variant in self.variants)

    def variant(self, name: str) -> Variant:
        """The variant called ``name``; a ValueError naming the variants there are otherwise."""
        for variant in self.variants:
            if variant.name == name:
                return variant
        known = ", ".join(variant.name for variant in self.variants)
        raise ValueError(f"experiment {self.name!r} has no variant {name!r} (it has: {known})")

    def assign(self, user_id: str) -> str | None:
        """The name of the user's variant, or None when the user is not enrolled."""
        position = bucket(self.name, user_id)
        bounds = list(accumulate(variant.share for variant in self.variants))
        if abs(bounds[-1] - 1) <= _SHARE_TOLERANCE:
            bounds[-1] = 1.0  # shares that add up to 1 enrol everyone, rounding aside
        for variant, bound in zip(self.variants, bounds, strict=True):
            if position < bound:
                return variant.name
        return None


def bucket(experiment: str, user_id: str) -> float:
    """A user's place in [0, 1) for one experiment: uniform, and the same in every process."""
    # Experiment names cannot hold a newline, so (experiment, user) pairs never collide as text.
    digest = hashlib.sha256(f"{experiment}\n{user_id}".encode()).digest()
    return int.from_bytes(digest[: _BUCKET_BITS // 8], "big") / 2**_BUCKET_BITS


def parse_variant(spec: str) -> Variant:
    """A variant from ``NAME[:MODEL]=SHARE``; MODEL (a version or an alias) defaults to NAME.

    ``champion=0.5`` serves whatever version the champion alias names when the experiment
    starts; ``challenger:7=0.5`` serves version 7 under the name challenger.
    """
    head, separator, share_text = spec.rpartition("=")
    if not separator or not head:
        raise ValueError(f"variant {spec!r} is not NAME[:MODEL]=SHARE, e.g. {VARIANT_SPEC_EXAMPLE}")
    name, colon, model = head.partition(":")
    if colon and not model.strip():
        raise ValueError(f"variant {spec!r}: nothing after ':' (give a version or an alias)")
    try:
        share = float(share_text)
    except ValueError:
        raise ValueError(
            f"variant {spec!r}: share {share_text!r} is not a number, e.g. {VARIANT_SPEC_EXAMPLE}"
        ) from None
    return Variant(name=name.strip(), share=share, model=(model or name).strip())


def _require_name(name: str, what: str) -> None:
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"{what} {name!r} must be 1-100 letters, digits, '_', '.' or '-', starting with a "
            "letter or digit"
        )
