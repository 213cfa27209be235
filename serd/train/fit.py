"""Training one network on one split, exporting it, and scoring it through the runtime."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from serd.analysis import GateSettings, file_windows, gate_windows
from serd.features import FeatureParams, LogMel
from serd.train import metrics
from serd.train.augment import AugmentSettings
from serd.train.channel import CONDITIONS
from serd.train.data import Corpus, crop, epoch_arrays
from serd.train.evaluate import arousal_uar, score_model
from serd.train.export import multiply_adds, save_model, to_tflite
from serd.train.networks import AROUSAL_HEAD, build
from serd.train.splits import Split

_LOGGER = logging.getLogger(__name__)
REPRESENTATIVE_WINDOWS = 300


@dataclass(frozen=True)
class FitSettings:
    network: str = "serd_cnn"
    epochs: int = 40
    batch_size: int = 32
    learning_rate: float = 2e-3
    crops_per_clip: int = 2
    steps: int | None = None
    """Optimiser steps to train for; overrides `epochs` (more data needs fewer passes)."""
    seed: int = 0
    hop_s: float = 0.5
    class_mask: bool = True
    """Mask a class a corpus lacks out of its clips' loss (False: it counts as a wrong answer there)."""
    arousal_weight: float = 0.0
    """Weight of the arousal term (`emotion_loss`): 0 trains the categories alone, as v3 did."""
    arousal_head: float = 0.0
    """Weight of an arousal head's loss (a training-only output, `networks.serd_cnn`); 0: no head."""
    mixstyle: float = 0.0
    """Share of training windows whose early feature statistics are mixed with another's (MixStyle); 0: off."""
    corpus_adversary: float = 0.0
    """Strength of the gradient reversal behind a corpus classifier (DANN, `networks.serd_cnn`); 0: none."""
    augment: AugmentSettings = field(default_factory=AugmentSettings)
    gate: GateSettings = field(default_factory=GateSettings)

    def describe(self) -> dict[str, Any]:
        d = asdict(self)
        d["augment"] = self.augment.enabled()
        return d


def masked_cross_entropy(targets, logits):
    """Cross-entropy over the classes the clip's corpus covers.

    `targets` rows are (class index, covers...). A class the corpus never recorded
    (nEMO has no disgust) gets a logit of about -1e4 for that clip, so the clip
    neither pushes it down as a wrong answer nor up: it is simply not in its world.
    """
    import keras

    y = keras.ops.cast(targets[:, 0], "int32")
    return keras.losses.sparse_categorical_crossentropy(y, _masked(targets, logits), from_logits=True)


def _masked(targets, logits):
    """The logits with each class the clip's corpus lacks pushed to about -1e4 (out of its softmax).

    The covers are the columns after the class index, one per logit (a corpus index may follow them)."""
    return logits + (targets[:, 1 : 1 + logits.shape[-1]] - 1.0) * 1e4


