"""Landed-to-published latency of a refresh, against republishing every user, on MovieLens.

On a deployment built from the whole packaged MovieLens sample (100,004 events, 9,066 items; see
deployment.py for how it is built and how batches are drawn), batches of new events (100, 1,000
and 10,000 by default) are written as CSV files and timed as a person or a scheduler would run
them: `freshrank ingest --events batch.csv`, then `freshrank refresh`, each a subprocess, so
command start-up is included. Each size runs several times (3 by default), each time with new
events, so the history grows a little from run to run (printed). The stage table that
`freshrank refresh` prints (step, status, seconds) says which stage dominates; the rest of the
refresh command's wall time is start-up and exit.

The baseline, in the same run, is the stale-batch path's publish: publish_job, which rescores
and republishes every user (the publish part of `freshrank build`, started the same way, as a
subprocess). The ratio is publish-everyone seconds / landed-to-published seconds (above 1: the
refresh path publishes sooner).

Refresh cost against history size: 1,000-event batches on the full deployment and on one built
from the oldest 25% of the sample's events (and the whole catalog), alternating between the two;
the ratio of their median latencies is printed next to the ratio of their history sizes.

    .venv/bin/python benchmarks/refresh_latency.py [--home DIR] [--cut-home DIR] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from common import print_table
from deployment import (
    Batch,
    CommandFailed,
    CommandRun,
    Watched,
    freshrank,
    prepare,
    publish_everyone,
    published_users,
    say,
    watched_refreshes,
    write_batch,
)

GOAL_SIZE = 1_000
GOAL_SECONDS = 10.0  # cold: `freshrank ingest` + `freshrank refresh` (issue #11)
WARM_GOAL_SECONDS = 3.0  # warm: a standing `freshrank refresh --watch`
STAGES_SHOWN = 8


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        help="the full-sample deployment (built there if it publishes nothing yet; default: a "
        "new temporary folder, removed afterwards)",
    )
    parser.add_argument(
        "--cut-home",
        type=Path,
        default=None,
        help="the deployment on the oldest --history-share of the events (same rules)",
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1_000, 10_000])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each size")
    parser.add_argument("--history-share", type=float, default=0.25)
    parser.add_argument("--history-batch", type=int, default=GOAL_SIZE)
    parser.add_argument("--skip-history", action="store_true", help="no history-size comparison")
    parser.add_argument("--skip-watch", action="store_true", help="no warm --watch path")
    parser.add_argument("--seed", type=int, default=7, help="seed of the batches")
    parser.add_argument("--keep", action="store_true", help="keep temporary deployments")
    return parser.parse_args()


@dataclass
class Landed:
    """One batch from landing to published: its ingest and refresh commands."""

    batch: Batch
    ingest: CommandRun
    refresh: CommandRun
    new_users_served: int

    @property
    def seconds(self) -> float:
        return self.ingest.seconds + self.refresh.seconds

    @property
    def startup_seconds(self) -> float:
        """Refresh command wall time outside the job: interpreter, imports, exit."""
        return self.refresh.seconds - (self.refresh.job_seconds() or 0.0)


@dataclass
class Runs:
    landed: dict[int, list[Landed]] = field(default_factory=lambda: defaultdict(list))
    everyone: list[CommandRun] = field(default_factory=list)
    history: dict[str, list[Landed]] = field(default_factory=lambda: defaultdict(list))


def land_and_refresh(home: Path, size: int, rng: np.random.Generator, name: str) -> Landed:
    batch = write_batch(home, home / "benchmark-batches" / f"{name}.csv", size, rng)
    ingest = freshrank(home, "ingest", "--json", "--events", batch.path)
    for line in ingest.output.splitlines():
        if line.startswith("{"):
            result = json.loads(line)
            if result["status"] != "loaded" or result["rows_loaded"] != size:
                raise CommandFailed(f"{batch.path} did not load whole: {line}")
    refresh = freshrank(home, "refresh")
    served = len(set(batch.new_user_ids) & set(published_users(home)))
    return Landed(batch, ingest, refresh, served)


def print_watched(watched: dict[int, list[Watched]], landed: dict[int, list[Landed]]) -> None:
    print(
        "\nthe warm path: batch files landed while one `freshrank refresh --watch` runs (what "
        "`POST /events` plus a standing refresher gives), seconds until the batch's new users "
        "have lists; against the two cold commands above"
    )
    rows = [("events", "warm median s", "min s", "max s", "cold ingest + refresh s", "cold / warm")]
    for size, runs in watched.items():
        warm = statistics.median(run.seconds for run in runs)
        cold = (
            statistics.median(run.seconds for run in landed[size]) if landed[size] else float("nan")
        )
        rows.append(
            (
                f"{size:,}",
                *spread([run.seconds for run in runs]),
                f"{cold:.2f}",
                f"{cold / warm:.2f}",
            )
        )
    print_table(rows)
    if GOAL_SIZE in watched:
        median = statistics.median(run.seconds for run in watched[GOAL_SIZE])
        verdict = "met" if median <= WARM_GOAL_SECONDS else "NOT met"
        print(
            f"warm path, {GOAL_SIZE:,} events: median {median:.2f} s, goal of at most "
            f"{WARM_GOAL_SECONDS:.0f} s {verdict}"
        )


def spread(seconds: list[float]) -> tuple[str, str, str]:
    return (
        f"{statistics.median(seconds):.2f}",
        f"{min(seconds):.2f}",
        f"{max(seconds):.2f}",
    )


def stage_medians(commands: list[CommandRun]) -> dict[str, float]:
    """Median seconds of each stage over the commands (a stage missing from one counts 0)."""
    collected: dict[str, list[float]] = defaultdict(list)
    for command in commands:
        for step, _status, seconds in command.stages():
            collected[step].append(seconds)
    return {
        step: statistics.median(values + [0.0] * (len(commands) - len(values)))
        for step, values in collected.items()
    }


def between_stages(command: CommandRun) -> float:
    """Job seconds not inside any stage: Dagster's own work between and around steps."""
    return (command.job_seconds() or 0.0) - sum(seconds for _, _, seconds in command.stages())


