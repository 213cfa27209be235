"""serd's reliability figures (issue 6), the long versions of tests/reliability/:

    python benchmarks/reliability.py [--model M] > benchmarks/RELIABILITY-run.md

- soak: 24 hours of audio (the demo recording looped with silence, loud noise and a noise
  floor between) through `serd run --source -` to a keeping-up subscriber: seq gaps,
  windows vs published vs received, RSS per hour of audio, file descriptors, windows/s;
- load: 20 subscribers and one stalled subscriber on one daemon over TCP loopback (4 h of
  audio at 40x real time): what each received, daemon CPU per window early vs late, RSS;
- churn: 10000 subscribers that connect, receive one message and disconnect (after 1000
  warm-up ones): the daemon's RSS and fds every 1000;
- Pi budget: the daemon pinned to CPU 0 next to a busy sibling on CPU 0, 5 minutes of the
  demo in real time: windows, latency, CPU per hop / hop length (the headroom); and the
  same per-window work measured in-process under the same contention;
- bad input: what `serd analyze` says of every generated malformed file.

Progress goes to stderr, the report (markdown) to stdout. The model defaults to the shipped
`models/serd-emotion5-int8.tflite`; without it, to the tests' tiny model (the same
`serd_cnn` network with random weights, so the same work per window), generated with
tests/make_tiny_model.py (needs the train extra). Figures from a loaded machine are upper
bounds on cost: say so when you publish them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
RELIABILITY_TESTS = ROOT / "tests" / "reliability"
sys.path[:0] = [str(ROOT), str(RELIABILITY_TESTS)]

import numpy as np  # noqa: E402

import helpers_reliability as rel  # noqa: E402

SHIPPED = ROOT / "models" / "serd-emotion5-int8.tflite"
BUDGET_LOOPS = 8
"""The demo (39 s) looped 8 times: 5 minutes of real time for the budget run."""
PROBE_PASSES = 5


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def resolve_model(requested: str | None, workdir: Path) -> tuple[Path, str]:
    if requested:
        from serd.model import resolve_model_path

        path = resolve_model_path(requested)
        return path, f"`{path.name}` (as asked)"
    if SHIPPED.is_file():
        return SHIPPED, f"the shipped `{SHIPPED.name}`"
    out = workdir / "model"
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "make_tiny_model.py"), str(out), "--kind", "int8"],
                          env=rel.serd_env(), capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"no shipped model and the tiny model could not be made:\n{done.stderr[-2000:]}")
    path = out / "tiny-emotion6-int8.tflite"
    return path, (f"`{path.name}`: {SHIPPED.name} was not there yet; this is the tests' tiny model, the shipped "
                  "`serd_cnn` network with seeded random weights, so the work per window is the same")


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# -- in-process: the per-window work under the same contention ----------------------------------------

def probe(model_path: Path) -> None:
    """Child mode: wall and CPU time of one window's work (pipeline + encode), as JSON on stdout."""
    import soundfile

    from serd.config import AnalysisSettings
    from serd.daemon import Daemon  # noqa: F401  (the daemon's imports, as in a real run)
    from serd.messages import EmotionMessage, encode
    from serd.model import Model
    from serd.pipeline import WindowPipeline
    from serd.windows import WindowBuffer

    model = Model(model_path)
    audio, _ = soundfile.read(str(rel.DEMO_FLAC), dtype="float32")
    settings = AnalysisSettings()
    walls, cpus = [], []
    for _ in range(PROBE_PASSES):
        pipeline = WindowPipeline(model, settings)
        buffer = WindowBuffer(model.params.window_samples, int(settings.hop_s * model.params.sample_rate))
        for window in buffer.push(audio):
            wall, cpu = time.perf_counter(), time.process_time()
            outcome = pipeline.process(window)
            probs = None if outcome.probs is None else dict(zip(model.labels, map(float, outcome.probs)))
            encode(EmotionMessage("probe", 0, time.time(), time.time(), outcome.start_s, outcome.end_s,
                                  outcome.speech, outcome.level_dbfs, probs, probs, None, None, model.model_id))
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
    print(json.dumps({"wall_s": walls, "cpu_s": cpus}))


