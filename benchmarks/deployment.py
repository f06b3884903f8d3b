"""A built freshrank deployment for the latency benchmarks, and batches of new events for it.

Shared by refresh_latency.py and api_latency.py (not a benchmark of its own). A deployment is a
FRESHRANK_HOME built the way a person would build it, through the `freshrank` command beside this
Python: `freshrank demo --replay-batches 0` for the full packaged MovieLens sample, or `freshrank
ingest` of a time cut of it and `freshrank build`; then `freshrank promote 1` when no champion
exists, so that refreshes score with the MLflow champion (the production path), and one publish
so that every served list comes from it, as champion_change_sensor would do. The backtests keep
their default cuts, so the champion is the one a default build picks (the learned ranker on the
sample): which pipeline serves decides what a refresh costs. A home that already holds published
lists is reused.

Batches of new events are seeded: 80% from users the deployment knows, 20% from brand-new user
ids (about 5 events each), items drawn from the catalog, event types view/click/rate (rate with
a star value), timestamps after the newest event loaded, 3 seconds apart.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

FRESHRANK = Path(sys.executable).with_name("freshrank")
BENCHMARK_ENVIRONMENT = {
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
# Variables that would point a command away from the deployment's own FRESHRANK_HOME.
LOCATION_VARIABLES = (
    "FRESHRANK_LANDING_DIR",
    "FRESHRANK_WAREHOUSE_PATH",
    "FRESHRANK_SERVING_URL",
    "MLFLOW_TRACKING_URI",
    "FRESHRANK_MLFLOW_ARTIFACTS",
    "DAGSTER_HOME",
)
EXISTING_USER_SHARE = 0.8
EVENTS_PER_NEW_USER = 5
EVENT_TYPES = ("view", "click", "rate")
EVENT_TYPE_SHARES = (0.5, 0.3, 0.2)
RATING_VALUES = np.arange(1, 11) / 2  # 0.5 to 5.0 stars
SECONDS_BETWEEN_EVENTS = 3

PUBLISH_SNIPPET = (
    "from orchestration.app.reporting import report_run; "
    "from orchestration.settings import get_settings; "
    "import sys; sys.exit(0 if report_run('publish_job', get_settings()) else 1)"
)
CHAMPION_SNIPPET = (
    "from ml import tracking; from orchestration.settings import get_settings; "
    "s = get_settings(); "
    "c = tracking.configure(s.mlflow_tracking_uri, s.mlflow_artifact_location); "
    "print('champion=' + (tracking.alias_version(c, tracking.CHAMPION) or ''))"
)
# report_run's summary line and stage table: "refresh_job: run ID succeeded in 7.9 s (peak
# ...)", then "  step_key   STATUS   seconds   peak MB" per step.
JOB_LINE = re.compile(r"^(?P<job>\w+): run \S+ (?P<outcome>succeeded|FAILED) in (?P<s>[\d.]+) s\b")
STAGE_LINE = re.compile(
    r"^  (?P<step>[\w.\[\]-]+)\s+(?P<status>[A-Z_]+)\s+(?P<s>\d+\.\d)(\s+(?P<mb>[\d,]+|\?))?$"
)


class CommandFailed(RuntimeError):
    """A freshrank command exited non-zero; the message carries its whole output."""


@dataclass
class CommandRun:
    """One finished command: what ran, its wall seconds (start-up included) and its output."""

    command: list[str]
    seconds: float
    output: str

    def job_seconds(self) -> float | None:
        """The seconds report_run measured around the job itself (no start-up), if printed."""
        found = [JOB_LINE.match(line) for line in self.output.splitlines()]
        seconds = [float(match["s"]) for match in found if match]
        return sum(seconds) if seconds else None

    def stages(self) -> list[tuple[str, str, float]]:
        """(step, status, seconds) of every stage table in the output."""
        return [(step, status, seconds) for step, status, seconds, _ in self.stage_rows()]

    def stage_rows(self) -> list[tuple[str, str, float, float | None]]:
        """(step, status, seconds, peak resident MB or None) of every stage table."""
        rows = []
        for line in self.output.splitlines():
            match = STAGE_LINE.match(line)
            if match:
                peak = match["mb"]
                megabytes = float(peak.replace(",", "")) if peak and peak != "?" else None
                rows.append((match["step"], match["status"], float(match["s"]), megabytes))
        return rows


def environment(home: Path) -> dict[str, str]:
    """This process's environment, pointed at ``home`` with the benchmark's training limits."""
    variables = {
        name: value for name, value in os.environ.items() if name not in LOCATION_VARIABLES
    }
    variables.update(BENCHMARK_ENVIRONMENT)
    variables["FRESHRANK_HOME"] = str(home)
    return variables


def run(
    home: Path, command: Sequence[str], check: bool = True, code: Path | None = None
) -> CommandRun:
    """Run ``command`` on the deployment in ``home`` and time it from start to exit; ``code``:
    a checkout whose freshrank to run instead of the installed one (its folder is the working
    directory and first on PYTHONPATH, so `python -m orchestration.app.launcher` imports from
    it)."""
    command = [str(part) for part in command]
    variables = environment(home)
    if code is not None:
        variables["PYTHONPATH"] = str(code)
    started = time.perf_counter()
    completed = subprocess.run(
        command,
        cwd=code,
        env=variables,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    finished = CommandRun(command, time.perf_counter() - started, completed.stdout)
    if check and completed.returncode != 0:
        raise CommandFailed(
            f"`{' '.join(command)}` exited {completed.returncode} "
            f"(FRESHRANK_HOME={home}); its output:\n{completed.stdout}"
        )
    return finished


def freshrank(home: Path, *arguments: object, check: bool = True) -> CommandRun:
    """`freshrank ARGUMENTS` as a subprocess on the deployment in ``home``."""
    return run(home, [FRESHRANK, *map(str, arguments)], check=check)


def publish_everyone(home: Path) -> CommandRun:
    """The stale-batch path's publish: publish_job, rescoring every user (no CLI of its own)."""
    return run(home, [sys.executable, "-c", PUBLISH_SNIPPET])


