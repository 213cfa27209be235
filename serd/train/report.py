"""Model-card tables from training runs' results.json files.

    python -m serd.train.report --cv runs/cv_serd --study runs/cv_study [--noaug runs/cv_serd_noaug] \
        [--seed runs/seed12] > tables.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from serd.labels import EMOTION6


def load(run: Path | None) -> dict:
    if run is None or not (run / "results.json").exists():
        return {}
    return {k: v for k, v in json.loads((run / "results.json").read_text()).items() if k.startswith("fold") or k in ("seed", "final")}


def mean_std(values: list[float]) -> str:
    arr = np.array(values, dtype=float)
    return f"{arr.mean():.3f} ± {arr.std():.3f}" if arr.size else "–"


def scores(results: dict, kind: str, metric: str) -> list[float]:
    out = []
    for name in sorted(results, key=lambda n: int(n[4:]) if n.startswith("fold") else 0):
        entry = results[name].get(kind)
        if entry and metric in entry and entry[metric] is not None:
            out.append(float(entry[metric]))
    return out


def fold_table(rows: list[tuple[str, dict, str]]) -> str:
    """rows: (name, results, kind) -> per-fold UAR and accuracy plus mean ± std."""
    folds = sorted({f for _, r, _ in rows for f in r}, key=lambda n: int(n[4:]))
    head = "| model | " + " | ".join(folds) + " | mean ± std |"
    lines = [head, "|---" * (len(folds) + 2) + "|"]
    for name, results, kind in rows:
        for metric in ("uar", "accuracy"):
            cells = []
            for f in folds:
                entry = results.get(f, {}).get(kind)
                cells.append(f"{entry[metric]:.3f}" if entry and metric in entry else "–")
            label = f"{name} {'UAR' if metric == 'uar' else 'accuracy'}"
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {mean_std(scores(results, kind, metric))} |")
    return "\n".join(lines)


def confusion_table(results: dict, kind: str, labels=EMOTION6) -> str:
    total = None
    for entry in results.values():
        matrix = np.array(entry.get(kind, {}).get("confusion", []))
        if matrix.size:
            total = matrix if total is None else total + matrix
    if total is None:
        return "–"
    lines = ["| true \\ predicted | " + " | ".join(labels) + " | recall |", "|---" * (len(labels) + 2) + "|"]
    for label, row in zip(labels, total):
        recall = row[labels.index(label)] / max(1, row.sum())
        lines.append(f"| {label} | " + " | ".join(str(v) for v in row) + f" | {recall:.2f} |")
    return "\n".join(lines)


def noise_table(results: dict) -> str:
    conditions = ["pink_20dB", "pink_10dB", "pink_5dB", "babble_20dB", "babble_10dB", "babble_5dB", "quiet_-20dB"]
    lines = ["| condition | UAR (mean ± std over folds) | accuracy |", "|---|---|---|",
             f"| clean | {mean_std(scores(results, 'int8', 'uar'))} | {mean_std(scores(results, 'int8', 'accuracy'))} |"]
    for c in conditions:
        noisy = [r["int8"]["noisy"] for r in results.values() if c in r.get("int8", {}).get("noisy", {})]
        uars = [n[c]["uar"] for n in noisy]
        accs = [n[c]["accuracy"] for n in noisy]
        lines.append(f"| {c.replace('_', ' ')} | {mean_std(uars)} | {mean_std(accs)} |")
    return "\n".join(lines)


def calibration_table(results: dict) -> str:
    lines = ["| model | T (clip) | clip ECE before → after | window ECE before → after |", "|---|---|---|---|"]
    for kind in ("float", "int8"):
        t = scores(results, kind, "temperature")
        lines.append(
            f"| {kind} | {mean_std(t)} | {mean_std(scores(results, kind, 'ece_before'))} → {mean_std(scores(results, kind, 'ece'))} | "
            f"{mean_std(scores(results, kind, 'window_ece_before'))} → {mean_std(scores(results, kind, 'window_ece'))} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cv", type=Path, required=True)
    parser.add_argument("--study", type=Path)
    parser.add_argument("--noaug", type=Path)
    parser.add_argument("--seed", type=Path)
    args = parser.parse_args()
    cv, study, noaug, seed = load(args.cv), load(args.study), load(args.noaug), load(args.seed)
    rows = [("serd_cnn int8 (shipped kind)", cv, "int8"), ("serd_cnn float TFLite", cv, "float")]
    if study:
        rows.append(("study baseline float (Keras)", study, "keras_float"))
    if noaug:
        rows.append(("serd_cnn without augmentation, float (Keras)", noaug, "keras_float"))
    print("## Actor-disjoint 6-fold, emotion6\n")
    print(fold_table(rows))
    agreement = [r["int8_float_agreement"] for r in cv.values() if "int8_float_agreement" in r]
    print(f"\nint8 vs float TFLite: same clip label on {mean_std(agreement)} of test clips.\n")
    print("### Summed confusion matrix, serd_cnn int8 (all six test folds)\n")
    print(confusion_table(cv, "int8"))
    print("\n### Calibration (temperature fitted on each fold's validation actors)\n")
    print(calibration_table(cv))
    print("\n### Noise (int8, test folds; SNR relative to the speech part of each clip)\n")
    print(noise_table(cv))
    if seed:
        s = seed.get("seed", {})
        print("\n## Seed protocol, seed12 (gender × emotion6)\n")
        for kind in ("keras_float", "float", "int8"):
            if kind in s:
                print(f"- {kind}: accuracy {s[kind]['accuracy']:.4f}, UAR {s[kind]['uar']:.4f}")
    seconds = [r["train_seconds"] for r in cv.values()]
    if seconds:
        first = next(iter(cv.values()))
        print(f"\nTraining: {mean_std(seconds)} s per fold on 2 CPU cores; {first['multiply_adds']:,} multiply-adds "
              f"per window; {first['params']:,} parameters.")


if __name__ == "__main__":
    main()
