"""Personalised reads against plain reads under concurrent load, with `hey`, on the MovieLens
deployment; and how soon a posted event shows in the next read.

`freshrank serve` runs on 127.0.0.1 (a free port; `--workers`, default 1) over the deployment
built from the whole packaged sample (deployment.py; an existing --home is reused). `hey` (a
standard load tool: `apt-get install -y hey`) offers a fixed rate from 16 concurrent clients
for some seconds per case and writes every request's time as CSV; p50 and p99 are computed from
those. The server's CPU time per request (its processes' user + system time during the run, over
the requests served) is printed too: it does not depend on how busy the machine is. The cases,
each against one URL:

- plain (the baseline): GET /recommendations/{user} of a published user with no recent events
  (the list as published);
- personalised, known user: the same read for a published user who posted 5 events since the
  publish (2 purchases of listed items, 3 views), re-ranked at request time;
- personalised, new user: a user without a list who posted 3 clicks.

Then the highest offered rate (of --ladder) at which each case keeps its p99 target with no
errors. With --refresh, the plain and personalised cases run again while a 1,000-event batch is
ingested and refreshed in other processes. Event-to-visible: POST one purchase of a user's
first listed item, then GET until the item has left the list; the time from sending the POST to
the answer that reflects it, over --trials users.

    .venv/bin/python benchmarks/personalised_reads.py [--home DIR] [--workers 1] [--seconds 10]
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from api_latency import Refresher, free_port, start_server, stop_server
from common import print_table
from deployment import prepare, published_users, say, write_batch

RATE = 500
CLIENTS = 16
PLAIN_P99_MS = 10.0
PERSONALISED_P99_MS = 20.0
LADDER = (500, 750, 1000, 1500, 2000)
K = 10
EVENT_TIME = "2030-01-01T00:00:00Z"  # after every event of the sample
HEY_MISSING = (
    "`hey` is not installed: install it with `apt-get install -y hey` (Debian/Ubuntu) or `go "
    "install github.com/rakyll/hey@latest`, then run this again"
)


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        help="the full-sample deployment (built there if it publishes nothing yet; default: a "
        "new temporary folder, removed afterwards)",
    )
    parser.add_argument("--workers", type=int, default=1, help="`freshrank serve --workers`")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per hey run")
    parser.add_argument("--rate", type=int, default=RATE, help="requests/s offered in all")
    parser.add_argument("--clients", type=int, default=CLIENTS, help="concurrent hey clients")
    parser.add_argument(
        "--ladder",
        type=lambda text: tuple(int(part) for part in text.split(",")),
        default=LADDER,
        help="offered rates tried for the highest that keeps the p99 targets",
    )
    parser.add_argument("--trials", type=int, default=50, help="event-to-visible trials")
    parser.add_argument("--refresh", action="store_true", help="also measure during a refresh")
    parser.add_argument("--keep", action="store_true", help="keep a temporary deployment")
    return parser.parse_args()


@dataclass
class Run:
    """One hey run: every request's milliseconds and status."""

    case: str
    offered: int
    seconds: float
    milliseconds: np.ndarray
    statuses: np.ndarray
    server_cpu_seconds: float  # the server's processes' CPU time during the run

    @property
    def cpu_ms_per_request(self) -> float:
        return self.server_cpu_seconds * 1000 / max(len(self.milliseconds), 1)

    @property
    def errors(self) -> int:
        return int((self.statuses != 200).sum())

    @property
    def achieved(self) -> float:
        return len(self.milliseconds) / self.seconds

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.milliseconds, q)) if len(self.milliseconds) else np.nan

    def meets(self, p99_target: float) -> bool:
        return self.errors == 0 and self.percentile(99) <= p99_target


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) a process and its descendants have used so far (Linux)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        try:
            # The fields after the command name: state is the first, utime the 12th, stime 13th.
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
            for task in Path(f"/proc/{current}/task").iterdir():
                pending.extend(int(child) for child in (task / "children").read_text().split())
        except FileNotFoundError:  # ended while we looked
            continue
    return total


