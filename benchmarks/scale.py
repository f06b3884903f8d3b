"""Scale: a synthetic log of 1 or 10 million events through ingest, the full build and a refresh.

For each --events size, a seeded synthetic log (benchmarks/synthetic.py; users = events / 10,
items = events / 100 capped at 100,000; generated, or reused from --data) goes through what a
person runs, each command a process of its own in a fresh FRESHRANK_HOME with default settings:

1. the floor: DuckDB alone reading the same events file into a table (ingest_throughput.py's);
2. `freshrank ingest` of the catalog and the events;
3. `freshrank build` (dbt, checks, embeddings, backtests, registry, publish), with its stages;
4. a refresh: 1,000 new events (deployment.write_batch: 80% known users, 20% new) as a file,
   `freshrank ingest` then `freshrank refresh`, cold (new processes);
5. the warm path (--warm N, 3 by default): N such batches landed one after another while one
   `freshrank refresh --watch` runs, each timed from landing until its new users have lists;
   the cold refresh above is its baseline (ratio cold / warm).

--reuse skips 1-3 and refreshes the deployment an earlier run kept in --keep.

Each row gives seconds, rows/s where rows flow, and peak resident memory twice: the largest
single process's (the kernel's accounting of the finished child) and all the command's processes
together, worker processes included (sampled from /proc every half second). The build's stage
table follows, with each stage's seconds and peak memory as `freshrank build` printed them.

    .venv/bin/python benchmarks/scale.py [--events 1000000 10000000] [--data DIR] [--keep DIR]
        [--warm 3] [--reuse]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import deployment  # noqa: E402
from benchmarks.common import print_table  # noqa: E402
from benchmarks.deployment import FRESHRANK, CommandFailed, CommandRun, environment  # noqa: E402
from benchmarks.ingest_throughput import measure  # noqa: E402
from benchmarks.synthetic import SyntheticConfig, existing, generate  # noqa: E402

REFRESH_EVENTS = 1_000
# The watcher loads the serving state before the first batch lands (half a gigabyte at ten
# million events).
WATCH_WARM_UP_SECONDS = 60.0


@dataclass
class Measured:
    """A finished command: wall seconds (start-up included), peak resident MB of its largest
    process, peak resident MB of all its processes together (workers included), its output."""

    run: CommandRun
    peak_mb: float
    tree_peak_mb: float


def _children() -> dict[int, list[int]]:
    """Every live process's children, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # the command name is in parentheses and may hold spaces: split after the last ")"
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def tree_rss_mb(root: int) -> float:
    """Resident MB of ``root`` and all its descendants now (0 for processes that are gone)."""
    children, pending, total = _children(), [root], 0
    page = os.sysconf("SC_PAGE_SIZE")
    while pending:
        pid = pending.pop()
        pending.extend(children.get(pid, []))
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue
    return total / 2**20


class TreeMemory(threading.Thread):
    """Samples a process tree's resident memory every ``interval`` seconds and keeps the
    peak; above ``limit_mb`` it kills the tree's process group (a run that would exhaust the
    machine's memory stops instead of inviting the kernel's OOM killer)."""

    def __init__(self, pid: int, interval: float = 0.5, limit_mb: float | None = None):
        super().__init__(daemon=True)
        self.pid, self.interval, self.limit_mb = pid, interval, limit_mb
        self.peak_mb = 0.0
        self.killed = False
        self.finished = threading.Event()

    def run(self) -> None:
        while not self.finished.wait(self.interval):
            self.peak_mb = max(self.peak_mb, tree_rss_mb(self.pid))
            if self.limit_mb is not None and self.peak_mb > self.limit_mb and not self.killed:
                self.killed = True
                print(f"  memory {self.peak_mb:,.0f} MB > {self.limit_mb:,.0f} MB: stopping")
                os.killpg(self.pid, 9)

    def stop(self) -> float:
        self.finished.set()
        self.join()
        return self.peak_mb