def print_latency(runs: Runs, sizes: list[int], repeats: int) -> None:
    everyone = [command.seconds for command in runs.everyone]
    everyone_median = statistics.median(everyone)
    print(
        f"\nlanded-to-published: `freshrank ingest --events batch.csv` + `freshrank refresh`, "
        f"subprocesses, start-up included; {repeats} runs per size (median, min, max seconds); "
        "baseline: publish_job rescoring every user, same run"
    )
    rows = [
        (
            "path",
            "events",
            "users (new)",
            "history",
            "ingest s",
            "refresh s",
            "median s",
            "min s",
            "max s",
            "everyone / this",
        )
    ]
    for size in sizes:
        landed = runs.landed[size]
        total = [run.seconds for run in landed]
        rows.append(
            (
                "ingest + refresh",
                f"{size:,}",
                f"{statistics.median(run.batch.users for run in landed):.0f} "
                f"({landed[0].batch.new_users})",
                f"{landed[0].batch.history_events:,}-{landed[-1].batch.history_events:,}",
                f"{statistics.median(run.ingest.seconds for run in landed):.2f}",
                f"{statistics.median(run.refresh.seconds for run in landed):.2f}",
                *spread(total),
                f"{everyone_median / statistics.median(total):.2f}",
            )
        )
    rows.append(("publish everyone (baseline)", "", "all", "", "", "", *spread(everyone), "1.00"))
    print_table(rows)
    served = [
        f"{size:,}: {sum(run.new_users_served for run in runs.landed[size])} of "
        f"{sum(run.batch.new_users for run in runs.landed[size])}"
        for size in sizes
    ]
    print("brand-new users with a list of their own after their refresh: " + "; ".join(served))
    if GOAL_SIZE in runs.landed:
        median = statistics.median(run.seconds for run in runs.landed[GOAL_SIZE])
        verdict = "met" if median <= GOAL_SECONDS else "NOT met"
        print(
            f"goal: median landed-to-published at most {GOAL_SECONDS:.0f} s for {GOAL_SIZE:,} "
            f"events: {verdict} ({median:.2f} s)"
        )