def hey(url: str, case: str, rate: int, clients: int, seconds: float, server: int) -> Run:
    """`hey` offering ``rate`` requests/s in all from ``clients`` clients for ``seconds``,
    with the CPU time the server process ``server`` (and its workers) spent meanwhile."""
    command = [
        "hey",
        "-z",
        f"{seconds:g}s",
        "-c",
        str(clients),
        "-q",
        f"{rate / clients:g}",
        "-o",
        "csv",
        url,
    ]
    used_before = cpu_seconds(server)
    completed = subprocess.run(command, capture_output=True, text=True, check=True)
    used = cpu_seconds(server) - used_before
    rows = list(csv.DictReader(io.StringIO(completed.stdout)))
    return Run(
        case=case,
        offered=rate,
        seconds=seconds,
        milliseconds=np.array([float(row["response-time"]) * 1000 for row in rows]),
        statuses=np.array([int(row["status-code"]) for row in rows]),
        server_cpu_seconds=used,
    )


def merged(case: str, runs: list[Run]) -> Run:
    """Several runs of one case as one."""
    return Run(
        case=case,
        offered=runs[0].offered,
        seconds=sum(run.seconds for run in runs),
        milliseconds=np.concatenate([run.milliseconds for run in runs]),
        statuses=np.concatenate([run.statuses for run in runs]),
        server_cpu_seconds=sum(run.server_cpu_seconds for run in runs),
    )


def post(client: httpx.Client, user: str, events: list[tuple[str, str]]) -> None:
    body = [
        {"user_id": user, "item_id": item, "event_type": kind, "timestamp": EVENT_TIME}
        for item, kind in events
    ]
    response = client.post("/events", json=body)
    response.raise_for_status()


def listed(client: httpx.Client, user: str) -> list[str]:
    response = client.get(f"/recommendations/{user}", params={"k": K})
    response.raise_for_status()
    return [item["item_id"] for item in response.json()["items"]]


def prepare_users(client: httpx.Client, users: list[str]) -> dict[str, str]:
    """The plain, known and new users of the cases, with the known and new users' events."""
    plain, known = users[0], users[1]
    mine = listed(client, known)
    post(client, known, [(mine[0], "purchase"), (mine[1], "purchase")])
    post(client, known, [(item, "view") for item in mine[5:8]])
    new_user = f"bench-new-{time.time_ns()}"
    trending = listed(client, new_user)
    post(client, new_user, [(item, "click") for item in trending[:3]])
    answer = client.get(f"/recommendations/{known}", params={"k": K}).json()
    assert answer["personalised"] and answer["fresh_events"] >= 5, answer
    return {"plain": plain, "personalised, known user": known, "personalised, new user": new_user}


def event_to_visible(client: httpx.Client, users: list[str]) -> tuple[np.ndarray, int]:
    """(milliseconds from POST to the read that reflects it, reads that did not reflect it)."""
    times, stale_reads = [], 0
    for user in users:
        first = listed(client, user)[0]
        started = time.perf_counter()
        post(client, user, [(first, "purchase")])
        while first in listed(client, user):
            stale_reads += 1
        times.append((time.perf_counter() - started) * 1000)
    return np.array(times), stale_reads


def target_of(case: str) -> float:
    return PLAIN_P99_MS if case == "plain" else PERSONALISED_P99_MS


