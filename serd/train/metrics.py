"""Scores: accuracy, unweighted average recall (UAR), confusion, calibration."""

from __future__ import annotations

import numpy as np


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return matrix


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def uar(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Mean of per-class recalls over the classes present in y_true."""
    matrix = confusion(y_true, y_pred, n_classes)
    support = matrix.sum(axis=1)
    present = support > 0
    return float(np.mean(np.diag(matrix)[present] / support[present]))


def ece(probs: np.ndarray, y_true: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error of the top label, equal-width confidence bins."""
    probs = np.asarray(probs)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(y_true)
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            total += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(total)


def nll(logits: np.ndarray, y_true: np.ndarray, temperature: float) -> float:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-np.mean(log_probs[np.arange(len(y_true)), y_true]))


def fit_temperature(logits: np.ndarray, y_true: np.ndarray) -> float:
    """The temperature minimising validation NLL (grid, then refined); 1.0 without data."""
    if len(y_true) == 0:
        return 1.0
    grid = np.exp(np.linspace(np.log(0.25), np.log(8.0), 121))
    losses = [nll(logits, y_true, t) for t in grid]
    best = int(np.argmin(losses))
    fine = np.linspace(grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)], 41)
    return float(fine[int(np.argmin([nll(logits, y_true, t) for t in fine]))])


def clip_nll(window_logits: list[np.ndarray], y_true: np.ndarray, temperature: float) -> float:
    """NLL of clip probabilities = mean of window softmax(logits / T), as analyze and smoothing average."""
    total = 0.0
    for logits, y in zip(window_logits, y_true):
        z = logits / temperature
        z = z - z.max(axis=1, keepdims=True)
        probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        total -= np.log(max(float(probs.mean(axis=0)[y]), 1e-12))
    return total / max(1, len(y_true))


def fit_clip_temperature(window_logits: list[np.ndarray], y_true: np.ndarray) -> float:
    """Temperature minimising clip-level NLL (grid, then refined); 1.0 without data.

    Fitted on clips rather than windows because what people read (analyze's
    per-file result, the daemon's smoothed confidence) is an average of windows.
    """
    pairs = [(w, y) for w, y in zip(window_logits, y_true) if len(w)]
    if not pairs:
        return 1.0
    logits, ys = [p[0] for p in pairs], np.array([p[1] for p in pairs])
    grid = np.exp(np.linspace(np.log(0.1), np.log(8.0), 121))
    losses = [clip_nll(logits, ys, t) for t in grid]
    best = int(np.argmin(losses))
    fine = np.linspace(grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)], 41)
    return float(fine[int(np.argmin([clip_nll(logits, ys, t) for t in fine]))])