def print_stages(runs: Runs, sizes: list[int]) -> None:
    """Median seconds per stage of the refresh job for each size, and of the baseline."""
    medians = {size: stage_medians([run.refresh for run in runs.landed[size]]) for size in sizes}
    everyone = stage_medians(runs.everyone)
    largest = sizes[-1]
    order = sorted(medians[largest], key=lambda step: -medians[largest][step])
    shown, rest = order[:STAGES_SHOWN], order[STAGES_SHOWN:]
    print(
        "\nwhere the time goes (median seconds; refresh_job's stage table, Dagster step "
        "start to end; baseline: publish_job's)"
    )
    rows = [("stage", *(f"{size:,} events" for size in sizes), "publish everyone")]
    rows.append(
        (
            "`freshrank ingest` command",
            *(f"{statistics.median(r.ingest.seconds for r in runs.landed[s]):.1f}" for s in sizes),
            "",
        )
    )
    rows.append(
        (
            "refresh start-up and exit",
            *(f"{statistics.median(r.startup_seconds for r in runs.landed[s]):.1f}" for s in sizes),
            f"{statistics.median(c.seconds - (c.job_seconds() or 0) for c in runs.everyone):.1f}",
        )
    )
    for step in shown:
        rows.append(
            (
                step,
                *(f"{medians[size].get(step, 0.0):.1f}" for size in sizes),
                f"{everyone[step]:.1f}" if step in everyone else "",
            )
        )
    if rest:
        rows.append(
            (
                f"{len(rest)} other stages",
                *(f"{sum(medians[size].get(step, 0.0) for step in rest):.1f}" for size in sizes),
                "",
            )
        )
    rows.append(
        (
            "Dagster between and around stages",
            *(
                f"{statistics.median(between_stages(r.refresh) for r in runs.landed[s]):.1f}"
                for s in sizes
            ),
            f"{statistics.median(between_stages(c) for c in runs.everyone):.1f}",
        )
    )
    rows.append(
        (
            "refresh command (wall)",
            *(f"{statistics.median(r.refresh.seconds for r in runs.landed[s]):.1f}" for s in sizes),
            f"{statistics.median(c.seconds for c in runs.everyone):.1f}",
        )
    )
    print_table(rows)
    for size in sizes:
        total = statistics.median(run.seconds for run in runs.landed[size])
        parts = {
            "ingest command": statistics.median(run.ingest.seconds for run in runs.landed[size]),
            "refresh start-up and exit": statistics.median(
                run.startup_seconds for run in runs.landed[size]
            ),
            **medians[size],
        }
        top = sorted(parts, key=lambda name: -parts[name])[:2]
        print(
            f"{size:,} events: largest parts {top[0]} {parts[top[0]]:.1f} s "
            f"({parts[top[0]] / total:.0%} of {total:.1f} s), then {top[1]} "
            f"{parts[top[1]]:.1f} s ({parts[top[1]] / total:.0%})"
        )


