"""Prometheus `/metrics` for `serd run` and `serd record` (the `metrics` extra: prometheus-client).

Imported only when `metrics.bind` / `metrics.record_bind` / `--metrics` is set, so a daemon without
metrics never loads prometheus-client.

What a scrape costs the process being watched:
- the worker thread only adds to plain integers and observes two histograms per window (a few
  microseconds); everything else (the daemon's and publisher's own counters, queue depths, ages)
  is read by the collectors at scrape time, on the server's thread;
- the page is rendered at most once per `RENDER_EVERY_S` whatever the number of scrapers; a
  scrape in between gets the same bytes;
- the server is the dashboard's bounded one in small: at most `MAX_CONNECTIONS` open connections
  (`MAX_PER_CLIENT` per address, see `serd.dashboard.guard`), each a thread, a deadline of
  `HEADER_DEADLINE_S` for a request's headers however slowly they trickle, `SOCKET_TIMEOUT_S` per
  read or write, and GET/HEAD of /metrics only (no body is ever read);
- one request per connection (HTTP/1.0), and at most `REQUESTS_PER_S` connections a second
  (`REQUESTS_PER_ADDRESS_PER_S` from one address) get a thread at all: the rest are closed as they
  are accepted, so a flood of scrapes costs the daemon accepts and closes, not Python request
  handling (measured: 1,100 scrapes a second cost the worker its real-time pace before this).

Names follow Prometheus' conventions: `serd_` prefix, `_total` counters, seconds, bytes.
"""

from __future__ import annotations

import logging
import math
import socket
import threading
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.process_collector import ProcessCollector

from serd import __version__
from serd.dashboard.guard import ConnectionGuard, GuardedHandler, GuardedServer
from serd.dashboard.settings import is_loopback_host

_LOGGER = logging.getLogger(__name__)

MAX_CONNECTIONS = 8
"""Open connections in all (each is a thread); Prometheus keeps one per target."""
MAX_PER_CLIENT = 4
"""Open connections from one address."""
HEADER_DEADLINE_S = 5.0
"""From a connection's first byte to the end of its request headers, however slowly they come."""
SOCKET_TIMEOUT_S = 5.0
"""Longest wait for one read or write (a scraper that stops reading the answer)."""
RENDER_EVERY_S = 1.0
"""The page is rendered at most this often; scrapes in between share the bytes (a flood costs no renders)."""
LISTEN_BACKLOG = 16
REQUESTS_PER_S = 50
"""Connections served per second in all; Prometheus scrapes a target every 15-60 s."""
REQUESTS_PER_ADDRESS_PER_S = 5
"""Connections served per second from one address (a scraper, a curl by hand)."""
MAX_BUDGET_ADDRESSES = 4096
"""Addresses counted within one second at most (then the second's counts start afresh)."""
INFERENCE_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
"""The int8 model takes ~1-3 ms on a desktop core and a few ms on a Pi 4."""
WINDOW_LATENCY_BUCKETS_S = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
"""From a window's last sample reaching serd to its message being published."""
DAEMON_STATES = ("starting", "running", "source_lost", "stopping")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The text format every Prometheus reads (serd's names need none of format 1.0.0's escaping)."""


class MetricsError(RuntimeError):
    """The metrics server cannot start (address in use); one line for the user."""


# -- serd run ----------------------------------------------------------------------------------


class TimedModel:
    """The daemon's model with each `predict` timed into a histogram; everything else passes through."""

    def __init__(self, model, histogram: Histogram) -> None:
        self._model = model
        self._histogram = histogram

    def predict(self, features):
        started = time.perf_counter()
        try:
            return self._model.predict(features)
        finally:
            self._histogram.observe(time.perf_counter() - started)

    def __getattr__(self, name: str):
        return getattr(self._model, name)


