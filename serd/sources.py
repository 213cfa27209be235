"""Audio in: microphone, file replay, raw PCM on stdin.

Every source fills one bounded queue with `AudioBlock`s from its own thread (or
the PortAudio callback, which does nothing but copy and count), and ends with
`EndOfStream` or reports `SourceLost`. The worker converts each block to mono
at the model rate with `source.to_model_rate` — never inside the callback.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from serd.audiofile import BLOCK_S, iter_blocks
from serd.config import SourceSettings

_LOGGER = logging.getLogger(__name__)
PCM16_SCALE = 1.0 / 32768.0
PREFERRED_CAPTURE_RATES = (16000, 48000, 44100, 32000, 22050, 8000)


class SourceError(RuntimeError):
    """A source that cannot start; the message is one line saying what to do.

    `fatal`: retrying cannot help (e.g. PortAudio is not installed).
    """

    def __init__(self, message: str, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


@dataclass(frozen=True)
class AudioBlock:
    samples: np.ndarray
    """(frames, channels) float32 at the source's rate (file: mono at the model rate)."""
    captured_at: float
    """Wall-clock time the block's last sample arrived."""


@dataclass(frozen=True)
class EndOfStream:
    reason: str = "end of input"
    failed: bool = False
    """The stream broke (unreadable file, stdin error) rather than ended; the daemon exits 1."""


@dataclass(frozen=True)
class SourceLost:
    reason: str


class BlockQueue:
    """The bounded hand-over from a source to the worker."""

    def __init__(self, max_blocks: int) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=max_blocks)
        self.dropped = 0  # blocks thrown away because the worker was behind (live sources only)

    def offer(self, item) -> None:
        """Never blocks: a live source must not wait (audio callback)."""
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1

    def put(self, item, stop: threading.Event) -> bool:
        """Waits for room (file/stdin: nothing is lost); False if asked to stop meanwhile."""
        while not stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def get(self, timeout: float):
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def qsize(self) -> int:
        return self._queue.qsize()


class Converter:
    """Downmix and resample a live stream to the model rate (streaming soxr)."""

    def __init__(self, rate_in: int, rate_out: int) -> None:
        import soxr

        self.rate_in, self.rate_out = rate_in, rate_out
        self._resampler = None if rate_in == rate_out else soxr.ResampleStream(rate_in, rate_out, 1, dtype="float32")

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        mono = samples.mean(axis=1, dtype=np.float32) if samples.ndim == 2 and samples.shape[1] > 1 else samples.reshape(-1)
        mono = np.nan_to_num(mono.astype(np.float32, copy=False), nan=0.0, posinf=1.0, neginf=-1.0)
        if self._resampler is None:
            return mono
        return self._resampler.resample_chunk(mono)


class FileSource:
    """Replays a file through the same reader as `serd analyze`, at real time or as fast as possible."""

    live = False

    def __init__(self, path: str, model_rate: int, realtime: bool, block_s: float) -> None:
        self.path = path
        self.model_rate = model_rate
        self.realtime = realtime
        self.block_s = block_s
        self.description = f"file:{path}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, blocks: BlockQueue) -> None:
        from serd.audiofile import AudioFileError, file_duration_s

        try:  # read the header now, so that a bad file fails at start with its one-line error
            file_duration_s(self.path)
        except AudioFileError as exc:
            raise SourceError(str(exc)) from None
        self._first = iter_blocks(self.path, self.model_rate, BLOCK_S)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(blocks,), name="serd-file", daemon=True)
        self._thread.start()

    def _run(self, blocks: BlockQueue) -> None:
        from serd.audiofile import AudioFileError

        sent = 0
        t0 = time.monotonic()
        step = max(1, int(self.block_s * self.model_rate))
        try:
            for decoded in self._first:
                for offset in range(0, decoded.shape[0], step):
                    piece = decoded[offset : offset + step]
                    sent += piece.shape[0]
                    if self.realtime:
                        delay = t0 + sent / self.model_rate - time.monotonic()
                        if delay > 0 and self._stop.wait(delay):
                            return
                    if not blocks.put(AudioBlock(piece[:, None], time.time()), self._stop):
                        return
        except AudioFileError as exc:
            blocks.put(EndOfStream(str(exc), failed=True), self._stop)
            return
        except Exception as exc:  # never leave the worker waiting for an end that will not come
            _LOGGER.debug("file source crashed", exc_info=True)
            blocks.put(EndOfStream(f"{self.path}: reading failed ({type(exc).__name__}: {exc})", failed=True), self._stop)
            return
        blocks.put(EndOfStream(f"end of {self.path}"), self._stop)

    def to_model_rate(self, samples: np.ndarray) -> np.ndarray:
        return samples.reshape(-1)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)


