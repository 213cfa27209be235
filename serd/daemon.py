"""The daemon: wiring and the single worker loop.

The worker (this module's `run`, on the main thread so that signal handlers run
between its steps) takes blocks from the source's bounded queue and does
windows -> gate -> features -> model -> smoothing -> publish. It also sends
status heartbeats, systemd watchdog pings, and reopens a lost microphone with
backoff. It is the only user of the ZeroMQ socket.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass

import numpy as np

from serd import __version__
from serd.config import EX_INTERRUPTED, Settings
from serd.labels import arousal_of
from serd.messages import EmotionMessage, StatusMessage
from serd.notify import SystemdNotifier
from serd.pipeline import WindowOutcome, WindowPipeline
from serd.procstats import CpuMeter, rss_mb
from serd.publisher import Publisher, PublisherError
from serd.sources import AudioBlock, BlockQueue, EndOfStream, SourceError, SourceLost
from serd.windows import WindowBuffer

_LOGGER = logging.getLogger(__name__)
POLL_S = 0.25
"""Longest the worker waits for audio before checking signals, heartbeats and the watchdog."""
FIRST_RETRY_S = 1.0


@dataclass
class Counters:
    windows: int = 0
    published: int = 0


class Daemon:
    def __init__(self, settings: Settings, model, source, publisher: Publisher, notifier: SystemdNotifier | None = None) -> None:
        self.settings = settings
        self.model = model
        self.source = source
        self.publisher = publisher
        self.notifier = notifier or SystemdNotifier()
        self.pipeline = WindowPipeline(model, settings.analysis)
        self.rate = model.params.sample_rate
        hop_samples = max(1, int(round(settings.analysis.hop_s * self.rate)))
        self.buffer = WindowBuffer(model.params.window_samples, hop_samples)
        self.blocks = BlockQueue(settings.source.queue_blocks)
        self.counters = Counters()
        self.state = "starting"
        self.detail = ""
        self.exit_code = 0
        self._stop = threading.Event()
        self._interrupted = False
        self._reload = threading.Event()
        self._seq = {"emotion": 0, "status": 0}
        self._started = time.monotonic()
        self._cpu = CpuMeter()
        self._stream_base = 0  # samples before the last reset, so window times keep counting
        self._ready_sent = False
        self._retry_at: float | None = None
        self._retry_delay = FIRST_RETRY_S
        self._last_block = time.monotonic()
        self.reload_hook = None  # set by the CLI: returns new Settings on SIGHUP
        self.window_hook = None  # set by serd.metrics: called with (outcome, message) after each window

    # -- control, callable from signal handlers ---------------------------------------------
    def request_stop(self, signum: int | None = None, _frame=None) -> None:
        if signum == signal.SIGINT:
            # Ctrl-C: a clean stop all the same, but the exit code says it was interrupted (README).
            self._interrupted = True
        self._stop.set()

    def request_reload(self, *_args) -> None:
        self._reload.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGHUP, self.request_reload)

    # -- messages --------------------------------------------------------------------------
    def _next_seq(self, topic: str) -> int:
        seq = self._seq[topic]
        self._seq[topic] += 1
        return seq

    def status_message(self) -> StatusMessage:
        return StatusMessage(
            device=self.settings.device_id,
            seq=self._next_seq("status"),
            time=time.time(),
            state=self.state,
            uptime_s=time.monotonic() - self._started,
            source=self.source.description,
            model=self.model.model_id,
            windows=self.counters.windows,
            published=self.counters.published,
            overruns=getattr(self.source, "overruns", 0),
            dropped=self.blocks.dropped + self.publisher.dropped,
            cpu_percent=self._cpu.percent(),
            rss_mb=rss_mb(),
            detail=self.detail,
            version=__version__,
            gate=self.pipeline.gate.name,
        )

    def _send_status(self) -> None:
        message = self.status_message()
        self.publisher.send(message)
        self.notifier.status(f"{self.state}: {self.counters.windows} windows" + (f" ({self.detail})" if self.detail else ""))

    def _set_state(self, state: str, detail: str = "") -> None:
        if state == self.state and detail == self.detail:
            return
        self.state, self.detail = state, detail
        log = _LOGGER.warning if state == "source_lost" else _LOGGER.info
        log("state %s%s", state, f": {detail}" if detail else "")
        self._send_status()

    def emotion_message(self, outcome: WindowOutcome, captured_at: float) -> EmotionMessage:
        labels = self.model.labels
        probs = None if outcome.probs is None else dict(zip(labels, map(float, outcome.probs)))
        smoothed = None if outcome.smoothed is None else dict(zip(labels, map(float, outcome.smoothed)))
        label = confidence = None
        if outcome.smoothed is not None:
            top = int(np.argmax(outcome.smoothed))
            label, confidence = labels[top], float(outcome.smoothed[top])
        base_s = self._stream_base / self.rate
        return EmotionMessage(
            device=self.settings.device_id,
            seq=self._next_seq("emotion"),
            time=time.time(),
            captured_at=captured_at,
            start_s=base_s + outcome.start_s,
            end_s=base_s + outcome.end_s,
            speech=outcome.speech,
            level_dbfs=outcome.level_dbfs,
            probs=probs,
            smoothed=smoothed,
            label=label,
            confidence=confidence,
            model=self.model.model_id,
            arousal=arousal_of(outcome.probs, labels),
            smoothed_arousal=arousal_of(outcome.smoothed, labels),
        )

    # -- the worker loop -------------------------------------------------------------------
    def run(self) -> int:
        self._send_status()  # "starting"
        try:
            self.source.start(self.blocks)
        except SourceError as exc:
            if not self.source.live or getattr(exc, "fatal", False):
                _LOGGER.error("%s", exc)
                self.exit_code = 1
                self._finish()
                return self.exit_code
            self._lost(str(exc))
            # Started, though without audio: tell systemd so it neither times out nor restarts us.
            self._send_ready()
        self._last_block = time.monotonic()
        heartbeat = self.settings.publisher.status_interval_s
        next_status = time.monotonic() + heartbeat
        watchdog_s = self.notifier.watchdog_interval_s()
        next_watchdog = time.monotonic()
        while not self._stop.is_set():
            item = self.blocks.get(timeout=POLL_S)
            now = time.monotonic()
            if isinstance(item, AudioBlock):
                self._on_block(item, now)
            elif isinstance(item, EndOfStream):
                self._on_end(item)
                break
            elif isinstance(item, SourceLost):
                self._lost(item.reason)
            if self.source.live:
                self._check_live_source(now)
            # Every turn, not only when a window goes out: a subscription flood is read (and its
            # connections cut) as it arrives, so libzmq never holds much of it.
            self.publisher.serve_subscriptions()
            if self._reload.is_set():
                self._reload.clear()
                self._apply_reload()
            if now >= next_status:
                self._send_status()
                next_status = now + heartbeat
            if watchdog_s is not None and now >= next_watchdog:
                # Pinged from this loop only: a stuck worker stops the pings and systemd restarts it.
                self.notifier.watchdog()
                next_watchdog = now + watchdog_s
        self._finish()
        if self._interrupted and self.exit_code == 0:
            self.exit_code = EX_INTERRUPTED
        return self.exit_code

    def _on_block(self, block: AudioBlock, now: float, resample: bool = True) -> None:
        self._last_block = now
        if self.state != "running":
            self._set_state("running")
            self._send_ready()
        samples = self.source.to_model_rate(block.samples) if resample else block.samples.reshape(-1)
        for window in self.buffer.push(samples):
            outcome = self.pipeline.process(window)
            message = self.emotion_message(outcome, block.captured_at)
            if self.publisher.send(message):
                self.counters.published += 1
            if self.window_hook is not None:
                self.window_hook(outcome, message)
            # Counted last: /metrics is read on another thread, and a scrape that sees this window
            # counted must also see its speech count and room arousal (a CI run caught the gap).
            self.counters.windows += 1

    def _send_ready(self) -> None:
        if not self._ready_sent:
            self.notifier.ready(f"{self.state}: {self.source.description}")
            self._ready_sent = True

    def _on_end(self, end: EndOfStream) -> None:
        if not end.failed:  # not the wording: an unreadable "end of take.wav" is a failure
            received = self.buffer.received
            if 0 < received < self.buffer.window_samples:
                # Shorter than one window: zero-pad it to one, as `serd analyze` does.
                padding = np.zeros((self.buffer.window_samples - received, 1), dtype=np.float32)
                self._on_block(AudioBlock(padding, time.time()), time.monotonic(), resample=False)
            _LOGGER.info("%s", end.reason)
        else:
            _LOGGER.error("%s", end.reason)
            self.exit_code = 1

    def _check_live_source(self, now: float) -> None:
        if self.state == "running" and now - self._last_block > self.settings.source.stall_timeout_s:
            self._lost(f"no audio for {now - self._last_block:.1f} s")
        elif self.state == "running" and hasattr(self.source, "active") and not self.source.active:
            self._lost("the input stream stopped")
        if self.state == "source_lost" and self._retry_at is not None and now >= self._retry_at:
            self._reopen()

    def _lost(self, reason: str) -> None:
        self.source.stop()
        self._stream_base += self.buffer.received
        self.buffer.reset()
        self.pipeline.reset()
        self._retry_at = time.monotonic() + self._retry_delay
        self._set_state("source_lost", f"{reason}; retrying in {self._retry_delay:.0f} s")

    def _reopen(self) -> None:
        try:
            self.source.start(self.blocks)
        except SourceError as exc:
            self._retry_delay = min(self._retry_delay * 2, self.settings.source.reconnect_max_s)
            self._retry_at = time.monotonic() + self._retry_delay
            self._set_state("source_lost", f"{exc}; retrying in {self._retry_delay:.0f} s")
            return
        self._retry_at = None
        self._retry_delay = FIRST_RETRY_S
        self._last_block = time.monotonic()  # "running" again once audio actually flows

    def _apply_reload(self) -> None:
        if self.reload_hook is None:
            return
        self.notifier.reloading()
        try:
            new = self.reload_hook()
            pipeline = WindowPipeline(self.model, new.analysis) if new.analysis != self.settings.analysis else None
            if self.settings.publisher.curve.enabled:
                self.publisher.reload_clients()  # revoking a key must not wait for a restart
        except (ValueError, PublisherError) as exc:  # ConfigError, VadError, an unreadable key list
            _LOGGER.error("reload refused, keeping the running config: %s", exc)
            self.notifier.ready(f"{self.state}")
            return
        if pipeline is not None:
            self.pipeline = pipeline
            hop_samples = max(1, int(round(new.analysis.hop_s * self.rate)))
            if hop_samples != self.buffer.hop_samples:
                self._stream_base += self.buffer.received
                self.buffer = WindowBuffer(self.model.params.window_samples, hop_samples)
        for section in ("device_id", "model", "source", "publisher"):
            if getattr(new, section) != getattr(self.settings, section):
                _LOGGER.warning("reload: %s changed; restart serd to apply it", section)
        logging.getLogger("serd").setLevel(new.log_level.upper())
        self.settings = Settings(
            device_id=self.settings.device_id,
            model=self.settings.model,
            source=self.settings.source,
            analysis=new.analysis,
            publisher=self.settings.publisher,
            log_level=new.log_level,
        )
        _LOGGER.info("configuration reloaded")
        self.notifier.ready(f"{self.state}")

    def _finish(self) -> None:
        self.notifier.stopping()
        self.source.stop()
        self.state, self.detail = "stopping", ""
        _LOGGER.info("stopping after %d windows", self.counters.windows)
        self.publisher.send(self.status_message())
        self.publisher.close()
