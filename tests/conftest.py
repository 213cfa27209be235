"""Shared fixtures: the tiny generated TFLite models and the RAVDESS dataset."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from make_tiny_model import tiny_model_stem

REPO_ROOT = Path(__file__).resolve().parents[1]
RAVDESS_ROOT = Path(__file__).resolve().parents[1].parent / "shared/data/ravdess"
SHIPPED_INT8 = REPO_ROOT / "models" / "serd-emotion6-int8.tflite"
MAKE_TINY_MODEL = Path(__file__).resolve().parent / "make_tiny_model.py"
TINY_MODEL_TIMEOUT_S = 600
"""Generous: conversion takes ~10 s on a free machine, much longer on a loaded one."""

# A few clips from different actors, both genders, several emotions.
SAMPLE_CLIPS = (
    "Actor_01/03-01-01-01-01-01-01.flac",
    "Actor_06/03-01-05-02-01-02-06.flac",
    "Actor_11/03-01-04-01-02-01-11.flac",
    "Actor_18/03-01-06-02-02-02-18.flac",
    "Actor_24/03-01-03-01-01-01-24.flac",
)


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a child Python: the checkout importable, TensorFlow quiet."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def ravdess_root() -> Path:
    if not (RAVDESS_ROOT / "Actor_01").is_dir():
        pytest.skip(f"RAVDESS dataset not found at {RAVDESS_ROOT} (expected ../shared/data/ravdess from the repo)")
    return RAVDESS_ROOT


@pytest.fixture(scope="session")
def sample_clip_paths(ravdess_root: Path) -> list[Path]:
    paths = [ravdess_root / name for name in SAMPLE_CLIPS]
    missing = [str(p) for p in paths if not p.is_file()]
    assert not missing, f"RAVDESS is present but incomplete: {missing}"
    return paths


NEMO_HEADER = "file_id\temotion\traw_text\tnormalized_text\tspeaker_id\tgender\tage\n"


@pytest.fixture(scope="session")
def small_nemo(tmp_path_factory, sample_clip_paths) -> Path:
    """A nEMO-layout folder (data.tsv + samples/) with nEMO's real names: 3 speakers, 5 emotions each.

    The audio is real speech (RAVDESS clips under nEMO names) so the test needs no second corpus.
    """
    root = tmp_path_factory.mktemp("nemo")
    (root / "samples").mkdir()
    rows = []
    emotions = ("anger", "fear", "happiness", "neutral", "sadness")
    for s, (speaker, gender) in enumerate((("EB0", "female"), ("KD0", "male"), ("SM0", "male"))):
        for e, emotion in enumerate(emotions):
            name = f"{speaker}_{emotion}_{e + 10}.wav"
            shutil.copy(sample_clip_paths[(s + e) % len(sample_clip_paths)], root / "samples" / name.replace(".wav", ".flac"))
            rows.append(f"{name}\t{emotion}\tZdanie.\tzdanie\t{speaker}\t{gender}\t25\n")
    (root / "data.tsv").write_text(NEMO_HEADER + "".join(rows), encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both tiny models, generated once per session by the committed script.

    In a subprocess: TensorFlow then never shares the test process with the
    TFLite interpreters under test (nor costs its memory and threads there).
    """
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("generating the tiny test model needs TensorFlow (pip install -e '.[train]')")
    out_dir = tmp_path_factory.mktemp("tiny_models")
    done = subprocess.run(
        [sys.executable, str(MAKE_TINY_MODEL), str(out_dir), "--kind", "both"],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=TINY_MODEL_TIMEOUT_S,
    )
    assert done.returncode == 0, f"make_tiny_model.py failed:\n{done.stderr[-4000:]}"
    paths = {kind: out_dir / f"{tiny_model_stem(kind)}.tflite" for kind in ("int8", "float")}
    for path in paths.values():
        assert path.is_file() and path.with_suffix(".json").is_file(), f"{path} or its sidecar was not written"
    return paths


@pytest.fixture(scope="session")
def tiny_model_int8(tiny_models: dict[str, Path]) -> Path:
    return tiny_models["int8"]


@pytest.fixture(scope="session")
def tiny_model_float(tiny_models: dict[str, Path]) -> Path:
    return tiny_models["float"]


def speech_like(seconds: float, sample_rate: int, seed: int) -> np.ndarray:
    """A deterministic voiced-speech stand-in: a gliding harmonic tone, syllable envelope, noise.

    For model tests that must not need the dataset; real clips are used wherever it is present.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = rng.uniform(100, 220) * (1 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 20))
    envelope = np.clip(np.sin(2 * np.pi * rng.uniform(2, 5) * t), 0, None)
    signal = 0.05 * envelope * voiced + 0.002 * rng.standard_normal(t.shape[0])
    return signal.astype(np.float32)