class StdinSource:
    """Raw s16le PCM on stdin: `arecord -f S16_LE -r 16000 -c 1 | serd run --source -`."""

    live = False

    def __init__(self, rate: int, channels: int, model_rate: int, block_s: float, stream: BinaryIO | None = None) -> None:
        self.rate, self.channels = rate, channels
        self.block_s = block_s
        self.description = f"stdin:s16le/{rate}Hz/{channels}ch"
        self._stream = stream
        self._converter = Converter(rate, model_rate)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, blocks: BlockQueue) -> None:
        stream = self._stream or sys.stdin.buffer
        self._thread = threading.Thread(target=self._run, args=(blocks, stream), name="serd-stdin", daemon=True)
        self._thread.start()

    def _run(self, blocks: BlockQueue, stream: BinaryIO) -> None:
        try:
            self._read(blocks, stream)
        except Exception as exc:  # never leave the worker waiting for an end that will not come
            _LOGGER.debug("stdin source crashed", exc_info=True)
            blocks.put(EndOfStream(f"stdin: reading failed ({type(exc).__name__}: {exc})", failed=True), self._stop)

    def _read(self, blocks: BlockQueue, stream: BinaryIO) -> None:
        frame_bytes = 2 * self.channels
        want = max(1, int(self.block_s * self.rate)) * frame_bytes
        pending = b""
        while not self._stop.is_set():
            try:
                chunk = stream.read(want)  # a pipe read returns `want` bytes, or fewer at the end
            except (OSError, ValueError) as exc:
                blocks.put(EndOfStream(f"stdin closed ({exc})", failed=True), self._stop)
                return
            if not chunk:
                break
            pending += chunk
            usable = len(pending) - len(pending) % frame_bytes  # a frame split across reads waits
            if usable:
                data = np.frombuffer(pending[:usable], dtype="<i2").reshape(-1, self.channels)
                pending = pending[usable:]
                if not blocks.put(AudioBlock(data.astype(np.float32) * PCM16_SCALE, time.time()), self._stop):
                    return
        blocks.put(EndOfStream("end of stdin"), self._stop)

    def to_model_rate(self, samples: np.ndarray) -> np.ndarray:
        return self._converter(samples)

    def stop(self) -> None:
        self._stop.set()


def import_sounddevice():
    """sounddevice, or a SourceError that says how to get PortAudio."""
    try:
        import sounddevice
    except OSError as exc:  # sounddevice raises OSError when libportaudio is missing
        raise SourceError(
            f"the microphone needs the PortAudio library ({exc}); install it: sudo apt install libportaudio2",
            fatal=True,
        ) from None
    except ImportError:
        raise SourceError("the microphone needs the sounddevice package: pip install sounddevice", fatal=True) from None
    return sounddevice


def rescan_devices(sd) -> None:
    """Make PortAudio list the devices present now.

    PortAudio enumerates devices once, when it is initialised (at `import sounddevice`):
    a microphone missing at boot, or unplugged and plugged back (possibly under a new
    index), stays invisible until PortAudio is re-initialised. Only call this with no
    stream open: re-initialising invalidates every open stream.
    """
    try:
        if sd._initialized:
            sd._terminate()
        sd._initialize()
    except sd.PortAudioError as exc:
        raise SourceError(f"cannot re-scan audio devices ({exc})") from None


def input_devices() -> list[dict]:
    """Input-capable devices: index, name, channels, default rate, and which common rates work."""
    sd = import_sounddevice()
    try:
        devices = sd.query_devices()
    except sd.PortAudioError as exc:
        raise SourceError(f"cannot list audio devices: {exc}") from None
    out = []
    for index, info in enumerate(devices):
        if info["max_input_channels"] <= 0:
            continue
        rates = []
        for rate in PREFERRED_CAPTURE_RATES:
            try:
                sd.check_input_settings(device=index, samplerate=rate, channels=1, dtype="float32")
                rates.append(rate)
            except Exception:  # PortAudio answers "invalid sample rate" in several ways
                continue
        out.append(
            {
                "index": index,
                "name": info["name"],
                "channels": int(info["max_input_channels"]),
                "default_rate": int(info["default_samplerate"]),
                "rates": rates,
            }
        )
    return out


