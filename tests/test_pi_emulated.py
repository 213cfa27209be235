"""serd on an emulated 64-bit Raspberry Pi OS userland answers as it does on x86.

packaging/pi-emulated-check.sh bootstraps Debian bookworm arm64 (cached between runs),
runs packaging/install-pi.sh in it under qemu-user as a Pi 4's CPU, then the installed
`serd analyze` on real clips and `serd run` -> `serd listen` over ipc; it analyses the
same clips with this checkout on x86 and writes summary.json. One run serves every
test here; each test checks one promise of it against the raw outputs too.

Needs root (chroot, mounts, debootstrap), binfmt_misc and network access to the Debian
mirror and the package index; skipped with the script's reason where it cannot emulate.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import RAVDESS_FIXTURES, REPO_ROOT, SAMPLE_CLIPS, subprocess_env

pytestmark = [pytest.mark.slow, pytest.mark.pi_emulated]

CHECK = REPO_ROOT / "packaging" / "pi-emulated-check.sh"
SIDECAR = REPO_ROOT / "models" / "serd-emotion5-int8.json"
CANNOT_EMULATE = 77
CHECK_TIMEOUT_S = 2400
"""Generous: a cold run (bootstrap included) takes minutes; a loaded machine, more."""


def clips() -> list[Path]:
    """Real speech in several acted emotions: the demo recording and the sample fixture clips (in the repository)."""
    return [REPO_ROOT / "examples" / "demo.flac", *(RAVDESS_FIXTURES / name for name in SAMPLE_CLIPS)]


@pytest.fixture(scope="module")
def check(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path, dict]:
    if os.geteuid() != 0:
        pytest.skip("the arm64 emulation check needs root (debootstrap, chroot, mounts)")
    if platform.machine() != "x86_64":
        pytest.skip(f"the check compares emulated arm64 with x86_64; this machine is {platform.machine()}")
    out = tmp_path_factory.mktemp("pi-emulated")
    result = subprocess.run(
        ["bash", str(CHECK), "--out", str(out), "--host-python", sys.executable, *map(str, clips())],
        capture_output=True, text=True, timeout=CHECK_TIMEOUT_S, env=subprocess_env(), check=False,
    )
    if result.returncode == CANNOT_EMULATE:
        pytest.skip(result.stderr.strip().splitlines()[-1])
    summary_path = out / "summary.json"
    assert summary_path.is_file(), f"exit {result.returncode}, no summary:\n{result.stdout}\n{result.stderr}"
    return result, out, json.loads(summary_path.read_text(encoding="utf-8"))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_every_check_passes(check):
    result, _, summary = check
    assert result.returncode == 0 and summary["ok"], result.stdout + result.stderr
    assert summary["cpu"] == os.environ.get("SERD_PI_CPU", "cortex-a72")


def test_analyze_gives_x86_labels_within_one_int8_step(check):
    _, out, summary = check
    analyze = summary["analyze"]
    x86, arm64 = read_jsonl(out / "analyze-x86.jsonl"), read_jsonl(out / "analyze-arm64.jsonl")
    assert len(x86) == len(arm64) == len(clips()) == analyze["clips"]
    assert not [r for r in x86 + arm64 if "error" in r]
    assert [r["label"] for r in arm64] == [r["label"] for r in x86]
    sidecar = json.loads(SIDECAR.read_text(encoding="utf-8"))
    assert analyze["prob_step"] == pytest.approx(sidecar["output"]["scale"] / sidecar["temperature"])
    assert analyze["speech_windows"] > 0 and analyze["window_mismatches"] == 0
    assert analyze["max_prob_diff"] <= analyze["prob_step"], analyze
    # The summary's figure is the raw files' figure (not a default that always passes).
    worst = max(abs(a - b) for ref, got in zip(x86, arm64)
                for rw, gw in zip(ref["windows"], got["windows"]) if rw["speech"]
                for a, b in zip(rw["probs"].values(), gw["probs"].values()))
    assert worst <= analyze["max_prob_diff"]


def test_run_publishes_to_a_listener_and_stops(check):
    _, out, summary = check
    stream = summary["run_listen"]
    messages = read_jsonl(out / "listen.jsonl")
    emotions = [m for m in messages if m["schema"] == "serd.emotion/1"]
    assert stream["run_exit"] == 0 and stream["listen_exit"] == 0, (out / "run.log").read_text()
    assert len(emotions) == stream["emotions"] > 0
    assert {m["device"] for m in messages} == {"pi-emulated"}
    assert messages[-1]["schema"] == "serd.status/1" and messages[-1]["state"] == "stopping"


def test_install_pi_completes_and_says_systemd_is_absent(check):
    _, out, summary = check
    log = (out / "install-pi.log").read_text(encoding="utf-8")
    assert summary["install"]["exit"] == 0, log
    assert "serd.service installed but not enabled or started" in log
    # Only serd itself (a source checkout) was built; every dependency came as a wheel.
    assert summary["install"]["built_from_source"] == ["serd"], log
    assert {"numpy", "pyzmq", "ai-edge-litert", "soundfile", "soxr", "serd"} <= set(summary["install"]["installed"])
