"""`extract.extractor`: trafilatura (the default), trafilatura-fast and resiliparse, each through the extract and
rules stages on the bundled WARC files: the text is the chosen extractor's, the rule metrics are there, the
choice is in the run's settings, and another extractor in the same run folder is refused with one message
(a folder made before the setting existed goes on with the default only).
Also: the default is the same trafilatura call as before the choice existed (its outputs stay byte-identical),
and the stage's two passes over a file (text, then language and metrics) give what record-by-record
processing gives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import schemas
from pipeline.cli import main
from pipeline.config import ConfigError, ExtractConfig, load_config
from pipeline.extract import HTML_TYPES, Extractor, extract_records, make_doc_id, text_extractor
from pipeline.io import RunLayout, read_dataset
from pipeline.report import build_report
from pipeline.warc import RawRecord, decode_html, iter_warc, parse_http_response
from stagehelpers import extract_run

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample" / "warc"
EXTRACTORS = ("trafilatura", "trafilatura-fast", "resiliparse")


def html_by_doc_id(warcs: list[str]) -> dict[str, tuple[str, str]]:
    """(decoded HTML, URL) of every HTTP 200 HTML response, by the doc_id extract gives it."""
    pages = {}
    for warc in warcs:
        for record in iter_warc(warc):
            if not isinstance(record, RawRecord) or record.record_type != "response":
                continue
            response = parse_http_response(record.block)
            if response.status == 200 and (not response.content_type or response.content_type in HTML_TYPES):
                doc_id = make_doc_id(record.record_id, record.url, record.block)
                pages[doc_id] = (decode_html(response.body, response.charset)[0], record.url)
    return pages


class _Stats:
    def __init__(self):
        self.input = self.kept = 0
        self.reasons: list[str] = []

    def drop(self, reason: str) -> None:
        self.reasons.append(reason)

    error = drop


@pytest.mark.parametrize("extractor", EXTRACTORS)
def test_extractor_through_the_stages_on_the_bundled_warcs(tmp_path, ray_local, sample_warcs, capsys, extractor):
    out = tmp_path / "run"
    cfg = load_config(None, [f"out={out}", f"extract.extractor={extractor}"])
    cfg.input.warcs = sample_warcs
    extract_run(cfg, quiet=True)
    layout = RunLayout(out)
    assert build_report(layout)["conserved"]

    # the text is the chosen extractor's, and not what the other two make of the same pages
    extracted = read_dataset(layout.dataset("extracted"), schemas.EXTRACTED).to_pylist()
    assert len(extracted) > 80
    pages = html_by_doc_id(sample_warcs)
    mine = text_extractor(cfg.extract)
    others = [text_extractor(ExtractConfig(extractor=other)) for other in EXTRACTORS if other != extractor]
    checked = [row for row in extracted if "sample-0000" in row["warc_path"] or "warcfile" in row["warc_path"]]
    assert len(checked) >= 10
    differs = [0] * len(others)
    for row in checked:
        html, url = pages[row["doc_id"]]
        assert row["text"] == mine(html, url).strip()
        for i, other in enumerate(others):
            differs[i] += (other(html, url) or "").strip() != row["text"]
    assert all(differs), f"{extractor}'s texts equal another extractor's on every page checked"

    # every rule metric of every English page, and the rules stage decided from them
    english = [row for row in extracted if row["language"] == "en"]
    assert len(english) > 30
    assert all(row["rules_applied"] and row["n_words"] > 0 and row["dup_5gram_char_frac"] is not None
               and row["line_punct_ratio"] is not None for row in english)
    docs = read_dataset(layout.dataset("docs"), schemas.DOCS)
    dropped = read_dataset(layout.decisions("rules"), schemas.DECISIONS)
    assert docs.num_rows > 40 and docs.num_rows + dropped.num_rows == len(extracted)

    # the choice is in the run's settings
    settings = json.loads(layout.settings_path("extract").read_text())
    assert settings["extract.extractor"] == extractor

    # another extractor in the same folder: refused before anything is written, with one message
    other = "resiliparse" if extractor != "resiliparse" else "trafilatura-fast"
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")}
    capsys.readouterr()
    code = main(["extract", "--warc", *sample_warcs, "--out", str(out), "--set", f"extract.extractor={other}"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"extract.extractor: {extractor!r} -> {other!r}" in err and "Use another --out" in err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")} == before


def test_folder_made_before_the_setting_existed_resumes_with_the_default_only(tmp_path, sample_warcs):
    """A run folder whose recorded settings have no extract.extractor (made before it existed) was made by
    trafilatura: the default goes on in it, another extractor is refused."""
    from pipeline.io import SettingsChanged
    from pipeline.runtime.executor import LocalExecutor

    out = tmp_path / "run"
    cfg = load_config(None, [f"out={out}"])
    cfg.input.warcs = sample_warcs[:2]
    extract_run(cfg, executor=LocalExecutor(), quiet=True)
    layout = RunLayout(out)
    path = layout.settings_path("extract")
    recorded = json.loads(path.read_text())
    del recorded["extract.extractor"]
    path.write_text(json.dumps(recorded))
    with pytest.raises(SettingsChanged, match=r"extract\.extractor: None -> 'resiliparse'"):
        extract_run(cfg.updated(**{"extract.extractor": "resiliparse"}), executor=LocalExecutor(), quiet=True)
    layout.stage_marker("extract").unlink()  # not finished: the stage runs again, checking its settings
    assert extract_run(cfg, executor=LocalExecutor(), quiet=True)["complete"]


def test_default_extractor_is_the_trafilatura_call_of_before():
    """The default's outputs stay byte-identical: the same function with the same options as before."""
    import trafilatura

    default = text_extractor(ExtractConfig())
    assert default.func is trafilatura.extract
    assert default.keywords == {"include_comments": False, "include_tables": True, "favor_precision": True,
                                "favor_recall": False, "deduplicate": False, "with_metadata": False}
    fast = text_extractor(ExtractConfig(extractor="trafilatura-fast", favor_precision=False))
    assert fast.func is trafilatura.extract
    assert fast.keywords == {**default.keywords, "favor_precision": False, "fast": True}


