"""Label sets and the arousal reading derived from the emotion probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from serd.labels import EMOTION6, SEED12, arousal_of, arousal_sides


def test_arousal_is_activated_over_activated_plus_calm_with_disgust_on_neither_side():
    probs = dict(neutral=0.1, happy=0.2, sad=0.1, angry=0.3, fearful=0.1, disgust=0.2)
    vector = np.array([probs[k] for k in EMOTION6])
    assert arousal_of(vector, EMOTION6) == pytest.approx(0.6 / 0.8)
    # all the mass on disgust moves nothing: same arousal with disgust doubled and renormalised
    more_disgust = vector.copy()
    more_disgust[EMOTION6.index("disgust")] = 0.6
    assert arousal_of(more_disgust / more_disgust.sum(), EMOTION6) == pytest.approx(0.75)


def test_arousal_reads_gendered_labels_and_needs_both_sides():
    high, low = arousal_sides(SEED12)
    assert [SEED12[i] for i in high] == ["female_happy", "female_angry", "female_fearful",
                                         "male_happy", "male_angry", "male_fearful"]
    assert len(low) == 4
    assert arousal_of(np.ones(3) / 3, ("happy", "angry", "disgust")) is None
    assert arousal_of(None, EMOTION6) is None
    assert arousal_of(np.array([0, 0, 0, 0, 0, 1.0]), EMOTION6) is None  # only disgust: no reading