def main() -> None:
    arguments = parse_arguments()
    if shutil.which("hey") is None:
        raise SystemExit(HEY_MISSING)
    temporary = arguments.home is None
    home = (
        Path(tempfile.mkdtemp(prefix="freshrank-bench-personalised-"))
        if temporary
        else arguments.home.expanduser().resolve()
    )
    server = None
    try:
        say("personalised reads: preparing the deployment")
        prepare(home)
        users = published_users(home)
        rng = np.random.default_rng(11)
        rng.shuffle(users)
        port = free_port()
        os.environ["FRESHRANK_API_WORKERS"] = str(arguments.workers)
        # The benchmark posts faster than POST /events' default per-caller rate allows.
        os.environ["FRESHRANK_API_EVENTS_PER_SECOND"] = "10000"
        os.environ["FRESHRANK_API_EVENTS_BURST"] = "10000"
        server = start_server(home, port, home / "benchmark-personalised-serve.log")
        base_url = f"http://127.0.0.1:{port}"
        say(f"  freshrank serve pid {server.pid} on {base_url}, {arguments.workers} worker(s)")
        with httpx.Client(base_url=base_url, timeout=30.0) as client:
            cases = prepare_users(client, users)
            trial_users = users[2 : 2 + arguments.trials]
            visible, stale_reads = event_to_visible(client, trial_users)
        urls = {case: f"{base_url}/recommendations/{user}?k={K}" for case, user in cases.items()}
        load_before = os.getloadavg()[0]

        runs = []
        for case, url in urls.items():
            say(f"  {case}: {arguments.rate} requests/s for {arguments.seconds:g} s")
            runs.append(
                hey(url, case, arguments.rate, arguments.clients, arguments.seconds, server.pid)
            )
        highest: dict[str, int | None] = {}
        for case, url in urls.items():
            highest[case] = None
            for rate in arguments.ladder:
                say(f"  ladder {case}: {rate} requests/s")
                run = hey(url, case, rate, arguments.clients, arguments.seconds, server.pid)
                if not run.meets(target_of(case)):
                    break
                highest[case] = rate
        windows: dict[str, list[Run]] = {case: [] for case in urls}
        refresher = None
        if arguments.refresh:
            batch = write_batch(
                home, home / "benchmark-batches" / f"reads-{time.time_ns()}.csv", 1_000, rng
            )
            refresher = Refresher(home, batch.path)
            refresher.start()
            # The cases take turns in short windows until the refresh ends.
            while refresher.is_alive():
                for case, url in urls.items():
                    if refresher.is_alive():
                        windows[case].append(
                            hey(url, case, arguments.rate, arguments.clients, 3.0, server.pid)
                        )
            refresher.join()
            if refresher.error is not None:
                raise refresher.error
        during = [
            merged(f"{case} (during ingest + refresh)", parts)
            for case, parts in windows.items()
            if parts
        ]

        print(
            f"\npersonalised reads: GET /recommendations/{{user}}?k={K} on `freshrank serve` "
            f"(127.0.0.1, SQLite serving store, {arguments.workers} worker(s)), hey with "
            f"{arguments.clients} clients, {arguments.seconds:g} s per run; milliseconds"
        )
        print(
            f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after, on "
            f"{os.cpu_count()} cores (shared with other work: figures are what this machine "
            "gave at the time)"
        )
        rows = [
            (
                "case",
                "offered/s",
                "achieved/s",
                "p50 ms",
                "p99 ms",
                "errors",
                "p99 target",
                "server CPU ms/request",
            )
        ]
        for run in [*runs, *during]:
            target = target_of(run.case.split(" (")[0])
            rows.append(
                (
                    run.case,
                    str(run.offered),
                    f"{run.achieved:.0f}",
                    f"{run.percentile(50):.2f}",
                    f"{run.percentile(99):.2f}",
                    str(run.errors),
                    f"{target:.0f} {'met' if run.meets(target) else 'NOT met'}",
                    f"{run.cpu_ms_per_request:.2f}",
                )
            )
        print_table(rows)
        plain = runs[0]
        for run in runs[1:]:
            print(
                f"{run.case} / plain: p50 {run.percentile(50) / plain.percentile(50):.2f}x, "
                f"p99 {run.percentile(99) / plain.percentile(99):.2f}x"
            )
        for case, rate in highest.items():
            shown = "none of the ladder" if rate is None else f"{rate} requests/s"
            print(
                f"highest offered rate keeping p99 <= {target_of(case):.0f} ms and no errors, "
                f"{case}: {shown} (ladder {', '.join(map(str, arguments.ladder))})"
            )
        if refresher is not None:
            print(
                f"the refresh during the measurement: ingest {refresher.ingest.seconds:.1f} s + "
                f"refresh {refresher.refresh.seconds:.1f} s"
            )
        print(
            f"event-to-visible through the API ({len(visible)} users: POST a purchase of the "
            f"first listed item, GET until it has left): p50 {np.percentile(visible, 50):.1f} "
            f"ms, max {visible.max():.1f} ms; reads that still showed it: {stale_reads}"
        )
    finally:
        if server is not None:
            stop_server(server)
        if temporary:
            if arguments.keep:
                say(f"kept {home}")
            else:
                shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