def emotion_loss(labels: tuple[str, ...], arousal_weight: float, arousal_head: float = 0.0,
                 corpus_adversary: bool = False):
    """`masked_cross_entropy`, plus `arousal_weight` x the cross-entropy of the arousal reading,
    plus `arousal_head` x the cross-entropy of the arousal head (the output after the emotions, when
    built with one: `networks.serd_cnn`), plus, with `corpus_adversary`, the corpus classifier's
    cross-entropy (its logits come last, the clip's corpus index is the targets' last column; its
    strength against the features is the gradient reversal's, so its own weight is 1).

    The arousal reading is what the runtime shows (`serd.labels.arousal_of`: the
    activated classes' share of activated + calm), so training it asks the network to
    get the calm/activated side right even where it cannot tell the category: every
    corpus carries arousal (EmoSpeech's calm against its other three is nothing else),
    and it is what held best across corpora. No new output: messages and models keep
    their shape. The head is the other way to ask the same: an output of its own, trained
    beside the categories (and, for now, scored in Keras only: `keras_clip_scores`). A clip
    of a class with no side (disgust) adds nothing to either term.
    """
    if not arousal_weight and not arousal_head and not corpus_adversary:
        return masked_cross_entropy
    import keras

    from serd.labels import arousal_sides

    n = len(labels)
    high, low = arousal_sides(labels)
    activated = keras.ops.convert_to_tensor(np.isin(np.arange(n), high).astype("float32"))
    calm = keras.ops.convert_to_tensor(np.isin(np.arange(n), low).astype("float32"))

    def loss(targets, outputs):
        logits = outputs[:, :n]
        y = keras.ops.cast(targets[:, 0], "int32")
        is_high = keras.ops.take(activated, y)
        has_side = is_high + keras.ops.take(calm, y)
        total = masked_cross_entropy(targets, logits)
        if arousal_weight:
            probs = keras.ops.softmax(_masked(targets, logits), axis=-1)
            p_high = keras.ops.sum(probs * activated, axis=-1)
            p_low = keras.ops.sum(probs * calm, axis=-1)
            p = keras.ops.clip(p_high / (p_high + p_low + 1e-7), 1e-6, 1.0 - 1e-6)
            arousal = -(is_high * keras.ops.log(p) + (1.0 - is_high) * keras.ops.log(1.0 - p)) * has_side
            total = total + arousal_weight * arousal
        if arousal_head:
            z = outputs[:, n]
            total = total + arousal_head * (keras.ops.softplus(z) - is_high * z) * has_side
        if corpus_adversary:
            corpus_logits = outputs[:, n + (1 if arousal_head else 0):]
            corpus = keras.ops.cast(targets[:, -1], "int32")
            total = total + keras.losses.sparse_categorical_crossentropy(corpus, corpus_logits, from_logits=True)
        return total

    return loss


def data_description(corpus: Corpus, indices) -> str:
    """e.g. "ravdess: 22 speakers, 1320 clips; nemo: 8 speakers, 3597 clips"."""
    parts = []
    for name in corpus.corpora:
        rows = [i for i in indices if corpus.clips[i].corpus == name]
        if rows:
            parts.append(f"{name}: {len({corpus.clips[i].speaker for i in rows})} speakers, {len(rows)} clips")
    return "; ".join(parts)


def window_labels(corpus: Corpus, indices, params: FeatureParams, settings: FitSettings):
    """Speech-window features of whole clips (as `serd analyze` cuts them) and each clip's gate result."""
    prepared = []
    for i in indices:
        windows = file_windows([corpus.audio[i]], params, settings.hop_s)
        prepared.append(gate_windows(windows, params, corpus.labels, settings.gate))
    return prepared


def keras_clip_scores(model, prepared, y_clips: np.ndarray, labels: tuple[str, ...]) -> dict[str, float]:
    """Clip-level accuracy/UAR of a Keras model, averaging window probabilities like analyze.

    Also arousal UAR (activated against calm, clips with a side) from the averaged
    probabilities as the runtime reads it, and from the arousal head when the model has one.
    """
    from serd.labels import arousal_of
    from serd.model import softmax

    n_classes = len(labels)
    feats = [f for _, f in prepared if f.shape[0]]
    if not feats:
        return {"accuracy": 0.0, "uar": 0.0}
    stacked = np.concatenate(feats)[..., None]
    outputs = np.asarray(model.predict(stacked, batch_size=256, verbose=0))
    probs = softmax(outputs[:, :n_classes])
    has_head = any(layer.name == AROUSAL_HEAD for layer in model.layers)
    head = 1.0 / (1.0 + np.exp(-outputs[:, n_classes])) if has_head else None
    offset = 0
    predicted, derived, headed = [], [], []
    for result, f in prepared:
        n = f.shape[0]
        clip_probs = probs[offset : offset + n].mean(axis=0) if n else np.zeros(n_classes)
        predicted.append(int(np.argmax(clip_probs)) if n else -1)
        derived.append(arousal_of(clip_probs, labels) or 0.0)
        headed.append(float(head[offset : offset + n].mean()) if head is not None and n else 0.0)
        offset += n
    predicted = np.array(predicted)
    scores = {"accuracy": metrics.accuracy(y_clips, predicted), "uar": metrics.uar(y_clips, predicted, n_classes)}
    readings = {"arousal_uar": derived, **({"arousal_head_uar": headed} if head is not None else {})}
    for key, arousal in readings.items():
        score = arousal_uar(y_clips, arousal, labels)
        if score is not None:
            scores[key] = score
    return scores


