"""A deterministic corpus of gzipped WARC files built from real pages, for benchmarks/pipeline_scale.py.

Sources (real pages only): the HTTP-200 HTML responses of the WARC files in ../shared/data/warc (when present)
and data/sample/warc, and the article pages of ../shared/data/extraction-benchmark/html (when present) and
data/extraction-benchmark/html, deduplicated by content. Not used (reserved for evaluations elsewhere): dclm's
majority_data.jsonl / agreement_data.jsonl, trafilatura's tests/evaldata.json pages, Mozilla Readability's
test/test-pages (none of them is read by this module).

Every generated page is a real page (the *template*: its whole markup, head, navigation, scripts, footer) whose
paragraph elements (`<p>` with at least MIN_SLOT_CHARS characters) get the text of real paragraphs drawn from the
pages of the same language, in a seeded order; so trafilatura parses real markup of real size and sees real
prose. Then, per page, with the given rates:
  - exact copy: byte-identical HTML of an earlier page, under a new URL;
  - near-duplicate: an earlier page's template and paragraphs with ~4% of the words of its text edited
    (replaced, deleted or duplicated), under a new URL (true Jaccard of 5-gram shingles ~0.8-0.9);
  - else a fresh page.
Page i depends only on the seed and the pages before it, so a prefix of the 16x corpus is the 1x corpus, and
every scale has the same duplicate rates. Records are WARC/1.1 `response` records (HTTP/1.1 200, text/html;
charset=utf-8), one gzip member each (warcio's writer), PAGES_PER_FILE per file, URLs unique.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
PAGES_PER_FILE = 125
MIN_SLOT_CHARS = 40
MIN_SLOTS = 3
EDIT_RATE = 0.04
RESERVED = ("majority_data.jsonl", "agreement_data.jsonl", "evaldata.json", "test-pages")


@dataclass
class Template:
    key: str
    html: str
    url: str
    language: str
    paragraphs: list[str]


def _warc_files() -> list[Path]:
    roots = [SHARED / "warc", ROOT / "data" / "sample" / "warc"]
    files = []
    for root in roots:
        if root.is_dir():
            files += sorted(p for p in root.rglob("*") if p.name.endswith((".warc.gz", ".warc"))
                            and ".wat." not in p.name and ".wet." not in p.name)
    return files


def _benchmark_pages() -> list[Path]:
    pages = []
    for root in (SHARED / "extraction-benchmark" / "html", ROOT / "data" / "extraction-benchmark" / "html"):
        if root.is_dir():
            pages += sorted(root.glob("*.html.gz"))
    return pages


def real_pages() -> tuple[list[tuple[str, str]], list[str]]:
    """(decoded HTML, url) of every distinct real page, and the source folders."""
    from pipeline.extract import HTML_TYPES
    from pipeline.warc import RawRecord, decode_html, iter_warc, parse_http_response

    seen, pages, sources = set(), [], set()
    for path in _warc_files():
        assert not any(r in str(path) for r in RESERVED)
        for record in iter_warc(path):
            if not isinstance(record, RawRecord) or record.record_type != "response" or record.length_error:
                continue
            response = parse_http_response(record.block)
            if response.status != 200 or (response.content_type and response.content_type not in HTML_TYPES):
                continue
            html = decode_html(response.body, response.charset)[0]
            digest = hashlib.sha1(html.encode("utf-8", "surrogatepass")).hexdigest()
            if digest not in seen:
                seen.add(digest)
                pages.append((html, (record.url or "").strip("<>")))
                sources.add(str(path.parent))
    for path in _benchmark_pages():
        html = gzip.decompress(path.read_bytes()).decode("utf-8", "replace")
        digest = hashlib.sha1(html.encode("utf-8", "surrogatepass")).hexdigest()
        if digest not in seen:
            seen.add(digest)
            pages.append((html, f"https://article-benchmark.example/{path.name.split('.')[0][:16]}"))
            sources.add(str(path.parent))
    return pages, sorted(sources)


def _slots(tree) -> list:
    return [p for p in tree.iter("p") if len((p.text_content() or "").strip()) >= MIN_SLOT_CHARS]


def _parse(html: str):
    import lxml.html

    try:
        return lxml.html.document_fromstring(html.encode("utf-8", "surrogatepass"))
    except Exception:  # noqa: BLE001 - a page lxml cannot parse is no template
        return None


def templates() -> tuple[list[Template], list[str]]:
    from pipeline.langid import LanguageIdentifier

    lid = LanguageIdentifier()
    pages, sources = real_pages()
    out = []
    for html, url in pages:
        tree = _parse(html)
        if tree is None:
            continue
        paragraphs = [" ".join(p.text_content().split()) for p in _slots(tree)]
        if len(paragraphs) < MIN_SLOTS:
            continue
        language = lid.identify(" ".join(paragraphs))[0] or "und"
        out.append(Template(hashlib.sha1(html.encode("utf-8", "surrogatepass")).hexdigest()[:12], html, url,
                            language, paragraphs))
    return out, sources


def _fill(template: Template, texts: list[str]) -> str:
    import lxml.html

    tree = _parse(template.html)
    for slot, text in zip(_slots(tree), texts, strict=False):
        for child in list(slot):
            slot.remove(child)
        slot.text = text
    return lxml.html.tostring(tree, encoding="unicode", doctype="<!DOCTYPE html>")


def _edit(texts: list[str], rng: random.Random) -> list[str]:
    words = [t.split() for t in texts]
    total = sum(len(w) for w in words)
    for _ in range(max(1, int(EDIT_RATE * total))):
        para = rng.choice([i for i, w in enumerate(words) if w])
        at = rng.randrange(len(words[para]))
        op = rng.random()
        if op < 0.4:
            words[para][at] = rng.choice(words[rng.randrange(len(words))] or ["the"])
        elif op < 0.7 and len(words[para]) > 1:
            del words[para][at]
        else:
            words[para].insert(at, words[para][at])
    return [" ".join(w) for w in words]


def _host(url: str) -> str:
    match = re.match(r"https?://([^/]+)", url or "")
    return match.group(1) if match else "example.org"


def _vary(text: str, vocabulary: list[str], rate: float, rng: random.Random) -> str:
    """A drawn paragraph with `rate` of its words replaced by words of the same language: a line of its own."""
    words = text.split()
    if len(words) < 2:
        return text
    for _ in range(max(1, round(rate * len(words)))):
        words[rng.randrange(len(words))] = vocabulary[rng.randrange(len(vocabulary))]
    return " ".join(words)


def generate(out_dir: Path, pages: int, seed: int = 0, exact_rate: float = 0.10, near_rate: float = 0.10,
             paragraph_edit: float = 0.0) -> dict:
    """Write ceil(pages / PAGES_PER_FILE) WARC files into out_dir (cached: a manifest with the same parameters
    means done). Returns the manifest.

    paragraph_edit: share of the words of every drawn paragraph replaced (0: paragraphs verbatim). With
    verbatim paragraphs a paragraph of the pool recurs in ~ pages x slots / pool-size pages (~25 at 4x, ~100 at
    16x), so line-level dedup (ours: a line in more than 6 documents is removed) strips most pages at 4x and
    16x: an artefact of the generator, not of the web. 0.1 makes every fresh page's lines its own."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    params = {"pages": pages, "seed": seed, "exact_rate": exact_rate, "near_rate": near_rate,
              "pages_per_file": PAGES_PER_FILE, "version": 2}
    if paragraph_edit:  # absent at 0, so the corpus measured before this option stays cached
        params["paragraph_edit"] = paragraph_edit
    manifest_path = out_dir / "manifest.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("params") == params:
            return manifest
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.warc.gz"):
        old.unlink()
    temps, sources = templates()
    by_language: dict[str, list[str]] = {}
    for t in temps:
        by_language.setdefault(t.language, []).extend(t.paragraphs)
    vocabulary = {language: sorted({w for p in pool for w in p.split()}) for language, pool in by_language.items()}
    rng = random.Random(seed)
    made: list[tuple[int, list[str]]] = []  # (template index, paragraphs) of the pages so far (_fill is deterministic)
    kinds = {"fresh": 0, "exact": 0, "near": 0}
    files = []
    writer = handle = None
    for i in range(pages):
        if i % PAGES_PER_FILE == 0:
            if handle:
                handle.close()
            path = out_dir / f"bench-{i // PAGES_PER_FILE:05d}.warc.gz"
            files.append(path.name)
            handle = open(path, "wb")
            writer = WARCWriter(handle, gzip=True, warc_version="WARC/1.1")
        draw = rng.random()
        if made and draw < exact_rate:
            t_index, texts = made[rng.randrange(len(made))]
            html = _fill(temps[t_index], texts)
            kinds["exact"] += 1
        elif made and draw < exact_rate + near_rate:
            t_index, texts = made[rng.randrange(len(made))]
            texts = _edit(texts, rng)
            html = _fill(temps[t_index], texts)
            kinds["near"] += 1
        else:
            t_index = rng.randrange(len(temps))
            template = temps[t_index]
            pool = by_language[template.language]
            n = len(template.paragraphs)
            texts = [pool[rng.randrange(len(pool))] for _ in range(n)]
            if paragraph_edit:
                texts = [_vary(t, vocabulary[template.language], paragraph_edit, rng) for t in texts]
            html = _fill(template, texts)
            kinds["fresh"] += 1
        made.append((t_index, texts))
        template = temps[t_index]
        url = f"https://{_host(template.url)}/bench/{seed}/{i:07d}-{template.key}.html"
        body = html.encode("utf-8")
        http = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                                           ("Content-Length", str(len(body)))], protocol="HTTP/1.1")
        # record ids and dates from the seed too, so that the same seed gives the same bytes
        record_id = uuid.UUID(bytes=hashlib.sha1(f"{seed}/{i}".encode()).digest()[:16], version=4)
        headers = {"WARC-Record-ID": f"<urn:uuid:{record_id}>", "WARC-Date": f"2024-08-{1 + i % 28:02d}T00:00:00Z"}
        record = writer.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=http,
                                           warc_headers_dict=headers)
        writer.write_record(record)
    if handle:
        handle.close()
    languages: dict[str, int] = {}
    for t in temps:
        languages[t.language] = languages.get(t.language, 0) + 1
    manifest = {"params": params, "files": files, "pages": pages, "kinds": kinds, "templates": len(temps),
                "template_languages": languages, "sources": sources,
                "bytes": sum((out_dir / f).stat().st_size for f in files)}
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


if __name__ == "__main__":
    import sys

    print(json.dumps(generate(Path(sys.argv[1]), int(sys.argv[2])), indent=2))
