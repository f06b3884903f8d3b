"""The daemon path: a file landed while `make dev` runs, until the landing sensor's run publishes.

On the MovieLens deployment (see deployment.py; an existing --home is reused), `python -m
orchestration.app.dev` (what `make dev` runs: the Dagster webserver and daemon, and the MLflow UI)
is started on free loopback ports. Once the daemon has evaluated the landing sensor, each round
writes a 1,000-event batch (deployment.write_batch) into the landing zone the way a delivery
arrives (a hidden file renamed into place) and reads the Dagster instance until the refresh_job run
the sensor started has ended. Latency is landed -> that run's end, as the instance records it; its
parts are landed -> run created (sensor), created -> started (queue and launch: a new process that
loads the code location), started -> ended (the job). The published lists' generated_at is read to
confirm that the run published.

The baseline, in the same run, is the in-process path a person runs by hand on the same batch size:
`freshrank refresh` after landing a file (a new process, start-up included). The ratio is CLI
seconds / daemon seconds (above 1: the daemon path publishes sooner).

    .venv/bin/python benchmarks/daemon_latency.py [--home DIR] [--rounds 3] [--size 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from api_latency import free_port
from common import print_table
from deployment import environment, freshrank, prepare, say, write_batch

from ml.distributed.session import descendant_processes

TARGET_SECONDS = 15.0
READY_TIMEOUT = 300.0
RUN_TIMEOUT = 600.0


def land(home: Path, batch_path: Path) -> float:
    """Move a batch file into the events landing folder atomically; returns the landing time."""
    folder = home / "landing" / "events"
    folder.mkdir(parents=True, exist_ok=True)
    hidden = folder / f".{batch_path.name}.partial"
    hidden.write_bytes(batch_path.read_bytes())
    landed = time.time()
    os.replace(hidden, folder / batch_path.name)
    return landed


def sensor_runs(home: Path) -> list[tuple[str, str, float, float | None, float | None]]:
    """(run_id, status, created, started, ended) of every refresh_job run, as epoch seconds."""
    from dagster import DagsterInstance, RunsFilter

    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    with DagsterInstance.get() as instance:
        records = instance.get_run_records(filters=RunsFilter(job_name="refresh_job"))
        return [
            (
                record.dagster_run.run_id,
                record.dagster_run.status.value,
                record.create_timestamp.timestamp(),
                record.start_time,
                record.end_time,
            )
            for record in records
        ]


def newest_publish(home: Path) -> str | None:
    with sqlite3.connect(home / "serving.db") as connection:
        (newest,) = connection.execute(
            "select max(generated_at) from recommendations where version = "
            "(select version from serving_versions where table_name = 'recommendations')"
        ).fetchone()
    return newest


def wait_for_sensor(home: Path, process: subprocess.Popen, since: float) -> None:
    """Until the daemon has ticked the landing sensor after ``since`` (epoch seconds): the code
    location is loaded and the sensor runs."""
    from dagster import DagsterInstance
    from dagster._core.scheduler.instigation import InstigatorType

    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"make dev exited with {process.returncode} before it was ready")
        with DagsterInstance.get() as instance:
            states = instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
            for state in states:
                if state.name == "landing_sensor":
                    ticks = instance.get_ticks(
                        state.instigator_origin_id, state.selector_id, after=since
                    )
                    if ticks:
                        return
        time.sleep(1.0)
    raise RuntimeError("the landing sensor was not evaluated within 5 minutes")


def one_round(home: Path, batch_path: Path) -> dict[str, float]:
    before = {run[0] for run in sensor_runs(home)}
    published_before = newest_publish(home)
    landed = land(home, batch_path)
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        new = [run for run in sensor_runs(home) if run[0] not in before]
        ended = [run for run in new if run[4] is not None]
        if ended:
            run_id, status, created, started, end = ended[0]
            if status != "SUCCESS":
                raise RuntimeError(f"the sensor's run {run_id} ended {status}")
            if newest_publish(home) == published_before:
                raise RuntimeError(f"the sensor's run {run_id} succeeded but published nothing")
            return {
                "landed -> published": end - landed,
                "landed -> run created": created - landed,
                "created -> started": (started or created) - created,
                "started -> ended": end - (started or created),
            }
        time.sleep(0.25)
    raise RuntimeError("no sensor run ended within 10 minutes of the landing")


def _verdict(seconds: float) -> str:
    return "met" if seconds <= TARGET_SECONDS else "NOT met"


def stop_tree(process: subprocess.Popen) -> None:
    """Stop `make dev` as Ctrl-C does, then kill whatever it started that is still running (the
    Dagster servers run in sessions of their own and can outlive it)."""
    started = descendant_processes(process.pid)
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    for pid in started:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=None, help="deployment (built if empty)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=11)
    arguments = parser.parse_args()
    home = arguments.home or Path(tempfile.mkdtemp(prefix="freshrank-daemon-"))
    prepare(home)
    rng = np.random.default_rng(arguments.seed)
    batches = Path(tempfile.mkdtemp(prefix="freshrank-batches-"))

    say("  baseline: land a batch, then `freshrank refresh` (a new process)")
    cli_seconds = []
    for number in range(arguments.rounds):
        batch = write_batch(home, batches / f"cli-{number}.csv", arguments.size, rng)
        landed = land(home, batch.path)
        freshrank(home, "refresh")
        cli_seconds.append(time.time() - landed)

    dev = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestration.app.dev",
            "--dagster-port",
            str(free_port()),
            "--mlflow-port",
            str(free_port()),
        ],
        env=environment(home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    rounds = []
    try:
        started = time.monotonic()
        wait_for_sensor(home, dev, since=time.time())
        say(
            f"  make dev ready (the landing sensor ticked) after {time.monotonic() - started:.0f} s"
        )
        for number in range(arguments.rounds):
            batch = write_batch(home, batches / f"daemon-{number}.csv", arguments.size, rng)
            rounds.append(one_round(home, batch.path))
            say(f"  round {number + 1}: {rounds[-1]['landed -> published']:.1f} s")
    finally:
        stop_tree(dev)

    daemon = statistics.median(r["landed -> published"] for r in rounds)
    cli = statistics.median(cli_seconds)
    rows = [
        [name, f"{statistics.median(r[name] for r in rounds):.1f}"]
        for name in ("landed -> run created", "created -> started", "started -> ended")
    ]
    rows += [
        ["landed -> published (daemon, median)", f"{daemon:.1f}"],
        ["landed -> published (freshrank refresh, median)", f"{cli:.1f}"],
        ["ratio cli / daemon", f"{cli / daemon:.2f}"],
        [f"target: daemon at most {TARGET_SECONDS:.0f} s", _verdict(daemon)],
    ]
    print_table([[f"daemon path, batches of {arguments.size}", "seconds"], *rows])


if __name__ == "__main__":
    main()