def train_split(
    corpus: Corpus,
    split: Split,
    params: FeatureParams,
    settings: FitSettings,
    out_dir: Path,
    label_set: str,
    export: bool = True,
    noise_eval: bool = False,
    name: str | None = None,
) -> dict[str, Any]:
    """Fit on split.train, calibrate on split.val, score split.test; return a results dict."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(settings.seed)
    tf.config.experimental.enable_op_determinism()
    rng = np.random.default_rng(settings.seed)
    logmel = LogMel(params)
    n_classes = len(corpus.labels)

    adversary = (len(corpus.corpora), settings.corpus_adversary) if settings.corpus_adversary else None
    model = build(settings.network, params.shape, n_classes, mixstyle_p=settings.mixstyle,
                  arousal_head=bool(settings.arousal_head), corpus_adversary=adversary)
    steps_per_epoch = int(np.ceil(len(split.train) * settings.crops_per_clip / settings.batch_size))
    epochs = settings.epochs if settings.steps is None else max(1, int(np.ceil(settings.steps / steps_per_epoch)))
    steps = epochs * steps_per_epoch
    schedule = keras.optimizers.schedules.CosineDecay(settings.learning_rate, decay_steps=max(1, steps))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=schedule), loss=emotion_loss(corpus.labels, settings.arousal_weight, settings.arousal_head, bool(adversary)))
    val_prepared = window_labels(corpus, split.val, params, settings)
    y_val = corpus.y[list(split.val)]

    def make_epoch(seed: int):
        return epoch_arrays(
            corpus, split.train, params, settings.augment, np.random.default_rng(seed), settings.crops_per_clip, logmel,
            settings.class_mask, corpus_column=bool(adversary),
        )

    started = time.monotonic()
    history = []
    epoch_seeds = rng.integers(0, 2**31, size=epochs)
    with ThreadPoolExecutor(max_workers=1) as pool:  # next epoch's windows while this one trains
        upcoming = pool.submit(make_epoch, int(epoch_seeds[0]))
        for epoch in range(epochs):
            x, y, w = upcoming.result()
            if epoch + 1 < epochs:
                upcoming = pool.submit(make_epoch, int(epoch_seeds[epoch + 1]))
            fit = model.fit(x, y, sample_weight=w, batch_size=settings.batch_size, epochs=1, verbose=0, shuffle=True)
            entry = {"epoch": epoch + 1, "loss": float(fit.history["loss"][-1])}
            if split.val and ((epoch + 1) % 5 == 0 or epoch + 1 == epochs):
                entry.update({f"val_{k}": v for k, v in keras_clip_scores(model, val_prepared, y_val, corpus.labels).items()})
            history.append(entry)
            _LOGGER.info(
                "%s %s epoch %d/%d loss %.3f%s (%.0f s)",
                split.name,
                settings.network,
                epoch + 1,
                epochs,
                entry["loss"],
                f" val UAR {entry['val_uar']:.3f}" if "val_uar" in entry else "",
                time.monotonic() - started,
            )
    train_seconds = time.monotonic() - started
    result: dict[str, Any] = {
        "split": split.name,
        "test_actors": list(split.test_actors),
        "val_actors": list(split.val_actors),
        "n_train": len(split.train),
        "n_val": len(split.val),
        "n_test": len(split.test),
        "settings": settings.describe(),
        "epochs": epochs,
        "steps": steps,
        "train_seconds": round(train_seconds, 1),
        "multiply_adds": multiply_adds(model),
        "params": int(model.count_params()),
        "history": history,
    }
    if split.test:
        test_prepared = window_labels(corpus, split.test, params, settings)
        result["keras_float"] = keras_clip_scores(model, test_prepared, corpus.y[list(split.test)], corpus.labels)
    if not export:
        return result

    training = {
        "data": data_description(corpus, split.train),
        "corpora": sorted({corpus.clips[i].corpus for i in split.train}),
        "label_set": label_set,
        "split": split.name,
        "train_speakers": sorted({corpus.clips[i].key for i in split.train}),
        "val_actors": list(split.val_actors),
        "test_actors": list(split.test_actors),
        **settings.describe(),
        "epochs": epochs,
    }
    representative = _representative(corpus, split, params, settings)
    for kind, rep in (("float", None), ("int8", representative)):
        stem = name or f"{split.name}-{settings.network}-{label_set}"
        path = out_dir / f"{stem}-{kind}.tflite"
        save_model(
            path,
            to_tflite(model, settings.network, params, n_classes, rep),
            labels=corpus.labels,
            label_set=label_set,
            params=params,
            temperature=1.0,
            training=training,
            metrics={},
        )
        result[kind] = calibrate_and_score(path, corpus, split, settings, noise_eval and kind == "int8")
    if split.test:
        same = np.mean(np.array(result["float"]["predicted"]) == np.array(result["int8"]["predicted"]))
        result["int8_float_agreement"] = float(same)
    return result


def _representative(corpus: Corpus, split: Split, params: FeatureParams, settings: FitSettings) -> np.ndarray:
    """Real training windows (no augmentation) for int8 calibration."""
    rng = np.random.default_rng(settings.seed + 1)
    logmel = LogMel(params)
    picks = rng.choice(list(split.train), size=min(REPRESENTATIVE_WINDOWS, len(split.train)), replace=False)
    rows = [logmel(crop(corpus.audio[i], tuple(corpus.speech[i]), params.window_samples, rng)) for i in picks]
    return np.stack(rows)[..., None]


def calibrate_and_score(path: Path, corpus: Corpus, split: Split, settings: FitSettings, noise_eval: bool) -> dict[str, Any]:
    """Fit the temperature on validation windows through the runtime, rewrite the sidecar, score the test clips."""
    import json

    from serd.model import Model, write_sidecar

    model = Model(path)
    temperature = 1.0
    window_temperature = 1.0
    if split.val:
        clip_logits, labels = [], []
        params = model.params
        for i in split.val:
            _, features = gate_windows(file_windows([corpus.audio[i]], params, settings.hop_s), params, model.labels, settings.gate)
            clip_logits.append(np.stack([model.logits(f) for f in features]) if features.shape[0] else np.zeros((0, len(model.labels))))
            labels.append(corpus.y[i])
        temperature = metrics.fit_clip_temperature(clip_logits, np.array(labels))
        rows = [c for c in clip_logits if len(c)]
        if rows:
            window_y = np.concatenate([[y] * len(c) for c, y in zip(clip_logits, labels) if len(c)]).astype(int)
            window_temperature = metrics.fit_temperature(np.concatenate(rows), window_y)
    sidecar = json.loads(path.with_suffix(".json").read_text())
    sidecar["temperature"] = round(temperature, 4)
    scores: dict[str, Any] = {"temperature": round(temperature, 4), "window_temperature": round(window_temperature, 4)}
    if split.test:
        uncalibrated = score_model(path, corpus, split.test, settings.hop_s, settings.gate, temperature=1.0)
        scores["ece_before"] = uncalibrated["ece"]
        scores["window_ece_before"] = uncalibrated["window_ece"]
    write_sidecar(path, sidecar)
    if split.test:
        scored = score_model(path, corpus, split.test, settings.hop_s, settings.gate)
        scores.update(scored)
        if noise_eval:
            pool = [corpus.audio[i] for i in (split.val or split.train)]
            scores["noisy"] = {}
            for kind in ("pink", "babble"):
                for snr in (20, 10, 5):
                    noisy = score_model(
                        path, corpus, split.test, settings.hop_s, settings.gate, noise=(kind, snr, pool), seed=settings.seed
                    )
                    scores["noisy"][f"{kind}_{snr}dB"] = {k: noisy[k] for k in ("accuracy", "uar", "by_corpus")}
            for condition in CONDITIONS:
                changed = score_model(path, corpus, split.test, settings.hop_s, settings.gate, channel=condition)
                scores["noisy"][condition] = {k: changed[k] for k in ("accuracy", "uar", "by_corpus")}
            # 20 dB quieter (speaker far from the microphone), with the gate lowered to match.
            quiet_gate = GateSettings(settings.gate.threshold_dbfs - 20.0, settings.gate.hangover)
            quiet = score_model(path, corpus, split.test, settings.hop_s, quiet_gate, noise=("gain", -20.0, pool))
            scores["noisy"]["quiet_-20dB"] = {k: quiet[k] for k in ("accuracy", "uar")}
    return scores
