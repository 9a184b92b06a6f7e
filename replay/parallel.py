"""Run replay's independent tasks in worker processes (or inline), and show progress on a terminal.

``run_tasks`` submits every task at once to a pool of ``jobs`` processes and returns the
results in submission order; the pool hands the next task to whichever worker is free, so
put the long sequential tasks first and the many short ones after. ``jobs <= 1`` runs them
one after another in this process. Workers are forked where the platform can (they start
in milliseconds and need no re-import), else spawned.

Cancellation (Ctrl-C): pending tasks are cancelled and the workers are terminated; the
ledger is only ever read, so nothing needs cleaning up.

``Progress`` draws a bar on stderr (``verify [#########...........]  45% 1.2 s (12/27 tasks)``;
a running count when the total is unknown), rewritten in place at most every 0.1 s, only
when stderr is a terminal (or ASSISTIV_PROGRESS=1); piped output stays clean.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import gc
import multiprocessing
import os
import sys
import time
from typing import Any, Callable, Optional, Sequence, TextIO

Task = tuple[Callable[..., Any], tuple]
REFRESH_S = 0.1  # at most this often the progress line is rewritten
BAR_CHARS = 30  # the bar's width in characters


@contextlib.contextmanager
def no_gc():
    """Pause the cyclic garbage collector for a bulk fold: it would re-scan the growing state
    after every few hundred allocations (halving throughput) to find cycles folds never make."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def default_jobs(events: int) -> int:
    """Worker processes for a ledger of ``events``: one per CPU, up to 4, and none for small ledgers."""
    if events < 20_000:
        return 1
    return max(1, min(4, os.cpu_count() or 1))


def _run(fn: Callable[..., Any], args: tuple) -> Any:
    with no_gc():
        return fn(*args)


def run_tasks(tasks: Sequence[Task], jobs: int, on_done: Optional[Callable[[int], None]] = None) -> list[Any]:
    """Results of ``fn(*args)`` for each task (run without the cyclic GC), in order; ``on_done(index)``
    as each one ends (``-1``: nothing ended, time passed)."""
    if jobs <= 1:
        results = []
        for index, (fn, args) in enumerate(tasks):
            results.append(_run(fn, args))
            if on_done is not None:
                on_done(index)
        return results
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    pool = concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context)
    try:
        futures = [pool.submit(_run, fn, args) for fn, args in tasks]
        index_of = {future: i for i, future in enumerate(futures)}
        pending = set(futures)
        while pending:
            done, pending = concurrent.futures.wait(pending, timeout=REFRESH_S,
                                                    return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                future.result()  # raise a worker's exception here, at once
                if on_done is not None:
                    on_done(index_of[future])
            if on_done is not None and not done:
                on_done(-1)  # a tick: lets the progress line show the time
        return [f.result() for f in futures]
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()
        raise
    finally:
        pool.shutdown(wait=True)


class Progress:
    """``label [###....] pct% elapsed (done/total unit)`` on stderr, in place; silent unless on a terminal."""

    def __init__(self, label: str, total: int, unit: str = "", stream: Optional[TextIO] = None,
                 enabled: Optional[bool] = None) -> None:
        stream = stream or sys.stderr
        forced = os.environ.get("ASSISTIV_PROGRESS")
        if enabled is None:
            enabled = forced == "1" if forced in ("0", "1") else stream.isatty()
        self.label, self.total, self.unit, self.stream, self.enabled = label, total, unit, stream, enabled
        self.started = time.monotonic()
        self._shown = 0.0
        self._width = 0
        self.done = 0

    def update(self, done: Optional[int] = None, total: Optional[int] = None) -> None:
        if done is not None:
            self.done = done
        if total is not None:
            self.total = total
        now = time.monotonic()
        if not self.enabled or now - self._shown < REFRESH_S:
            return
        self._shown = now
        line = self.line(now - self.started)
        self.stream.write("\r" + line.ljust(self._width))
        self.stream.flush()
        self._width = len(line)

    def line(self, elapsed_s: float) -> str:
        """The bar (or, with no total yet, the count) as it is drawn."""
        if not self.total:
            return f"{self.label} {self.done:,}{self.unit} {elapsed_s:.1f} s"
        share = min(1.0, max(0.0, self.done / self.total))
        filled = int(share * BAR_CHARS)
        return (f"{self.label} [{'#' * filled}{'.' * (BAR_CHARS - filled)}] {int(share * 100):3d}% {elapsed_s:.1f} s "
                f"({self.done:,}/{self.total:,}{self.unit})")

    def advance(self, amount: int = 1) -> None:
        self.update(self.done + amount)

    def close(self) -> None:
        """Clear the line (the command's own output follows)."""
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
