"""Time budgets for the offline providers' CPU work (the local summary and the local note).

Why: that work is pure Python and regular expressions. Run on the event loop, one valid but big
job stopped every consumer and the health endpoint for minutes. It runs in a small thread pool
of its own instead: not the loop's default executor, which also resolves host names for vendor
calls, and not a process pool, which would copy a 5 MB transcript (and 20 MB of documents) to
another process per job and could not share the pure-Python work any better on two cores.

A Python thread cannot be killed, so the budget is cooperative: the algorithms take a Deadline
and call check() in their loops, which raises BudgetExceeded once the budget is spent (or the
waiting coroutine was cancelled). The thread is then free again within one loop step, instead
of burning CPU for an answer nobody waits for; the caps on the inputs keep every step short.

The budget starts when a pool thread takes the work up, not when it is queued: a normal job
waiting behind a hostile one is not failed for the wait.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Final, TypeVar

T = TypeVar("T")

# Threads per provider: the work holds the GIL, so more threads would only slice it thinner
# (and starve the event loop); two let a short job pass one long one.
LOCAL_CPU_THREADS: Final = 2


class BudgetExceeded(Exception):
    """The work ran past its deadline or was cancelled. Private to the local providers: each
    maps it to its own errorType (summaryTimedOut, noteTimedOut); it never leaves them."""


class Deadline:
    """A point in time.monotonic() after which check() raises, and a stop flag for cancels."""

    __slots__ = ("_at_s", "_stop")

    def __init__(self, budget_s: float, stop: threading.Event | None = None) -> None:
        self._at_s = time.monotonic() + budget_s
        self._stop = stop

    def check(self) -> None:
        if time.monotonic() > self._at_s or (self._stop is not None and self._stop.is_set()):
            raise BudgetExceeded


# For direct callers (scribe-eval, tests): no budget, the caps still apply.
NO_DEADLINE: Final = Deadline(math.inf)


class CpuPool:
    """A lazily started thread pool that runs work(deadline) within a budget."""

    def __init__(self, name: str, threads: int = LOCAL_CPU_THREADS) -> None:
        self._name = name
        self._threads = threads
        self._pool: ThreadPoolExecutor | None = None
        self._running: set[threading.Event] = set()

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=self._threads, thread_name_prefix=self._name
            )
        return self._pool

    async def run(self, work: Callable[[Deadline], T], budget_s: float) -> T:
        """work's result; BudgetExceeded if it ran over budget_s. Cancelling the caller stops
        the thread at its next check."""
        stop = threading.Event()
        future = self._executor().submit(lambda: work(Deadline(budget_s, stop)))
        self._running.add(stop)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            stop.set()
            raise
        finally:
            self._running.discard(stop)

    def close(self) -> None:
        """Queued work is dropped; running work stops at its next check (never waited for)."""
        for stop in self._running:
            stop.set()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
