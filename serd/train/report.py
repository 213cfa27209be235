"""Model-card tables from training runs' results.json files.

    python -m serd.train.report --cv runs/cv_serd --study runs/cv_study [--noaug runs/cv_serd_noaug] \
        [--seed runs/seed12] > tables.md
    python -m serd.train.report --ablation runs/ablation [--reference runs/cv_rel] > ablation.md

An ablation folder holds one run per condition, each trained with the same folds, epochs and seed:
`none/` (every augmentation on, the reference; or name such a run with --reference), `all/`
(every one off), `<name>/` (only that one off, `serd train --augment-off <name>`) and optionally
`none_seed<N>/` (the reference with `--seed N`: how far two runs of the same recipe differ, the
scale below which a "bought" figure is noise).
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


def fold_key(name: str) -> int:
    """Sort "fold2" before "fold10"; other entries ("seed", "final") first."""
    return int(name[4:]) if name.startswith("fold") else 0


def mean_std(values: list[float]) -> str:
    arr = np.array(values, dtype=float)
    return f"{arr.mean():.3f} ± {arr.std():.3f}" if arr.size else "–"


def scores(results: dict, kind: str, metric: str) -> list[float]:
    out = []
    for name in sorted(results, key=fold_key):
        entry = results[name].get(kind)
        if entry and metric in entry and entry[metric] is not None:
            out.append(float(entry[metric]))
    return out


def fold_table(rows: list[tuple[str, dict, str]]) -> str:
    """rows: (name, results, kind) -> per-fold UAR and accuracy plus mean ± std."""
    folds = sorted({f for _, r, _ in rows for f in r}, key=fold_key)
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


NOISE_FAMILIES = {"pink": ("pink_20dB", "pink_10dB", "pink_5dB"), "babble": ("babble_20dB", "babble_10dB", "babble_5dB")}


def condition_uar(entry: dict, condition: str) -> float | None:
    """int8 UAR of one fold under `condition`: "clean", a noise family (mean over its SNRs) or a noisy key."""
    int8 = entry.get("int8", {})
    if condition == "clean":
        return int8.get("uar")
    noisy = int8.get("noisy", {})
    keys = NOISE_FAMILIES.get(condition, (condition,))
    if not all(k in noisy for k in keys):
        return None
    return float(np.mean([noisy[k]["uar"] for k in keys]))


def paired_delta(reference: dict, run: dict, condition: str) -> list[float]:
    """Per fold: UAR with everything on minus UAR of `run`, on the folds both have (what the change cost)."""
    out = []
    for fold in sorted(set(reference) & set(run), key=fold_key):
        ref, other = condition_uar(reference[fold], condition), condition_uar(run[fold], condition)
        if ref is not None and other is not None:
            out.append(ref - other)
    return out


ABLATION_CONDITIONS = (("clean", "clean"), ("pink", "pink 20/10/5 dB"), ("babble", "babble 20/10/5 dB"),
                       ("quiet_-20dB", "−20 dB level"))


def ablation_table(runs: dict[str, dict]) -> str:
    """What each augmentation bought: int8 UAR of the reference minus UAR with it switched off, paired per
    fold (mean, and the per-fold range so a reader sees whether folds agree)."""
    reference = runs["none"]
    head = "| switched off | " + " | ".join(f"UAR {title}" for _, title in ABLATION_CONDITIONS) + " |"
    lines = [head, "|---" * (len(ABLATION_CONDITIONS) + 1) + "|"]
    def row_order(name: str) -> tuple[int, str]:  # reference, all off, single switches, seed-noise rows last
        return ({"none": 0, "all": 1}.get(name, 3 if name.startswith("none_seed") else 2), name)

    for name in sorted(runs, key=row_order):
        cells = []
        for condition, _ in ABLATION_CONDITIONS:
            values = [condition_uar(e, condition) for e in runs[name].values()]
            values = [v for v in values if v is not None]
            if not values:
                cells.append("–")
                continue
            cell = f"{np.mean(values):.3f}"
            if name != "none":
                bought = paired_delta(reference, runs[name], condition)
                if bought:
                    cell += f" (bought {np.mean(bought):+.3f}; folds {min(bought):+.3f}…{max(bought):+.3f})"
            cells.append(cell)
        label = {"none": "nothing (reference: all on)", "all": "all (no augmentation)"}.get(name, name)
        if name.startswith("none_seed"):  # the reference recipe again with another seed: the noise floor
            label = f"nothing, --seed {name.removeprefix('none_seed')} (seed noise)"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def load_ablation(folder: Path, reference: Path | None = None) -> dict[str, dict]:
    """The runs under `folder`; `reference` (a run with every augmentation on, e.g. the 6-fold
    cross-validation) stands in for `none/`, restricted to the folds the ablation runs have."""
    runs = {d.name: load(d) for d in sorted(folder.iterdir()) if d.is_dir()}
    runs = {name: r for name, r in runs.items() if r}
    if reference is not None:
        folds = {f for r in runs.values() for f in r}
        runs["none"] = {f: v for f, v in load(reference).items() if f in folds}
    if not runs.get("none"):
        raise SystemExit(f"serd: error: no reference run: {folder} has no none/results.json and no --reference was given")
    return runs


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
    parser.add_argument("--cv", type=Path)
    parser.add_argument("--ablation", type=Path, help="folder of per-condition runs (see the module docstring)")
    parser.add_argument("--reference", type=Path, help="with --ablation: the all-on run to compare with, if not none/")
    parser.add_argument("--study", type=Path)
    parser.add_argument("--noaug", type=Path)
    parser.add_argument("--seed", type=Path)
    args = parser.parse_args()
    if args.ablation:
        runs = load_ablation(args.ablation, args.reference)
        folds = sorted(runs["none"], key=fold_key)
        print(f"## Augmentation ablation ({', '.join(folds)}; int8 UAR, mean over folds)\n")
        print(ablation_table(runs))
        return
    if args.cv is None:
        parser.error("--cv or --ablation is required")
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
