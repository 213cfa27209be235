"""CPU and memory of this process, for status messages (Linux /proc; no psutil needed)."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import resource
import time

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_mb() -> float:
    """Current resident set size in MiB (peak RSS where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as handle:
            return int(handle.read().split()[1]) * _PAGE / (1024 * 1024)
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def libc_function(name: str, argtypes: list, restype=ctypes.c_int):
    """A function of the C library by name, typed, or None where there is none (another libc, no libc)."""
    try:
        function = getattr(_libc(), name)
    except (OSError, AttributeError):
        return None
    function.argtypes, function.restype = argtypes, restype
    return function


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL:
    """The C library, loaded once (OSError if it cannot be found)."""
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


_MALLOC_TRIM = libc_function("malloc_trim", [ctypes.c_size_t])
"""glibc's malloc_trim, or None (musl, macOS): without it, freed heap stays with the process."""


def release_free_memory() -> bool:
    """Hand the heap's free pages back to the OS; True if anything was released.

    glibc keeps memory that many small blocks freed (libzmq's, after it ends a connection)
    for reuse, in the middle of its heaps where its own trimming never looks: a flood of
    short-lived connections then raises resident memory for good (about 50 KB per
    connection, measured). malloc_trim(0) returns those pages; it takes ~1-5 ms here.
    """
    return bool(_MALLOC_TRIM(0)) if _MALLOC_TRIM is not None else False


class CpuMeter:
    """Process CPU time as % of one core since the previous reading."""

    def __init__(self) -> None:
        self._cpu = time.process_time()
        self._wall = time.monotonic()

    def percent(self) -> float:
        cpu, wall = time.process_time(), time.monotonic()
        used, elapsed = cpu - self._cpu, wall - self._wall
        self._cpu, self._wall = cpu, wall
        return 100.0 * used / elapsed if elapsed > 0 else 0.0