def run_probe(model_path: Path, core: int, sibling: bool) -> dict:
    def once() -> dict:
        done = subprocess.run(["taskset", "-c", str(core), sys.executable, __file__, "--probe", str(model_path)],
                              env=rel.serd_env(), capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-2000:])
        return json.loads(done.stdout.strip().splitlines()[-1])

    if not sibling:
        return once()
    with rel.busy_sibling(core):
        return once()


# -- the runs -------------------------------------------------------------------------------------------

def looped_demo(workdir: Path, loops: int) -> Path:
    import soundfile

    audio, rate = soundfile.read(str(rel.DEMO_FLAC), dtype="int16")
    path = workdir / f"demo-x{loops}.flac"
    soundfile.write(str(path), np.tile(audio, loops), rate, subtype="PCM_16")
    return path


def bad_input_table(model_path: Path, workdir: Path) -> list[str]:
    import bad_inputs

    directory = workdir / "bad"
    directory.mkdir()
    made = bad_inputs.write_all(directory)
    names = list(made)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "serd", "analyze", "--json", "--model", str(model_path), *names],
                          cwd=directory, env=rel.serd_env(), capture_output=True, text=True, timeout=600)
    wall = time.monotonic() - started
    results = {r["file"]: r for r in map(json.loads, done.stdout.splitlines())}
    lines = [f"`serd analyze --json` of all {len(names)} files in one run: exit {done.returncode}, "
             f"{wall:.1f} s, traceback on stderr: {'yes' if 'Traceback' in done.stderr else 'no'}.", "",
             "| file | what it is | expected | serd says |", "|---|---|---|---|"]
    for name in names:
        case, result = made[name], results.get(name, {"error": "NO OUTPUT"})
        if "error" in result:
            said = "error: " + result["error"].removeprefix(f"{name}: ")
        else:
            speech = sum(w["speech"] for w in result["windows"])
            said = (f"`{result['label']}`" if result["label"] else "`label: null`") + \
                f" ({speech}/{len(result['windows'])} windows classified)"
        lines.append(f"| `{name}` | {case.why} | {case.expect} | {said.replace('|', '/')} |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model name or .tflite (default: shipped, else the tiny one)")
    parser.add_argument("--soak-hours", type=float, default=24.0)
    parser.add_argument("--load-hours", type=float, default=4.0)
    parser.add_argument("--load-speed", type=float, default=40.0)
    parser.add_argument("--churn", type=int, default=10000, help="measured cycles (after 1000 warm-up ones)")
    parser.add_argument("--budget-loops", type=int, default=BUDGET_LOOPS)
    parser.add_argument("--probe", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe is not None:
        probe(args.probe)
        return 0

    command = "python benchmarks/reliability.py" + "".join(f" {a}" for a in sys.argv[1:])
    started_at = time.strftime("%Y-%m-%d %H:%M %Z")
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="serd-relbench-", dir="/tmp") as tmp:
        workdir = Path(tmp)
        model_path, model_note = resolve_model(args.model, workdir)
        out = [f"# Reliability run {started_at}", "",
               f"Command: `{command}`  ", f"Model: {model_note}.  ",
               "Machine: {platform}, {cpu}, {cores} cores, Python {python}.  ".format(**machine()),
               f"Load average at the start: {load_before}.", ""]

        log(f"soak: {args.soak_hours} h of audio")
        soak = rel.soak(model_path, workdir, args.soak_hours)
        out += soak_section(soak)

        log(f"load: {args.load_hours} h of audio at {args.load_speed}x to 20 + 1 stalled subscribers (tcp)")
        load = rel.load(model_path, workdir, args.load_hours, args.load_speed, 20, transport="tcp")
        out += load_section(load, args)

        log(f"churn: {args.churn} subscribers come and go")
        churn = rel.churn(model_path, workdir, args.churn, samples=10)
        out += churn_section(churn)

        budget_audio = looped_demo(workdir, args.budget_loops)
        log(f"Pi budget: {args.budget_loops} x the demo in real time, pinned to CPU 0 with a busy sibling")
        budget = rel.budget(model_path, workdir, budget_audio, core=0)
        log("Pi budget: in-process per-window time, alone and with the sibling")
        alone, shared = run_probe(model_path, 0, sibling=False), run_probe(model_path, 0, sibling=True)
        out += budget_section(budget, alone, shared, args.budget_loops)

        log("bad input")
        out += ["## Bad input", ""] + bad_input_table(model_path, workdir) + [""]
    out += [f"Load average at the end: {load_average()}; finished {time.strftime('%Y-%m-%d %H:%M %Z')}."]
    print("\n".join(out))
    failed = verdicts(soak, load, churn, budget)
    for problem in failed:
        log(f"FAILED: {problem}")
    return 1 if failed else 0


