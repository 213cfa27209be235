"""Training: a smoke `serd train` that exports models `serd evaluate` can score; metrics; augmentation."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import subprocess_env
from serd.train import metrics
from serd.features import FeatureParams, LogMel
from serd.train.augment import AugmentSettings, mix_at_snr, pink_noise, rms, spec_augment, warp_frequency

needs_tensorflow = pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None, reason="serd train needs TensorFlow (pip install -e '.[train]')"
)
SMOKE_TIMEOUT_S = 900


def serd(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "serd", *map(str, args)], cwd=cwd, env=subprocess_env(),
                          capture_output=True, text=True, timeout=SMOKE_TIMEOUT_S)


@pytest.fixture(scope="module")
def smoke_run(ravdess_root: Path, tmp_path_factory) -> Path:
    """`serd train` on 3 actors (fold 1 tests actor 1), 1 epoch, with export and noise evaluation."""
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("serd train needs TensorFlow (pip install -e '.[train]')")
    out = tmp_path_factory.mktemp("smoke")
    done = serd("train", "--data", ravdess_root, "--actors", "1,2,3", "--folds", "3", "--only-folds", "1",
                "--epochs", "1", "--noise-eval", "--out", out, cwd=out)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| fold1 |" in done.stdout, done.stdout  # the summary table
    assert "epoch 1/1" in done.stderr  # progress while training
    return out


@needs_tensorflow
def test_smoke_train_exports_models_with_sidecars(smoke_run: Path):
    results = json.loads((smoke_run / "results.json").read_text())["fold1"]
    # The default label set is emotion5: each actor's 8 disgust clips are left out (60 - 8 = 52 per actor).
    assert results["test_actors"] == [1] and results["n_test"] == 52
    assert set(results["val_actors"]).isdisjoint({1}) and results["n_train"] + results["n_val"] + results["n_test"] == 156
    for kind in ("float", "int8"):
        scores = results[kind]
        assert 0.0 <= scores["uar"] <= 1.0 and len(scores["predicted"]) == 52
        assert np.array(scores["confusion"]).sum() == 52
    assert set(results["int8"]["noisy"]) >= {"pink_20dB", "babble_5dB", "quiet_-20dB"}
    sidecar = json.loads((smoke_run / "fold1-serd_cnn-emotion5-int8.json").read_text())
    assert "disgust" not in sidecar["labels"]
    assert sidecar["licence"] == "CC BY-NC-SA 4.0" and "RAVDESS" in sidecar["attribution"]
    assert sidecar["input"]["dtype"] == sidecar["output"]["dtype"] == "int8"
    # truly full-int8: no float op behind QUANTIZE/DEQUANTIZE pairs
    assert not {"DEQUANTIZE", "QUANTIZE", "ELU"} & set(sidecar["ops"]), sidecar["ops"]
    assert sidecar["training"]["train_speakers"] and sidecar["temperature"] > 0


@needs_tensorflow
def test_evaluate_scores_the_exported_model_through_the_runtime(smoke_run: Path, ravdess_root: Path, tmp_path: Path):
    folder = tmp_path / "ravdess-subset" / "Actor_01"
    folder.mkdir(parents=True)
    for clip in sorted((ravdess_root / "Actor_01").glob("*.flac"))[:12]:
        (folder / clip.name).symlink_to(clip)
    model = smoke_run / "fold1-serd_cnn-emotion5-int8.tflite"
    done = serd("evaluate", model, folder.parent, "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    scores = json.loads(done.stdout)
    assert scores["clips"] == 12 and scores["speakers"] == ["ravdess/01"]
    assert np.array(scores["confusion"]).sum() == 12 and 0 <= scores["accuracy"] <= 1
    human = serd("evaluate", model, folder.parent, cwd=tmp_path)
    assert human.returncode == 0 and "UAR" in human.stdout


@needs_tensorflow
@pytest.mark.slow
def test_training_is_deterministic_for_a_seed(ravdess_root: Path, tmp_path: Path):
    losses = []
    for run in ("a", "b"):
        out = tmp_path / run
        done = serd("train", "--data", ravdess_root, "--actors", "1,2", "--folds", "2", "--only-folds", "1",
                    "--epochs", "2", "--no-export", "--seed", "7", "--out", out, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        history = json.loads((out / "results.json").read_text())["fold1"]["history"]
        losses.append([h["loss"] for h in history])
    assert losses[0] == losses[1]


def test_train_refuses_an_unknown_augmentation(tmp_path: Path):
    done = serd("train", "--augment-off", "wobble", "--out", tmp_path, cwd=tmp_path)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "wobble" in done.stderr


# -- metrics -----------------------------------------------------------------------------------

def test_uar_is_the_mean_of_per_class_recalls():
    y_true = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 0, 0, 1, 1, 0, 2, 2])
    assert metrics.accuracy(y_true, y_pred) == pytest.approx(6 / 8)
    assert metrics.uar(y_true, y_pred, 3) == pytest.approx((3 / 4 + 1 / 2 + 1) / 3)
    assert metrics.confusion(y_true, y_pred, 3).tolist() == [[3, 1, 0], [1, 1, 0], [0, 0, 2]]


def test_ece_is_zero_when_confidence_matches_accuracy_and_large_when_not():
    rng = np.random.default_rng(0)
    n = 20000
    confidence = rng.uniform(0.5, 1.0, n)
    probs = np.stack([confidence, 1 - confidence], 1)  # label 0 on top, with this confidence
    calibrated_y = (rng.random(n) >= confidence).astype(int)  # right exactly that often
    assert metrics.ece(probs, calibrated_y) < 0.02
    overconfident = np.stack([np.full(n, 0.99), np.full(n, 0.01)], 1)
    assert metrics.ece(overconfident, (rng.random(n) < 0.5).astype(int)) > 0.4


def test_temperature_fit_recovers_a_known_temperature():
    rng = np.random.default_rng(1)
    true_t = 2.0
    logits = rng.normal(0, 3, (5000, 6))
    scaled = logits / true_t
    probs = np.exp(scaled - scaled.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    y = np.array([rng.choice(6, p=p) for p in probs])
    assert metrics.fit_temperature(logits, y) == pytest.approx(true_t, rel=0.1)
    clips = [logits[i : i + 1] for i in range(len(y))]  # one window per clip: the same problem
    assert metrics.fit_clip_temperature(clips, y) == pytest.approx(true_t, rel=0.1)


# -- augmentation -------------------------------------------------------------------------------

def test_mix_at_snr_gives_the_requested_snr():
    rng = np.random.default_rng(2)
    speech = rng.standard_normal(16000).astype(np.float32) * 0.1
    noise = pink_noise(16000, rng)
    for snr in (0.0, 10.0, 30.0):
        mixed = mix_at_snr(speech, noise, snr)
        assert 20 * np.log10(rms(speech) / rms(mixed - speech)) == pytest.approx(snr, abs=0.01)


def test_pink_noise_falls_3_db_per_octave():
    spectrum = np.abs(np.fft.rfft(pink_noise(1 << 18, np.random.default_rng(3)))) ** 2
    freqs = np.fft.rfftfreq(1 << 18, 1 / 16000)
    band = lambda lo: spectrum[(freqs >= lo) & (freqs < 2 * lo)].sum()  # noqa: E731
    # equal power per octave: adjacent octaves within 1 dB
    assert abs(10 * np.log10(band(500) / band(1000))) < 1.0


def test_spec_augment_masks_but_keeps_shape_and_the_rest():
    features = np.random.default_rng(4).standard_normal((64, 197)).astype(np.float32)
    out = spec_augment(features, np.random.default_rng(5))
    assert out.shape == features.shape
    changed = out != features
    assert (out[changed] == 0).all() and changed.mean() < 0.5


def _tone_features(hz: float, params: FeatureParams) -> np.ndarray:
    t = np.arange(params.window_samples) / params.sample_rate
    return LogMel(params)((0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32))


@pytest.mark.parametrize("factor", [0.88, 0.9, 1.1, 1.12])
def test_frequency_warp_moves_a_tone_to_where_the_scaled_tone_is(factor):
    params = FeatureParams()  # per-window normalisation: a steady tone keeps its band
    warped = warp_frequency(_tone_features(1000.0, params), factor, params)
    expected = _tone_features(1000.0 * factor, params)
    assert warped.shape == expected.shape
    assert np.argmax(warped.mean(axis=1)) == np.argmax(expected.mean(axis=1))
    assert np.argmax(warped.mean(axis=1)) != np.argmax(_tone_features(1000.0, params).mean(axis=1))


def test_frequency_warp_by_one_changes_nothing():
    features = np.random.default_rng(6).standard_normal((64, 197)).astype(np.float32)
    assert np.array_equal(warp_frequency(features, 1.0, FeatureParams()), features)


def test_augment_settings_without():
    settings = AugmentSettings().without(["noise", "reverb"])
    assert not settings.noise and not settings.reverb and settings.gain
    assert AugmentSettings.none().enabled() == []
    assert not AugmentSettings().warp and AugmentSettings().with_(["warp"]).enabled() == [*AugmentSettings().enabled(), "warp"]
    with pytest.raises(ValueError, match="wobble"):
        AugmentSettings().without(["wobble"])
    with pytest.raises(ValueError, match="wobble"):
        AugmentSettings().with_(["wobble"])


def _fold(clean: float, pink: float, babble: float) -> dict:
    noisy = {f"{family}_{snr}dB": {"uar": value} for family, value in (("pink", pink), ("babble", babble))
             for snr in (20, 10, 5)}
    return {"int8": {"uar": clean, "noisy": noisy}}


def test_ablation_table_pairs_folds_and_reports_what_each_augmentation_bought(tmp_path: Path):
    from serd.train import report

    runs = {
        "none": {"fold1": _fold(0.60, 0.55, 0.50), "fold3": _fold(0.50, 0.45, 0.40)},
        "babble": {"fold1": _fold(0.61, 0.55, 0.40), "fold3": _fold(0.49, 0.45, 0.34)},
        "none_seed1": {"fold1": _fold(0.58, 0.55, 0.50), "fold3": _fold(0.50, 0.45, 0.40)},
    }
    for name, folds in runs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({**folds, "settings": {}}))
    table = report.ablation_table(report.load_ablation(tmp_path))
    babble_row = next(line for line in table.splitlines() if line.startswith("| babble"))
    # Clean: +0.01 on one fold, -0.01 on the other; babble noise: +0.10 and +0.06, mean +0.08.
    assert "0.550 (bought +0.000; folds -0.010…+0.010)" in babble_row
    assert "0.370 (bought +0.080; folds +0.060…+0.100)" in babble_row
    assert "| nothing (reference: all on) | 0.550 | 0.500 | 0.450 | – |" in table
    # The same recipe with another seed comes last, as the scale of noise.
    assert table.splitlines()[-1].startswith("| nothing, --seed 1 (seed noise) | 0.540 (bought +0.010; folds +0.000…+0.020)")


def test_ablation_report_without_a_reference_run_is_one_line(tmp_path: Path):
    (tmp_path / "babble").mkdir()
    (tmp_path / "babble" / "results.json").write_text(json.dumps({"fold1": _fold(0.5, 0.4, 0.3)}))
    done = subprocess.run([sys.executable, "-m", "serd.train.report", "--ablation", str(tmp_path)],
                          capture_output=True, text=True, env=subprocess_env(), check=False)
    assert done.returncode != 0
    assert done.stderr.strip().count("\n") == 0 and "none/results.json" in done.stderr, done.stderr


def test_ablation_reference_run_is_cut_to_the_ablated_folds(tmp_path: Path):
    from serd.train import report

    (tmp_path / "abl" / "babble").mkdir(parents=True)
    (tmp_path / "abl" / "babble" / "results.json").write_text(json.dumps({"fold1": _fold(0.5, 0.4, 0.3)}))
    (tmp_path / "cv").mkdir()
    (tmp_path / "cv" / "results.json").write_text(json.dumps({"fold1": _fold(0.6, 0.5, 0.4), "fold2": _fold(0.9, 0.9, 0.9)}))
    runs = report.load_ablation(tmp_path / "abl", reference=tmp_path / "cv")
    assert set(runs["none"]) == {"fold1"}
    assert "| babble | 0.500 (bought +0.100; folds +0.100…+0.100) |" in report.ablation_table(runs)


@needs_tensorflow
@pytest.mark.slow
def test_smoke_multi_corpus_train_scores_each_corpus_on_its_own_classes(ravdess_root: Path, nemo_fixtures: Path,
                                                                       tmp_path: Path):
    """RAVDESS (2 actors) + nEMO (the 2 fixture speakers), speaker-disjoint fold 1 of 2, 1 epoch, exported and scored.

    emotion6, so that disgust (a class only RAVDESS has) is masked out of nEMO's scores."""
    done = serd("train", "--data", f"ravdess={ravdess_root}", "--actors", "1,2", "--data", f"nemo={nemo_fixtures}",
                "--label-set", "emotion6", "--folds", "2", "--only-folds", "1", "--epochs", "1", "--val-per-corpus", "0", "--out", tmp_path, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "results.json").read_text())["fold1"]
    assert result["test_actors"] == ["ravdess/01", "nemo/EB0"]
    by_corpus = result["int8"]["by_corpus"]
    assert by_corpus["ravdess"]["clips"] == 60 and by_corpus["nemo"]["clips"] == 5
    assert "disgust" not in by_corpus["nemo"]["classes"] and "disgust" in by_corpus["ravdess"]["classes"]
    assert 0 <= by_corpus["nemo"]["arousal_uar"] <= 1 and 0 <= by_corpus["ravdess"]["uar4"] <= 1
    assert "| fold1 | nemo | 5 | 5 |" in done.stdout  # the per-corpus table
    sidecar = json.loads((tmp_path / "fold1-serd_cnn-emotion6-int8.json").read_text())
    assert sidecar["training"]["corpora"] == ["nemo", "ravdess"]
    assert "RAVDESS" in sidecar["attribution"] and "nEMO" in sidecar["attribution"]


