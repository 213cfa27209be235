"""Training-only parts of the network: MixStyle, an arousal head, a corpus adversary, and the export that leaves them out."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

needs_tensorflow = pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                                      reason="training needs TensorFlow (pip install -e '.[train]')")
LABELS = ("neutral", "happy", "sad", "angry", "fearful", "disgust")


@needs_tensorflow
def test_mixstyle_mixes_each_windows_channel_statistics_with_another_windows_only_in_training():
    from serd.train.networks import mix_style_layer

    rng = np.random.default_rng(0)
    # Eight windows, each channel with its own level and spread (as a microphone or corpus would give).
    means = rng.uniform(-20, 20, size=(8, 1, 1, 3)).astype(np.float32)
    stds = rng.uniform(0.5, 5, size=(8, 1, 1, 3)).astype(np.float32)
    x = (rng.standard_normal((8, 16, 20, 3)).astype(np.float32) * stds + means)
    layer = mix_style_layer(p=1.0)
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    y = np.asarray(layer(x, training=True))
    in_means, out_means = x.mean(axis=(1, 2)), y.mean(axis=(1, 2))
    # Every mixed statistic lies between the batch's extremes, and the batch's windows moved.
    assert np.all(out_means >= in_means.min(axis=0) - 1e-3) and np.all(out_means <= in_means.max(axis=0) + 1e-3)
    assert np.abs(out_means - in_means).max() > 1.0
    # What is left after the statistics are taken out is the window's own pattern.
    def standardised(a):
        return (a - a.mean(axis=(1, 2), keepdims=True)) / a.std(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(standardised(y), standardised(x), atol=1e-3)
    # Fresh draws each step: two training calls mix differently.
    assert np.abs(np.asarray(layer(x, training=True)) - y).max() > 1e-3


@needs_tensorflow
def test_the_arousal_head_is_scored_on_its_own_logit_and_only_for_clips_with_a_side():
    import tensorflow as tf

    from serd.train.fit import emotion_loss, masked_cross_entropy

    loss = emotion_loss(LABELS, 0.0, arousal_head=2.0)
    outputs = tf.constant([[0.5, 0.1, 2.0, 0.3, 0.0, 0.2, 1.5]])  # six emotion logits, then the head
    emotions = outputs[:, :6]
    for label, target in (("angry", 1.0), ("sad", 0.0)):
        targets = tf.constant([[float(LABELS.index(label)), 1, 1, 1, 1, 1, 1]])
        head = -np.log(1 / (1 + np.exp(-1.5))) if target else -np.log(1 - 1 / (1 + np.exp(-1.5)))
        expected = float(masked_cross_entropy(targets, emotions)[0]) + 2.0 * head
        assert float(loss(targets, outputs)[0]) == pytest.approx(expected, rel=1e-5)
    disgust = tf.constant([[5.0, 1, 1, 1, 1, 1, 1]])
    assert float(loss(disgust, outputs)[0]) == pytest.approx(float(masked_cross_entropy(disgust, emotions)[0]), rel=1e-6)


@needs_tensorflow
def test_the_gradient_reversal_passes_features_on_and_sends_their_gradient_back_reversed():
    import tensorflow as tf

    from serd.train.networks import gradient_reversal_layer

    x = tf.constant([[1.0, -2.0, 3.0]])
    layer = gradient_reversal_layer(0.3)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(y * tf.constant([[2.0, 5.0, -1.0]]))
    np.testing.assert_array_equal(np.asarray(y), np.asarray(x))
    np.testing.assert_allclose(np.asarray(tape.gradient(loss, x)), [[-0.6, -1.5, 0.3]], rtol=1e-6)


@needs_tensorflow
def test_the_corpus_adversary_is_scored_on_the_last_logits_against_the_clips_corpus():
    import tensorflow as tf

    from serd.train.fit import emotion_loss, masked_cross_entropy

    # Six emotion logits, the arousal head, then three corpus logits; targets: class, six covers, corpus.
    outputs = tf.constant([[0.5, 0.1, 2.0, 0.3, 0.0, 0.2, 1.5, 0.4, -1.0, 2.5]])
    emotions = outputs[:, :6]
    corpus_logits = np.array([0.4, -1.0, 2.5])
    for corpus in (0, 2):
        targets = tf.constant([[float(LABELS.index("sad")), 1, 1, 1, 1, 1, 0, float(corpus)]])
        expected_corpus = -(corpus_logits[corpus] - np.log(np.exp(corpus_logits).sum()))
        emotion_part = float(masked_cross_entropy(targets[:, :7], emotions)[0])
        alone = emotion_loss(LABELS, 0.0, corpus_adversary=True)(targets, tf.concat([emotions, outputs[:, 7:]], axis=1))
        assert float(alone[0]) == pytest.approx(emotion_part + expected_corpus, rel=1e-5)
        with_head = emotion_loss(LABELS, 0.0, arousal_head=1.0, corpus_adversary=True)(targets, outputs)
        head = -np.log(1 - 1 / (1 + np.exp(-1.5)))  # sad: the calm side
        assert float(with_head[0]) == pytest.approx(emotion_part + head + expected_corpus, rel=1e-5)
    # The corpus index after the covers does not leak into the emotions' mask.
    targets = tf.constant([[float(LABELS.index("sad")), 1, 1, 1, 1, 1, 0, 2.0]])
    assert float(masked_cross_entropy(targets, emotions)[0]) == pytest.approx(
        float(masked_cross_entropy(targets[:, :7], emotions)[0]), rel=1e-6)


@needs_tensorflow
@pytest.mark.slow
@pytest.mark.parametrize("head", [(), ("--arousal-head", "1")], ids=["alone", "with-arousal-head"])
def test_train_with_a_corpus_adversary_on_two_corpora_exports_the_emotions_alone(head, ravdess_root: Path,
                                                                                  nemo_fixtures: Path, tmp_path: Path):
    from serd.model import Model
    from test_train import serd

    # Alone, Keras orders the adversary's weights before the emotion logits' (an export that took
    # the first weights in order failed here after a whole training run).
    done = serd("train", "--data", f"ravdess={ravdess_root}", "--actors", "1,2", "--data", f"nemo={nemo_fixtures}",
                "--folds", "2", "--only-folds", "1", "--epochs", "1", "--val-per-corpus", "0",
                "--corpus-adversary", "0.3", *head, "--out", tmp_path, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    fold = json.loads((tmp_path / "results.json").read_text())["fold1"]
    assert fold["settings"]["corpus_adversary"] == 0.3
    # The head is found by name, not taken for the adversary's first logit.
    assert ("arousal_head_uar" in fold["keras_float"]) == bool(head)
    model = Model(next(tmp_path.glob("*-int8.tflite")))
    probs = model.predict(np.zeros(model.params.shape, dtype=np.float32))
    assert probs.shape == (5,) and probs.sum() == pytest.approx(1.0, abs=1e-3)


@needs_tensorflow
def test_train_with_mixstyle_and_an_arousal_head_exports_the_emotions_alone(ravdess_root: Path, tmp_path: Path):
    from serd.model import Model
    from test_train import serd

    done = serd("train", "--data", ravdess_root, "--actors", "1,2,3", "--folds", "3", "--only-folds", "1",
                "--epochs", "1", "--mixstyle", "0.5", "--arousal-head", "1", "--out", tmp_path, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    fold = json.loads((tmp_path / "results.json").read_text())["fold1"]
    assert fold["settings"]["mixstyle"] == 0.5 and fold["settings"]["arousal_head"] == 1.0
    # The head is scored in Keras beside the arousal the runtime derives from the emotions.
    assert 0.0 <= fold["keras_float"]["arousal_head_uar"] <= 1.0 and 0.0 <= fold["keras_float"]["arousal_uar"] <= 1.0
    # The model file is the runtime's contract: five emotion logits, no sixth output.
    model = Model(next(tmp_path.glob("*-int8.tflite")))
    assert model.labels == ("neutral", "happy", "sad", "angry", "fearful")
    probs = model.predict(np.zeros(model.params.shape, dtype=np.float32))
    assert probs.shape == (5,) and probs.sum() == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("flags, message", [
    (("--mixstyle", "2"), "serd: --mixstyle: expected a share from 0 to 1, got 2.0"),
    (("--arousal-head", "-1"), "serd: --arousal-head: expected 0 or more, got -1.0"),
    (("--network", "study", "--mixstyle", "0.5"),
     "serd: --mixstyle, --arousal-head and --corpus-adversary need --network serd_cnn or serd_cnn_wide"),
    (("--corpus-adversary", "-0.5"), "serd: --corpus-adversary: expected 0 or more, got -0.5"),
    (("--corpus-adversary", "0.3"), "serd: --corpus-adversary needs two corpora or more (--data NAME=PATH, twice)"),
])
def test_train_refuses_bad_training_parts_in_one_line(flags, message, tmp_path: Path):
    from test_train import serd

    refused = serd("train", *flags, "--out", tmp_path, cwd=tmp_path)
    assert refused.returncode == 2 and refused.stderr.strip() == message