# -- report sections ----------------------------------------------------------------------------------

def soak_section(r: rel.SoakResult) -> list[str]:
    per_hour = []
    for hour in range(int(r.hours)):
        values = r.rss_in_hour(float(hour))
        per_hour.append(f"{max(values):.2f}" if values else "–")
    return [
        f"## Soak: {r.hours:g} hours of audio", "",
        "| figure | value |", "|---|---|",
        f"| windows expected / published (final status) / received | {r.expected} / {r.final.get('published')} / "
        f"{r.seq.count} |",
        f"| `seq` gaps at the subscriber | {len(r.seq.gaps)} (first seq {r.seq.first}) |",
        f"| blocks dropped (final status) | {r.final.get('dropped')} |",
        f"| speech windows | {r.speech_windows} ({100 * r.speech_windows / max(1, r.seq.count):.0f} %) |",
        f"| wall time for the audio | {r.wall_s:.1f} s ({r.speed:.0f}x real time) |",
        f"| windows/s | {r.windows_per_s:.0f} |",
        f"| daemon CPU for the audio | {r.cpu_s:.1f} s ({1000 * r.cpu_s / max(1, r.seq.count):.2f} ms per window) |",
        f"| RSS peak, first hour → last hour of audio | {r.rss_first_hour_mb:.2f} → {r.rss_last_hour_mb:.2f} MiB "
        f"(**{r.rss_growth_mb:+.2f} MiB**) |",
        f"| RSS from /proc before the first byte / after the last window | {r.rss_start_mb:.2f} / {r.rss_end_mb:.2f} MiB |",
        f"| open file descriptors before the first byte / after the last window | {r.fd_start} / {r.fd_end} |",
        f"| exit code | {r.exit_code} |", "",
        "RSS peak per hour of audio (MiB): " + ", ".join(per_hour) + ".", "",
    ]


def load_section(r: rel.LoadResult, args) -> list[str]:
    complete = sum(1 for s in r.subscribers if s["emotions"] == r.expected and s["gaps"] == 0 and s["stopped"])
    early, late = r.cpu_per_window_ms
    lat = r.latency_ms
    return [
        f"## Load: 20 subscribers + 1 stalled, {args.load_hours:g} h of audio at {args.load_speed:g}x real time "
        "(TCP loopback)", "",
        "| figure | value |", "|---|---|",
        f"| windows published (final status) | {r.final.get('published')} of {r.expected} |",
        f"| keeping-up subscribers with every window, no gap, final status | {complete} of {len(r.subscribers)} |",
        f"| stalled subscriber (RCVHWM 1, RCVBUF 1 KB, read only after the audio) | got {r.stalled_emotions} windows "
        f"(seq {r.stalled_first_seq}..{r.stalled_last_seq}), never the other {r.expected - r.stalled_emotions} |",
        f"| daemon `dropped` counter | {r.final.get('dropped')} (PUB drops per subscriber silently; the daemon "
        "cannot count it) |",
        f"| daemon CPU per window, first half → second half | {early:.3f} → {late:.3f} ms (x{r.cpu_ratio:.2f}) |",
        f"| daemon RSS at a tenth of the run → end | {r.rss_mb[0]:.2f} → {r.rss_mb[1]:.2f} MiB |",
        f"| latency captured_at → subscriber 0, first fifth p50 / p95 / max | {lat['first_fifth']['p50']} / "
        f"{lat['first_fifth']['p95']} / {lat['first_fifth']['max']} ms |",
        f"| same, last fifth | {lat['last_fifth']['p50']} / {lat['last_fifth']['p95']} / {lat['last_fifth']['max']} ms |",
        f"| wall time | {r.wall_s:.0f} s |", "",
    ]