@needs_tensorflow
def test_calibration_across_folds_of_two_corpora_scores_every_clip_once(ravdess_root: Path, nemo_fixtures: Path,
                                                                       tmp_path: Path):
    """Both folds of a 2-fold RAVDESS + nEMO run (1 epoch each), then the temperature across them."""
    data = ["--data", f"ravdess={ravdess_root}", "--data", f"nemo={nemo_fixtures}"]
    done = serd("train", *data, "--actors", "1,2", "--folds", "2", "--epochs", "1", "--val-per-corpus", "0",
                "--out", tmp_path, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    calibrated = subprocess.run([sys.executable, "-m", "serd.train.calibrate", tmp_path, *data, "--actors", "1,2",
                                 "--folds", "2", "--val-per-corpus", "0"], cwd=tmp_path, env=subprocess_env(),
                                capture_output=True, text=True, timeout=SMOKE_TIMEOUT_S)
    assert calibrated.returncode == 0, calibrated.stderr[-3000:]
    report = json.loads((tmp_path / "calibration-int8.json").read_text())
    assert set(report["folds"]) == {"fold1", "fold2"}
    assert set(report["pooled_ece_by_corpus"]) == {"ravdess", "nemo"}
    assert 0 <= report["pooled_ece"] <= 1 and report["temperature_all_folds"] > 0
    # actor 1 (60 clips, 8 of them disgust, left out by the default emotion5) + nEMO speaker EB0 (5)
    assert "fold1: scoring 57 test clips" in calibrated.stderr


def test_runs_writing_to_one_folder_at_once_keep_each_others_results(tmp_path: Path):
    """Folds or held-out corpora trained in parallel into one --out: every split ends in results.json."""
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from serd.train.cli import _add_result\n"
        "path, name, start = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])\n"
        "time.sleep(max(0.0, start - time.time()))\n"
        "for k in range(40):\n"
        "    _add_result(path, f'{name}-{k}', {'uar': k, 'history': list(range(2000))})\n"
    )
    path = tmp_path / "results.json"
    start = time.time() + 2.0  # all four begin together, after their imports
    runs = [subprocess.Popen([sys.executable, "-c", script, str(path), f"run{n}", str(start)], env=subprocess_env())
            for n in range(4)]
    assert [run.wait(timeout=120) for run in runs] == [0, 0, 0, 0]
    results = json.loads(path.read_text())
    assert sorted(results) == sorted(f"run{n}-{k}" for n in range(4) for k in range(40))
