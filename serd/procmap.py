"""An ordered map over worker processes, for `serd analyze --jobs`.

Each worker has a pipe of its own: no lock or queue is shared between processes (as
`multiprocessing.Pool`'s are), so stopping early (Ctrl-C, a closed pipe) is a kill and a
join that cannot hang on a lock a worker held, and no POSIX semaphore is needed (a chroot
or container without /dev/shm runs it too).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import Connection, wait
from typing import Any

from serd.procstats import libc_function


PR_SET_PDEATHSIG = 1  # linux/prctl.h


class WorkerError(RuntimeError):
    """A worker process ended without answering (killed, crashed)."""


def ordered_map(fn: Callable[[Any], Any], items: Iterable[Any], jobs: int,
                initializer: Callable[..., None], initargs: tuple = ()) -> Iterator[Any]:
    """`fn(item)` for each item in `jobs` processes (each first runs `initializer(*initargs)`), in the
    items' order, each result as soon as the ones before it are in. An exception `fn` raises is raised
    here. Closing the iterator early stops the workers."""
    items = list(items)
    # fork: the workers start with serd imported (a spawned one re-imports numpy and the runtime)
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    workers: list[tuple[multiprocessing.Process, Connection]] = []
    try:
        for _ in range(min(jobs, len(items))):
            parent, child = context.Pipe()
            # A forked worker holds copies of every parent-side end made so far, its own among them: it
            # closes them, or a parent killed outright (SIGKILL, the OOM killer) leaves it blocked for
            # good in a send that its own copy of the other end keeps from failing.
            theirs = [parent] + [conn for _, conn in workers] if context.get_start_method() == "fork" else []
            process = context.Process(target=_serve, args=(child, fn, initializer, initargs, theirs, os.getpid()),
                                      daemon=True)
            process.start()
            child.close()
            workers.append((process, parent))
        busy: dict[Connection, int] = {}
        sent = 0

        def give(conn: Connection) -> None:
            nonlocal sent
            if sent < len(items):
                conn.send((sent, items[sent]))
                busy[conn] = sent
                sent += 1

        for _, conn in workers:
            give(conn)
        done: dict[int, Any] = {}
        wanted = 0
        while wanted < len(items):
            if wanted in done:
                yield done.pop(wanted)
                wanted += 1
                continue
            for conn in wait(list(busy)):
                try:
                    ok, index, value = conn.recv()
                except EOFError:
                    raise WorkerError(f"a worker process ended while analysing item {busy[conn] + 1}") from None
                del busy[conn]
                if not ok:
                    raise value
                done[index] = value
                give(conn)
    finally:
        for process, _ in workers:
            if process.is_alive():
                process.kill()
        for process, conn in workers:
            process.join()
            conn.close()


def _serve(conn: Connection, fn: Callable[[Any], Any], initializer: Callable[..., None], initargs: tuple,
           parent_ends: list[Connection], parent_pid: int) -> None:
    for end in parent_ends:  # forked: copies of the parent's ends (a spawned worker is given none)
        end.close()
    _die_with_parent(parent_pid)
    failed: Exception | None = None
    try:
        initializer(*initargs)
    except Exception as exc:  # noqa: BLE001 (sent to the parent, raised there)
        failed = exc
    while True:
        try:
            index, item = conn.recv()
        except (EOFError, OSError):
            return
        if failed is not None:
            conn.send((False, index, failed))
            continue
        try:
            conn.send((True, index, fn(item)))
        except Exception as exc:  # noqa: BLE001
            conn.send((False, index, exc))


def _die_with_parent(parent_pid: int) -> None:
    """Linux: SIGKILL this worker when the process that started it dies, however it dies; a worker
    mid-way through an hour-long file would otherwise finish it for nobody."""
    prctl = libc_function("prctl", [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong])
    if prctl is None:
        return  # not Linux: the closed pipe ends the worker at its next send
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the line above
        os._exit(1)
