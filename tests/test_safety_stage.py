"""What must never reach training leaves the run with a reason: blocked sites in extract (before any HTML is
parsed), benchmark text and personal data in the safety stage; each removal is a decision, conserved,
explained per page (types and places of redactions, never the values), and re-decided when the eval sets
change."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline import schemas
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.run import run_stages

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample" / "warc"
BLOCKLIST = ROOT / "data" / "safety" / "blocklist"
EVAL_SET = ROOT / "data" / "safety" / "eval-sample.jsonl"
FILLER = ("The committee met on Tuesday to review the budget for the new library wing, and the members agreed "
          "that the reading rooms should open before the end of the year. ") * 4
LEAK = ("Collaborating using Open Data accelerates progress and helps find solutions to pressing global issues, "
        "such as climate change, public health, and social equality.")
PERSONAL = ("Write to jane.doe@example.org or call +44 20 7946 0958; the server at 81.2.69.142 logs every "
            "visit. ")


def _docs(run: Path, texts: dict[str, str]) -> None:
    rows = [{"doc_id": f"{i:020x}", "url": f"https://example.com/{name}", "text": text, "n_chars": len(text),
             "language": "en"} for i, (name, text) in enumerate(texts.items())]
    for dataset, schema in (("docs", schemas.DOCS), ("unique", schemas.UNIQUE)):  # as extract and dedup write them
        (run / dataset).mkdir(parents=True, exist_ok=True)
        pq.write_table(schemas.from_rows(rows, schema), run / dataset / "part-0.parquet")
    (run / "_state").mkdir(exist_ok=True)


def _cfg(run: Path, *overrides: str):
    return load_config(None, [f"out={run}", "ray.executor=local", f"decontam.eval_sets=[{EVAL_SET}]",
                              "decontam.text_fields=[question, answer]", *overrides])


def _rows(folder: Path) -> list[dict]:
    return [r for f in sorted(folder.glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def test_contaminated_pages_leave_with_the_item_and_personal_data_is_redacted(tmp_path, capsys):
    run = tmp_path / "run"
    _docs(run, {"leak": FILLER + LEAK + " " + FILLER, "personal": FILLER + PERSONAL + FILLER, "clean": FILLER})
    summary = run_stages(_cfg(run), "safety", quiet=True)["safety"]
    assert (summary["input"], summary["kept"], summary["dropped"]) == (3, 2, {"contaminated": 1})

    (decision,) = _rows(run / "decisions" / "safety")
    assert decision["reason"] == "contaminated" and decision["url"].endswith("/leak")
    assert decision["detail"].startswith("eval-sample item demo-001")  # the eval set (by name) and the item
    assert "open data accelerates progress" in decision["detail"]  # the matched words, normalised

    kept = {r["url"].rsplit("/", 1)[1]: r for r in _rows(run / "safe")}
    personal = kept["personal"]
    for value in ("jane.doe@example.org", "7946 0958", "81.2.69.142"):
        assert value not in personal["text"]
    for placeholder in ("<EMAIL_ADDRESS>", "<PHONE_NUMBER>", "<IP_ADDRESS>"):
        assert placeholder in personal["text"]
    assert (personal["pii_email"], personal["pii_phone"], personal["pii_ip"]) == (1, 1, 1)
    original = FILLER + PERSONAL + FILLER
    assert sorted(original[s["start"]:s["end"]] for s in personal["pii_spans"]) == \
        sorted(["jane.doe@example.org", "+44 20 7946 0958", "81.2.69.142"])
    assert kept["clean"]["text"] == FILLER and kept["clean"]["pii_spans"] == []
    assert summary["contamination"]["eval-sample"]["items_found"] == 1
    assert summary["pii_redacted"] == {"EMAIL_ADDRESS": 1, "IP_ADDRESS": 1, "PHONE_NUMBER": 1}

    # explain names the types and places of what was redacted, never the values
    capsys.readouterr()
    assert main(["explain", personal["doc_id"], "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "EMAIL_ADDRESS" in out and "PHONE_NUMBER" in out and "jane.doe" not in out and "7946" not in out


def test_cut_mode_keeps_the_rest_and_drop_mode_drops_pages_full_of_personal_data(tmp_path):
    run = tmp_path / "run"
    dense = " ".join(f"user{i}@example.net" for i in range(30)) + " " + FILLER
    _docs(run, {"leak": FILLER + LEAK + " " + FILLER, "dense": dense})
    summary = run_stages(_cfg(run, "decontam.mode=cut", "pii.mode=drop", "pii.max_per_1k_words=20"), "safety",
                         quiet=True)["safety"]
    assert summary["dropped"] == {"too_much_pii": 1} and summary["kept"] == 1
    (leak,) = _rows(run / "safe")
    assert leak["decontam_cut"] == 1 and "accelerates progress" not in leak["text"] and "committee" in leak["text"]
    (decision,) = _rows(run / "decisions" / "safety")
    assert decision["reason"] == "too_much_pii" and "EMAIL_ADDRESS 30" in decision["detail"]


def test_another_eval_set_re_decides_every_shard(tmp_path):
    run = tmp_path / "run"
    _docs(run, {"leak": FILLER + LEAK + " " + FILLER, "clean": FILLER})
    assert run_stages(_cfg(run), "safety", quiet=True)["safety"]["dropped"] == {"contaminated": 1}
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"id": "x", "question": "Which committee met on Tuesday to review the budget?",
                                 "answer": "The committee met on Tuesday to review the budget for the new library "
                                           "wing"}) + "\n")
    again = run_stages(load_config(None, [f"out={run}", "ray.executor=local", f"decontam.eval_sets=[{other}]",
                                          "decontam.text_fields=[question, answer]"]), "safety", quiet=True)
    assert again["safety"]["shards_run"] == 1 and again["safety"]["dropped"] == {"contaminated": 2}


@pytest.mark.parametrize("override, message", [
    ("decontam.eval_sets=[/nonexistent/eval.jsonl]", "/nonexistent/eval.jsonl"),
    ("decontam.text_fields=[prompt]", "prompt"),
])
def test_bad_eval_sets_are_one_message(tmp_path, capsys, override, message):
    run = tmp_path / "run"
    _docs(run, {"clean": FILLER})
    code = main(["safety", "--out", str(run), "--set", "ray.executor=local",
                 "--set", f"decontam.eval_sets=[{EVAL_SET}]", "--set", override])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_blocked_sites_are_dropped_in_extract_before_their_html_is_read(tmp_path, capsys):
    run = tmp_path / "run"
    warcs = json.dumps([str(p) for p in sorted(SAMPLE.glob("*.warc.gz"))])
    cfg = load_config(None, [f"out={run}", "ray.executor=local", f"input.warcs={warcs}",
                             f"filters.url_blocklist=[{BLOCKLIST}]"])
    run_stages(cfg, "extract", quiet=True)
    blocked = [d for d in _rows(run / "decisions" / "extract") if d["reason"] == "blocked_url"]
    hosts = {d["url"].split("/")[2] for d in blocked}
    assert "06.live-radsport.ch" in hosts and "consent.google.com" in hosts  # a subdomain, and a listed URL
    assert all("demo-blocked" in d["detail"] for d in blocked)  # the UT1 category is reported
    extracted = {r["url"] for r in _rows(run / "extracted")}
    assert not any("live-radsport.ch" in url for url in extracted)
    # another list in this folder is refused: the pages were extracted (or not) under the first one
    code = main(["extract", "--out", str(run), "--warc", *json.loads(warcs), "--set", "ray.executor=local"])
    assert code == 2 and "filters" in capsys.readouterr().err


def test_a_missing_blocklist_is_one_message(tmp_path, capsys):
    code = main(["extract", "--warc", str(next(SAMPLE.glob("*.warc.gz"))), "--out", str(tmp_path / "run"),
                 "--set", "filters.url_blocklist=[/nonexistent/ut1]"])
    err = capsys.readouterr().err
    assert code == 2 and "/nonexistent/ut1" in err and "Traceback" not in err
