"""Scoring an exported .tflite through serd's runtime path (features.py + model.py), never Keras."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from serd.analysis import GateSettings, analyze_recordings, iter_file_windows
from serd.train import metrics
from serd.features import SAMPLE_RATE
from serd.labels import arousal_of, arousal_sides, emotion_of
from serd.train.augment import babble, pink_noise, rms
from serd.train.channel import CONDITIONS

FOUR_CLASSES = ("neutral", "happy", "sad", "angry")
"""The classes most corpora share: the cross-corpus 4-class UAR is scored on them."""

_LOGGER = logging.getLogger(__name__)


def add_noise(audio: np.ndarray, bounds: tuple[int, int], kind: str, snr_db: float, pool, rng) -> np.ndarray:
    """Noise at `snr_db` relative to the speech part of the clip (not its silences).

    kind "gain" instead scales the clip by `snr_db` dB (a distant or quiet speaker).
    """
    if kind == "gain":
        return (audio * 10.0 ** (snr_db / 20.0)).astype(np.float32)
    n = audio.shape[0]
    noise = pink_noise(n, rng) if kind == "pink" else babble(pool, n, rng)
    speech_rms = rms(audio[bounds[0] : bounds[1]])
    gain = speech_rms / (rms(noise) * 10.0 ** (snr_db / 20.0))
    return np.clip(audio + gain * noise, -1.0, 1.0).astype(np.float32)


def score_model(
    path: Path,
    corpus,
    indices,
    hop_s: float,
    gate: GateSettings,
    temperature: float | None = None,
    noise: tuple[str, float, list] | None = None,
    channel: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Clip-level accuracy, UAR, confusion and ECE, each clip analysed exactly as `serd analyze` does."""
    from serd.model import Model

    model = Model(path)
    if temperature is not None:
        model.temperature = temperature
    if tuple(model.labels) != tuple(corpus.labels):
        raise ValueError(f"{path}: labels {model.labels} differ from the corpus's {corpus.labels}")
    rng = np.random.default_rng(seed)
    n_classes = len(model.labels)
    probs, predicted, no_speech = [], [], 0
    window_probs, window_y = [], []

    def clip_windows(i: int):
        audio = corpus.audio[i]
        if noise is not None:
            kind, snr_db, pool = noise
            audio = add_noise(audio, tuple(corpus.speech[i]), kind, snr_db, pool, rng)
        if channel is not None:  # the microphone/room of the model card's channel table
            audio = CONDITIONS[channel].apply(audio, SAMPLE_RATE)
        return iter_file_windows([audio], model.params, hop_s)

    # The clips in order through the batched path of `serd analyze` (the noise drawn clip by clip, as before).
    results = analyze_recordings((clip_windows(i) for i in indices), model.params, model.labels, model.predict_many, gate)
    for i, result in zip(indices, results):
        clip_probs = result.probs
        window_probs.append(result.speech_probs)
        window_y.extend([corpus.y[i]] * result.speech_probs.shape[0])
        if clip_probs is None:  # no speech window: counts as wrong, honestly
            no_speech += 1
            clip_probs = np.full(n_classes, 1.0 / n_classes, dtype=np.float32)
            predicted.append(-1)
        else:
            predicted.append(int(np.argmax(clip_probs)))
        probs.append(clip_probs)
    y = corpus.y[list(indices)]
    predicted_arr = np.array(predicted)
    extra = {"by_corpus": by_corpus(corpus, list(indices), np.stack(probs), predicted_arr, model.labels)}
    return extra | {
        "accuracy": metrics.accuracy(y, predicted_arr),
        "uar": metrics.uar(y, np.where(predicted_arr < 0, (y + 1) % n_classes, predicted_arr), n_classes),
        "ece": metrics.ece(np.stack(probs), y),
        "window_ece": metrics.ece(np.concatenate(window_probs), np.array(window_y)) if window_y else None,
        "confusion": metrics.confusion(y, np.where(predicted_arr < 0, (y + 1) % n_classes, predicted_arr), n_classes).tolist(),
        "no_speech_clips": no_speech,
        "predicted": predicted,
        "backend": model.backend,
    }