def test_resiliparse_text_is_one_line_per_block_and_follows_include_tables():
    html = ("<html><head><title>t</title></head><body><nav><a href='/'>Home</a> <a href='/a'>About</a></nav>"
            "<article><h1>A heading of the article</h1>"
            "<p>The first paragraph of the article, long enough to be main content for the heuristics.</p>"
            "<p>&nbsp;</p><p>The second paragraph of the article follows here, also long enough to count.</p>"
            "<table><tr><td>cell one of the table</td><td>cell two of the table</td></tr></table>"
            "</article><footer>Copyright footer</footer></body></html>")
    with_tables = text_extractor(ExtractConfig(extractor="resiliparse"))(html, None)
    assert "The first paragraph" in with_tables and "The second paragraph" in with_tables
    assert "cell one of the table" in with_tables
    lines = with_tables.split("\n")
    assert all(line.strip() for line in lines), "blank lines between blocks are dropped"
    assert len(lines) >= 3
    without = text_extractor(ExtractConfig(extractor="resiliparse", include_tables=False))(html, None)
    assert "The first paragraph" in without and "cell one of the table" not in without


def test_two_passes_give_what_record_by_record_processing_gives():
    """extract_records extracts every record's text first, then language and metrics: its rows, their order and
    its counts equal Extractor.process record by record, language drops in their place among the others."""
    cfg = ExtractConfig(languages=["en"])
    warcs = sorted(str(p) for p in SAMPLE.iterdir() if p.name.endswith((".warc.gz", ".warc")))
    for warc in warcs:
        docs: list = []
        decisions: list = []
        stats = _Stats()
        extract_records(Extractor(cfg), warc, warc, stats, docs, decisions)
        one_by_one = [Extractor(cfg).process(r, warc) for r in iter_warc(warc) if isinstance(r, RawRecord)]
        assert docs == [o.doc for o in one_by_one if o.doc is not None]
        assert decisions == [o.decision for o in one_by_one if o.decision is not None]
        assert stats.input == len(one_by_one) and stats.kept == len(docs)
        assert stats.reasons == [d["reason"] for d in decisions]
        if "warcfile" in warc:
            reasons = [d["reason"] for d in decisions]
            # request, language drop, metadata, request, ...: the drops decided in the second pass keep their place
            assert reasons[1:4] == ["warc_request", "language_not_selected", "warc_metadata"]
            assert docs and all(d["language"] == "en" and d["rules_applied"] for d in docs)


def test_unknown_extractor_is_an_error_naming_the_field():
    with pytest.raises(ConfigError, match=r"extract\.extractor.*(trafilatura|resiliparse)"):
        load_config(None, ["extract.extractor=boilerpipe"])
