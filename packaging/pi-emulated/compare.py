"""Judge a pi-emulated-check.sh run: arm64 answers against x86, the daemon's stream, the install.

Reads what the script left in --out and writes summary.json there (the test reads it);
prints one line per check. Exit status 0 when every check passed, 1 otherwise.

Standard library only: it runs on the x86 side with whichever Python runs the check.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROUNDING = 1e-5
"""serd prints probabilities to 5 decimals: two roundings may differ by one unit."""


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_pairs(path: Path) -> dict[str, int]:
    """`name number` lines (timings.txt, run-listen.status)."""
    if not path.is_file():
        return {}
    pairs = (line.split() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return {name: int(value) for name, value in pairs}


def prob_step(sidecar: Path) -> float:
    """How far one int8 output step can move a probability.

    The model's int8 output is a logit in steps of output.scale; probabilities are
    softmax(logit / temperature), which moves no probability by more than the largest
    change of any logit. A difference of one step in every logit is therefore at most
    scale / temperature in every probability (and in any average of probabilities).
    """
    meta = json.loads(sidecar.read_text(encoding="utf-8"))
    return float(meta["output"]["scale"]) / float(meta.get("temperature", 1.0))


def max_abs_diff(a: dict[str, float] | None, b: dict[str, float] | None) -> float:
    if a is None or b is None:
        return 0.0 if a is b else float("inf")
    if a.keys() != b.keys():
        return float("inf")
    return max(abs(a[k] - b[k]) for k in a)


def compare_analyses(x86: list[dict], arm64: list[dict], clips: list[str], tolerance: float) -> dict:
    labels_x86 = [r.get("label") for r in x86]
    labels_arm64 = [r.get("label") for r in arm64]
    errors = [r for r in x86 + arm64 if "error" in r]
    file_diff = window_diff = 0.0
    windows = speech_windows = window_mismatches = 0
    for ref, got in zip(x86, arm64):
        file_diff = max(file_diff, max_abs_diff(ref.get("probs"), got.get("probs")))
        ref_windows, got_windows = ref.get("windows", []), got.get("windows", [])
        if len(ref_windows) != len(got_windows):
            window_mismatches += abs(len(ref_windows) - len(got_windows))
        for rw, gw in zip(ref_windows, got_windows):
            windows += 1
            speech_windows += bool(rw["speech"])
            if rw["speech"] != gw["speech"]:
                window_mismatches += 1
                continue
            window_diff = max(window_diff, max_abs_diff(rw["probs"], gw["probs"]))
    same_files = [Path(r.get("file", "")).name for r in x86] == [Path(r.get("file", "")).name for r in arm64]
    max_diff = max(file_diff, window_diff)
    return {
        "clips": len(clips),
        "files_x86": len(x86),
        "files_arm64": len(arm64),
        "same_files": same_files,
        "errors": errors,
        "labels_x86": labels_x86,
        "labels_arm64": labels_arm64,
        "windows": windows,
        "speech_windows": speech_windows,
        "window_mismatches": window_mismatches,
        "max_prob_diff_file": file_diff,
        "max_prob_diff_window": window_diff,
        "max_prob_diff": max_diff,
        "prob_step": tolerance,
        "ok": (len(x86) == len(arm64) == len(clips) and same_files and not errors
               and labels_x86 == labels_arm64 and window_mismatches == 0
               and speech_windows > 0 and max_diff <= tolerance + 2 * ROUNDING),
    }


def summarise_stream(messages: list[dict], statuses: dict[str, int]) -> dict:
    emotions = [m for m in messages if m.get("schema") == "serd.emotion/1"]
    status_messages = [m for m in messages if m.get("schema") == "serd.status/1"]
    final = status_messages[-1] if status_messages else {}
    return {
        "run_exit": statuses.get("run"),
        "listen_exit": statuses.get("listen"),
        "emotions": len(emotions),
        "speech_emotions": sum(1 for m in emotions if m.get("speech")),
        "statuses": len(status_messages),
        "final_state": final.get("state"),
        "final_windows": final.get("windows"),
        "final_published": final.get("published"),
        "devices": sorted({m.get("device") for m in messages}),
        "ok": (statuses.get("run") == 0 and statuses.get("listen") == 0 and len(emotions) > 0
               and final.get("state") == "stopping" and messages[-1] is final),
    }


def summarise_install(out: Path) -> dict:
    log_path = out / "install-pi.log"
    log = log_path.read_text(encoding="utf-8", errors="replace") if log_path.is_file() else ""
    status_path = out / "install-pi.status"
    status = int(status_path.read_text().strip()) if status_path.is_file() else None
    # pip names what it had to build from source; with --only-binary=:all: that may be
    # serd itself (a checkout is a source tree) and nothing else.
    built = sorted({name.strip() for line in log.splitlines() if "Building wheels for collected packages:" in line
                    for name in line.split(":", 1)[1].split(",")})
    installed = sorted({name.rsplit("-", 1)[0] for line in log.splitlines() if "Successfully installed" in line
                        for name in line.split("Successfully installed", 1)[1].split()})
    systemd_said = "serd.service installed but not enabled or started" in log
    return {
        "exit": status,
        "built_from_source": built,
        "installed": installed,
        "systemd_not_started_said": systemd_said,
        "ok": status == 0 and built == ["serd"] and "ai-edge-litert" in installed and systemd_said,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the check's output directory")
    parser.add_argument("--sidecar", type=Path, required=True, help="the model's sidecar JSON (output scale)")
    parser.add_argument("--cpu", default="", help="the emulated CPU, recorded in the summary")
    args = parser.parse_args(argv)
    out: Path = args.out

    clips = (out / "clips.txt").read_text(encoding="utf-8").split("\n")[:-1]
    analyze = compare_analyses(read_jsonl(out / "analyze-x86.jsonl"), read_jsonl(out / "analyze-arm64.jsonl"),
                               clips, prob_step(args.sidecar))
    stream = summarise_stream(read_jsonl(out / "listen.jsonl"), read_pairs(out / "run-listen.status"))
    install = summarise_install(out)
    timings = read_pairs(out / "timings.txt")
    cache_path = out / "cache.txt"
    summary = {
        "ok": analyze["ok"] and stream["ok"] and install["ok"],
        "cpu": args.cpu,
        "cache": cache_path.read_text().strip() if cache_path.is_file() else None,
        "timings_s": timings,
        "total_s": sum(timings.values()),
        "analyze": analyze,
        "run_listen": stream,
        "install": install,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")

    def line(ok: bool, text: str) -> None:
        print(f"{'ok  ' if ok else 'FAIL'} {text}")

    line(install["ok"], f"install-pi.sh in the root: exit {install['exit']}")
    line(analyze["ok"], f"analyze: {analyze['files_arm64']}/{analyze['clips']} files, labels arm64 "
                        f"{analyze['labels_arm64']} vs x86 {analyze['labels_x86']}; max |p_arm64 - p_x86| "
                        f"{analyze['max_prob_diff']:.5f} over {analyze['speech_windows']} speech windows "
                        f"(one int8 step: {analyze['prob_step']:.5f})")
    line(stream["ok"], f"run -> listen: {stream['emotions']} emotion messages, final status "
                       f"{stream['final_state']!r}, exits run {stream['run_exit']} listen {stream['listen_exit']}")
    print(f"{'passed' if summary['ok'] else 'FAILED'} ({summary['cache']} cache, {summary['total_s']} s: "
          + ", ".join(f"{k} {v} s" for k, v in timings.items()) + f"); details in {out / 'summary.json'}")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
