"""Child process of tests/test_crash.py: append to a SQLite ledger until SIGKILLed.

    python tests/crash_child.py DBPATH ACKFILE

Runs a SQLiteStore with PRODUCERS concurrent producers. Each append holds 2 or 3 TextDelta
events across two streams (the producer's own stream, with expected versions, and a
shared one), so a half-committed append would be visible. Event ids are
``{run}.{producer}.{n}.{i}.{size}``: the append id ``{run}.{producer}.{n}`` plus the
event's index and the append's size, so the parent can tell a whole append from a part.

Only after ``append`` returns (the transaction is durable) does the producer write the
append's event ids as one line to ACKFILE, with a single ``write`` on an O_APPEND file
descriptor: a SIGKILL leaves each line either written whole or not at all, and the
kernel keeps written lines although the process dies. Prints ``started`` once the first
append was acknowledged. Stops by itself after RUN_S_MAX, in case the parent died.
"""

from __future__ import annotations

import os
import random
import sys
import uuid

import trio

from ledger.events import TextDelta
from ledger.sqlite import SQLiteStore
from ledger.store import NewEvent

PRODUCERS = 50
RUN_S_MAX = 20.0  # a parent that died must not leave us appending forever
DELTA = "streamed text piece…"  # ~20 characters, like a real delta


async def producer(store: SQLiteStore, fd: int, run: str, p: int, started: trio.Event) -> None:
    rng = random.Random(f"{run}.{p}")
    own, shared = f"own-{run}-{p}", f"shared-{p % 5}"
    version = 0  # this producer alone writes ``own``, so it knows the version to expect
    n = 0
    while True:
        size = rng.choice((2, 3))
        append_id = f"{run}.{p}.{n}"
        batch = []
        for i in range(size):
            stream = own if i % 2 == 0 else shared
            expected = None
            if stream == own:
                expected = version
                version += 1
            batch.append(NewEvent(stream, TextDelta(append_id, i, DELTA), f"{append_id}.{i}.{size}", expected))
        records = await store.append(batch)
        assert [r.event_id for r in records] == [e.event_id for e in batch]
        os.write(fd, (" ".join(e.event_id for e in batch) + "\n").encode())
        if not started.is_set():
            started.set()
            print("started", flush=True)
        n += 1


async def main(db: str, ackfile: str) -> None:
    fd = os.open(ackfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    run = uuid.uuid4().hex[:10]
    store = SQLiteStore(db)
    started = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        with trio.move_on_after(RUN_S_MAX):
            async with trio.open_nursery() as producers:
                for p in range(PRODUCERS):
                    producers.start_soon(producer, store, fd, run, p, started)
        await store.aclose()


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2])
