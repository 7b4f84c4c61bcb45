"""Three-stage pipeline: read the next item, compute the current one, write the previous one.

Reading (e.g. decompressing and upsampling a block) and writing (compressing and storing the
result) run in threads of their own while the compute stage (e.g. the network) works, with
bounded queues between the stages, so at most ``depth`` items wait between two stages and
memory stays bounded whatever the number of items.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable

_DONE = object()


def run_pipeline(
    items: Iterable,
    read: Callable,
    compute: Callable,
    write: Callable,
    depth: int = 1,
    workers: int = 1,
) -> int:
    """``write(item, compute(read(item)))`` for every item, the three stages overlapping.

    ``read`` runs in one thread, ``compute`` in ``workers`` threads (the caller's own when 1),
    ``write`` in one thread, in the order of ``items``. The first exception raised by any stage
    (``BaseException`` included) stops the pipeline and is raised in the caller's thread once
    every thread has stopped; items whose ``write`` had returned stay written, the others are
    not written at all. Returns the number of items written.

    Examples
    --------
    >>> out = []
    >>> run_pipeline(range(4), lambda i: i, lambda x: x * x, lambda i, y: out.append((i, y)))
    4
    >>> out
    [(0, 0), (1, 1), (2, 4), (3, 9)]
    """
    depth, workers = max(1, int(depth)), max(1, int(workers))
    to_compute: queue.Queue = queue.Queue(depth)
    to_write: queue.Queue = queue.Queue(depth)
    stop = threading.Event()
    errors: list[BaseException] = []
    written = [0]

    def put(q: queue.Queue, value) -> bool:
        while not stop.is_set():
            try:
                q.put(value, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def get(q: queue.Queue):
        while not stop.is_set():
            try:
                return q.get(timeout=0.05)
            except queue.Empty:
                continue
        return _DONE

    def guarded(stage: Callable) -> Callable:
        def run() -> None:
            try:
                stage()
            except BaseException as err:  # noqa: BLE001 - handed to the caller's thread
                errors.append(err)
                stop.set()
        return run

    def reader() -> None:
        for item in items:
            if stop.is_set() or not put(to_compute, (item, read(item))):
                return
        for _ in range(workers):
            put(to_compute, _DONE)

    def computer() -> None:
        while (task := get(to_compute)) is not _DONE:
            item, data = task
            if not put(to_write, (item, compute(data))):
                return
        put(to_write, _DONE)

    def writer() -> None:
        finished = 0
        while finished < workers:
            task = get(to_write)
            if task is _DONE:
                if stop.is_set():
                    return
                finished += 1
                continue
            write(*task)
            written[0] += 1

    threads = [threading.Thread(target=guarded(reader), name="pipeline-read", daemon=True),
               threading.Thread(target=guarded(writer), name="pipeline-write", daemon=True)]
    threads += [threading.Thread(target=guarded(computer), name=f"pipeline-compute-{i}", daemon=True)
                for i in range(workers - 1)]
    for t in threads:
        t.start()
    guarded(computer)()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return written[0]
