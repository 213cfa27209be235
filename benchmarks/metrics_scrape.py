"""What a Prometheus scrape every second costs `serd run`: two daemons side by side in one run.

Both replay examples/demo.flac in real time (the same work); one serves /metrics and is scraped
every SCRAPE_EVERY_S by a real HTTP client, the other runs without metrics. Their CPU seconds (from
/proc) over the same wall time give the ratio. Usage: python benchmarks/metrics_scrape.py [SECONDS]
"""

from __future__ import annotations

import http.client
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "reliability"))
from helpers_reliability import DEMO_FLAC, Daemon, cpu_s, free_tcp_port, rss_mb  # noqa: E402

SCRAPE_EVERY_S = 1.0
DEFAULT_S = 35.0  # demo.flac is 39 s: measure while both still run


def scrape(port: int) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/metrics")
        return len(connection.getresponse().read())
    finally:
        connection.close()


def main() -> int:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_S
    port = free_tcp_port()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        plain = Daemon(["--source", DEMO_FLAC, "--bind", f"tcp://127.0.0.1:{free_tcp_port()}"], work)
        scraped = Daemon(["--source", DEMO_FLAC, "--bind", f"tcp://127.0.0.1:{free_tcp_port()}",
                          "--metrics", f"127.0.0.1:{port}"], work)
        try:
            while True:
                try:
                    scrape(port)
                    break
                except OSError:
                    time.sleep(0.1)
            start = time.monotonic()
            cpu0 = {d: cpu_s(d.pid) for d in (plain, scraped)}
            scrapes, size = 0, 0
            while time.monotonic() - start < seconds:
                size = scrape(port)
                scrapes += 1
                time.sleep(max(0.0, start + scrapes * SCRAPE_EVERY_S - time.monotonic()))
            wall = time.monotonic() - start
            used = {d: cpu_s(d.pid) - cpu0[d] for d in (plain, scraped)}
            print(f"{wall:.1f} s of real-time audio, {scrapes} scrapes of {size} bytes")
            print(f"no metrics:        {used[plain]:.2f} CPU s = {100 * used[plain] / wall:.2f} % of a core, "
                  f"RSS {rss_mb(plain.pid):.1f} MB")
            print(f"scraped every 1 s: {used[scraped]:.2f} CPU s = {100 * used[scraped] / wall:.2f} % of a core, "
                  f"RSS {rss_mb(scraped.pid):.1f} MB")
            print(f"ratio scraped / none: {used[scraped] / used[plain]:.2f}")
        finally:
            plain.close()
            scraped.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