def print_history(runs: Runs, share: float, size: int, repeats: int) -> None:
    full, cut = runs.history["full"], runs.history["cut"]
    print(
        f"\nrefresh cost against history size: {size:,}-event batches, {repeats} runs on each "
        f"deployment, alternating (seconds: median, min, max)"
    )
    rows = [("deployment", "history events", "median s", "min s", "max s", "refresh job s")]
    for label, landed in ((f"oldest {share:.0%} of the sample", cut), ("full sample", full)):
        rows.append(
            (
                label,
                f"{statistics.median(run.batch.history_events for run in landed):,.0f}",
                *spread([run.seconds for run in landed]),
                f"{statistics.median(run.refresh.job_seconds() or 0 for run in landed):.2f}",
            )
        )
    print_table(rows)
    time_ratio = statistics.median(run.seconds for run in full) / statistics.median(
        run.seconds for run in cut
    )
    job_ratio = statistics.median(run.refresh.job_seconds() or 0 for run in full) / max(
        statistics.median(run.refresh.job_seconds() or 0 for run in cut), 1e-9
    )
    size_ratio = statistics.median(run.batch.history_events for run in full) / statistics.median(
        run.batch.history_events for run in cut
    )
    print(
        f"full / cut: landed-to-published {time_ratio:.2f}, refresh job {job_ratio:.2f}, "
        f"against history size {size_ratio:.2f}"
    )


def main() -> None:
    arguments = parse_arguments()
    rng = np.random.default_rng(arguments.seed)
    temporary: list[Path] = []

    def home_for(given: Path | None, prefix: str) -> Path:
        if given is not None:
            return given.expanduser().resolve()
        folder = Path(tempfile.mkdtemp(prefix=prefix))
        temporary.append(folder)
        return folder

    full_home = home_for(arguments.home, "freshrank-bench-full-")
    try:
        say("refresh latency: preparing deployments")
        prepare(full_home)
        cut_home = None
        if not arguments.skip_history:
            cut_home = home_for(arguments.cut_home, "freshrank-bench-cut-")
            prepare(cut_home, arguments.history_share)

        runs = Runs()
        load_before = os.getloadavg()[0]
        for repeat in range(1, arguments.repeats + 1):
            baseline = publish_everyone(full_home)
            runs.everyone.append(baseline)
            say(f"  run {repeat}: publish everyone {baseline.seconds:.1f} s")
            for size in arguments.sizes:
                landed = land_and_refresh(full_home, size, rng, f"run{repeat}-{size}")
                runs.landed[size].append(landed)
                say(
                    f"  run {repeat}: {size:,} events ({landed.batch.users} users, "
                    f"{landed.batch.new_users} new; history {landed.batch.history_events:,}): "
                    f"ingest {landed.ingest.seconds:.1f} s + refresh {landed.refresh.seconds:.1f} "
                    f"s = {landed.seconds:.1f} s"
                )
        watched = (
            {}
            if arguments.skip_watch
            else watched_refreshes(full_home, arguments.sizes, arguments.repeats, rng)
        )
        if cut_home is not None:
            for repeat in range(1, arguments.repeats + 1):
                order = [("full", full_home), ("cut", cut_home)]
                for label, home in order if repeat % 2 else order[::-1]:
                    landed = land_and_refresh(
                        home, arguments.history_batch, rng, f"history{repeat}-{label}"
                    )
                    runs.history[label].append(landed)
                    say(
                        f"  history run {repeat}: {label} ({landed.batch.history_events:,} "
                        f"events) {landed.seconds:.1f} s"
                    )

        print(
            f"\nrefresh latency: deployment {full_home}, built from the whole packaged MovieLens "
            f"sample; batches seeded {arguments.seed}: 80% existing users, 20% brand-new users, "
            "view/click/rate on catalog items, after the newest event"
        )
        print(
            f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after, "
            f"on {os.cpu_count()} cores"
        )
        print_latency(runs, arguments.sizes, arguments.repeats)
        print_stages(runs, arguments.sizes)
        if watched:
            print_watched(watched, runs.landed)
        if cut_home is not None:
            print_history(runs, arguments.history_share, arguments.history_batch, arguments.repeats)
    finally:
        for folder in temporary:
            if arguments.keep:
                say(f"kept {folder}")
            else:
                shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