def churn_section(r: rel.ChurnResult) -> list[str]:
    return [
        f"## Churn: {r.cycles} subscribers connect, receive one message, disconnect", "",
        f"{rel.CHURN_BATCH} at a time over TCP loopback, while audio flows at {rel.CHURN_SPEED:g}x real time, after "
        f"{rel.WARMUP_AUDIO_H:g} h of audio and {r.warmup} warm-up cycles (which raised RSS from "
        f"{r.rss_before_warmup_mb:.2f} to {r.rss_mb[0][1]:.2f} MiB: memory the allocator keeps for reuse). "
        f"{r.wall_s:.0f} s; exit {r.exit_code}.", "",
        "| cycles after the warm-up | " + " | ".join(str(n) for n, _ in r.rss_mb) + " |",
        "|---" * (len(r.rss_mb) + 1) + "|",
        "| daemon RSS, MiB (lowest of 5 reads) | " + " | ".join(f"{mb:.2f}" for _, mb in r.rss_mb) + " |",
        f"| daemon open fds (no subscriber: {r.fd_baseline}) | " + " | ".join(str(n) for _, n in r.fds) + " |", "",
        f"Growth over the {r.cycles} measured cycles: **{r.rss_growth_mb:+.2f} MiB**, "
        f"**{r.fd_growth:+d} file descriptors**.", "",
    ]


def budget_section(r: rel.BudgetResult, alone: dict, shared: dict, loops: int) -> list[str]:
    lat_ms = 1000 * np.asarray(r.latency_s)

    def stats(values) -> str:
        ms = 1000 * np.asarray(values)
        return f"{np.median(ms):.2f} / {np.percentile(ms, 99):.2f} / {ms.max():.2f} ms"

    return [
        f"## Pi budget: one core shared with a busy sibling, {r.audio_s:.0f} s of audio in real time", "",
        f"`taskset -c 0` on both the daemon and `python -c '{rel.BUSY_LOOP}'`; the demo recording looped {loops} "
        "times, file source at real time (the default).", "",
        "| figure | value |", "|---|---|",
        f"| windows published / expected, gaps | {r.final.get('published')} / {r.expected}, {len(r.seq.gaps)} |",
        f"| pace: wall time first → last window ÷ their audio time | {r.pace:.4f} (1 = keeping up) |",
        f"| latency captured_at → subscriber, p50 / p99 / max | {np.median(lat_ms):.2f} / "
        f"{np.percentile(lat_ms, 99):.2f} / {lat_ms.max():.2f} ms |",
        f"| daemon CPU per hop (all threads, first to last window) | {1000 * r.cpu_per_hop_s:.2f} ms |",
        f"| **headroom: CPU per hop ÷ hop (0.5 s)** | **{100 * r.headroom:.2f} %** of one core |",
        f"| share of CPU 0 taken by serd / by the sibling | {100 * r.daemon_share:.1f} % / {100 * r.sibling_share:.1f} % |",
        f"| in-process per-window work (pipeline + encode), alone: wall p50 / p99 / max | {stats(alone['wall_s'])} |",
        f"| same, with the sibling on the core: wall p50 / p99 / max | {stats(shared['wall_s'])} |",
        f"| same, with the sibling: CPU p50 | {1000 * np.median(shared['cpu_s']):.2f} ms |", "",
    ]


def verdicts(soak, load, churn, budget) -> list[str]:
    problems = []
    if soak.seq.gaps or soak.seq.count != soak.expected or soak.final.get("published") != soak.expected:
        problems.append("soak lost windows")
    if soak.rss_growth_mb >= 2.0:
        problems.append(f"soak RSS grew {soak.rss_growth_mb:.2f} MiB")
    if soak.fd_end != soak.fd_start:
        problems.append("soak leaked file descriptors")
    if any(s["emotions"] != load.expected or s["gaps"] for s in load.subscribers):
        problems.append("a keeping-up subscriber lost windows")
    if churn.fd_growth or churn.rss_growth_mb >= 1.0:
        problems.append("churn left growth behind")
    if budget.seq.count != budget.expected or budget.seq.gaps:
        problems.append("the budget run lost windows")
    if budget.pace >= 1.1:
        problems.append(f"the budget run fell behind (pace {budget.pace:.3f})")
    return problems


if __name__ == "__main__":
    sys.exit(main())
