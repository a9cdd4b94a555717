"""A labelled set made of real pages: article text (positive) versus the same pages' boilerplate (negative).

The extraction benchmark (scrapinghub/article-extraction-benchmark) ships HTML pages and the article body a
person extracted from each. Everything else a reader sees on the page (menus, footers, share buttons,
related links, cookie notices) is boilerplate. That gives a quality-classification task with labels written
by people, used to check that distillation really learns from text (a bundled subset lives in
data/extraction-benchmark/).
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass
from pathlib import Path

# Elements whose text a reader never sees.
_INVISIBLE = {"script", "style", "noscript", "template", "head", "svg", "iframe", "object", "canvas"}
# Elements that start a new line of visible text.
_BLOCKS = {
    "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "fieldset", "figcaption",
    "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol",
    "p", "pre", "section", "table", "td", "th", "tr", "ul", "button", "option", "select", "label", "title",
}
_SPACES = re.compile(r"\s+")


@dataclass
class LabelledText:
    doc_id: str
    text: str
    label: int  # 1 = article text, 0 = boilerplate
    page_id: str


def visible_lines(html: str) -> list[str]:
    """The page's visible text, one line per block element, empty lines dropped."""
    import lxml.html

    root = lxml.html.fromstring(html)
    lines: list[str] = []
    current: list[str] = []

    def flush() -> None:
        line = _SPACES.sub(" ", "".join(current)).strip()
        if line:
            lines.append(line)
        current.clear()

    def walk(element) -> None:
        tag = element.tag if isinstance(element.tag, str) else ""
        if tag.lower() in _INVISIBLE or not isinstance(element.tag, str):
            # comments and processing instructions: skip their text but keep what follows them
            if element.tail:
                current.append(element.tail)
            return
        block = tag.lower() in _BLOCKS
        if block:
            flush()
        if element.text:
            current.append(element.text)
        for child in element:
            walk(child)
        if block:
            flush()
        if element.tail:
            current.append(element.tail)

    walk(root)
    flush()
    return lines


def _key(text: str) -> str:
    return _SPACES.sub(" ", text).strip().lower()


def boilerplate_lines(html: str, article: str) -> list[str]:
    """Visible lines of the page that are not part of the article text."""
    article_key = _key(article)
    return [line for line in visible_lines(html) if _key(line) not in article_key]


def chunk_lines(lines: list[str], *, min_chars: int, max_chars: int) -> list[str]:
    """Group consecutive lines into documents of about min_chars..max_chars (a long line stays whole)."""
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for line in lines:
        if current and size + len(line) > max_chars:
            chunks.append("\n".join(current))
            current, size = [], 0
        current.append(line)
        size += len(line) + 1
        if size >= min_chars:
            chunks.append("\n".join(current))
            current, size = [], 0
    if current and size >= min_chars // 2:
        chunks.append("\n".join(current))
    return chunks


def load_pages(folder: str | Path) -> dict[str, dict]:
    """{page_id: {"articleBody", "url"}} for the pages whose HTML is present in `folder`/html."""
    folder = Path(folder)
    truth = json.loads((folder / "ground-truth.json").read_text())
    present = {p.name.removesuffix(".html.gz") for p in (folder / "html").glob("*.html.gz")}
    return {page_id: truth[page_id] for page_id in sorted(present) if page_id in truth}


def page_html(folder: str | Path, page_id: str) -> str:
    with gzip.open(Path(folder) / "html" / f"{page_id}.html.gz", "rb") as fh:
        return fh.read().decode("utf-8", errors="replace")


def labelled_texts(folder: str | Path, *, min_chars: int = 200, max_chars: int = 1200,
                   page_ids: list[str] | None = None) -> list[LabelledText]:
    """Article chunks (label 1) and boilerplate chunks (label 0) of every page in the benchmark folder."""
    pages = load_pages(folder)
    out: list[LabelledText] = []
    for page_id in page_ids if page_ids is not None else sorted(pages):
        article = pages[page_id]["articleBody"]
        article_lines = [line.strip() for line in article.splitlines() if line.strip()]
        html = page_html(folder, page_id)
        for label, lines in ((1, article_lines), (0, boilerplate_lines(html, article))):
            for i, chunk in enumerate(chunk_lines(lines, min_chars=min_chars, max_chars=max_chars)):
                kind = "article" if label else "boilerplate"
                out.append(LabelledText(f"{page_id[:16]}-{kind}-{i:03d}", chunk, label, page_id))
    return out


