"""procstats: resident memory readings, and handing freed heap back to the OS.

The publisher relies on `release_free_memory` to give back what libzmq freed after a
flooding connection was cut (glibc keeps such memory otherwise). Run in a fresh
interpreter so that pytest's own heap does not blur the figures.
"""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import json
from serd.procstats import rss_mb, release_free_memory
base = rss_mb()
blocks = [bytes(1500) for _ in range(40_000)]  # larger than pymalloc's 512 bytes: glibc's heap
kept = blocks[::50]  # a few survivors pin the heap's top, so glibc's own trimming cannot act
del blocks
held = rss_mb()
released = release_free_memory()
print(json.dumps({"base": base, "held": held, "after": rss_mb(), "released": released}))
"""


def test_freed_heap_in_the_middle_goes_back_to_the_os():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, timeout=60)
    mb = json.loads(out.stdout)
    freed = mb["held"] - mb["base"]
    assert freed > 20, mb  # 40,000 x 1.5 KB were allocated and most freed, yet still resident
    assert mb["released"] is True, mb
    assert mb["after"] - mb["base"] < 0.25 * freed, mb
