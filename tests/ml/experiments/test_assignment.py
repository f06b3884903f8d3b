from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from scipy.stats import chi2_contingency

from ml.experiments.assignment import ExperimentDesign, Variant, bucket, parse_variant

USERS = [f"user-{number}" for number in range(40_000)]


def design(name: str = "rank-test", *shares: float) -> ExperimentDesign:
    shares = shares or (0.5, 0.5)
    variants = tuple(
        Variant(name=chr(ord("A") + place), share=share, model="champion")
        for place, share in enumerate(shares)
    )
    return ExperimentDesign(name, variants)


def test_bucket_is_the_first_eight_bytes_of_sha256_of_name_newline_user() -> None:
    # Worked by hand: sha256(b"rank-test\nalice") starts 0x559f...; / 2**64 = 0.334472...
    digest = hashlib.sha256(b"rank-test\nalice").digest()
    assert bucket("rank-test", "alice") == int.from_bytes(digest[:8], "big") / 2**64
    assert bucket("rank-test", "alice") == pytest.approx(0.334472, abs=1e-6)
    assert bucket("rank-test", "7") == pytest.approx(0.001596, abs=1e-6)
    assert bucket("rank-test", "1") == pytest.approx(0.969171, abs=1e-6)


def test_known_users_land_in_known_variants() -> None:
    fifty_fifty = design()
    assert fifty_fifty.assign("alice") == "A"  # 0.334 < 0.5
    assert fifty_fifty.assign("7") == "A"  # 0.0016
    assert fifty_fifty.assign("1") == "B"  # 0.969
    assert fifty_fifty.assign("007") == "B"  # ids are text: "007" is not "7"
    # Shares of 0.3 / 0.3 leave users above 0.6 out of the experiment.
    assert design("rank-test", 0.3, 0.3).assign("1") is None
    assert design("rank-test", 0.3, 0.3).assign("alice") == "B"  # 0.3 <= 0.334 < 0.6


@pytest.mark.parametrize("shares", [(0.5, 0.5), (0.9, 0.1), (0.2, 0.3, 0.5), (0.1, 0.1)])
def test_shares_are_respected_over_many_users(shares: tuple[float, ...]) -> None:
    experiment = design("share-test", *shares)
    counts = Counter(experiment.assign(user) for user in USERS)
    for variant in experiment.variants:
        observed = counts[variant.name] / len(USERS)
        # Four binomial standard errors: a correct hash fails this about once in 15,000 runs.
        tolerance = 4 * np.sqrt(variant.share * (1 - variant.share) / len(USERS))
        assert abs(observed - variant.share) < tolerance, (variant.name, observed)
    assert counts[None] / len(USERS) == pytest.approx(1 - sum(shares), abs=0.01)


def test_assignment_is_stable_across_calls_and_processes() -> None:
    experiment = design()
    users = USERS[:200]
    here = [experiment.assign(user) for user in users]
    assert here == [experiment.assign(user) for user in users]
    script = (
        "from ml.experiments.assignment import ExperimentDesign, Variant\n"
        "d = ExperimentDesign('rank-test', (Variant('A', 0.5, 'champion'), "
        "Variant('B', 0.5, 'champion')))\n"
        f"print(','.join(str(d.assign(u)) for u in {users!r}))"
    )
    # Another interpreter with another string-hash salt must agree.
    environment = {**os.environ, "PYTHONHASHSEED": "12345"}
    other = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=environment
    )
    assert other.stdout.strip().split(",") == [str(variant) for variant in here]


def test_experiments_are_independent() -> None:
    first = [design("first").assign(user) for user in USERS]
    second = [design("second").assign(user) for user in USERS]
    assert first != second
    table = Counter(zip(first, second, strict=True))
    counts = [[table[("A", "A")], table[("A", "B")]], [table[("B", "A")], table[("B", "B")]]]
    # Being in B of one experiment says nothing about the other: no association.
    assert chi2_contingency(counts).pvalue > 0.001
    # Half of each variant of the first lands in each variant of the second.
    in_first_a = table[("A", "A")] + table[("A", "B")]
    assert table[("A", "B")] / in_first_a == pytest.approx(0.5, abs=0.03)


def test_variant_specs_parse_with_and_without_a_model() -> None:
    assert parse_variant("champion=0.5") == Variant("champion", 0.5, "champion")
    assert parse_variant("challenger:7=0.25") == Variant("challenger", 0.25, "7")
    assert parse_variant("B:previous-champion=.1") == Variant("B", 0.1, "previous-champion")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("champion", "NAME\\[:MODEL\\]=SHARE"),
        ("champion=half", "not a number"),
        ("champion=0", "must lie in"),
        ("champion=1.5", "must lie in"),
        ("bad name=0.5", "variant name"),
        ("B:=0.5", "nothing after"),
    ],
)
def test_bad_variant_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_variant(spec)


def test_bad_designs_say_what_is_wrong() -> None:
    one = (Variant("A", 0.5, "champion"),)
    with pytest.raises(ValueError, match="at least two variants"):
        ExperimentDesign("x", one)
    with pytest.raises(ValueError, match="add up to 1.2, over 1"):
        design("x", 0.6, 0.6)
    with pytest.raises(ValueError, match="repeat"):
        ExperimentDesign("x", (Variant("A", 0.5, "1"), Variant("A", 0.5, "2")))
    with pytest.raises(ValueError, match="experiment name"):
        design("ends-with-newline\n")
    with pytest.raises(ValueError, match="has no variant 'C' \\(it has: A, B\\)"):
        design().variant("C")
