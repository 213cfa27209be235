"""Peak RSS of a command, its own: shared by the tests and `benchmarks/`.

A child's `ru_maxrss` (wait4, RUSAGE_CHILDREN) starts from its parent's resident size at fork:
Linux carries the high-water mark across exec. Measured from a test or a benchmark that holds
hundreds of MB, every command looked that large (an export "took" 120 MB; its own peak was 57).
So the command is started by a small launcher process, and its peak is taken there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

_LAUNCHER = """
import os, sys
out, argv = sys.argv[1], sys.argv[2:]
pid = os.fork()
if pid == 0:
    try:
        os.execvp(argv[0], argv)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(out, "w") as f:
    f.write(f"{usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}")
"""


def peak_rss_mb(cmd: Sequence[str | os.PathLike], **run_kwargs) -> tuple[float, subprocess.CompletedProcess]:
    """Run `cmd` to its end (`run_kwargs` go to subprocess.run: cwd, env, stdout, input, timeout...);
    its own peak RSS in MB, and the finished process (its returncode is the command's)."""
    with tempfile.TemporaryDirectory(prefix="serd-rss-") as tmp:
        result = Path(tmp) / "rusage"
        done = subprocess.run([sys.executable, "-S", "-c", _LAUNCHER, str(result), *map(str, cmd)], **run_kwargs)
        kb, code = result.read_text().split()
    done.returncode = int(code)
    return int(kb) / 1024, done
