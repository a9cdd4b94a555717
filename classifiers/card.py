"""The model card (README.md with YAML front matter) of a classifier artifact."""

from __future__ import annotations

from typing import Any

import yaml


def _round(value: Any, digits: int = 4) -> Any:
    return round(value, digits) if isinstance(value, float) else value


def front_matter(config: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    quality = config["quality"]
    q = metrics["quality"]
    topics = config.get("topics")
    return {
        "library_name": "fasttext",
        "pipeline_tag": "text-classification",
        "tags": ["data-filtering", "quality-classifier", "webcurate"],
        "teacher_model": config["teacher"]["models"],
        "prompts": config["teacher"]["prompts"],
        "label_source": config["teacher"]["source"],
        "labels": {"positive": quality["positive_label"], "negative": quality["negative_label"]},
        "label_threshold": quality["label_threshold"],
        "decision_threshold": _round(quality["decision_threshold"], 6),
        "threshold_target": quality["threshold_target"],
        "training_size": q["split"],
        "labels_used": metrics["labels"],
        "model_file": quality["model_file"],
        "topics_model_file": topics["model_file"] if topics else None,
        "topics": sorted(topics["labels"].values()) if topics else [],
        "metrics": {
            "heldout_roc_auc": _round(q["roc_auc"]),
            "heldout_precision": _round(q["precision"]),
            "heldout_recall": _round(q["recall"]),
            "heldout_f1": _round(q["f1"]),
            "heldout_ece": _round(q["ece"]),
            "heldout_keep_rate": _round(q["keep_rate"]),
            "topics_macro_agreement": _round(metrics["topics"].get("macro_agreement")),
            "topics_macro_f1": _round(metrics["topics"].get("macro_f1")),
        },
    }


def _training_line(distil: dict[str, Any]) -> str:
    threads, seed = distil.get("threads"), distil.get("seed")
    if threads == 1:
        how = "reproducible: the same labels and settings give the same model, byte for byte"
    else:
        how = "not reproducible bit for bit (several threads train hogwild)"
    return f"Training: fastText with seed {seed} and {threads} thread{'s' if threads != 1 else ''}, {how}."


def render_card(config: dict[str, Any], metrics: dict[str, Any]) -> str:
    header = front_matter(config, metrics)
    quality = config["quality"]
    q = metrics["quality"]
    topics = config.get("topics")
    c = q["confusion"]
    auc = "n/a" if q["roc_auc"] is None else f"{q['roc_auc']:.3f}"
    lines = [
        "---",
        yaml.safe_dump(header, sort_keys=False, allow_unicode=True).rstrip(),
        "---",
        "",
        "# fastText quality classifier (distilled from teacher labels)",
        "",
        f"Predicts whether a text would get a teacher quality score of at least {quality['label_threshold']} "
        f"(of 5): label `{quality['positive_label']}` (high quality) versus `{quality['negative_label']}`. "
        f"Teacher: {', '.join(config['teacher']['models']) or 'unknown'}; labels from {config['teacher']['source']}.",
        "",
        "## Use",
        "",
        "Join a document's lines with spaces before predicting (fastText rejects newlines; the model was "
        "trained that way). Keep a text when P(`__label__hq`) >= "
        f"{quality['decision_threshold']:.6g} (chosen on a validation split for target `{quality['threshold_target']}`).",
        "",
        "```python",
        "from classifiers import QualityClassifier",
        "clf = QualityClassifier.load(\"THIS_FOLDER\")",
        "clf.score([\"some text\"])       # P(high quality), numpy array",
        "clf.predict([\"some text\"])     # keep/drop at the decision threshold",
        *(["clf.predict_topics([\"some text\"])"] if topics else []),
        "",
        "import fasttext",
        f"model = fasttext.load_model(\"THIS_FOLDER/{quality['model_file']}\")",
        "labels, probs = model.predict(text.replace(\"\\n\", \" \"), k=2)",
        "```",
        "",
        "CLI: `curate classifier score --classifier THIS_FOLDER file.jsonl`. datatrove: "
        f"`FastTextClassifierFilter(\"THIS_FOLDER/{quality['model_file']}\", keep_labels=(\"hq\", "
        f"{quality['decision_threshold']:.6g}), newline_replacement=\" \")`.",
        "",
        "## Held-out evaluation against the teacher",
        "",
        f"{q['n']} held-out documents ({q['positives']} positive), never seen in training or threshold choice.",
        "",
        "| metric | value |",
        "|---|---|",
        f"| ROC AUC | {auc} |",
        f"| precision / recall / F1 at threshold | {q['precision']:.3f} / {q['recall']:.3f} / {q['f1']:.3f} |",
        f"| keep rate | {q['keep_rate']:.3f} |",
        f"| expected calibration error | {q['ece']:.3f} |",
        f"| confusion (tp, fp, fn, tn) | {c['tp']}, {c['fp']}, {c['fn']}, {c['tn']} |",
        "",
        _training_line(config.get("distil") or {}),
        "",
    ]
    if topics:
        t = metrics["topics"]
        lines += [
            f"Topics: one-vs-all model over {len(topics['labels'])} topics; a topic applies when its probability "
            f">= {topics['threshold']}. Held-out macro agreement with the teacher "
            f"{t.get('macro_agreement', float('nan')):.3f}, macro F1 {t.get('macro_f1', float('nan')):.3f} "
            "(per topic in metrics.json). fastText label of each topic:",
            "",
            *[f"- `{label}`: {topic}" for label, topic in topics["labels"].items()],
            "",
        ]
    else:
        lines += [f"No topic model: {metrics['topics'].get('skipped')}.", ""]
    lines += [
        "## Intended use",
        "",
        "Filtering web text for language-model pretraining at the scale where the teacher is too slow: score "
        "every document, keep those above the threshold. The score ranks documents; treat the probability as "
        "approximately calibrated only as far as the ECE above says.",
        "",
        "## Limits",
        "",
        "- It imitates the teacher on the labelled sample, with the teacher's biases; it is no better than "
        "those labels, and a small or unrepresentative sample makes it worse (see the training size above).",
        "- A bag of words and word n-grams: it sees vocabulary and style, not facts, coherence or safety.",
        "- Trained on the languages and sources of the sample; scores on other languages or domains are "
        "not meaningful.",
        "- The held-out metrics measure agreement with the teacher, not the quality of a model trained on "
        "the kept data.",
        "",
    ]
    return "\n".join(lines)