class DaemonMetrics:
    """`serd run`'s metrics: `on_window` is the worker's hook; `collect` reads the rest at scrape time."""

    def __init__(self, room_arousal: bool = False) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.daemon = None
        self.room_arousal = room_arousal
        self.speech_windows = 0
        self.gated = {"below_gate": 0, "no_voice": 0}
        self.last_window_at: float | None = None
        self.arousal: float | None = None
        self.device = ""
        self.inference = Histogram("serd_inference_seconds", "Time the model takes for one speech window",
                                   buckets=INFERENCE_BUCKETS_S, registry=self.registry)
        self.window_latency = Histogram(
            "serd_window_latency_seconds", "From a window's last sample reaching serd to its message being published",
            buckets=WINDOW_LATENCY_BUCKETS_S, registry=self.registry)
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
        self.registry.register(self)

    def attach(self, daemon) -> None:
        """Time the daemon's model and receive each window (call before `daemon.run`)."""
        self.daemon = daemon
        self.device = daemon.settings.device_id
        daemon.model = TimedModel(daemon.model, self.inference)
        daemon.pipeline.model = daemon.model
        daemon.window_hook = self.on_window

    def on_window(self, outcome, message) -> None:
        """Per window, on the worker thread: integer adds and one histogram observation."""
        if outcome.speech:
            self.speech_windows += 1
            if self.room_arousal and message.smoothed_arousal is not None:
                self.arousal = message.smoothed_arousal
        else:
            self.gated[outcome.reason or "below_gate"] = self.gated.get(outcome.reason or "below_gate", 0) + 1
        self.last_window_at = time.monotonic()
        self.window_latency.observe(max(0.0, message.time - message.captured_at))

    def collect(self) -> Iterator:
        d = self.daemon
        if d is None:
            return
        yield counter("serd_windows", "Windows processed", d.counters.windows)
        yield counter("serd_speech_windows", "Windows that passed the speech gate (classified)", self.speech_windows)
        gated = CounterMetricFamily("serd_gated_windows", "Windows not classified, by the gate stage that stopped them",
                                    labels=["reason"])
        for reason, count in sorted(self.gated.items()):
            gated.add_metric([reason], count)
        yield gated
        yield counter("serd_invalid_model_outputs", "Model outputs with NaN or infinity (not published as speech)",
                      d.pipeline.invalid_outputs)
        yield counter("serd_audio_overflows", "Sound-card overflows: audio lost before serd saw it",
                      getattr(d.source, "overruns", 0))
        yield counter("serd_audio_blocks_dropped", "Audio blocks dropped because the worker fell behind",
                      d.blocks.dropped)
        yield counter("serd_messages_published", "Messages (emotion and status) queued to subscribers",
                      d.publisher.sent)
        yield counter("serd_messages_dropped", "Messages not queued (every subscriber's queue full)",
                      d.publisher.dropped)
        yield counter("serd_subscriptions_refused", "Subscriptions to topics that are not this daemon's",
                      d.publisher.refused_subscriptions)
        yield counter("serd_subscribers_cut", "Connections closed for sending too many foreign subscriptions",
                      d.publisher.cut_peers)
        age = math.nan if self.last_window_at is None else time.monotonic() - self.last_window_at
        yield GaugeMetricFamily("serd_last_window_age_seconds", "Seconds since the last window was processed",
                                value=age)
        state = GaugeMetricFamily("serd_state", "The daemon's state (1 for the current one)", labels=["state"])
        for name in DAEMON_STATES:
            state.add_metric([name], 1.0 if d.state == name else 0.0)
        yield state
        model = InfoMetricFamily("serd_model", "The model in use")
        sidecar = getattr(d.model, "sidecar", {})
        model.add_metric([], {"model": d.model.model_id, "sha256": str(sidecar.get("sha256", ""))[:12],
                              "backend": str(getattr(d.model, "backend", ""))})
        yield model
        yield build_info(d.settings.device_id)
        if self.room_arousal:
            arousal = GaugeMetricFamily("serd_room_arousal", "Smoothed arousal of the room's last speech window "
                                        "(0 calm .. 1 activated; opt-in: metrics.room_arousal)", labels=["device"])
            arousal.add_metric([self.device], math.nan if self.arousal is None else self.arousal)
            yield arousal


# -- serd record -------------------------------------------------------------------------------


class RecorderMetrics:
    """`serd record`'s metrics, all read from the recorder and its writer at scrape time."""

    def __init__(self, recorder) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.recorder = recorder
        ProcessCollector(registry=self.registry)
        self.registry.register(self)

    def collect(self) -> Iterator:
        c, writer = self.recorder.counts, self.recorder.writer
        w = writer.counts
        yield counter("serd_record_messages_received", "Messages received and decoded", c.received)
        yield counter("serd_record_messages_malformed", "Messages that failed to decode (skipped)", c.malformed)
        yield counter("serd_record_rows_written", "Rows committed to the database", w.written)
        yield counter("serd_record_batches_written", "Transactions committed", w.batches)
        yield GaugeMetricFamily("serd_record_queue_rows", "Rows waiting for the database", value=writer.queued)
        yield GaugeMetricFamily("serd_record_queue_capacity_rows", "Rows the queue holds before dropping",
                                value=writer.settings.queue_rows)
        yield counter("serd_record_rows_dropped", "Rows dropped because the queue was full (stored as gaps)",
                      w.dropped)
        yield counter("serd_record_messages_missing", "Messages the daemons sent that never arrived (seq gaps)",
                      c.missing)
        yield counter("serd_record_gaps", "Gaps in the daemons' sequence numbers", c.gaps)
        yield counter("serd_record_rows_spooled", "Rows the database could not take in time, moved to the journal "
                      "in the state directory (written when it is back, or by the next start)", w.spooled)
        yield counter("serd_record_rows_lost", "Rows neither the database nor the journal could take", writer.lost)
        yield counter("serd_record_database_errors", "Transient database failures, retried (for PostgreSQL "
                      "each retry reconnects)", w.retries)
        yield GaugeMetricFamily("serd_record_database_failed", "1 once the database failed for good (exit 1 follows)",
                                value=0.0 if writer.error is None else 1.0)
        yield counter("serd_record_sessions", "Daemon sessions begun (a daemon first heard, or heard again "
                      "after a restart)", c.sessions)
        yield counter("serd_record_messages_replayed", "Messages whose seq and time went back for their device "
                      "(a replay or a duplicate): ignored", c.replayed)
        yield counter("serd_record_rows_refused", "Rows the database refused (dropped; the rest of the batch written)",
                      sum(w.refused.values()))
        yield counter("serd_record_database_reopened", "Times the SQLite file was found deleted or replaced and "
                      "opened afresh", w.reopened)
        sub = self.recorder.subscriber
        yield counter("serd_record_connections_dropped", "Publisher connections ZeroMQ ended for good (an "
                      "oversized frame, a failed handshake), reconnected", sub.dropped if sub else 0)
        yield GaugeMetricFamily("serd_record_rooms", "Devices tracked in memory (idle ones are let go beyond a "
                                "cap; their rows are in the database)", value=len(self.recorder.tracker))
        yield build_info("")


def counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def build_info(device: str) -> InfoMetricFamily:
    info = InfoMetricFamily("serd_build", "serd's version (and the daemon's device id)")
    info.add_metric([], {"version": __version__, "device": device})
    return info


# -- the server --------------------------------------------------------------------------------


class _Page:
    """The rendered exposition, re-rendered at most every `RENDER_EVERY_S`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._lock = threading.Lock()
        self._body = b""
        self._rendered_at = -math.inf

    def body(self) -> bytes:
        with self._lock:  # one render at a time; the others wait for it and share it
            now = time.monotonic()
            if now - self._rendered_at >= RENDER_EVERY_S:
                self._body = generate_latest(self._registry)
                self._rendered_at = now
            return self._body


class _Budget:
    """Connections admitted per second, in all and per address (called from the accepting thread only)."""

    def __init__(self) -> None:
        self._second = -1
        self._total = 0
        self._by_address: dict[str, int] = {}
        self.refused = 0

    def take(self, address: str) -> bool:
        second = int(time.monotonic())
        if second != self._second or len(self._by_address) >= MAX_BUDGET_ADDRESSES:
            self._second, self._total, self._by_address = second, 0, {}
        mine = self._by_address.get(address, 0)
        if self._total >= REQUESTS_PER_S or mine >= REQUESTS_PER_ADDRESS_PER_S:
            self.refused += 1
            return False
        self._total += 1
        self._by_address[address] = mine + 1
        return True


class _Server(GuardedServer):
    request_queue_size = LISTEN_BACKLOG
    budget: _Budget
    page: _Page

    def admit(self, request, address: str) -> bool:
        # The per-second budget first: a refused connection is closed before the guard counts it.
        if not self.budget.take(address):
            return False
        return super().admit(request, address)

    def handle_error(self, request, client_address) -> None:  # a scraper that went away: not a traceback
        _LOGGER.debug("metrics request from %s failed", client_address[0], exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(GuardedHandler):
    server: _Server
    timeout = SOCKET_TIMEOUT_S
    header_deadline_s = HEADER_DEADLINE_S
    # HTTP/1.0 (the base class's): one request per connection, so the per-second budget counts requests.

    def version_string(self) -> str:
        return "serd-metrics"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        _LOGGER.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path.split("?", 1)[0] != "/metrics":
            self._send(404, b"serd: only /metrics here\n", "text/plain; charset=utf-8")
            return
        self._send(200, self.server.page.body(), CONTENT_TYPE)

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        if self.headers.get("Content-Length", "0") not in ("", "0") or "Transfer-Encoding" in self.headers:
            self.close_connection = True  # a body we will not read must not be taken for the next request
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class MetricsServer:
    """/metrics on HOST:PORT, served from a thread of its own until `stop`."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        server_class = _Server6 if ":" in host else _Server
        try:
            self._httpd = server_class((host.strip("[]"), port), _Handler)
        except (OSError, OverflowError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise MetricsError(f"cannot serve metrics on {host}:{port}: {reason}") from None
        self._httpd.guard = ConnectionGuard(MAX_CONNECTIONS, MAX_PER_CLIENT)
        self._httpd.budget = _Budget()
        self._httpd.page = _Page(registry)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="serd-metrics", daemon=True)
        self.host, self.port = host, self._httpd.server_address[1]

    @property
    def url(self) -> str:
        shown = f"[{self.host.strip('[]')}]" if ":" in self.host else self.host
        return f"http://{shown}:{self.port}/metrics"

    def start(self) -> "MetricsServer":
        self._thread.start()
        log = _LOGGER.info if is_loopback_host(self.host) else _LOGGER.warning
        log("metrics on %s%s", self.url, "" if is_loopback_host(self.host) else " (plain HTTP, reachable from the network)")
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join(5.0)
        self._httpd.server_close()


def serve(registry: CollectorRegistry, address: str, path: str) -> MetricsServer:
    """Start serving `registry` on a validated HOST:PORT (`path` names the setting in errors)."""
    from serd.config import parse_host_port

    host, port = parse_host_port(address, path)
    return MetricsServer(registry, host, port).start()
