"""Which voice-activity detector keeps classroom noise out of the emotions? Re-runnable with one command:

    python benchmarks/vad_eval.py [--per-corpus 96] [--per-kind 40] [--install-sizes] > /tmp/vad.md

The evaluation set (built here from tests/sounds.py, the same each run):
- speech: 2 s windows (the daemon's window) over the spoken part of RAVDESS and nEMO clips
  ($SERD_DATA, default ../shared/data), clean at -20/-35/-45 dBFS, and at -30 dBFS under
  white, pink, brown and fan noise at 20, 10 and 5 dB SNR (RMS over the window); and a
  short answer: 0.5 s of the utterance alone in the window over a quiet room;
- non-speech: white/pink/brown noise, fan/HVAC hum, clapping, footsteps, door slams, keyboard
  clicks, chord music, and the corpora's non-speech parts (breaths, the room between takes),
  each at -45..-15 dBFS, so every one of them passes today's -55 dBFS level gate.

Speakers and noise seeds are split in two: each detector's threshold (share of voiced frames
in a window) is chosen on the `tune` half, the figures are reported on the `test` half.
Per window, without the hangover (which only extends a decision over the next window).
Silero runs if `onnxruntime` imports and `silero_vad.onnx` is found (see serd/vad.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import sounds  # noqa: E402
from serd.features import level_dbfs  # noqa: E402

WINDOW = 32_000
"""2 s at 16 kHz: FeatureParams().window_samples, the window the daemon cuts."""
GATE_DBFS = -55.0
CLEAN_LEVELS_DBFS = (-20.0, -35.0, -45.0)
MIX_SPEECH_DBFS = -30.0
SNRS_DB = (20, 10, 5)
SHORT_S = 0.5
"""A short answer ("No!", "Yes"): this much of an utterance alone in a window, over a quiet room."""
SPEECH_GROUPS = ("clean", "short", *(f"snr{s}" for s in SNRS_DB))
NON_SPEECH_LEVELS_DBFS = (-45.0, -15.0)
THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.05, 0.951, 0.05))
TARGET_FALSE_ACCEPT = 0.05
TARGET_RECALL_20DB = 0.95
SEED = 20261130


@dataclass
class Item:
    group: str
    """`clean`, `snr20`, `snr10`, `snr5` (speech) or a non-speech kind."""
    speech: bool
    split: str
    samples: np.ndarray
    source: str
    shouted: bool = False
    """RAVDESS at strong intensity, angry, fearful or surprised: the loud end of emotional speech."""


def spread(paths: list[Path], count: int) -> list[Path]:
    """`count` paths spread evenly over a sorted list (every speaker gets some)."""
    if count >= len(paths):
        return paths
    return [paths[int(i)] for i in np.linspace(0, len(paths) - 1, count)]


def build_set(root: Path, per_corpus: int, per_kind: int) -> list[Item]:
    rng = np.random.default_rng(SEED)
    items: list[Item] = []
    clips = spread(sounds.ravdess_clips(root), per_corpus) + spread(sounds.nemo_clips(root), per_corpus)
    if not clips:
        raise SystemExit(f"vad_eval: no RAVDESS/nEMO clips under {root} (set SERD_DATA)")
    speakers = sorted({sounds.speaker_of(p) for p in clips})
    split_of = {s: ("tune", "test")[i % 2] for i, s in enumerate(speakers)}
    for path in clips:
        split = split_of[sounds.speaker_of(path)]
        speech = sounds.speech_window(sounds.read_clip(path), WINDOW)
        shouted = sounds.is_shouted(path)
        for level in CLEAN_LEVELS_DBFS:
            items.append(Item("clean", True, split, sounds.at_level(speech, level), path.name, shouted))
        items.append(Item("short", True, split, sounds.short_utterance(speech, WINDOW, SHORT_S, rng), path.name))
        for kind in sounds.BACKGROUND_NOISES:
            noise = sounds.NOISES[kind](WINDOW, rng)
            for snr in SNRS_DB:
                mixed = sounds.mix_at_snr(sounds.at_level(speech, MIX_SPEECH_DBFS), noise, snr)
                items.append(Item(f"snr{snr}", True, split, mixed, f"{path.name}+{kind}"))
    for kind, make in {**sounds.NOISES, "corpus_silence": None}.items():
        for i in range(per_kind):
            x = sounds.corpus_silence(clips, WINDOW, rng) if make is None else make(WINDOW, rng)
            level = float(rng.uniform(*NON_SPEECH_LEVELS_DBFS))
            items.append(Item(kind, False, ("tune", "test")[i % 2], sounds.at_level(x, level), f"{kind}#{i}"))
    return items


class WebRtcCandidate:
    """WebRTC's VAD (webrtcvad-wheels) on 30 ms frames: the share of frames it calls speech."""

    FRAME = 480

    def __init__(self, mode: int) -> None:
        import webrtcvad

        self._vad = webrtcvad.Vad(mode)

    def voiced_share(self, window: np.ndarray) -> float:
        pcm = (np.clip(window, -1.0, 1.0) * 32767).astype("<i2")
        frames = pcm[: pcm.shape[0] // self.FRAME * self.FRAME].reshape(-1, self.FRAME)
        return float(np.mean([self._vad.is_speech(f.tobytes(), 16000) for f in frames]))


class SileroOnnxCandidate:
    """Silero VAD through onnxruntime, one call per 32 ms chunk, as its own Python wrapper runs it."""

    def __init__(self, model_path: Path) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(str(model_path), sess_options=options,
                                                     providers=["CPUExecutionProvider"])

    def chunk_probs(self, window: np.ndarray) -> np.ndarray:
        state = np.zeros((2, 1, 128), dtype=np.float32)
        context = np.zeros((1, 64), dtype=np.float32)
        probs = []
        for chunk in window[: window.shape[0] // 512 * 512].reshape(-1, 512):
            x = np.concatenate((context, chunk[None, :]), axis=1)
            out, state = self._session.run(None, {"input": x, "state": state, "sr": np.array(16000, dtype=np.int64)})
            probs.append(float(out[0, 0]))
            context = x[:, -64:]
        return np.array(probs, dtype=np.float32)

    def voiced_share(self, window: np.ndarray) -> float:
        return float(np.mean(self.chunk_probs(window) >= 0.5))


def candidates(args) -> dict:
    from serd.vad import SileroVad, default_weights_path

    found = {}
    try:
        for mode in range(4):
            found[f"webrtc (mode {mode})"] = WebRtcCandidate(mode)
    except ImportError:
        print("vad_eval: webrtc skipped: pip install webrtcvad-wheels", file=sys.stderr)
    if args.silero_onnx:
        try:
            found["silero, onnxruntime"] = SileroOnnxCandidate(args.silero_onnx)
        except ImportError:
            print("vad_eval: silero via onnxruntime skipped: pip install onnxruntime", file=sys.stderr)
    found["silero, numpy (serd)"] = SileroVad.load(default_weights_path())
    for path in args.silero_weights:
        found[f"silero, numpy, {path.name}"] = SileroVad.load(path)
    return found


def rates(items: list[Item], shares: np.ndarray, threshold: float, split: str) -> dict[str, float]:
    out = {}
    for group in dict.fromkeys(i.group for i in items):
        picked = [s for i, s in zip(items, shares) if i.group == group and i.split == split]
        out[group] = float(np.mean(np.array(picked) >= threshold)) if picked else float("nan")
    non_speech = [s for i, s in zip(items, shares) if not i.speech and i.split == split]
    out["non_speech"] = float(np.mean(np.array(non_speech) >= threshold))
    # Few clips (RAVDESS strong angry/fearful/surprised, 3 levels each): counted over both halves.
    shouted = [s for i, s in zip(items, shares) if i.shouted]
    out["shouted"] = float(np.mean(np.array(shouted) >= threshold)) if shouted else float("nan")
    return out


def choose_threshold(items: list[Item], shares: np.ndarray) -> float:
    """On the tune half: the most speech kept (mean over clean, short and the three SNRs) minus the non-speech
    accepted; of equals, the highest threshold (the most margin against sounds not in this set)."""
    def score(t: float) -> tuple[float, float]:
        r = rates(items, shares, t, "tune")
        return (round(np.mean([r[g] for g in SPEECH_GROUPS]) - r["non_speech"], 6), t)
    return max(score(t) for t in THRESHOLDS)[1]


def interleaved_times(calls: dict[str, object], n_windows: int, repeat: int = 3) -> dict[str, float]:
    """Median seconds of one call of each `calls[name](i)`, i over the windows, the names taking turns
    window by window: whatever else the machine is doing weighs on all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for name, call in calls.items():  # warm-up
        call(0)
    for _ in range(repeat):
        for i in range(n_windows):
            for name, call in calls.items():
                t = time.perf_counter()
                call(i)
                times[name].append(time.perf_counter() - t)
    return {name: statistics.median(values) for name, values in times.items()}


def model_call(windows: list[np.ndarray]):
    """The shipped model's own inference on each window's features: the yardstick for the detectors' cost."""
    from serd.features import LogMel
    from serd.model import Model, resolve_model_path

    model = Model(resolve_model_path("serd-emotion5-int8"))
    features = [LogMel(model.params)(w) for w in windows]
    return lambda i: model.predict(features[i])


def streaming_call():
    """serd's detector as the daemon runs it: the windows of a continuous recording at a 0.5 s hop in order,
    each 32 ms chunk judged once (serd.vad.VoiceStream); call i is window i, call 0 starts the stream afresh."""
    import soundfile

    from serd.vad import VoiceStream, make_detector

    audio, _ = soundfile.read(str(ROOT / "examples" / "demo.flac"), dtype="float32")
    starts = list(range(0, audio.shape[0] - WINDOW, WINDOW // 4))
    stream = VoiceStream(make_detector("silero", 16000))

    def call(i: int) -> None:
        if i == 0:
            stream.reset()
        stream.voiced_share(audio[starts[i] : starts[i] + WINDOW], starts[i])
    return call, len(starts)


def port_agreement(onnx_path: Path, windows: list[np.ndarray]) -> float | None:
    """Largest difference in chunk probability between serd's numpy port, given the ONNX model's own
    weights, and onnxruntime on that model: the port is right if this is float rounding."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        print("vad_eval: numpy-vs-onnxruntime check skipped: pip install onnx", file=sys.stderr)
        return None
    from serd.vad import SileroVad

    sys.path.insert(0, str(ROOT / "scripts"))
    from silero_vad_weights import ONNX_NAMES

    found = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(onnx_path)).graph.initializer}
    if not set(ONNX_NAMES.values()) <= set(found):
        print(f"vad_eval: numpy-vs-onnxruntime check needs silero_vad_16k_op15.onnx, not {onnx_path.name}",
              file=sys.stderr)
        return None
    port = SileroVad({k: found[v].astype(np.float32) for k, v in ONNX_NAMES.items()})
    reference = SileroOnnxCandidate(onnx_path)
    return float(max(np.abs(port.chunk_probs(w) - reference.chunk_probs(w)).max() for w in windows))


def install_size_mb(requirements: dict[str, list[str]]) -> dict[str, float]:
    """Unpacked size of the aarch64/CPython 3.11 wheels each requirement pulls in (numpy excluded: serd has it)."""
    sizes = {}
    for name, pip_args in requirements.items():
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
                            "--platform", "manylinux2014_aarch64", "--platform", "manylinux_2_28_aarch64",
                            "--platform", "manylinux_2_17_aarch64", "--python-version", "3.11", "-d", tmp,
                            *pip_args], check=True)
            total = 0
            for wheel in Path(tmp).glob("*.whl"):
                if not wheel.name.startswith("numpy-"):
                    total += sum(i.file_size for i in zipfile.ZipFile(wheel).infolist())
            sizes[name] = total / 1e6
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-corpus", type=int, default=96, help="speech clips from each corpus")
    parser.add_argument("--per-kind", type=int, default=40, help="windows of each non-speech kind")
    parser.add_argument("--silero-onnx", type=Path, default=None,
                        help="silero_vad_16k_op15.onnx from the silero-vad wheel: also run it through onnxruntime")
    parser.add_argument("--silero-weights", type=Path, action="append", default=[],
                        help="other Silero .safetensors weights to compare with serd's")
    parser.add_argument("--install-sizes", action="store_true", help="also download the aarch64 wheels to size them")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):  # one core, as the daemon's budget is counted
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    started = time.perf_counter()
    items = build_set(sounds.data_root(), args.per_corpus, args.per_kind)
    below = sum(level_dbfs(i.samples) < GATE_DBFS for i in items)
    print(f"vad_eval: {len(items)} windows built in {time.perf_counter() - started:.0f} s "
          f"({below} below the level gate)", file=sys.stderr)
    results = {"windows": {"speech": sum(i.speech for i in items), "non_speech": sum(not i.speech for i in items)}}
    energy = np.ones(len(items))
    table = {"energy gate only": {"threshold": None, "test": rates(items, energy, 0.5, "test"), "ms": 0.0}}
    stream, n_stream = streaming_call()
    timing_windows = [i.samples for i in items[:: max(1, len(items) // n_stream)]][:n_stream]
    detectors = candidates(args)
    calls = {"model": model_call(timing_windows), "streaming": stream}
    calls.update({name: (lambda i, d=d: d.voiced_share(timing_windows[i])) for name, d in detectors.items()})
    seconds = interleaved_times(calls, len(timing_windows))
    results["model_ms"] = seconds["model"] * 1000
    for name, detector in detectors.items():
        t = time.perf_counter()
        shares = np.array([detector.voiced_share(i.samples) for i in items])
        print(f"vad_eval: {name}: {time.perf_counter() - t:.0f} s", file=sys.stderr)
        threshold = choose_threshold(items, shares)
        results.setdefault("shares", {})[name] = [round(float(x), 4) for x in shares]
        missed = sorted({i.source.split("+")[0] for i, x in zip(items, shares) if i.speech and x < threshold})
        table[name] = {"threshold": threshold, "test": rates(items, shares, threshold, "test"), "missed": missed,
                       "tune": rates(items, shares, threshold, "tune"),
                       "ms": 1000 * seconds[name]}
    results["candidates"] = table
    results["items"] = [{"group": i.group, "split": i.split, "source": i.source, "shouted": i.shouted} for i in items]
    results["streaming_ms"] = 1000 * seconds["streaming"]
    if args.silero_onnx:
        results["numpy_vs_onnxruntime"] = port_agreement(args.silero_onnx, [i.samples for i in items[::50]])
    if args.install_sizes:
        results["install_mb"] = install_size_mb({
            "webrtcvad-wheels": ["webrtcvad-wheels"],
            "onnxruntime (with its dependencies)": ["onnxruntime"],
            "silero-vad (the model files, without torch)": ["--no-deps", "silero-vad"],
        })
    if args.json:  # with every window's share, to study other thresholds without a re-run
        args.json.write_text(json.dumps(results))
    print(report(results, items))


def report(r: dict, items: list[Item]) -> str:
    kinds = list(dict.fromkeys(i.group for i in items if not i.speech))
    n_test = sum(i.split == "test" for i in items)
    lines = [f"{r['windows']['speech']} speech and {r['windows']['non_speech']} non-speech windows; figures on the "
             f"test half ({n_test} windows), thresholds chosen on the tune half. Model inference in the same run: "
             f"{r['model_ms']:.3f} ms per window.", "",
             "| detector | threshold | speech kept: clean / 20 / 10 / 5 dB SNR | short (0.5 s) | shouted (clean, both halves) "
             "| non-speech accepted | CPU per window |", "|---|---|---|---|---|---|---|"]
    for name, c in r["candidates"].items():
        t = c["test"]
        ratio = f"{c['ms']:.2f} ms ({c['ms'] / r['model_ms']:.1f}× the model)" if c["ms"] else "0"
        lines.append(f"| {name} | {c['threshold'] if c['threshold'] is not None else '–'} | "
                     f"{t['clean']:.1%} / {t['snr20']:.1%} / {t['snr10']:.1%} / {t['snr5']:.1%} | {t['short']:.1%} | {t['shouted']:.1%} | "
                     f"{t['non_speech']:.1%} | {ratio} |")
    lines += ["", "Non-speech accepted as speech, by kind (test half):", "",
              "| detector | " + " | ".join(kinds) + " |", "|---" * (len(kinds) + 1) + "|"]
    for name, c in r["candidates"].items():
        lines.append(f"| {name} | " + " | ".join(f"{c['test'][k]:.0%}" for k in kinds) + " |")
    serd = r["candidates"].get("silero, numpy (serd)")
    if serd:
        lines += ["", f"Clips of which serd's detector missed at least one speech window (both halves): "
                  + (", ".join(f"`{m}`" for m in serd["missed"]) or "none") + "."]
    lines += ["", f"serd's detector as `run` and `analyze` use it (a continuous recording, 0.5 s hop, each chunk judged "
              f"once): {r['streaming_ms']:.2f} ms per window ({r['streaming_ms'] / r['model_ms']:.1f}× the model)."]
    if r.get("numpy_vs_onnxruntime") is not None:
        lines.append(f"The numpy port with the ONNX model's weights against onnxruntime: largest difference in a chunk's "
                     f"probability {r['numpy_vs_onnxruntime']:.1e}.")
    if "install_mb" in r:
        lines += ["", "Extra install on a Pi (aarch64/CPython 3.11 wheels, unpacked, numpy not counted): " +
                  ", ".join(f"`{k}` {v:.1f} MB" for k, v in r["install_mb"].items()) + "."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
