"""Join a Ray cluster, or start a local one on 127.0.0.1, for one piece of work."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, NamedTuple, TypeVar

logger = logging.getLogger("freshrank.distributed")

ML_PACKAGE = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
Result = TypeVar("Result")


@dataclass(frozen=True)
class RayOptions:
    """Where Ray runs: an existing cluster's address, or the size of a local one."""

    address: str | None = None  # None: a local Ray, started here and stopped when done
    num_cpus: int | None = None  # a local Ray's CPUs (None: every core)
    object_store_mb: int = 512  # a local Ray's object store; Ray takes 30% of memory unless told

    def __post_init__(self) -> None:
        if self.num_cpus is not None and self.num_cpus < 1:
            raise ValueError(f"a local Ray needs at least one CPU, not {self.num_cpus}")
        if self.object_store_mb < 80:
            raise ValueError(f"Ray's object store needs at least 80 MB, not {self.object_store_mb}")


class OnRay(NamedTuple, Generic[Result]):
    """What a step computed on Ray, and the worker processes that computed it."""

    result: Result
    worker_pids: frozenset[int]


@contextmanager
def ray_session(options: RayOptions) -> Iterator[None]:
    """Ray for the duration of the block; a Ray this process started is shut down after it.

    An already initialised Ray (a caller's session) is used as it is. Workers get the ``ml``
    package shipped with the job, so a cluster's nodes need only the dependencies installed.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    runtime_env = {"py_modules": [str(ML_PACKAGE)], "env_vars": {"HF_HUB_OFFLINE": "1"}}
    if options.address:
        logger.info("joining the Ray cluster at %s", options.address)
        ray.init(address=options.address, runtime_env=runtime_env, log_to_driver=False)
    else:
        ray.init(
            num_cpus=options.num_cpus or os.cpu_count(),
            object_store_memory=options.object_store_mb * 2**20,
            include_dashboard=False,
            _node_ip_address=LOOPBACK,  # not the machine's network address
            runtime_env=runtime_env,
            log_to_driver=False,
            configure_logging=False,
        )
    try:
        yield
    finally:
        ray.shutdown()


def descendant_processes(root: int | None = None) -> dict[int, str]:
    """{pid: command name} of every live descendant of ``root`` (this process by default),
    read from /proc (Linux): what a Ray session left running, for tests and benchmarks."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # the process ended while we looked
        name_end = text.rindex(")")
        fields = text[name_end + 2 :].split()
        if fields[0] == "Z":
            continue  # exited, waiting to be reaped: not running
        pid = int(stat.parent.name)
        parents[pid] = int(fields[1])
        names[pid] = text[text.index("(") + 1 : name_end]
    found: dict[int, str] = {}
    frontier = [root or os.getpid()]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                found[pid] = names[pid]
                frontier.append(pid)
    return found
