"""Shared fixtures: the tiny generated TFLite models, the fixture clips and the full corpora.

Tests that need some real speech use the clips in tests/fixtures/audio (in the
repository). Dataset-scale tests (folds over 24 actors, counts, training smoke) need
the full corpora: they look in $SERD_DATA (default ../shared/data beside the repository)
and are skipped otherwise, counted in one line at the end of the run.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from make_tiny_model import tiny_model_stem

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURE_AUDIO = Path(__file__).resolve().parent / "fixtures" / "audio"
RAVDESS_FIXTURES = FIXTURE_AUDIO / "ravdess"
"""A few RAVDESS clips in the corpus's own Actor_NN/ layout (CC BY-NC-SA 4.0, see its README)."""
NEMO_FIXTURES = FIXTURE_AUDIO / "nemo"
"""A few nEMO clips: data.tsv + samples/, as in the corpus."""
SERD_DATA = Path(os.environ.get("SERD_DATA") or REPO_ROOT.parent / "shared" / "data")
"""Where the full corpora live: ravdess/ and nemo/ (the same rule as tests/fixtures/audio/copy_fixtures.py)."""
CORPUS_SKIP = "full corpus not in SERD_DATA"
"""In every skip reason of a dataset-scale test, so that the end-of-run line can count them."""
CORPUS_SKIPS = pytest.StashKey[int]()
SHIPPED_INT8 = REPO_ROOT / "models" / "serd-emotion5-int8.tflite"
MAKE_TINY_MODEL = Path(__file__).resolve().parent / "make_tiny_model.py"
TINY_MODEL_TIMEOUT_S = 600
"""Generous: conversion takes ~10 s on a free machine, much longer on a loaded one."""

# A few fixture clips from different actors, both genders, several emotions.
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


def full_corpus(name: str, marker: str) -> Path:
    """`$SERD_DATA/<name>`, or skip the test (counted by `pytest_terminal_summary`)."""
    root = SERD_DATA / name
    if not (root / marker).exists():
        pytest.skip(f"{CORPUS_SKIP}: no {root / marker}")
    return root


@pytest.fixture(scope="session")
def ravdess_root() -> Path:
    """The full RAVDESS speech corpus (1440 clips): for dataset-scale tests only."""
    return full_corpus("ravdess", "Actor_24")


@pytest.fixture(scope="session")
def nemo_root() -> Path:
    """The full nEMO corpus: for dataset-scale tests only."""
    return full_corpus("nemo", "data.tsv")


@pytest.fixture(scope="session")
def ravdess_fixtures() -> Path:
    """The RAVDESS fixture clips in the repository (always present)."""
    return RAVDESS_FIXTURES


@pytest.fixture(scope="session")
def nemo_fixtures() -> Path:
    """The nEMO fixture clips in the repository (always present)."""
    return NEMO_FIXTURES


@pytest.fixture(scope="session")
def sample_clip_paths() -> list[Path]:
    paths = [RAVDESS_FIXTURES / name for name in SAMPLE_CLIPS]
    missing = [str(p) for p in paths if not p.is_file()]
    assert not missing, f"fixture clips missing (see tests/fixtures/audio/README.md): {missing}"
    return paths


RELIABILITY_DIR = Path(__file__).resolve().parent / "reliability"
SERIAL_FILES = frozenset({
    "test_soak.py", "test_load.py", "test_pi_budget.py", "test_dashboard_network.py", "test_metrics_scrapes.py",
    "test_subscription_size.py", "test_subscription_flood.py",
})
"""Reliability files whose figures are the daemon's pace under load (real time kept, every window delivered,
legitimate requests answered while attacked, CPU of a shared core), or that load the machine themselves:
another test on the same cores would be in their figures, or they in its. The rest of tests/reliability
checks memory bounds, exit codes and counts, which other work beside them does not change."""
FIRST_FILES = ("test_pi_emulated.py", "test_train.py", "test_hostile_record.py")
"""The longest files first: under pytest-xdist they then run beside the rest rather than after it."""


def pytest_collection_modifyitems(config, items) -> None:
    """Mark what must run alone (`serial`), and start the longest files first.

    scripts/test.sh runs the tests in two passes: everything not `serial` over the cores
    (pytest-xdist, a file per worker), then the `serial` ones one at a time (SERIAL_FILES).
    """
    for item in items:
        path = Path(str(item.fspath))
        if RELIABILITY_DIR in path.parents and path.name in SERIAL_FILES:
            item.add_marker(pytest.mark.serial)
    rank = {name: i for i, name in enumerate(FIRST_FILES)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).name, len(rank)))


def pytest_runtest_teardown(item) -> None:
    """The two TFLite interpreters' native libraries never share the test process: loaded together,
    tflite-runtime once failed to read a valid model ("vector::reserve") in CI. A test that needs
    tflite-runtime runs it in a child (SERD_TFLITE_BACKEND=tflite-runtime)."""
    if "tflite_runtime" in sys.modules and "ai_edge_litert" in sys.modules:
        pytest.fail(f"{item.nodeid} left both TFLite interpreters loaded in the test process", pytrace=False)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """Count the dataset-scale tests that did not run (reported last, by `pytest_unconfigure`)."""
    config.stash[CORPUS_SKIPS] = sum(
        CORPUS_SKIP in str(r.longrepr) for r in terminalreporter.stats.get("skipped", [])
    )


def pytest_unconfigure(config) -> None:
    """One line, after pytest's own summary, so that a green run cannot hide what never ran."""
    skipped = config.stash.get(CORPUS_SKIPS, 0)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if skipped and reporter is not None:
        reporter.write_line(
            f"serd: {skipped} dataset-scale tests skipped: no full RAVDESS/nEMO corpora in "
            f"SERD_DATA={SERD_DATA} (set SERD_DATA to a folder holding ravdess/ and nemo/ to run them)",
            yellow=True,
        )


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A short directory under /tmp (ipc:// paths must stay under ~100 bytes), removed afterwards."""
    from helpers_daemon import short_tmpdir

    with short_tmpdir("serd-test-") as path:
        yield path


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
