"""The notebook's document cards as HTML strings, without a notebook or a browser: page-derived content is
escaped everywhere it appears, the text box has its fixed height and wrapping, cards are grouped by stage and
reason with exact counts, and a run's stored document fields reach the card (tests/test_notebook_browser.py
checks the same cards in Chromium)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pandas as pd
import pytest

from pipeline import inspect as ins

HOSTILE_TEXT = "<script>window.__pwned=1</script><img src=x onerror=alert(1)></div></article><b id=injected>x</b>"
HOSTILE_URL = "https://evil.test/?q='\"><script>alert(1)</script>"


class _Tags(HTMLParser):
    """The start tags and attributes of an HTML string, as a browser's tokenizer would see them."""

    def __init__(self, markup: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.feed(markup)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


ATTRIBUTES = {"class", "style", "id", "href", "rel", "target", "tabindex", "data-doc-id"}


def _assert_well_formed(markup: str) -> None:
    """Every attribute the tokenizer finds is one the renderers write: a quote inside a value (a page's, or
    a style's own) would split it into stray attributes."""
    stray = {name for _, attrs in _Tags(markup).tags for name in attrs} - ATTRIBUTES
    assert not stray, stray


def _row(**fields) -> dict:
    return {"doc_id": "d1", "stage": "rules", "outcome": "dropped", "reason": "gopher_short_doc", **fields}


def test_hostile_page_content_is_escaped_everywhere():
    row = _row(text=HOSTILE_TEXT, url=HOSTILE_URL, detail="</div><script>alert(2)</script>",
               duplicate_of="<i>x</i>", topics=["<b>topic</b>"], doc_id="<svg onload=alert(3)>")
    rendered = ins.card_html(row)
    _assert_well_formed(rendered)
    tags = _Tags(rendered).tags
    assert {t for t, _ in tags} <= {"article", "header", "div", "span", "b", "a", "bdi", "code"}
    assert not [a for _, attrs in tags for a in attrs if a.startswith("on")]  # no event handler attribute
    assert [attrs.get("id") for _, attrs in tags if "id" in attrs] == []
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in rendered
    # the URL is one attribute value and one text, both escaped: no quote breaks out of the href
    (link,) = [attrs for tag, attrs in tags if tag == "a"]
    assert link["href"] == HOSTILE_URL and link["rel"] == "noopener noreferrer nofollow"


@pytest.mark.parametrize("url", ["javascript:alert(1)", "data:text/html,<script>alert(1)</script>", "ftp://x.test/"])
def test_only_http_urls_become_links(url):
    rendered = ins.url_html(url)
    assert "<a" not in rendered and ins.escape(url) in rendered


def test_text_box_has_fixed_height_scrolls_and_wraps():
    box = ins.text_box_html("word " * 5000, max_chars=100)
    style = re.search(r"class='wc-text'[^>]*style='([^']*)'", box).group(1)
    for rule in ("white-space:pre-wrap", "overflow-wrap:anywhere", "overflow-y:auto", "max-width:100%",
                 f"max-height:{ins.TEXT_BOX_EM}em"):
        assert rule in style
    assert 12 <= ins.TEXT_BOX_EM <= 16
    assert "24,900 more characters not shown" in box  # 25,000 characters, 100 shown


def test_a_record_without_text_is_a_compact_card():
    rendered = ins.card_html(_row(stage="extract", reason="http_not_200", detail="status 301", url="http://a.test/"))
    assert "wc-text'" not in rendered and "no page text stored for this record" in rendered
    assert "status 301" in rendered


def test_header_shows_what_the_run_has_for_the_document():
    row = _row(stage="classify", reason="below_quality", quality_prob=0.3125, quality_score=2.0, language="en",
               n_chars=1200.0, dup_cluster_id="c9", dup_cluster_size=3.0, alpha_word_ratio=0.71,
               detail="alpha_word_ratio 0.71 < 0.8", n_words=float("nan"), topics=None, text="body")
    rendered = ins.card_html(row, threshold=0.5)
    assert "0.312 &lt; threshold 0.500" in rendered
    assert "LLM quality</span> 2<" in rendered and "chars</span> 1200<" in rendered
    assert "dedup cluster</span> c9" in rendered and "cluster size</span> 3<" in rendered
    assert "<b>0.710</b>" in rendered  # the metric the detail names is in bold
    assert "n_words" not in rendered and ">topics<" not in rendered  # absent values are left out
    assert "≥ threshold" in ins.card_html({**row, "quality_prob": 0.5}, threshold=0.5)
    alone = ins.card_html({**row, "dup_cluster_size": 1.0, "lines_removed": 0.0})
    assert "dedup cluster" not in alone and "lines removed" not in alone  # nothing to say about dedup
    assert "lines removed by dedup</span> 4<" in ins.card_html({**row, "lines_removed": 4.0})


def test_cards_are_grouped_in_pipeline_order_with_exact_counts():
    sample = pd.DataFrame([
        _row(doc_id="k1", stage="final", outcome="kept", reason="", text="kept text"),
        _row(doc_id="r1", text="short"),
        _row(doc_id="e1", stage="extract", reason="not_html", text=None),
        _row(doc_id="r2", text="also short"),
    ])
    counts = {("rules", "dropped", "gopher_short_doc"): 41, ("extract", "dropped", "not_html"): 1,
              ("final", "kept", ""): 900}
    rendered = ins.render_cards(sample, counts)
    _assert_well_formed(rendered)
    titles = re.findall(r"class='wc-group-title'[^>]*>(.*?) <span[^>]*>— ([^<]*)</span>", rendered)
    assert titles == [("extract · dropped · not_html", "1 record, 1 shown, no page text"),
                      ("rules · dropped · gopher_short_doc", "41 records, 2 shown"),
                      ("kept in the final corpus", "900 records, 1 shown")]
    assert rendered.count("class='wc-card'") == 4 and rendered.count("class='wc-text'") == 3
    # a group with no page text to read is folded (<details>); the others are open sections
    assert re.findall(r"<(details|section) class='wc-group", rendered) == ["details", "section", "section"]
    # the links at the top lead to the groups' anchors
    anchors = re.findall(r"href='#([^']+)'", rendered)
    assert anchors and all(f"id='{a}'" in rendered for a in anchors)


def test_empty_sample_says_so():
    assert "no documents sampled" in ins.render_cards(pd.DataFrame())


def test_rewrite_cards_escape_both_texts():
    pairs = pd.DataFrame([{"doc_id": "d", "style": "wiki", "original": HOSTILE_TEXT, "rewrite": "<b>re</b>"}])
    rendered = ins.render_rewrite_cards(pairs)
    _assert_well_formed(rendered)
    assert "<script" not in rendered and "<b>re</b>" not in rendered and "&lt;b&gt;re&lt;/b&gt;" in rendered
    assert rendered.count("class='wc-text'") == 2


def test_default_explain_query_is_the_first_sampled_kept_page():
    sample = pd.DataFrame([_row(doc_id="r1", url="https://dropped.test/"),
                           _row(doc_id="k1", stage="final", outcome="kept", reason="", url=None),
                           _row(doc_id="k2", stage="final", outcome="kept", reason="", url="https://kept.test/")])
    assert ins.default_explain_query(sample) == "k1"  # no URL: its doc_id
    assert ins.default_explain_query(sample.iloc[[0, 2]]) == "https://kept.test/"
    assert ins.default_explain_query(sample.iloc[[0]]) is None
    wrapped = ins.explain_section_html("<p>path</p>", HOSTILE_URL)
    _assert_well_formed(wrapped)
    assert "class='wc-explain'" in wrapped and "<p>path</p>" in wrapped and "<script" not in wrapped


def test_documents_prefer_the_text_that_went_on(tmp_path):
    """unique/'s text (after line removal) over docs/' over extracted/'s; rule values from whichever has them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def write(folder, rows):
        (tmp_path / folder).mkdir()
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / folder / "part-0.parquet")

    write("extracted", [{"doc_id": "a", "url": "https://a.test/", "text": "a raw", "n_words": 2},
                        {"doc_id": "b", "url": "https://b.test/", "text": "b raw", "n_words": 9}])
    write("docs", [{"doc_id": "a", "url": "https://a.test/", "text": "a doc", "n_words": 2}])
    write("unique", [{"doc_id": "a", "text": "a unique", "dup_cluster_id": "c1", "dup_cluster_size": 2}])
    view = ins.RunView(tmp_path, {}, pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), pd.DataFrame(),
                       pd.DataFrame(), None)
    docs = view.documents(["a", "b", "missing"]).set_index("doc_id")
    assert docs.loc["a", "text"] == "a unique" and docs.loc["a", "dup_cluster_id"] == "c1"
    assert docs.loc["b", "text"] == "b raw" and docs.loc["b", "n_words"] == 9  # dropped by the rules
    assert "missing" not in docs.index


def test_sample_keeps_the_decision_url_when_the_page_has_no_stored_row(tmp_path):
    decisions = pd.DataFrame([{"doc_id": "x", "stage": "extract", "outcome": "dropped", "reason": "not_html",
                               "url": "https://x.test/", "detail": "image/png"}])
    view = ins.RunView(tmp_path, {}, decisions, pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), None)
    sample = ins.sample_decisions(view)
    assert sample.loc[0, "url"] == "https://x.test/"


@pytest.mark.parametrize("value, count, expected", [(3.0, True, "3"), (1.0, False, "1.000"), (0.12345, False, "0.123"),
                                                   (7, False, "7"), (["a", "b"], False, "a, b")])
def test_format_value(value, count, expected):
    assert ins.format_value(value, count) == expected