ARTICLE_TOPIC = "News & Articles"
BOILERPLATE_TOPIC = "Navigation & Site Furniture"
# WebOrganizer format ids (prompts/taxonomy_weborganizer_formats_v1.txt) for the two kinds of text
ARTICLE_FORMAT = "news_article"
BOILERPLATE_FORMAT = "content_listing"


def as_teacher_labels(texts: list[LabelledText], *, model: str = "extraction-benchmark-ground-truth",
                      errors_every: int = 0, combined: bool = False) -> tuple[list[dict], list[dict]]:
    """(docs rows, labels rows) shaped like extract's docs/ and annotate's labels/ (schemas.DOCS, LABELS):
    the person-made ground truth plays the teacher. Articles score 3-5 with topic ARTICLE_TOPIC, boilerplate
    0-2 with BOILERPLATE_TOPIC; with `errors_every` = n, every n-th document's quality label is an
    annotation error instead (to exercise skipping). `combined`: one `labels` row per document, as the
    combined prompt answers (score, topics, and format ARTICLE_FORMAT / BOILERPLATE_FORMAT), instead of a
    `quality` and a `topics` row."""
    docs: list[dict] = []
    labels: list[dict] = []
    for i, item in enumerate(texts):
        docs.append({"doc_id": item.doc_id, "url": f"https://benchmark.invalid/{item.page_id}",
                     "text": item.text, "language": "en", "n_chars": len(item.text), "rule_failures": []})
        score = 3 + i % 3 if item.label else i % 3
        common = {"doc_id": item.doc_id, "model": model, "sampling_params": "{}"}
        if combined:
            row = {**common, "task": "labels", "prompt_id": "labels_v1", "prompt_hash": "benchmark"}
            if errors_every and i % errors_every == 0:
                row.update(error="annotation_error", error_detail="invented for the test", raw_text="{")
            else:
                row.update(quality_score=score, topics=[ARTICLE_TOPIC if item.label else BOILERPLATE_TOPIC],
                           format=[ARTICLE_FORMAT if item.label else BOILERPLATE_FORMAT])
            labels.append(row)
            continue
        if errors_every and i % errors_every == 0:
            labels.append({**common, "task": "quality", "prompt_id": "quality_v1", "prompt_hash": "benchmark",
                           "error": "annotation_error", "error_detail": "invented for the test", "raw_text": "{"})
        else:
            labels.append({**common, "task": "quality", "prompt_id": "quality_v1", "prompt_hash": "benchmark",
                           "quality_score": score})
        labels.append({**common, "task": "topics", "prompt_id": "topics_v1", "prompt_hash": "benchmark",
                       "topics": [ARTICLE_TOPIC if item.label else BOILERPLATE_TOPIC]})
    return docs, labels


def write_teacher_run(root: str | Path, texts: list[LabelledText], *, errors_every: int = 0,
                      docs_files: int = 1, combined: bool = False) -> tuple[list[dict], list[dict]]:
    """Write `root`/docs (in `docs_files` Parquet files) and `root`/labels from `as_teacher_labels(texts)`:
    a run folder that `curate distil --labels root/labels --docs root/docs` reads like annotate's output."""
    from pipeline import schemas
    from pipeline.io import write_parquet

    root = Path(root)
    docs, labels = as_teacher_labels(texts, errors_every=errors_every, combined=combined)
    size = -(-len(docs) // docs_files)
    for i in range(docs_files):
        write_parquet(schemas.from_rows(docs[i * size:(i + 1) * size], schemas.DOCS),
                      root / "docs" / f"part-{i}.parquet", schemas.DOCS)
    write_parquet(schemas.from_rows(labels, schemas.LABELS), root / "labels" / "part-0.parquet", schemas.LABELS)
    return docs, labels
