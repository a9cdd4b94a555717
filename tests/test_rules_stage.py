"""The rules stage: every extracted page keeps its rule metrics; docs/ is decided from them, and re-decided at
other thresholds without reading a WARC file, with the same accounting; a partial rules stage resumes.

The pages are small inline documents, written into real WARC files in tmp_path and run through the extract
and rules stages on the runtime's local executor."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline import rules_stage, schemas
from pipeline.config import load_config
from pipeline.io import RunLayout, read_dataset
from pipeline.report import build_report
from pipeline.rules import METRICS
from stagehelpers import decide_rules, dedup_run, extract_run

ROOT = Path(__file__).resolve().parents[1]
CURATE = Path(sys.executable).with_name("curate")

# Written for this test. A page of 20 sentences (~200 words, one paragraph each) passes every rule.
GOOD = """The train to Boston leaves half an hour later than planned today.
We took a long walk through the forest over the weekend with the dog.
The city library is closed on Mondays but open until eight on Tuesdays.
My grandmother bakes an apple pie for the whole family every Sunday.
In summer many people go to the coast to relax on the beach.
The new law is meant to keep rents affordable in the big cities.
After the rain the air was fresh and the streets were shining in the light.
The children like to play football on the field behind the house after school.
He prepared well for the exam and is still very nervous about the results.
Our neighbour repairs his bicycle himself because the workshop is too expensive.
The government decided to invest more money in schools and universities.
In the evening we often sit together in the kitchen and talk about the day.
When it snows in winter most people would rather stay at home with a book.
The doctor says I should drink more water and less coffee in the morning.
The exhibition at the museum shows paintings from the nineteenth century.
I forgot to close the windows before I left the house this morning.
The company is looking for new staff to develop software for hospitals.
At the market we buy fresh vegetables, fruit and bread from the baker.
There is only a narrow road over the mountain between the two villages.
She has been learning Spanish for two years because she wants to work in Madrid.""".splitlines()
# Five sentences, about forty words: fails only Gopher's 50-word minimum.
SHORT = ["The old bridge over the river closed today.", "Workers found deep cracks in the stone arches.",
         "The city will repair it before the winter.", "Drivers must take the long road through the valley.",
         "Buses will stop at the school and the market."]
# Twelve lines that differ only in their last word: their word n-grams repeat (trafilatura keeps one copy of
# identical paragraphs, so the lines must differ).
REPEATED = [f"Our shop sells the best shoes and boots in the whole city at fair prices, offer number {i}."
            for i in range(1, 13)]


def response_member(url: str, paragraphs: list[str]) -> bytes:
    """One gzip member holding a WARC response record: an HTTP 200 HTML page with `paragraphs` as <p>s."""
    body = ("<html><body><article>" + "".join(f"<p>{p}</p>" for p in paragraphs) + "</article></body></html>").encode()
    http = b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + body
    head = (f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:uuid:{uuid.uuid4()}>\r\n"
            f"WARC-Date: 2024-08-02T10:00:00Z\r\nWARC-Target-URI: {url}\r\n"
            f"Content-Type: application/http; msgtype=response\r\nContent-Length: {len(http)}\r\n\r\n").encode()
    return gzip.compress(head + http + b"\r\n\r\n", 1)


def write_warc(path: Path, pages: dict[str, list[str]]) -> str:
    path.write_bytes(b"".join(response_member(url, paragraphs) for url, paragraphs in pages.items()))
    return str(path)


@pytest.fixture
def run(tmp_path):
    """Two WARC files extracted and decided at the defaults; returns (cfg, layout, the WARC paths)."""
    warcs = [write_warc(tmp_path / "a.warc.gz", {"https://good.example/": GOOD, "https://short.example/": SHORT}),
             write_warc(tmp_path / "b.warc.gz", {"https://repeated.example/": REPEATED,
                                                 "https://good2.example/": GOOD[::-1]})]
    cfg = load_config(None, [f"out={tmp_path / 'out'}", "ray.executor=local", "input.warcs=" + json.dumps(warcs)])
    extract_run(cfg, quiet=True)
    return cfg, RunLayout(cfg.out), warcs


def _with(cfg, **thresholds):
    return cfg.model_copy(update={"extract": cfg.extract.model_copy(
        update={"rules": cfg.extract.rules.model_copy(update=thresholds)})})


def _state(layout: RunLayout):
    """{url: ("kept", None) | (reason, detail)} over docs/ and decisions/rules/."""
    docs = read_dataset(layout.dataset("docs"), schemas.DOCS).to_pylist()
    decisions = read_dataset(layout.decisions("rules"), schemas.DECISIONS).to_pylist()
    return {**{d["url"]: ("kept", None) for d in docs}, **{d["url"]: (d["reason"], d["detail"]) for d in decisions}}


def _metrics(layout: RunLayout) -> dict[str, dict]:
    return {row["url"]: row for row in read_dataset(layout.dataset("extracted"), schemas.EXTRACTED).to_pylist()}


def _conserved(layout: RunLayout) -> dict:
    report = build_report(layout)
    stages = report["stages"]
    assert report["conserved"] and stages["rules"]["input"] == stages["extract"]["kept"]
    return stages["rules"]


def test_every_extracted_page_keeps_its_metrics_and_gets_one_verdict(run):
    _cfg, layout, _ = run
    metrics = _metrics(layout)
    state = _state(layout)
    assert set(metrics) == set(state) == {"https://good.example/", "https://short.example/",
                                          "https://repeated.example/", "https://good2.example/"}
    # kept or dropped, every page has all its metrics (these are English pages with words and lines)
    for url, row in metrics.items():
        assert row["rules_applied"] and all(row[name] is not None for name in METRICS
                                            if name not in ("lorem_ipsum_line", "curly_bracket_line")), url
    assert state["https://good.example/"] == state["https://good2.example/"] == ("kept", None)
    reason, detail = state["https://short.example/"]
    assert reason == "gopher_short_doc"
    assert detail == f"gopher_short_doc: n_words {metrics['https://short.example/']['n_words']} < 50"
    assert 30 < metrics["https://short.example/"]["n_words"] < 50
    reason, detail = state["https://repeated.example/"]
    assert reason == "gopher_top_4_gram"
    assert re.fullmatch(r"gopher_top_4_gram: top_4gram_char_frac 0\.\d+ > 0\.16", detail)
    # docs/ carries the stored metrics in its rule columns
    (good,) = [d for d in read_dataset(layout.dataset("docs"), schemas.DOCS).to_pylist() if d["url"] == "https://good.example/"]
    assert good["n_words"] == metrics["https://good.example/"]["n_words"] > 150 and good["rule_failures"] == []
    assert good["line_punct_ratio"] == pytest.approx(metrics["https://good.example/"]["line_punct_ratio"]) == 1.0
    rules = _conserved(layout)
    assert rules["kept"] == 2 and rules["dropped"] == {"gopher_short_doc": 1, "gopher_top_4_gram": 1}


def test_a_looser_threshold_keeps_the_page_without_reading_the_warc(run):
    cfg, layout, warcs = run
    extract_markers = {p: p.stat().st_mtime_ns for p in layout.state("extract").glob("*.json")}
    for warc in warcs:  # nothing can be read again: the files are gone
        Path(warc).unlink()
    looser = _with(cfg, min_doc_words=30)
    summary = decide_rules(looser)
    assert summary["shards_run"] == 2 and summary["complete"]
    assert _state(layout)["https://short.example/"] == ("kept", None)
    rules = _conserved(layout)
    assert rules["kept"] == 3 and rules["dropped"] == {"gopher_top_4_gram": 1}
    # the whole `curate extract` with the new thresholds: extract is not redone (its files are gone), rules is
    # not redone either (already at these thresholds)
    assert extract_run(looser, quiet=True) == {"skipped": True}
    assert {p: p.stat().st_mtime_ns for p in layout.state("extract").glob("*.json")} == extract_markers
    assert _state(layout)["https://short.example/"] == ("kept", None)


def test_a_tighter_threshold_drops_more_and_the_defaults_give_the_first_decisions_back(run):
    cfg, layout, _ = run
    first = _state(layout)
    decide_rules(_with(cfg, min_doc_words=500))
    tighter = _state(layout)
    assert {url for url, (verdict, _) in tighter.items() if verdict == "kept"} == set()
    good = _metrics(layout)["https://good.example/"]["n_words"]
    assert tighter["https://good.example/"] == ("gopher_short_doc", f"gopher_short_doc: n_words {good} < 500")
    # Gopher quality is decided before repetition: the repeated page's first failure is now the word count
    assert tighter["https://repeated.example/"][0] == "gopher_short_doc"
    assert _conserved(layout)["dropped"] == {"gopher_short_doc": 4}
    decide_rules(cfg)
    assert _state(layout) == first


def test_all_failures_lists_every_failed_check_and_a_family_switch_turns_its_checks_off(run):
    cfg, layout, _ = run
    decide_rules(_with(cfg, all_failures=True, min_doc_words=500))
    reason, detail = _state(layout)["https://repeated.example/"]
    assert reason == "gopher_short_doc" and "; gopher_top_4_gram: top_4gram_char_frac" in detail
    decide_rules(_with(cfg, gopher_repetition=False))
    assert _state(layout)["https://repeated.example/"] == ("kept", None)


def test_a_rules_stage_killed_mid_way_resumes_with_only_the_missing_shards(run, monkeypatch):
    cfg, layout, _ = run
    looser = _with(cfg, min_doc_words=30)
    calls: list[str] = []
    process = rules_stage.RulesStage.process

    def dies_on_the_second(self, worker, shard):
        calls.append(shard.key)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return process(self, worker, shard)

    monkeypatch.setattr(rules_stage.RulesStage, "process", dies_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        decide_rules(looser)
    assert not layout.is_stage_done("rules")
    first, second = calls
    done = layout.dataset("docs") / f"{first}.parquet"
    written = done.stat().st_mtime_ns
    calls.clear()
    summary = decide_rules(looser)
    assert calls == [second] and summary["shards_run"] == 1 and summary["complete"]
    assert done.stat().st_mtime_ns == written  # the shard decided before the kill is not redone
    assert _state(layout)["https://short.example/"] == ("kept", None)
    assert _conserved(layout)["kept"] == 3


def test_a_file_extracted_again_is_decided_again(run):
    cfg, layout, _ = run
    extracted = sorted(layout.dataset("extracted").glob("*.parquet"))
    pq.write_table(pq.read_table(extracted[0]), extracted[0])  # extract wrote this shard again
    untouched = layout.dataset("docs") / extracted[1].name
    mtime = untouched.stat().st_mtime_ns
    summary = decide_rules(cfg)
    assert summary["shards_run"] == 1 and untouched.stat().st_mtime_ns == mtime


def test_re_deciding_under_later_outputs_is_refused_before_anything_changes(run):
    from pipeline.io import SettingsChanged

    cfg, layout, _ = run
    dedup_run(cfg, quiet=True)
    docs = {p.name: p.stat().st_mtime_ns for p in layout.dataset("docs").iterdir()}
    with pytest.raises(SettingsChanged, match=r"rules: other thresholds \(extract\.rules\.min_doc_words: 50 -> 30\) "
                                              r"would re-decide docs/.* but dedup already made outputs"):
        decide_rules(_with(cfg, min_doc_words=30))
    assert {p.name: p.stat().st_mtime_ns for p in layout.dataset("docs").iterdir()} == docs
    assert decide_rules(cfg)["complete"]  # the same thresholds: nothing to re-decide, nothing refused


def test_cli_rethreshold_prints_the_accounting_and_bad_values_exit_2(run):
    cfg, layout, warcs = run
    for warc in warcs:
        Path(warc).unlink()
    result = subprocess.run([str(CURATE), "extract", "--out", cfg.out, "--rethreshold", "--set", "ray.executor=local",
                             "--set", "extract.rules.min_doc_words=30"], capture_output=True, text=True, cwd=ROOT,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "[extract]" not in result.stdout  # only the rules stage ran
    assert re.search(r"rules +dropped +gopher_top_4_gram +1", result.stdout)
    assert "conservation rules: 4 in = 3 kept + 1 dropped + 0 errored [ok]" in result.stdout
    assert "thresholds: min_doc_words=30" in result.stdout
    for setting, field in (("extract.rules.max_short_line_ratio=1.5", "extract.rules.max_short_line_ratio"),
                           ("extract.rules.max_doc_words=10", "extract.rules.max_doc_words")):
        bad = subprocess.run([str(CURATE), "rules", "--out", cfg.out, "--set", setting], capture_output=True,
                             text=True, cwd=ROOT, timeout=300)
        assert bad.returncode == 2 and field in bad.stderr and "Traceback" not in bad.stderr
    assert _state(layout)["https://short.example/"] == ("kept", None)  # the refused commands changed nothing


def test_rules_without_stored_metrics_say_what_to_run(tmp_path):
    result = subprocess.run([str(CURATE), "rules", "--out", str(tmp_path / "empty")], capture_output=True, text=True,
                            cwd=ROOT, timeout=300)
    assert result.returncode == 2 and "run `curate extract` first" in result.stderr
