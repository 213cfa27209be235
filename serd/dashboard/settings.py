"""The dashboard's settings and the checks of where it listens."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from serd.config import DEFAULT_MODEL
from serd.dashboard.state import HISTORY_S, STALE_AFTER_S
from serd.vad import DEFAULT_THRESHOLD, DEFAULT_VAD

MB = 1024 * 1024
MAX_UPLOAD_BYTES = 20 * MB
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


class DashboardError(RuntimeError):
    """The dashboard cannot start; one line for the user."""


@dataclass(frozen=True)
class DashboardSettings:
    connect: tuple[str, ...] = ("tcp://127.0.0.1:5556",)
    """serd publishers to subscribe to (ZeroMQ endpoints)."""
    host: str = "127.0.0.1"
    port: int = 8080
    """Where the web page is served; port 0 picks a free port."""
    token: str | None = None
    """Access token; required when `host` is not loopback (unless `allow_insecure`)."""
    allow_insecure: bool = False
    trusted_proxy: str | None = None
    """Address of a reverse proxy in front (e.g. 127.0.0.1): requests from it are throttled by the last
    X-Forwarded-For entry, the client address it added. None: by the peer address (X-Forwarded-For ignored)."""
    model: str = DEFAULT_MODEL
    """Model for the upload panel: a name in the models directory or a .tflite path."""
    server_key: Path | None = None
    client_key: Path | None = None
    stale_after_s: float = STALE_AFTER_S
    history_s: float = HISTORY_S
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    hop_s: float = 0.5
    """Upload analysis: seconds between windows (as `serd analyze`)."""
    gate_dbfs: float = -55.0
    """Upload analysis: speech gate level (as `serd analyze`)."""
    vad: str = DEFAULT_VAD
    """Upload analysis: voice detector after the level gate (as `serd analyze`)."""
    vad_threshold: float = DEFAULT_THRESHOLD
    extra_headers: dict[str, str] = field(default_factory=dict)
    db: str | None = None
    """History database written by `serd record` (sqlite:////ABS/PATH or postgresql://...); None: live view only."""


def is_loopback_host(host: str) -> bool:
    if host.strip("[]") in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT`, `[IPv6]:PORT` or `PORT` -> (host, port); ValueError with what was expected."""
    value = value.strip()
    if value.isdigit():
        host, port_text = "127.0.0.1", value
    elif value.startswith("["):
        host, sep, port_text = value[1:].partition("]:")
        if not sep:
            raise ValueError(f"--listen {value!r}: expected [IPv6]:PORT, e.g. [::1]:8080")
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep or not host:
            raise ValueError(f"--listen {value!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"--listen {value!r}: port must be a number 0-65535")
    return host, int(port_text)