def timed(home: Path, *arguments: object, limit_mb: float | None = None) -> Measured:
    """`freshrank ARGUMENTS` in ``home``, with the child's own peak memory (wait4's rusage) and
    its process tree's (sampled); stopped when the tree passes ``limit_mb``."""
    command = [str(FRESHRANK), *map(str, arguments)]
    print(f"  $ freshrank {' '.join(map(str, arguments))}", flush=True)
    with tempfile.TemporaryFile("w+") as output:
        started = time.perf_counter()
        child = subprocess.Popen(
            command,
            env=environment(home),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so the watchdog can stop it all
        )
        memory = TreeMemory(child.pid, limit_mb=limit_mb)
        memory.start()
        _, status, usage = os.wait4(child.pid, 0)
        tree_peak = memory.stop()
        seconds = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        output.seek(0)
        text = output.read()
    finished = CommandRun(command, seconds, text)
    if child.returncode != 0:
        raise CommandFailed(f"`{' '.join(command)}` exited {child.returncode}:\n{text[-5000:]}")
    # ru_maxrss is in KiB on Linux
    return Measured(finished, usage.ru_maxrss / 1024, max(tree_peak, usage.ru_maxrss / 1024))


def synthetic_log(events: int, data: Path) -> tuple[Path, Path, str]:
    """(items file, events file, a note): the seeded log of this size, generated or reused."""
    config = SyntheticConfig(
        events=events, users=max(1, events // 10), items=min(100_000, max(1_000, events // 100))
    )
    folder = data / f"{events}-parquet-seed{config.seed}"
    files = existing(config, folder)
    note = f"reused {folder}"
    if files is None:
        started = time.perf_counter()
        files = generate(config, folder)
        note = f"generated {folder} in {time.perf_counter() - started:.0f} s"
    (events_file,) = files.events
    return files.items, events_file, f"{note} ({config.users:,} users, {config.items:,} items)"


def run_size(
    events: int,
    data: Path,
    root: Path,
    limit_mb: float | None = None,
    warm: int = 0,
    reuse: bool = False,
) -> tuple[list[list[str]], list[list[str]]]:
    """The summary rows and the build's stage rows for one log size; ``warm``: batches landed
    on a standing `freshrank refresh --watch` afterwards; ``reuse``: refresh the deployment an
    earlier run kept (--keep) instead of ingesting and building."""
    label = f"{events / 1e6:g}M"
    home = root / f"home-{events}"
    if reuse:
        if not (home / "serving.db").exists():
            raise SystemExit(f"--reuse: no built deployment in {home}")
        print(f"\n{events:,} events: reusing the deployment in {home}", flush=True)
        rows, stages = [], []
    else:
        rows, stages = _ingest_and_build(events, data, home, label, limit_mb)
    rng = np.random.default_rng(7)
    batch = deployment.write_batch(home, home / "refresh-events.csv", REFRESH_EVENTS, rng)
    refresh_ingest = timed(home, "ingest", "--events", batch.path, limit_mb=limit_mb)
    refresh = timed(home, "refresh", limit_mb=limit_mb)
    rows += [
        [
            f"{label} refresh: ingest {REFRESH_EVENTS:,} events",
            f"{refresh_ingest.run.seconds:.1f}",
            "",
            f"{refresh_ingest.peak_mb:,.0f}",
            f"{refresh_ingest.tree_peak_mb:,.0f}",
        ],
        [
            f"{label} refresh: freshrank refresh ({batch.users} users)",
            f"{refresh.run.seconds:.1f}",
            "",
            f"{refresh.peak_mb:,.0f}",
            f"{refresh.tree_peak_mb:,.0f}",
        ],
    ]
    stages += _stage_rows(f"{label} refresh:", refresh.run)
    if warm:
        print(f"  the warm path: {warm} batches on `freshrank refresh --watch` ...", flush=True)
        watched = deployment.watched_refreshes(
            home, [REFRESH_EVENTS], warm, rng, warm_up=WATCH_WARM_UP_SECONDS
        )
        seconds = [run.seconds for run in watched[REFRESH_EVENTS]]
        cold = refresh_ingest.run.seconds + refresh.run.seconds
        rows += [
            [
                f"{label} refresh: warm path, {REFRESH_EVENTS:,} events landed -> published "
                f"(median of {warm}; {min(seconds):.1f}-{max(seconds):.1f} s)",
                f"{statistics.median(seconds):.1f}",
                "",
                "",
                "",
            ],
            [
                f"{label} refresh: cold (ingest + refresh) / warm",
                f"{cold / statistics.median(seconds):.2f}x",
                "",
                "",
                "",
            ],
        ]
    return rows, stages


def _ingest_and_build(
    events: int, data: Path, home: Path, label: str, limit_mb: float | None
) -> tuple[list[list[str]], list[list[str]]]:
    """The floor, `freshrank ingest` and `freshrank build` of the log in a fresh ``home``."""
    items_file, events_file, note = synthetic_log(events, data)
    print(f"\n{events:,} events: {note}", flush=True)
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    print("  floor: DuckDB alone reads the events file into a table ...", flush=True)
    ours, floor = measure(events_file, repeats=1)
    files = ("--items", items_file, "--events", events_file)
    ingest = timed(home, "ingest", *files, limit_mb=limit_mb)
    build = timed(home, "build", limit_mb=limit_mb)
    rows = [
        [
            f"{label} floor: DuckDB reads the events",
            f"{floor['seconds']:.1f}",
            f"{events / floor['seconds']:,.0f}",
            f"{floor['peak_rss_mb']:,.0f}",
            "",
        ],
        [
            f"{label} ingest's own work (start-up excluded)",
            f"{ours['seconds']:.1f}",
            f"{events / ours['seconds']:,.0f}",
            f"{ours['peak_rss_mb']:,.0f}",
            "",
        ],
        [
            f"{label} freshrank ingest",
            f"{ingest.run.seconds:.1f}",
            f"{events / ingest.run.seconds:,.0f}",
            f"{ingest.peak_mb:,.0f}",
            f"{ingest.tree_peak_mb:,.0f}",
        ],
        [
            f"{label} freshrank build",
            f"{build.run.seconds:.1f}",
            "",
            f"{build.peak_mb:,.0f}",
            f"{build.tree_peak_mb:,.0f}",
        ],
        [
            f"{label} ingest's own work / floor",
            f"{ours['seconds'] / floor['seconds']:.2f}x",
            "",
            f"{ours['peak_rss_mb'] / floor['peak_rss_mb']:.2f}x",
            "",
        ],
    ]
    return rows, _stage_rows(label, build.run)


def _stage_rows(label: str, command: CommandRun) -> list[list[str]]:
    return [
        [f"{label} {step}", status, f"{seconds:.1f}", "?" if peak is None else f"{peak:,.0f}"]
        for step, status, seconds, peak in command.stage_rows()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--data", type=Path, help="keep (and reuse) the synthetic logs here")
    parser.add_argument("--keep", type=Path, help="build under this folder and keep it")
    parser.add_argument(
        "--memory-limit-mb",
        type=float,
        help="stop a command whose processes together pass this much resident memory",
    )
    parser.add_argument(
        "--warm",
        type=int,
        default=3,
        help="1,000-event batches landed on a standing `freshrank refresh --watch` (0: none)",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="refresh the deployments an earlier run kept in --keep, without ingest or build",
    )
    arguments = parser.parse_args()
    if arguments.reuse and arguments.keep is None:
        parser.error("--reuse needs --keep: the folder an earlier run kept")
    data = arguments.data or Path(tempfile.mkdtemp(prefix="freshrank-scale-data-"))
    root = arguments.keep or Path(tempfile.mkdtemp(prefix="freshrank-scale-"))
    load = os.getloadavg()[0]
    summary = [["step", "seconds", "rows/s", "peak MB (largest process)", "peak MB (all)"]]
    stages = [["build stage", "status", "seconds", "peak MB"]]
    try:
        for events in arguments.events:
            rows, stage_rows = run_size(
                events,
                data,
                root,
                arguments.memory_limit_mb,
                warm=arguments.warm,
                reuse=arguments.reuse,
            )
            summary += rows
            stages += stage_rows
    finally:
        if arguments.keep is None:
            shutil.rmtree(root, ignore_errors=True)
        if arguments.data is None:
            shutil.rmtree(data, ignore_errors=True)
    print()
    print_table(summary)
    print()
    print_table(stages)
    print(
        f"\nload average {load:.2f} before, {os.getloadavg()[0]:.2f} after "
        f"({os.cpu_count()} CPUs); this process's children peaked at "
        f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:,.0f} MB"
    )


if __name__ == "__main__":
    main()
