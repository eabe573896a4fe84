"""Independent analysis tasks (one scaling-law fit and its bootstrap each) in worker processes.

The fits of ``python -m analysis fit`` do not depend on one another and each draws its bootstrap from its own
seed (derived from the fit's key), so running them in separate processes gives the same numbers as running
them one after another, in any order. On the 2-core CI machine the miniature study's fits took 4.1 minutes in
one process.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Sequence, TypeVar

T = TypeVar("T")


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def run_tasks(tasks: Sequence[Callable[[], T]], workers: int, initializer: Callable[..., None] | None = None,
              initargs: tuple = ()) -> list[T]:
    """Each task's result, in the order given. ``workers`` == 1 runs them here, one after another; otherwise
    in up to ``workers`` processes (tasks must be picklable: module-level functions or partials of them;
    ``initializer(*initargs)`` runs first in each, e.g. to set up logging where processes are spawned, not
    forked). Put the longest tasks first: they are started first."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers == 1 or len(tasks) <= 1:
        return [task() for task in tasks]
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), initializer=initializer,
                             initargs=initargs) as pool:
        futures = [pool.submit(task) for task in tasks]
        return [f.result() for f in futures]