def reading_scores(y: np.ndarray, probs: np.ndarray, predicted: np.ndarray, labels) -> dict[str, Any]:
    """UAR over the classes present, 4-class UAR (argmax among neutral/happy/sad/angry) and arousal UAR."""
    n = len(labels)
    out: dict[str, Any] = {
        "clips": int(len(y)),
        "classes": [labels[k] for k in sorted(set(y.tolist()))],
        "uar": metrics.uar(y, np.where(predicted < 0, (y + 1) % n, predicted), n),
    }
    # What a teacher sees: the shown label. The wrong label shown most often, as a share of the
    # corpus's clips (a "sink" class that swallows the unfamiliar), and its name.
    wrong = [int(np.sum((predicted == k) & (y != k))) for k in range(n)]
    if len(y):
        worst = int(np.argmax(wrong))
        out["top_wrong_label"] = labels[worst]
        out["top_wrong_share"] = wrong[worst] / len(y)
        out["shown"] = [int(np.sum(predicted == k)) for k in range(n)]
    emotions = [emotion_of(label) for label in labels]
    four = [k for k, e in enumerate(emotions) if e in FOUR_CLASSES]
    rows = np.isin(y, four)
    if rows.any():
        restricted = np.array(four)[np.argmax(probs[rows][:, four], axis=1)]
        out["uar4"] = metrics.uar(y[rows], restricted, n)
    score = arousal_uar(y, [arousal_of(p, labels) or 0.0 for p in probs], labels)
    if score is not None:
        out["arousal_uar"] = score
    return out


def arousal_uar(y: np.ndarray, arousal, labels) -> float | None:
    """UAR of activated (angry, happy, fearful) against calm (neutral, sad) from per-clip arousal
    readings (activated when >= 0.5); disgust clips are on neither side. None without both sides."""
    high, low = arousal_sides(labels)
    truth = np.array([1 if k in high else 0 if k in low else -1 for k in y.tolist()])
    rows = truth >= 0
    if not rows.any() or len(set(truth[rows].tolist())) != 2:
        return None
    return metrics.uar(truth[rows], (np.asarray(arousal, dtype=float)[rows] >= 0.5).astype(int), 2)


def by_corpus(corpus, indices: list[int], probs: np.ndarray, predicted: np.ndarray, labels) -> dict[str, Any]:
    """`reading_scores` per corpus of the scored clips (each over the classes that corpus has)."""
    names = np.array([corpus.clips[i].corpus for i in indices])
    y = corpus.y[indices]
    return {name: reading_scores(y[names == name], probs[names == name], predicted[names == name], labels)
            for name in dict.fromkeys(names.tolist())}


def evaluate_data(model_path: Path, specs, hop_s: float, gate: GateSettings, conditions: bool = False) -> dict[str, Any]:
    """Score a model on every clip of the given corpora (`serd evaluate`), optionally per channel condition."""
    from serd.model import Model
    from serd.train.data import Corpus

    model = Model(model_path)
    label_set = model.sidecar.get("label_set", "emotion6")
    corpus = Corpus.from_specs(list(specs), label_set, model.params.sample_rate)
    everything = list(range(len(corpus.clips)))
    scores = score_model(model_path, corpus, everything, hop_s, gate)
    scores["labels"] = list(model.labels)
    scores["clips"] = len(corpus.clips)
    scores["speakers"] = sorted({c.key for c in corpus.clips})
    if conditions:
        scores["conditions"] = {}
        for name in CONDITIONS:
            changed = score_model(model_path, corpus, everything, hop_s, gate, channel=name)
            scores["conditions"][name] = {k: changed[k] for k in ("accuracy", "uar", "by_corpus")}
    return scores
