"""serd's speed and memory figures, re-runnable with one command:

    python benchmarks/run.py [--model serd-emotion5-int8] [--clips 240] [--seed-style] > benchmarks/RESULTS.md

RAVDESS clips from $SERD_DATA/ravdess (default ../shared/data/ravdess). Measures, on this machine,
pinned to one core (taskset) where possible:
- per-window time of each stage (ring buffer, level gate, voice detector, features, model, encode + send);
- `analyze` speed as a multiple of real time, over RAVDESS clips, with each speech gate (the voice
  detector, and the level gate alone), on one core (`--jobs 1`) and on all cores (`--jobs N`);
- the daemon at real time on the demo recording: CPU % of one core, RSS, latency from
  the end of a window (its last sample reaching serd) to a subscriber receiving it
  (p50/p99), and time from start to the first message;
- with --seed-style: the same clips through a study-style pipeline (librosa load +
  librosa mel + Keras predict, needs the train extra) for a side-by-side ratio.
Run it on a quiet machine: other processes on the same cores skew every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from peak_rss import peak_rss_mb  # noqa: E402
import sounds  # noqa: E402  (tests/sounds.py: where the corpora are, as the tests and vad_eval.py find them)
DEMO = ROOT / "examples" / "demo.flac"
BLOCK_S = 0.1
"""The file source's default block (config source.block_s)."""


def pin_to_one_core() -> str:
    try:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        return f"pinned to CPU {min(os.sched_getaffinity(0))}"
    except (AttributeError, OSError):
        return "not pinned"


def timed(fn, repeat: int) -> float:
    """Median seconds of one call."""
    for _ in range(3):
        fn()
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def stage_times(model_path: Path) -> dict[str, float]:
    import soundfile
    import zmq

    from serd.config import AnalysisSettings, PublisherSettings
    from serd.daemon import Daemon  # noqa: F401  (import cost is not measured here)
    from serd.features import LogMel, StreamingLogMel, level_dbfs
    from serd.gate import SpeechGate
    from serd.vad import VoiceStream, make_detector
    from serd.messages import EmotionMessage, encode
    from serd.model import Model
    from serd.windows import WindowBuffer

    model = Model(model_path)
    params = model.params
    audio, _ = soundfile.read(DEMO, dtype="float32")
    hop = int(AnalysisSettings().hop_s * params.sample_rate)
    window = audio[int(8.0 * params.sample_rate) :][: params.window_samples].copy()
    logmel = LogMel(params)
    features = logmel(window)
    streaming = StreamingLogMel(params)
    starts = list(range(0, audio.shape[0] - params.window_samples, hop))

    def streaming_pass():
        streaming.reset()
        for start in starts:
            streaming.window_features(audio[start : start + params.window_samples], start)
    gate = SpeechGate(-55.0, 1)
    block = audio[:hop]
    vad = make_detector(AnalysisSettings().vad, params.sample_rate)

    def voice_pass():
        stream = VoiceStream(vad)
        for start in starts:
            stream.voiced_share(audio[start : start + params.window_samples], start)

    def ring():
        buffer = WindowBuffer(params.window_samples, hop)
        buffer.push(audio[: params.window_samples + hop * 4])

    context = zmq.Context()
    pub = context.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(PublisherSettings().bind.replace("5556", "5599"))
    message = EmotionMessage("bench", 0, time.time(), time.time(), 0.0, 2.0, True, -30.0,
                             dict(zip(model.labels, model.predict(features).tolist())),
                             dict(zip(model.labels, model.predict(features).tolist())), "happy", 0.5, model.model_id)
    out = {
        "ring buffer (per window)": timed(ring, 200) / 5,
        "level gate": timed(lambda: gate.update(level_dbfs(window)), 2000),
        "voice detector, one window from scratch": timed(lambda: vad.voiced_share(window), 50),
        "voice detector, streaming (new chunks only: what run and analyze do)": timed(voice_pass, 5) / len(starts),
        "features, one window from scratch": timed(lambda: logmel(window), 500),
        "features, streaming (new frames only: what run and analyze do)": timed(streaming_pass, 20) / len(starts),
        "model (int8 TFLite)": timed(lambda: model.predict(features), 500),
        "encode + send": timed(lambda: pub.send_multipart(encode(message)), 2000),
    }
    _ = block
    pub.close()
    context.term()
    out["total per window (streaming features and detector)"] = sum(v for k, v in out.items() if "from scratch" not in k)
    return out


