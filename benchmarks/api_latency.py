"""Read latency of the HTTP API, quiet against during a refresh, on the MovieLens deployment.

`freshrank serve` runs on 127.0.0.1 (a free port) over the deployment built from the whole
packaged MovieLens sample (see deployment.py; an existing --home is reused). One client
(httpx, one keep-alive connection, requests one after another) asks GET
/recommendations/{user}?k=10 for random users: published users, and a share of unknown users,
who get the trending list. Each request is timed from send to parsed body, after some untimed
warm-up requests.

The baseline is 2,000 requests with nothing else running on the deployment. Then a 1,000-event
batch lands and refreshes in other processes (`freshrank ingest --events batch.csv`, then
`freshrank refresh`), and requests run until the refresh ends (another batch follows if fewer
than 500 requests were made). The ratios are during / baseline for p50, p99 and the slowest
request (above 1: slower during the refresh). Informative: how many reads during the refresh
returned a list whose generated_at differs from that user's (or the trending list's) first read
in this run, i.e. reads that saw the refresh's publish.

    .venv/bin/python benchmarks/api_latency.py [--home DIR] [--requests 2000] [--during-min 500]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from common import print_table
from deployment import (
    FRESHRANK,
    CommandRun,
    environment,
    freshrank,
    prepare,
    published_users,
    say,
    write_batch,
)

GOAL_P99_MS = 20.0
K = 10
HEALTH_TIMEOUT_S = 180.0
MAX_REFRESH_ROUNDS = 5


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        help="the full-sample deployment (built there if it publishes nothing yet; default: a "
        "new temporary folder, removed afterwards)",
    )
    parser.add_argument("--requests", type=int, default=2_000, help="baseline requests")
    parser.add_argument(
        "--during-min", type=int, default=500, help="fewest requests during refreshes"
    )
    parser.add_argument("--batch", type=int, default=1_000, help="events per refreshed batch")
    parser.add_argument("--unknown-share", type=float, default=0.1, help="share of unknown users")
    parser.add_argument("--warmup", type=int, default=100, help="untimed requests first")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--keep", action="store_true", help="keep a temporary deployment")
    return parser.parse_args()


@dataclass
class Reads:
    """Timed reads: milliseconds, and what each returned."""

    milliseconds: list[float] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)  # the user, or "trending" for unknown users
    generated_at: list[str | None] = field(default_factory=list)
    phases: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


class Reader:
    """Requests for random users over one keep-alive connection."""

    def __init__(self, base_url: str, users: list[str], unknown_share: float, seed: int) -> None:
        self.client = httpx.Client(base_url=base_url, timeout=30.0)
        self.users = np.array(users, dtype=object)
        self.unknown_share = unknown_share
        self.rng = np.random.default_rng(seed)

    def read(self, reads: Reads | None, phase: str = "") -> None:
        unknown = self.rng.random() < self.unknown_share
        if unknown:
            user = f"unknown-{self.rng.integers(1_000_000_000)}"
        else:
            user = str(self.rng.choice(self.users))
        started = time.perf_counter()
        response = self.client.get(f"/recommendations/{user}", params={"k": K})
        try:
            body = response.json()
        except ValueError:  # not JSON: counted as a failed read below
            body = {"text": response.text}
        elapsed = (time.perf_counter() - started) * 1000
        if reads is None:
            return
        reads.milliseconds.append(elapsed)
        reads.keys.append("trending" if unknown else user)
        reads.phases.append(phase)
        if response.status_code != 200 or len(body.get("items", ())) != K:
            reads.failures.append(f"{user}: HTTP {response.status_code} {str(body)[:200]}")
            reads.generated_at.append(None)
        else:
            reads.generated_at.append(body["generated_at"])

    def close(self) -> None:
        self.client.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(home: Path, port: int, log_path: Path) -> subprocess.Popen:
    """`freshrank serve` on 127.0.0.1:port, returned once /health answers 200."""
    log = log_path.open("w")
    server = subprocess.Popen(
        [str(FRESHRANK), "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=environment(home),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(
                f"freshrank serve exited {server.returncode}:\n{log_path.read_text()}"
            )
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2.0).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    stop_server(server)
    raise RuntimeError(f"/health did not answer within {HEALTH_TIMEOUT_S:.0f} s")


def stop_server(server: subprocess.Popen) -> None:
    """Stop the server this script started, by its process id."""
    if server.poll() is not None:
        return
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


class Refresher(threading.Thread):
    """Lands one batch and refreshes it, each command a subprocess; records the phase."""

    def __init__(self, home: Path, batch_path: Path) -> None:
        super().__init__(daemon=True)
        self.home = home
        self.batch_path = batch_path
        self.phase = "starting"
        self.ingest: CommandRun | None = None
        self.refresh: CommandRun | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.phase = "ingest"
            self.ingest = freshrank(self.home, "ingest", "--events", self.batch_path)
            self.phase = "refresh"
            self.refresh = freshrank(self.home, "refresh")
        except BaseException as error:  # reported by the main thread
            self.error = error
        finally:
            self.phase = "done"


def percentiles(milliseconds: list[float]) -> tuple[float, float, float]:
    values = np.asarray(milliseconds)
    return float(np.percentile(values, 50)), float(np.percentile(values, 99)), float(values.max())


def changed_reads(reads: Reads, first_seen: dict[str, str]) -> tuple[int, int]:
    """(reads, distinct users or trending) whose generated_at differs from their first read."""
    changed_reads_count, changed_keys = 0, set()
    for key, generated_at in zip(reads.keys, reads.generated_at, strict=True):
        if generated_at is None:
            continue
        first = first_seen.setdefault(key, generated_at)
        if generated_at != first:
            changed_reads_count += 1
            changed_keys.add(key)
    return changed_reads_count, len(changed_keys)


def main() -> None:
    arguments = parse_arguments()
    temporary = arguments.home is None
    home = (
        Path(tempfile.mkdtemp(prefix="freshrank-bench-api-"))
        if temporary
        else arguments.home.expanduser().resolve()
    )
    server = None
    reader = None
    try:
        say("api latency: preparing the deployment")
        prepare(home)
        users = published_users(home)
        port = free_port()
        server = start_server(home, port, home / "benchmark-serve.log")
        say(f"  freshrank serve pid {server.pid} on http://127.0.0.1:{port}")
        reader = Reader(f"http://127.0.0.1:{port}", users, arguments.unknown_share, arguments.seed)
        for _ in range(arguments.warmup):
            reader.read(None)
        load_before = os.getloadavg()[0]

        quiet = Reads()
        for _ in range(arguments.requests):
            reader.read(quiet, "quiet")
        first_seen: dict[str, str] = {}
        changed_reads(quiet, first_seen)
        say(f"  baseline: {len(quiet.milliseconds)} requests")

        during = Reads()
        rng = np.random.default_rng(arguments.seed)
        refreshes: list[Refresher] = []
        while len(during.milliseconds) < arguments.during_min:
            if len(refreshes) == MAX_REFRESH_ROUNDS:
                break
            batch = write_batch(
                home,
                home / "benchmark-batches" / f"api-{time.time_ns()}.csv",
                arguments.batch,
                rng,
            )
            refresher = Refresher(home, batch.path)
            refresher.start()
            refreshes.append(refresher)
            while refresher.is_alive():
                reader.read(during, refresher.phase)
            refresher.join()
            if refresher.error is not None:
                raise refresher.error
            say(
                f"  refresh {len(refreshes)}: ingest {refresher.ingest.seconds:.1f} s + refresh "
                f"{refresher.refresh.seconds:.1f} s; {len(during.milliseconds)} requests so far"
            )
        changed, changed_keys = changed_reads(during, first_seen)

        print(
            f"\napi latency: GET /recommendations/{{user}}?k={K} on `freshrank serve` "
            f"(127.0.0.1, SQLite serving store), {len(users)} published users + "
            f"{arguments.unknown_share:.0%} unknown users (trending), one keep-alive client, "
            f"sequential requests after {arguments.warmup} warm-up; milliseconds"
        )
        print(
            f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after, "
            f"on {os.cpu_count()} cores"
        )
        quiet_p50, quiet_p99, quiet_max = percentiles(quiet.milliseconds)
        rows = [("while", "requests", "p50 ms", "p99 ms", "max ms", "errors")]
        rows.append(
            (
                "no refresh running (baseline)",
                str(len(quiet.milliseconds)),
                f"{quiet_p50:.2f}",
                f"{quiet_p99:.2f}",
                f"{quiet_max:.2f}",
                str(len(quiet.failures)),
            )
        )
        figures = {}
        for label, phases in (
            (f"ingest + refresh of {arguments.batch:,} events", ("ingest", "refresh")),
            ("  of which during `freshrank refresh`", ("refresh",)),
        ):
            chosen = [
                ms
                for ms, phase in zip(during.milliseconds, during.phases, strict=True)
                if phase in phases
            ]
            if not chosen:
                continue
            figures[label] = percentiles(chosen)
            p50, p99, slowest = figures[label]
            rows.append(
                (
                    label,
                    str(len(chosen)),
                    f"{p50:.2f}",
                    f"{p99:.2f}",
                    f"{slowest:.2f}",
                    str(len(during.failures)) if phases == ("ingest", "refresh") else "",
                )
            )
        for label, (p50, p99, slowest) in figures.items():
            rows.append(
                (
                    f"ratio ({label.strip()}) / baseline",
                    "",
                    f"{p50 / quiet_p50:.2f}",
                    f"{p99 / quiet_p99:.2f}",
                    f"{slowest / quiet_max:.2f}",
                    "",
                )
            )
        print_table(rows)
        refresh_seconds = ", ".join(
            f"{r.ingest.seconds:.1f} + {r.refresh.seconds:.1f} s" for r in refreshes
        )
        print(f"refreshes during the measurement (ingest + refresh): {refresh_seconds}")
        worst_p99 = max(p99 for _p50, p99, _max in figures.values())
        verdict = "met" if max(worst_p99, quiet_p99) <= GOAL_P99_MS else "NOT met"
        print(
            f"goal: p99 at most {GOAL_P99_MS:.0f} ms: {verdict} (baseline {quiet_p99:.2f} ms, "
            f"during the refresh {worst_p99:.2f} ms)"
        )
        print(
            f"reads during the refresh whose list's generated_at differs from the first read of "
            f"that user (or the trending list) in this run: {changed} of "
            f"{len(during.milliseconds)} ({changed_keys} distinct users or trending)"
        )
        for failure in (quiet.failures + during.failures)[:5]:
            print(f"  failed read: {failure}")
    finally:
        if reader is not None:
            reader.close()
        if server is not None:
            stop_server(server)
        if temporary:
            if arguments.keep:
                say(f"kept {home}")
            else:
                shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