def champion_version(home: Path) -> str | None:
    """The model version the `champion` alias points at, or None."""
    output = run(home, [sys.executable, "-c", CHAMPION_SNIPPET]).output
    found = [line for line in output.splitlines() if line.startswith("champion=")]
    return found[-1].removeprefix("champion=").strip() or None if found else None


def published_users(home: Path) -> list[str]:
    """Users with a list of their own in the serving store (empty when nothing is published)."""
    database = home / "serving.db"
    if not database.exists():
        return []
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
        try:
            rows = connection.execute("select distinct user_id from recommendations").fetchall()
        except sqlite3.OperationalError:  # the store exists but has no table yet
            return []
    return sorted(user_id for (user_id,) in rows)


def users_with_lists(home: Path, user_ids: Sequence[str]) -> set[str]:
    """Which of ``user_ids`` have a list in the served version: a lookup per user, however many
    lists the store holds (published_users reads them all)."""
    database = home / "serving.db"
    if not database.exists() or not user_ids:
        return set()
    marks = ", ".join("?" * len(user_ids))
    query = (
        "select distinct user_id from recommendations where version = (select version from "
        f"serving_versions where table_name = 'recommendations') and user_id in ({marks})"
    )
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
        try:
            return {row[0] for row in connection.execute(query, list(user_ids)).fetchall()}
        except sqlite3.OperationalError:  # no table yet
            return set()


@dataclass
class Watched:
    """One batch dropped into the landing zone while a warm `freshrank refresh --watch` runs."""

    batch: Batch
    seconds: float  # file in the landing zone -> its new users' lists published