def analyze_speed(model_path: Path, clips: list[Path], vad: str, jobs: int = 1) -> dict[str, float]:
    """`serd analyze --jobs JOBS` over the clips with the speech gate `vad` (`energy`: the level gate alone)."""
    import soundfile

    from serd.analysis import GateSettings, analyze_paths
    from serd.model import Model

    model = Model(model_path)
    gate = GateSettings(vad=vad)
    audio_s = sum(soundfile.info(str(c)).duration for c in clips)
    list(analyze_paths(clips[:8], model, 0.5, gate))
    t, cpu = time.perf_counter(), time.process_time()
    outcomes = list(analyze_paths(clips, model, 0.5, gate, jobs))
    elapsed, cpu = time.perf_counter() - t, time.process_time() - cpu
    assert not [o for o in outcomes if isinstance(o, Exception)], "every clip must be readable"
    return {"clips": len(clips), "audio_s": audio_s, "seconds": elapsed, "x_realtime": audio_s / elapsed,
            "ms_per_clip": 1000 * elapsed / len(clips), "vad": vad, "jobs": jobs,
            "cpu_seconds_this_process": cpu}


def seed_style_speed(clips: list[Path], n_labels: int) -> dict[str, float]:
    """The study's way: librosa.load (resampling to 22.05 kHz), librosa mel, Keras predict per file."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import librosa
    import soundfile

    from serd.train.networks import build

    t0 = time.perf_counter()
    import keras  # noqa: F401

    n_frames = 1 + int(3.0 * 22050) // 512
    model = build("study", (128, n_frames), n_labels)
    import_and_build_s = time.perf_counter() - t0

    def one(path: Path) -> None:
        y, sr = librosa.load(path, sr=22050, duration=3.0)
        y = np.pad(y, (0, max(0, int(3.0 * sr) - y.shape[0])))
        mel = librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=sr, n_mels=128), ref=np.max)
        model.predict(mel[None, :, :n_frames, None], verbose=0)

    one(clips[0])
    audio_s = sum(soundfile.info(str(c)).duration for c in clips)
    t, cpu = time.perf_counter(), time.process_time()
    for clip in clips:
        one(clip)
    elapsed, cpu = time.perf_counter() - t, time.process_time() - cpu
    return {"clips": len(clips), "audio_s": audio_s, "seconds": elapsed, "x_realtime": audio_s / elapsed,
            "ms_per_clip": 1000 * elapsed / len(clips), "import_and_build_s": import_and_build_s,
            "cpu_seconds_this_process": cpu}


def long_file_memory(model_path: Path, clips: list[Path], minutes: float) -> dict[str, float]:
    """`serd analyze --jobs 1` of one recording of `minutes` (the clips over and over, with pauses): peak RSS and speed."""
    import soundfile

    tmp = Path(tempfile.mkdtemp(prefix="serd-long-"))
    path = tmp / "long.flac"
    rate = 16_000
    pause = np.zeros(rate, dtype=np.float32)
    written = 0
    with soundfile.SoundFile(str(path), "w", rate, 1, subtype="PCM_16") as out:  # written clip by clip: never all in memory
        while written < minutes * 60 * rate:
            for clip in clips:
                if written >= minutes * 60 * rate:
                    break
                samples, _ = soundfile.read(str(clip), dtype="float32")
                out.write(samples)
                out.write(pause)
                written += samples.size + pause.size
    cmd = [sys.executable, "-m", "serd", "analyze", "--json", "--jobs", "1", "--model", str(model_path), str(path)]
    t = time.perf_counter()
    rss_mb, done = peak_rss_mb(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    elapsed = time.perf_counter() - t
    path.unlink()
    tmp.rmdir()
    if done.returncode != 0:
        raise SystemExit(f"run.py: serd analyze of the long file failed: {done.stderr.strip()[-500:]}")
    windows = len(json.loads(done.stdout)["windows"])
    return {"audio_s": written / rate, "windows": windows, "seconds": elapsed, "x_realtime": written / rate / elapsed,
            "rss_mb_max": rss_mb}


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def daemon_realtime(model_path: Path, vad: str) -> dict[str, float]:
    """`serd run` on the demo recording at real time with speech gate `vad`, seen from a subscriber."""
    import zmq

    from serd.messages import EmotionMessage, StatusMessage, decode

    tmp = tempfile.mkdtemp(prefix="serd-bench-")
    endpoint = f"ipc://{tmp}/serd.ipc"
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"serd.")
    sub.setsockopt(zmq.RECONNECT_IVL, 10)  # the endpoint appears when serd binds: find it quickly
    sub.connect(endpoint)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    config = Path(tmp) / "serd.yaml"
    config.write_text(f"analysis:\n  vad: {vad}\n")
    cmd = [sys.executable, "-m", "serd", "run", "--config", str(config), "--source", str(DEMO), "--bind", endpoint,
           "--model", str(model_path)]
    if hasattr(os, "sched_getaffinity"):
        cmd = ["taskset", "-c", str(min(os.sched_getaffinity(0))), *cmd]
    spawned = time.time()
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL, cwd=tmp)
    latencies, in_serd, first_emotion, running_at, first_lag, gate = [], [], None, None, float("nan"), ""
    cpu_start = wall_start = None
    rss = []
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    while proc.poll() is None or poller.poll(200):
        if not poller.poll(200):
            continue
        received = time.time()
        message = decode(sub.recv_multipart())
        if isinstance(message, StatusMessage):
            gate = message.gate
            if message.state == "running" and message.seq == 1 and running_at is None:  # the state change
                running_at = message.time
                cpu_start, wall_start = proc_cpu_seconds(proc.pid), time.monotonic()
            if message.state == "stopping":
                break
        elif isinstance(message, EmotionMessage):
            latencies.append(received - message.captured_at)
            in_serd.append(message.time - message.captured_at)  # stamped when serd built it: its own share
            if first_emotion is None:
                first_emotion = received
                first_lag = received - message.captured_at
            if proc.poll() is None:
                rss.append(proc_rss_mb(proc.pid))
                cpu_end, wall_end = proc_cpu_seconds(proc.pid), time.monotonic()
    proc.wait(timeout=30)
    sub.close()
    context.term()
    lat = np.array(latencies) * 1000
    own = np.array(in_serd) * 1000
    return {
        "gate": gate,
        "windows": len(latencies),
        "cpu_percent_of_one_core": 100 * (cpu_end - cpu_start) / (wall_end - wall_start),
        "rss_mb_max": max(rss),
        "latency_ms_p50": float(np.percentile(lat, 50)),
        "latency_ms_p99": float(np.percentile(lat, 99)),
        "latency_ms_max": float(lat.max()),
        "in_serd_ms_p50": float(np.percentile(own, 50)),
        "in_serd_ms_p99": float(np.percentile(own, 99)),
        "in_serd_ms_max": float(own.max()),
        "start_to_running_s": (running_at - spawned) if running_at else float("nan"),
        "start_to_first_message_s": first_emotion - spawned,
        # The audio allows the first message when its window's last sample arrives (captured_at).
        "first_message_after_audio_allows_s": first_lag,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="serd-emotion5-int8")
    parser.add_argument("--clips", type=int, default=240)
    parser.add_argument("--seed-style", action="store_true",
                        help="also time the study-style pipeline (needs TensorFlow + librosa)")
    parser.add_argument("--seed-style-python", default=sys.executable,
                        help="interpreter with the train extra for --seed-style (default: this one)")
    parser.add_argument("--only-seed-style", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--labels", type=int, default=6, help=argparse.SUPPRESS)
    parser.add_argument("--long-file-minutes", type=float, default=60.0,
                        help="also analyse one recording this long for its peak memory (0: skip; default: %(default)s)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from serd.model import resolve_model_path

    model_path = resolve_model_path(args.model)
    root = sounds.data_root()
    clips = sounds.ravdess_clips(root)[:: max(1, 1440 // args.clips)][: args.clips]
    if not clips:
        raise SystemExit(f"run.py: no RAVDESS clips in {root / 'ravdess'} (Actor_*/*.flac); "
                         "set SERD_DATA to the folder that holds ravdess/")
    if args.only_seed_style:
        pin_to_one_core()
        print(json.dumps(seed_style_speed(clips, args.labels)))
        return
    from serd.analysis import default_jobs
    from serd.config import AnalysisSettings
    from serd.model import Model

    # Before pinning this process (the daemon pins itself; the pool's workers would inherit the pin);
    # both gates one after the other, so that the detector's cost shows under the same conditions.
    daemon = daemon_realtime(model_path, AnalysisSettings().vad)
    daemon_energy = daemon_realtime(model_path, "energy")
    jobs = default_jobs()
    all_cores = {vad: analyze_speed(model_path, clips, vad, jobs) for vad in (AnalysisSettings().vad, "energy")}
    pinned = pin_to_one_core()
    results = {"stages_s": stage_times(model_path), "analyze": analyze_speed(model_path, clips, AnalysisSettings().vad),
               "analyze_energy": analyze_speed(model_path, clips, "energy"),
               "analyze_all_cores": all_cores[AnalysisSettings().vad], "analyze_energy_all_cores": all_cores["energy"],
               "daemon": daemon, "daemon_energy": daemon_energy}
    if args.long_file_minutes > 0:
        results["long_file"] = long_file_memory(model_path, clips, args.long_file_minutes)
    if args.seed_style:
        labels = len(Model(model_path).labels)
        done = subprocess.run([args.seed_style_python, __file__, "--only-seed-style", "--clips", str(args.clips),
                               "--labels", str(labels)],
                              capture_output=True, text=True, check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        results["seed_style"] = json.loads(done.stdout.strip().splitlines()[-1])
    import numpy

    results["versions"] = {"numpy": numpy.__version__}
    results["machine"] = {"platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
                          "python": platform.python_version(), "pinning": pinned,
                          "numpy": results["versions"]["numpy"],
                          "date": time.strftime("%Y-%m-%d %H:%M"), "model": str(model_path.name)}
    if args.json:
        print(json.dumps(results, indent=1))
        return
    print(report(results))


def report(r: dict) -> str:
    m = r["machine"]
    lines = [f"Measured {m['date']} on {m['platform']} ({m['cpu']}), Python {m['python']}, numpy {m['numpy']}, {m['pinning']}, "
             f"model `{m['model']}`.", "", "| stage | per window |", "|---|---|"]
    for stage, seconds in r["stages_s"].items():
        lines.append(f"| {stage} | {seconds * 1000:.3f} ms |")
    a, e = r["analyze"], r["analyze_energy"]
    aa, ea = r["analyze_all_cores"], r["analyze_energy_all_cores"]
    lines += ["", f"`serd analyze` over {a['clips']} RAVDESS clips ({a['audio_s']:.0f} s of audio), hop 0.5 s, in multiples of "
              "real time (milliseconds per clip):", "",
              f"| speech gate | one core (`--jobs 1`) | all cores (`--jobs {aa['jobs']}`) | all / one |", "|---|---|---|---|",
              f"| `{a['vad']}` (the default) | **{a['x_realtime']:.0f}×** ({a['ms_per_clip']:.1f} ms) | "
              f"{aa['x_realtime']:.0f}× ({aa['ms_per_clip']:.1f} ms) | {aa['x_realtime'] / a['x_realtime']:.2f}× |",
              f"| `energy` (level gate alone) | **{e['x_realtime']:.0f}×** ({e['ms_per_clip']:.1f} ms) | "
              f"{ea['x_realtime']:.0f}× ({ea['ms_per_clip']:.1f} ms) | {ea['x_realtime'] / e['x_realtime']:.2f}× |"]
    if "seed_style" in r:
        s = r["seed_style"]
        lines += ["", f"Seed-style pipeline (librosa load + mel + Keras predict, one core) on the same clips in the same run: "
                  f"{s['seconds']:.2f} s, {s['x_realtime']:.0f}× real time ({s['ms_per_clip']:.1f} ms per clip; "
                  f"plus {s['import_and_build_s']:.1f} s to import TensorFlow and build the model). "
                  f"**serd on one core is {s['seconds'] / a['seconds']:.0f}× faster with the voice detector, "
                  f"{s['seconds'] / e['seconds']:.0f}× with the level gate alone.**"]
    # On a shared machine the wall clock measures the other jobs too; CPU seconds measure the work.
    lines += ["", "In CPU seconds of the one-core processes (what the work costs, whatever else shares the core): "
              f"`{a['vad']}` {a['audio_s'] / a['cpu_seconds_this_process']:.0f}× real time, `energy` "
              f"{e['audio_s'] / e['cpu_seconds_this_process']:.0f}×"
              + (f", seed-style {s['audio_s'] / s['cpu_seconds_this_process']:.0f}×: serd "
                 f"{s['cpu_seconds_this_process'] / a['cpu_seconds_this_process']:.0f}× and "
                 f"{s['cpu_seconds_this_process'] / e['cpu_seconds_this_process']:.0f}× faster." if "seed_style" in r else ".")]
    if "long_file" in r:
        f = r["long_file"]
        lines += ["", f"One recording of {f['audio_s'] / 60:.0f} min ({f['windows']} windows), `serd analyze --jobs 1`: "
                  f"**{f['rss_mb_max']:.0f} MB peak RSS**, {f['x_realtime']:.0f}× real time (process start included)."]
    d, e = r["daemon"], r["daemon_energy"]
    lines += ["", "Daemon at real time on examples/demo.flac (39 s, 75 windows), pinned to one core, with the "
              f"speech gate `{d['gate']}` (the default) and, right after it, `{e['gate']}` (the level gate alone):", "",
              f"| figure | `{d['gate']}` | `{e['gate']}` |", "|---|---|---|",
              f"| CPU, % of one core | {d['cpu_percent_of_one_core']:.2f} % | {e['cpu_percent_of_one_core']:.2f} % |",
              f"| RSS (max) | {d['rss_mb_max']:.1f} MB | {e['rss_mb_max']:.1f} MB |",
              f"| end of window → message built in serd (the window's work), p50 / p99 / max | "
              f"{d['in_serd_ms_p50']:.2f} / {d['in_serd_ms_p99']:.2f} / {d['in_serd_ms_max']:.2f} ms | "
              f"{e['in_serd_ms_p50']:.2f} / {e['in_serd_ms_p99']:.2f} / {e['in_serd_ms_max']:.2f} ms |",
              f"| end of window → subscriber on the same core, p50 / p99 / max | {d['latency_ms_p50']:.2f} / {d['latency_ms_p99']:.2f} / "
              f"{d['latency_ms_max']:.2f} ms | {e['latency_ms_p50']:.2f} / {e['latency_ms_p99']:.2f} / {e['latency_ms_max']:.2f} ms |",
              f"| start → `running` (imports, model load, bind, first audio block) | {d['start_to_running_s']:.2f} s | "
              f"{e['start_to_running_s']:.2f} s |",
              f"| start → first message (includes the 2 s of audio the first window needs) | "
              f"{d['start_to_first_message_s']:.2f} s | {e['start_to_first_message_s']:.2f} s |",
              f"| first message after the audio allows (2 s window) | {d['first_message_after_audio_allows_s']:.3f} s | "
              f"{e['first_message_after_audio_allows_s']:.3f} s |"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
