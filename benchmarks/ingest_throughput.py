"""Ingest throughput: freshrank's landing against DuckDB alone reading the same file into a table.

The events file of a synthetic log (benchmarks/synthetic.py; generated, or reused from --data)
is ingested twice per format, each time in a fresh Python process of its own so that the peak
resident memory it reports is its own:

- freshrank: the file is landed (a copy, timed apart), then `load_pending` loads it: content
  hash, ledger, DuckDB's reader, every row rule in SQL, the quarantine, one transaction, the
  file's move to the archive. The time starts after the imports (process start-up excluded).
- floor: `CREATE TABLE events AS SELECT * FROM read_parquet(...)` (or `read_csv(...)`, sniffed)
  into a fresh DuckDB file, in the same kind of process: what reading the file costs at all.

The `csv.gz` and `jsonl.gz` formats are the same logs gzip-compressed (both sides read the
compressed file).

The table gives seconds, rows per second and peak RSS of both, and freshrank / floor ratios
(time above 1: freshrank is slower). Best of --repeats for time, largest peak for memory.

    .venv/bin/python benchmarks/ingest_throughput.py [--events 1000000]
        [--formats parquet csv jsonl csv.gz jsonl.gz]
        [--data DIR] [--repeats 1]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import print_table, quiet_logging
from synthetic import SyntheticConfig, existing, generate


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=None, help="default: events / 10")
    parser.add_argument(
        "--items", type=int, default=None, help="default: events / 50, within 1,000-100,000"
    )
    parser.add_argument(
        "--formats", nargs="+", choices=("parquet", "csv", "jsonl", "csv.gz", "jsonl.gz")
    )
    parser.add_argument("--data", type=Path, default=None, help="keep (and reuse) logs here")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of each side")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", choices=("freshrank", "floor"), help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    arguments.formats = arguments.formats or ["parquet", "csv"]
    return arguments


def main() -> None:
    arguments = parse_arguments()
    if arguments.child:
        print(json.dumps(run_child(arguments.child, arguments.file, arguments.workdir)))
        return
    quiet_logging()
    data = arguments.data or Path(tempfile.mkdtemp(prefix="freshrank-ingest-data-"))
    users = arguments.users or max(1, arguments.events // 10)
    items = arguments.items or min(100_000, max(1_000, arguments.events // 50))
    load_before = os.getloadavg()
    rows = [
        [
            "format",
            "rows",
            "file MB",
            "freshrank s",
            "floor s",
            "time ratio",
            "freshrank rows/s",
            "floor rows/s",
            "freshrank peak MB",
            "floor peak MB",
            "memory ratio",
        ]
    ]
    notes = []
    try:
        for file_format in arguments.formats:
            plain_format = file_format.removesuffix(".gz")
            config = SyntheticConfig(
                events=arguments.events,
                users=users,
                items=items,
                seed=arguments.seed,
                format=plain_format,
            )
            folder = data / f"{arguments.events}-{plain_format}-seed{arguments.seed}"
            files = existing(config, folder)
            if files is None:
                started = time.perf_counter()
                files = generate(config, folder)
                notes.append(
                    f"generated {folder} in {time.perf_counter() - started:.1f} s "
                    f"({users:,} users, {items:,} items)"
                )
            else:
                notes.append(f"reused {folder}")
            (events_file,) = files.events
            if file_format.endswith(".gz"):
                events_file = gzipped(events_file)
            ours, floor = measure(events_file, arguments.repeats)
            if ours["quarantined"] or ours["loaded"] != arguments.events:
                notes.append(
                    f"{file_format}: freshrank loaded {ours['loaded']:,}, "
                    f"quarantined {ours['quarantined']:,}"
                )
            notes.append(
                f"{file_format}: landing copy {ours['land_seconds']:.2f} s (not in the figures); "
                f"RSS before the work: freshrank {ours['start_rss_mb']:.0f} MB, "
                f"floor {floor['start_rss_mb']:.0f} MB"
            )
            rows.append(
                [
                    file_format,
                    f"{arguments.events:,}",
                    f"{events_file.stat().st_size / 2**20:.0f}",
                    f"{ours['seconds']:.2f}",
                    f"{floor['seconds']:.2f}",
                    f"{ours['seconds'] / floor['seconds']:.2f}",
                    f"{arguments.events / ours['seconds']:,.0f}",
                    f"{arguments.events / floor['seconds']:,.0f}",
                    f"{ours['peak_rss_mb']:.0f}",
                    f"{floor['peak_rss_mb']:.0f}",
                    f"{ours['peak_rss_mb'] / floor['peak_rss_mb']:.2f}",
                ]
            )
    finally:
        if arguments.data is None:
            shutil.rmtree(data, ignore_errors=True)
    print_table(rows)
    for note in notes:
        print(note)
    load_after = os.getloadavg()
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}", end=" ")
    print(f"({os.cpu_count()} CPUs)")


def gzipped(path: Path) -> Path:
    """A gzip-compressed copy of ``path`` beside it (made once; reused with --data)."""
    target = path.with_name(path.name + ".gz")
    if not target.exists():
        partial = target.with_name(f".{target.name}.partial")
        with path.open("rb") as source, gzip.open(partial, "wb", compresslevel=6) as sink:
            shutil.copyfileobj(source, sink, 8 << 20)
        partial.replace(target)
    return target


def measure(events_file: Path, repeats: int) -> tuple[dict, dict]:
    """Best time and largest peak of each side over the repeats, alternating the two."""
    results: dict[str, list[dict]] = {"freshrank": [], "floor": []}
    for _ in range(repeats):
        for side in ("freshrank", "floor"):
            with tempfile.TemporaryDirectory(prefix=f"freshrank-ingest-{side}-") as workdir:
                completed = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--child",
                        side,
                        "--file",
                        str(events_file),
                        "--workdir",
                        workdir,
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                )
            results[side].append(json.loads(completed.stdout.strip().splitlines()[-1]))
    best = []
    for side in ("freshrank", "floor"):
        runs = results[side]
        summary = min(runs, key=lambda run: run["seconds"]).copy()
        summary["peak_rss_mb"] = max(run["peak_rss_mb"] for run in runs)
        best.append(summary)
    return best[0], best[1]


def run_child(side: str, events_file: Path, workdir: Path) -> dict:
    """One measurement in this process: imports first, then the timed work."""
    import duckdb

    if side == "floor":
        name = events_file.name.removesuffix(".gz")
        reader = "read_parquet" if name.endswith(".parquet") else "read_csv"
        if name.endswith((".jsonl", ".ndjson")):
            reader = "read_json"  # DuckDB reads a .gz file decompressing it, as freshrank does
        start_rss = _rss_mb()
        started = time.perf_counter()
        with duckdb.connect(str(workdir / "floor.duckdb")) as con:
            con.execute(f"CREATE TABLE events AS SELECT * FROM {reader}(?)", [str(events_file)])
            (loaded,) = con.execute("SELECT count(*) FROM events").fetchone()
        seconds = time.perf_counter() - started
        return _report(seconds, start_rss, loaded=loaded, quarantined=0, land_seconds=0.0)

    os.environ["FRESHRANK_HOME"] = str(workdir / "home")
    for variable in ("FRESHRANK_LANDING_DIR", "FRESHRANK_WAREHOUSE_PATH"):
        os.environ.pop(variable, None)
    from orchestration.ingest.landing import land_file, load_pending
    from orchestration.settings import Settings

    settings = Settings.from_env()
    settings.ensure_dirs()
    started = time.perf_counter()
    land_file(events_file, "events", settings)
    land_seconds = time.perf_counter() - started
    start_rss = _rss_mb()
    started = time.perf_counter()
    (result,) = load_pending("events", settings, "benchmark")
    seconds = time.perf_counter() - started
    if result.status != "loaded":
        raise SystemExit(f"freshrank did not load {events_file}: {result.message}")
    return _report(
        seconds,
        start_rss,
        loaded=result.rows_loaded,
        quarantined=result.rows_quarantined,
        land_seconds=land_seconds,
    )


def _report(seconds: float, start_rss: float, **extra: float) -> dict:
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across exec.
    peak = _status_mb("VmHWM")
    return {"seconds": seconds, "peak_rss_mb": peak, "start_rss_mb": start_rss, **extra}


def _rss_mb() -> float:
    return _status_mb("VmRSS")


def _status_mb(field: str) -> float:
    """A memory figure of this process from Linux's /proc/self/status, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


if __name__ == "__main__":
    main()
