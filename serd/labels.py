"""Label sets: which classes a model predicts, and how RAVDESS emotions map onto them."""

from __future__ import annotations

RAVDESS_EMOTIONS = {
    1: "neutral",
    2: "calm",
    3: "happy",
    4: "sad",
    5: "angry",
    6: "fearful",
    7: "disgust",
    8: "surprised",
}

EMOTION6 = ("neutral", "happy", "sad", "angry", "fearful", "disgust")
# The default since model v3: emotion6 without disgust. Only RAVDESS records disgust, and a
# class only one corpus has became the answer for anything unfamiliar (shown for 30 % of
# hidden clips without disgust, 59 % of EmoSpeech's phone clips). Disgust clips are left out.
EMOTION5 = EMOTION6[:5]
EMOTION8 = tuple(RAVDESS_EMOTIONS[i] for i in range(1, 9))
# As in the original study: calm is merged into neutral, surprised into happy.
_MERGE6 = {"calm": "neutral", "surprised": "happy"}
SEED12 = tuple(f"{g}_{e}" for g in ("female", "male") for e in EMOTION6)

LABEL_SETS: dict[str, tuple[str, ...]] = {"emotion5": EMOTION5, "emotion6": EMOTION6, "emotion8": EMOTION8, "seed12": SEED12}


def label_for(label_set: str, emotion: str, gender: str) -> str | None:
    """The class name of a clip with this RAVDESS emotion and speaker gender (None: the set leaves it out)."""
    if label_set == "emotion8":
        return emotion
    merged = _MERGE6.get(emotion, emotion)
    if label_set == "emotion6":
        return merged
    if label_set == "emotion5":
        return merged if merged in EMOTION5 else None
    if label_set == "seed12":
        return f"{gender}_{merged}"
    raise ValueError(f"unknown label set {label_set!r}; expected one of {sorted(LABEL_SETS)}")


def emotion_of(label: str) -> str:
    """The emotion part of a label (seed12 labels carry a gender prefix)."""
    return label.split("_", 1)[1] if "_" in label else label

# Arousal: how activated the voice is. The acted categories split cleanly on it
# (Russell's circumplex): angry, happy and fearful are high-arousal, neutral and sad low.
# Disgust sits near the middle of the arousal axis in the literature and in our data
# (acted disgust is slow and low, but tense), so it counts for neither side: the
# arousal probability is renormalised over the five emotions that have a side.
ACTIVATED = ("happy", "angry", "fearful")
CALM = ("neutral", "sad")


def arousal_sides(labels: tuple[str, ...] | list[str]) -> tuple[list[int], list[int]]:
    """Indices of the activated and the calm labels (seed12's gendered labels included)."""
    emotions = [emotion_of(label) for label in labels]
    return ([i for i, e in enumerate(emotions) if e in ACTIVATED], [i for i, e in enumerate(emotions) if e in CALM])


def arousal_of(probs, labels: tuple[str, ...] | list[str]) -> float | None:
    """P(activated | activated or calm) from a probability vector in `labels` order; None without both sides."""
    if probs is None:
        return None
    high, low = arousal_sides(labels)
    if not high or not low:
        return None
    activated = float(sum(probs[i] for i in high))
    total = activated + float(sum(probs[i] for i in low))
    return activated / total if total > 0 else None