def find_input_device(wanted: str | int | None) -> int | None:
    """Device index from an index, a name substring, or None (the default device)."""
    if wanted is None:
        return None
    devices = input_devices()
    if isinstance(wanted, int) or (isinstance(wanted, str) and wanted.isdigit()):
        index = int(wanted)
        if any(d["index"] == index for d in devices):
            return index
        raise SourceError(f"no input device with index {index}; list them with: serd devices")
    matches = [d for d in devices if wanted.lower() in d["name"].lower()]
    if not matches:
        raise SourceError(f"no input device matching {wanted!r}; list them with: serd devices")
    return matches[0]["index"]


NO_INPUT_DEVICE = "no input device found; see `serd devices`, or use `--source FILE`"
"""Said (in the log and the status detail, with the retry delay) while there is no microphone at all."""


def _has_input_device(sd) -> bool:
    """Whether PortAudio lists any device that can record (else it only says "Error querying device -1")."""
    try:
        return any(info["max_input_channels"] > 0 for info in sd.query_devices())
    except sd.PortAudioError:
        return False


class MicSource:
    """A sounddevice input stream; the callback only copies into the queue and counts."""

    live = True

    def __init__(self, settings: SourceSettings, model_rate: int) -> None:
        self.settings = settings
        self.model_rate = model_rate
        self.overruns = 0
        self.description = f"mic:{settings.input_device if settings.input_device is not None else 'default'}"
        self._stream = None
        self._converter: Converter | None = None
        self.capture_rate: int | None = None
        self._opened_before = False

    def _choose_rate(self, sd, device: int | None) -> int:
        channels = self.settings.channels
        candidates = [self.settings.capture_rate] if self.settings.capture_rate else []
        if not candidates:
            default = int(sd.query_devices(device, "input")["default_samplerate"])
            candidates = [self.model_rate, default, *PREFERRED_CAPTURE_RATES]
        for rate in candidates:
            try:
                sd.check_input_settings(device=device, samplerate=rate, channels=channels, dtype="float32")
                return int(rate)
            except Exception:
                continue
        raise SourceError(f"the input device supports none of the rates {candidates} with {channels} channel(s)")

    def start(self, blocks: BlockQueue) -> None:
        sd = import_sounddevice()
        if self._opened_before:  # a retry: the device may have come (back) since PortAudio looked
            rescan_devices(sd)
        self._opened_before = True
        device = find_input_device(self.settings.input_device)
        if device is None and not _has_input_device(sd):
            raise SourceError(NO_INPUT_DEVICE)
        try:
            rate = self._choose_rate(sd, device)
            block_frames = max(1, int(self.settings.block_s * rate))

            def callback(indata, frames, time_info, status) -> None:
                # Runs on PortAudio's thread: copy, count, nothing else.
                if status.input_overflow:
                    self.overruns += 1
                blocks.offer(AudioBlock(indata.copy(), time.time()))

            self._stream = sd.InputStream(
                device=device,
                samplerate=rate,
                channels=self.settings.channels,
                dtype="float32",
                blocksize=block_frames,
                callback=callback,
            )
            self._stream.start()
        except sd.PortAudioError as exc:
            self.stop()
            raise SourceError(f"cannot open the microphone ({exc})") from None
        self.capture_rate = rate
        self._converter = Converter(rate, self.model_rate)
        name = sd.query_devices(self._stream.device, "input")["name"]
        self.description = f"mic:{name}@{rate}Hz"
        _LOGGER.info("capturing from %s at %d Hz", name, rate)

    @property
    def active(self) -> bool:
        return self._stream is not None and bool(self._stream.active)

    def to_model_rate(self, samples: np.ndarray) -> np.ndarray:
        if self._converter is None:
            raise SourceError("the microphone is not started")
        return self._converter(samples)

    def stop(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.abort()
                stream.close()
            except Exception as exc:  # a vanished device fails to close; it is gone either way
                _LOGGER.debug("closing the stream failed: %s", exc)


def make_source(settings: SourceSettings, model_rate: int):
    if settings.kind == "file":
        return FileSource(str(settings.path), model_rate, settings.realtime, settings.block_s)
    if settings.kind == "stdin":
        return StdinSource(settings.stdin_rate, settings.channels, model_rate, settings.block_s)
    return MicSource(settings, model_rate)