def watched_refreshes(
    home: Path,
    sizes: Sequence[int],
    repeats: int,
    rng: np.random.Generator,
    warm_up: float = 20.0,
    timeout: float = 300.0,
) -> dict[int, list[Watched]]:
    """The warm path: one long-running `freshrank refresh --watch`, batches landed as files (as
    `POST /events` lands them), timed until the batch's brand-new users have lists. ``warm_up``:
    seconds the watcher gets to load before the first batch lands."""
    watcher = subprocess.Popen(
        [FRESHRANK, "refresh", "--watch", "--interval", "0.2"],
        env=environment(home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    results: dict[int, list[Watched]] = {size: [] for size in sizes}
    try:
        time.sleep(warm_up)  # imports and the serving state loaded before the first batch
        landing = home / "landing" / "events"
        landing.mkdir(parents=True, exist_ok=True)
        for repeat in range(1, repeats + 1):
            for size in sizes:
                name = f"watch{repeat}-{size}.csv"
                batch = write_batch(home, home / "benchmark-batches" / name, size, rng)
                staged = landing / f".{name}"
                shutil.copyfile(batch.path, staged)
                started = time.perf_counter()
                os.replace(staged, landing / name)  # lands whole, as the API writes batches
                while not users_with_lists(home, batch.new_user_ids):
                    if watcher.poll() is not None:
                        raise CommandFailed(f"the watcher exited with {watcher.returncode}")
                    if time.perf_counter() - started > timeout:
                        raise CommandFailed(f"{name} was not published in time")
                    time.sleep(0.05)
                results[size].append(Watched(batch, time.perf_counter() - started))
                seconds = results[size][-1].seconds
                say(
                    f"  watch run {repeat}: {size:,} events published {seconds:.1f} s after landing"
                )
                time.sleep(1.0)  # let the watcher finish the run's bookkeeping
    finally:
        watcher.terminate()  # our own child, by its PID
        watcher.wait(timeout=60)
    return results


def say(message: str) -> None:
    print(message, flush=True)


def prepare(home: Path, history_share: float = 1.0) -> Path:
    """Build the deployment in ``home`` unless it already publishes lists; returns ``home``.

    ``history_share`` 1.0 runs the demo on the whole sample; below 1.0, the oldest share of the
    sample's events (and the whole catalog) is ingested, then built.
    """
    home.mkdir(parents=True, exist_ok=True)
    if published_users(home):
        say(f"  reusing the built deployment in {home}")
    elif history_share >= 1.0:
        say(f"  building the full sample in {home}: freshrank demo --replay-batches 0 ...")
        demo = freshrank(home, "demo", "--replay-batches", "0")
        say(f"  demo took {demo.seconds:.0f} s")
    else:
        from ml.datasets import movielens_sample

        items, events = movielens_sample()  # sorted by timestamp
        cut = events.head(math.ceil(len(events) * history_share))
        inputs = home / "inputs"
        inputs.mkdir(parents=True, exist_ok=True)
        items.to_csv(inputs / "items.csv", index=False)
        cut.to_csv(inputs / "events.csv", index=False)
        say(
            f"  building the oldest {history_share:.0%} of the sample ({len(cut)} events) in "
            f"{home}: freshrank ingest, freshrank build ..."
        )
        ingest = freshrank(
            home, "ingest", "--events", inputs / "events.csv", "--items", inputs / "items.csv"
        )
        build = freshrank(home, "build")
        say(f"  ingest took {ingest.seconds:.0f} s, build {build.seconds:.0f} s")
    if champion_version(home) is None:
        promoted = freshrank(home, "promote", "1")
        say(f"  {promoted.output.strip().splitlines()[-1]}")
        published = publish_everyone(home)
        say(f"  published every user's list with the champion in {published.seconds:.1f} s")
    return home


@dataclass
class Batch:
    """A written batch file and the deployment it was drawn for."""

    path: Path
    events: int
    new_user_ids: list[str]
    users: int
    history_events: int  # events loaded in the deployment before this batch

    @property
    def new_users(self) -> int:
        return len(self.new_user_ids)


def write_batch(home: Path, path: Path, size: int, rng: np.random.Generator) -> Batch:
    """Write ``size`` new events for the deployment in ``home`` as a contract CSV at ``path``."""
    from orchestration.warehouse.guard import open_warehouse

    with open_warehouse(home / "warehouse.duckdb", read_only=True) as connection:
        users_query = "select distinct user_id from raw.events"
        known = [row[0] for row in connection.execute(users_query).fetchall()]
        items = [row[0] for row in connection.execute("select item_id from marts.items").fetchall()]
        newest, history = connection.execute(
            "select max(occurred_at), count(*) from raw.events"
        ).fetchone()
    known.sort()
    items.sort()
    from_known = round(size * EXISTING_USER_SHARE)
    new_count = size - from_known
    stamp = int(pd.Timestamp(newest).timestamp())
    new_ids = [
        f"bench-{stamp}-{number:05d}"
        for number in range(math.ceil(new_count / EVENTS_PER_NEW_USER))
    ]
    users = np.concatenate(
        [
            rng.choice(np.array(known, dtype=object), size=from_known),
            # the new users in turn, so each gets EVENTS_PER_NEW_USER events (the last fewer)
            np.resize(np.array(new_ids, dtype=object), new_count),
        ]
    )
    rng.shuffle(users)
    kinds = rng.choice(np.array(EVENT_TYPES, dtype=object), size=size, p=EVENT_TYPE_SHARES)
    values = np.where(kinds == "rate", rng.choice(RATING_VALUES, size=size), np.nan)
    frame = pd.DataFrame(
        {
            "user_id": users,
            "item_id": rng.choice(np.array(items, dtype=object), size=size),
            "event_type": kinds,
            "timestamp": stamp + SECONDS_BETWEEN_EVENTS * np.arange(1, size + 1),
            "value": values,
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return Batch(path, size, new_ids, int(frame["user_id"].nunique()), int(history))
