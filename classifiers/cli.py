"""`curate distil` and `curate classifier score|eval`.

`register_cli(sub, common)` adds the commands to the `curate` parser; `common` adds the shared flags
(`--config`, `--set`, optionally `--out`), given by pipeline.cli so this module imports nothing of it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.config import RunConfig


def _fail(command: str, message: str) -> int:
    print(f"curate {command}: {message}", file=sys.stderr)
    return 2


def _config(args: argparse.Namespace):
    """The run config: --config, then each --set, then --out (when the command has it)."""
    from pipeline.config import load_config

    overrides = list(args.overrides)
    if getattr(args, "out", None):
        overrides.append(f"out={args.out}")
    return load_config(args.config, overrides)


def _load_labels(args: argparse.Namespace, cfg: RunConfig) -> Any:
    from classifiers.labels import load_jsonl_labels, load_llm_labels
    from pipeline.io import RunLayout
    from pipeline.stages import documents_before

    if args.labels_jsonl:
        if args.labels:
            raise ValueError("give --labels DIR or --labels-jsonl FILE, not both")
        return load_jsonl_labels(args.labels_jsonl, cfg.distil.label_threshold)
    labels_dir = Path(args.labels) if args.labels else RunLayout(cfg.out).dataset("labels")
    if args.docs:
        docs_dir = Path(args.docs)
    elif args.labels:
        # labels/ of a run sits next to that run's unique/ or docs/: the documents annotate read
        docs_dir = documents_before("annotate", RunLayout(labels_dir.parent))
    else:
        docs_dir = documents_before("annotate", RunLayout(cfg.out))
    # the teacher read the first annotate.max_doc_chars characters of each page: as the labels' run recorded it,
    # else as configured here
    return load_llm_labels(labels_dir, docs_dir, cfg.distil.label_threshold, cfg.distil.label_source,
                           teacher_chars=cfg.annotate.max_doc_chars)


def cmd_distil(args: argparse.Namespace) -> int:
    from classifiers.distil import DistilError, distil
    from classifiers.labels import LabelsError
    from pipeline.io import RunLayout

    cfg = _config(args)
    out_dir = Path(args.classifier_out) if args.classifier_out else RunLayout(cfg.out).dataset("classifier")
    try:
        label_set = _load_labels(args, cfg)
        distil(label_set, cfg.distil, out_dir)
    except (DistilError, LabelsError, ValueError) as exc:
        return _fail("distil", str(exc))
    return 0


def iter_documents(stream: IO[str], fmt: str) -> Iterator[tuple[int, dict[str, Any] | None, str]]:
    """(line number, JSON object or None, text) per input document.

    `auto` reads JSONL when the first non-empty line is a JSON object with a "text" field, else one text per
    line. In JSONL mode a line that is not such an object is an error naming the line."""
    mode = fmt
    for number, line in enumerate(stream, 1):
        line = line.rstrip("\n")
        if not line.strip():
            continue
        if mode == "auto":
            mode = "text"
            if line.lstrip().startswith("{"):
                try:
                    first = json.loads(line)
                    mode = "jsonl" if isinstance(first, dict) and "text" in first else "text"
                except json.JSONDecodeError:
                    pass
        if mode == "text":
            yield number, None, line
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"line {number}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise ValueError(f"line {number}: expected a JSON object with a string 'text' field")
        yield number, obj, obj["text"]


def _batches(items: Iterator, size: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def score_stream(classifier, stream: IO[str], out: IO[str], *, fmt: str = "auto", keep_text: bool = False,
                 batch_size: int = 1024, threshold: float | None = None) -> int:
    """Write one JSON line per input document: its fields (text only with keep_text), `line`,
    `quality_prob` (null for an empty text), `keep`, and `topics` ([[topic, prob], ...]) / `format`
    ([[format, prob], ...]) when the artifact has a topic / format model. Returns the number of documents
    scored."""
    cut = classifier.threshold if threshold is None else threshold
    count = 0
    for batch in _batches(iter_documents(stream, fmt), batch_size):
        texts = [text for _, _, text in batch]
        scores = classifier.score(texts)
        topics = classifier.predict_topics(texts) if classifier.topics_model is not None else None
        formats = classifier.predict_formats(texts) if classifier.formats_model is not None else None
        for i, (number, obj, _) in enumerate(batch):
            row = {k: v for k, v in (obj or {}).items() if keep_text or k != "text"}
            if keep_text and obj is None:
                row["text"] = texts[i]
            prob = float(scores[i])
            row["line"] = number
            row["quality_prob"] = None if math.isnan(prob) else round(prob, 6)
            row["keep"] = bool(not math.isnan(prob) and prob >= cut)
            if topics is not None:
                row["topics"] = [[name, round(p, 6)] for name, p in topics[i]]
            if formats is not None:
                row["format"] = [[name, round(p, 6)] for name, p in formats[i]]
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
        count += len(batch)
    return count


def cmd_score(args: argparse.Namespace) -> int:
    from classifiers.artifact import ArtifactError, QualityClassifier

    try:
        classifier = QualityClassifier.load(args.classifier)
    except ArtifactError as exc:
        return _fail("classifier score", str(exc))
    source = args.input or "-"
    try:
        stream = sys.stdin if source == "-" else open(source, encoding="utf-8")
    except OSError as exc:
        return _fail("classifier score", f"cannot read {source}: {exc.strerror}")
    try:
        out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
        try:
            n = score_stream(classifier, stream, out, fmt=args.format, keep_text=args.keep_text,
                             batch_size=args.batch_size, threshold=args.threshold)
        finally:
            if args.output:
                out.close()
    except ValueError as exc:
        return _fail("classifier score", f"{source}: {exc}")
    finally:
        if stream is not sys.stdin:
            stream.close()
    print(f"scored {n} documents", file=sys.stderr)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from classifiers import evaluate
    from classifiers.artifact import ArtifactError, QualityClassifier
    from classifiers.labels import LabelsError

    cfg = _config(args)
    try:
        classifier = QualityClassifier.load(args.classifier)
        # the artifact's own label threshold decides what counts as a positive label
        cfg.distil.label_threshold = int(classifier.artifact.label_threshold)
        label_set = _load_labels(args, cfg)
    except (ArtifactError, LabelsError, ValueError) as exc:
        return _fail("classifier eval", str(exc))
    doc_ids = None
    if args.heldout_only:
        doc_ids = set(classifier.artifact.heldout_ids_path().read_text().split())
    result = evaluate.evaluate_classifier(classifier, label_set, doc_ids, args.threshold)
    result["labels"] = label_set.counts()
    stored = classifier.artifact.heldout_scores() if args.heldout_only and classifier.artifact.refit_all else None
    if stored is not None:
        # the shipped model was refit on every label, these included: the held-out model's stored scores are
        # the evaluation; the shipped model's own scores of its training documents are kept beside, flagged
        result["shipped_model_on_heldout"] = {**result["quality"], "note": "the shipped model was refit on these "
                                              "documents: its scores of them are training scores (optimistic)"}
        result["quality"] = evaluate.stored_quality(label_set, stored, doc_ids,
                                                    classifier.threshold if args.threshold is None else args.threshold)
        result["quality_scored_by"] = "heldout_model"
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
        return 0
    print(f"classifier {args.classifier} on {label_set.source}"
          + (" (held-out documents only)" if args.heldout_only else ""))
    if stored is not None:
        print("scores of the held-out model (heldout_scores.jsonl), which never saw these documents; the shipped "
              "model was refit on every label, these included")
    print(evaluate.format_quality(result["quality"]))
    for kind in ("topics", "formats"):
        if kind in result:
            print(evaluate.format_topics(result[kind], kind))
    if label_set.skipped:
        print(f"labels skipped: {dict(sorted(label_set.skipped.items()))}")
    return 0


def _label_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--labels", help="labels/ folder (LABELS schema, e.g. from `curate annotate`); "
                                         "default <run out>/labels")
    parser.add_argument("--docs", help="docs/ or unique/ folder with the labelled documents' text "
                                       "(default: unique/ or docs/ beside the labels folder)")
    parser.add_argument("--labels-jsonl", help="JSONL file, one {\"text\", \"label\": 0|1 or \"score\": 0-5, "
                                               "optional \"id\", \"topics\"} per line (human or other labels)")


def register_cli(sub: argparse._SubParsersAction, common: Callable[..., None]) -> None:
    """Add `distil` and `classifier score|eval` to `sub`; `common(parser, out=False)` adds the shared flags."""
    p = sub.add_parser("distil", help="train fastText quality/topic classifiers from labels -> classifier folder")
    common(p, out=False)
    _label_flags(p)
    p.add_argument("--out", dest="classifier_out", help="classifier folder to write (default <run out>/classifier)")
    p.set_defaults(handler=cmd_distil)

    p = sub.add_parser("classifier", help="use a distilled classifier: score texts, evaluate against labels")
    csub = p.add_subparsers(dest="classifier_command", required=True)

    s = csub.add_parser("score", help="score JSONL ({\"text\": ...} per line) or plain text lines; JSONL out")
    s.add_argument("--classifier", required=True, help="classifier folder (output of `curate distil`)")
    s.add_argument("input", nargs="?", default="-", help="input file, or - for stdin (default)")
    s.add_argument("--output", help="write JSONL here instead of stdout")
    s.add_argument("--format", choices=["auto", "jsonl", "text"], default="auto")
    s.add_argument("--keep-text", action="store_true", help="copy the text into the output rows")
    s.add_argument("--threshold", type=float, help="decision threshold for `keep` (default: the card's)")
    s.add_argument("--batch-size", type=int, default=1024)
    s.set_defaults(handler=cmd_score)

    e = csub.add_parser("eval", help="compare a classifier with labels: AUC, P/R/F1, ECE, confusion, topics")
    common(e, out=False)
    e.add_argument("--classifier", required=True, help="classifier folder")
    _label_flags(e)
    e.add_argument("--heldout-only", action="store_true",
                   help="only the documents the classifier held out at distillation (heldout_doc_ids.txt)")
    e.add_argument("--threshold", type=float, help="decision threshold (default: the card's)")
    e.add_argument("--json", action="store_true", help="print the metrics as JSON")
    e.set_defaults(handler=cmd_eval)
