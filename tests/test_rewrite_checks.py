"""Each output check of the rewrite stage fires with its reason, and only checked rewrites reach synthetic/.

A real vLLM server cannot be made to answer an empty string, a truncated answer, a verbatim copy, another
language, prose instead of question-answer pairs, or a 5xx on demand (the tiny model's answers are noise),
so these tests run the real stage (Ray actors, the shared LLM client and its cache) against a loopback stub
HTTP server that scripts those answers: a deliberate fake, for faults only. The real server is used in
test_rewrite_server.py.
"""

from __future__ import annotations

import json
from collections import Counter

import pyarrow.parquet as pq
from test_llm_client import StubLLM, completion

from pipeline import rewrite, schemas
from pipeline.config import load_config
from pipeline.io import RunLayout, read_dataset, write_parquet
from pipeline.report import build_report

FRUITS = ("apples", "bananas", "cherries")
GERMAN = "Die Seite beschreibt Obst, das viele Menschen jeden Tag gerne essen, und erklärt, woher es kommt."
# Plain-English answers per style (the styles' prompts open their system message with these words).
VALID = {
    "You rewrite": "{S} are described on this page as a common food that many people enjoy eating every day.",
    "You write question-answer": "Question: What does the text say about {s}?\nAnswer: It says that {s} are a "
                                 "common food that many people enjoy.",
    "You condense": "In short, {s} are a popular food enjoyed by many people around the world.",
    "You extract knowledge": "- {S} are a common food.\n- Many people enjoy eating {s} every day.",
}


def scripted_answer(body: dict, attempt: int) -> tuple[int, dict, float, dict]:
    """The stub's script (see test_llm_client.StubLLM): the answer depends on a `case-...` tag in the page text
    and on the style, read from the system message."""
    system, user = body["messages"][0]["content"], body["messages"][-1]["content"]
    document = user.split("<document>\n", 1)[1].rsplit("\n</document>", 1)[0]
    style = next(prefix for prefix in VALID if system.startswith(prefix))
    if "case-bad-request" in document:
        return 400, {"error": "bad request"}, 0, {}
    if "case-flaky" in document and attempt == 0:
        return 500, {"error": "engine overloaded"}, 0, {}
    if "case-empty" in document:
        text, finish = "", "stop"
    elif "case-truncated" in document:
        text, finish = "Apples are described on this page as a common", "length"
    elif "case-copy" in document:
        text, finish = document, "stop"
    elif "case-german" in document:
        text, finish = GERMAN, "stop"
    elif "case-prose" in document and style == "You write question-answer":
        text, finish = "The page talks about fruit in general and gives no questions or answers at all.", "stop"
    else:
        subject = next(fruit for fruit in FRUITS if fruit in document.lower())
        text, finish = VALID[style].format(s=subject, S=subject.capitalize()), "stop"
    return 200, completion(text, finish), 0, {}


def page(tag: str, fruit: str = "apples") -> str:
    return (f"{fruit.capitalize()} ({tag}) are sold at the weekly market in the old town square.\n"
            f"Farmers bring {fruit} ({tag}) from the valley every Saturday morning before dawn.")


# (doc_id, quality_prob, text). Routing: >= 0.6 -> qa_pairs, distill, knowledge_list; >= 0.2 -> wiki.
DOCS = [
    ("wiki-ok", 0.3, page("case-good", "bananas")),
    ("high-ok", 0.9, "\n".join(f"{f.capitalize()} are grown by farmers in many regions of the country (case-good)."
                               for f in FRUITS)),
    ("empty", 0.3, page("case-empty")),
    ("truncated", 0.3, page("case-truncated")),
    ("copy", 0.3, page("case-copy")),
    ("german", 0.3, page("case-german")),
    ("qa-prose", 0.9, page("case-prose", "cherries")),
    ("bad-request", 0.3, page("case-bad-request")),
    ("flaky", 0.3, page("case-flaky")),
    ("low", 0.05, page("case-good")),
    ("blank", 0.3, "  \n  "),
]


def write_corpus(folder) -> None:
    rows = [{"doc_id": doc_id, "url": f"https://example.org/{doc_id}", "text": text, "language": "en",
             "n_chars": len(text), "quality_prob": prob, "topics": [], "topic_probs": []}
            for doc_id, prob, text in DOCS]
    table = schemas.from_rows(rows, schemas.SCORED)
    # shards never span files: with rewrite.shard_size=4, `flaky` shares its shard only with pages that make
    # no request (`low`, `blank`)
    write_parquet(table.slice(0, 8), folder / "part-00000.parquet", schemas.SCORED)
    write_parquet(table.slice(8), folder / "part-00001.parquet", schemas.SCORED)


def units(layout: RunLayout) -> tuple[dict, dict]:
    """{(doc_id, style prompt id): reason} from decisions/rewrite and {(doc_id, style): row} from synthetic/."""
    decisions = read_dataset(layout.decisions("rewrite"), schemas.DECISIONS).to_pylist()
    reasons = {}
    for row in decisions:
        style = row["detail"].split(";", 1)[0].removeprefix("style=") if row["detail"].startswith("style=") else None
        reasons[(row["doc_id"], style)] = (row["outcome"], row["reason"])
    rows = {(r["doc_id"], r["prompt_id"]): r for r in read_dataset(layout.dataset("synthetic"), schemas.SYNTHETIC).to_pylist()}
    return reasons, rows


def test_every_output_check_fires_with_its_reason_and_failures_never_reach_synthetic(tmp_path, ray_local):
    corpus = tmp_path / "corpus"
    write_corpus(corpus)
    with StubLLM(scripted_answer) as stub:
        cfg = load_config(None, [
            f"out={tmp_path / 'run'}", f"llm.url={stub.url}", "llm.max_retries=0",
            "rewrite.mid_threshold=0.2", "rewrite.high_threshold=0.6", "rewrite.chunk_tokens=32",
            "rewrite.shard_size=4", 'rewrite.max_output_tokens={rewrite_wiki: 90, qa_pairs: 80, distill: 70, knowledge_list: 60}',
        ])
        first = rewrite.run(cfg, corpus, quiet=True)
        layout = RunLayout(cfg.out)
        reasons, rows = units(layout)
        requests_first = len(stub.bodies)

        # a transient failure leaves the stage incomplete; the next run redoes only what is missing
        assert not first["complete"] and first["transient_errors"] == 1
        assert reasons[("flaky", "rewrite_wiki_v1")] == ("errored", "request_http_500")
        assert not layout.is_stage_done("rewrite")
        second = rewrite.run(cfg, corpus, quiet=True)
        assert second["complete"] and layout.is_stage_done("rewrite")
        # only the shard holding `flaky` (with `low` and `blank`, which make no requests) was run again:
        # the two chunk requests of `flaky` that had failed
        assert second["shards_run"] == 1 and second["this_run"]["http_requests"] == 2

    reasons, rows = units(layout)
    assert {key: value[1] for key, value in reasons.items()} == {
        ("empty", "rewrite_wiki_v1"): "empty_output",
        ("truncated", "rewrite_wiki_v1"): "truncated_output",
        ("copy", "rewrite_wiki_v1"): "copied_input",
        ("german", "rewrite_wiki_v1"): "language_mismatch",
        ("qa-prose", "qa_pairs_v1"): "qa_unparseable",
        ("bad-request", "rewrite_wiki_v1"): "request_http_400",
        ("low", None): "below_rewrite_threshold",
        ("blank", "rewrite_wiki_v1"): "empty_source",
    }
    assert reasons[("bad-request", "rewrite_wiki_v1")][0] == "errored"
    assert all(outcome == "dropped" for key, (outcome, _) in reasons.items() if key[0] != "bad-request")
    # only checked rewrites are in synthetic/: one row per passing (page, style)
    assert set(rows) == {("wiki-ok", "rewrite_wiki_v1"), ("flaky", "rewrite_wiki_v1"),
                         ("high-ok", "qa_pairs_v1"), ("high-ok", "distill_v1"), ("high-ok", "knowledge_list_v1"),
                         ("qa-prose", "distill_v1"), ("qa-prose", "knowledge_list_v1")}

    # provenance and token accounting of a multi-chunk rewrite, reassembled in the page's order
    qa = rows[("high-ok", "qa_pairs_v1")]
    assert qa["n_chunks"] == 3 and qa["style"] == "qa_pairs" and qa["model"] == "stub"
    assert [line.split(" about ")[1] for line in qa["text"].splitlines() if line.startswith("Question:")] == \
        ["apples?", "bananas?", "cherries?"]
    assert (qa["prompt_tokens"], qa["completion_tokens"]) == (33, 21) and qa["source_tokens"] > 0
    assert qa["prompt_hash"] == rewrite.stage.load_prompt("qa_pairs_v1").prompt_hash
    assert json.loads(qa["sampling_params"]) == {"temperature": 0.0, "seed": 0, "max_tokens": 80}
    assert qa["language"] == "en" and abs(qa["quality_prob"] - 0.9) < 1e-6
    assert len({r["synthetic_id"] for r in rows.values()}) == len(rows)
    knowledge = rows[("high-ok", "knowledge_list_v1")]["text"]
    assert knowledge.index("Apples") < knowledge.index("Bananas") < knowledge.index("Cherries")

    # plain-text requests with the style's own output limit
    limits = {body["max_tokens"] for body in stub.bodies}
    assert limits == {90, 80, 70, 60} and not any("response_format" in body for body in stub.bodies)
    assert requests_first == len({json.dumps(b["messages"]) for b in stub.bodies})  # no request sent twice

    # accounting: every unit once, per shard and in the report
    report = build_report(layout)
    summary = report["side_stages"]["rewrite"]
    assert summary["conserved"] and summary["input"] == 8 + 3 + 3 + 1  # 8 wiki pages, 2 high pages x 3 styles, 1 low page
    assert summary["kept"] == len(rows) and summary["errored"] == {"request_http_400": 1}
    assert Counter(summary["dropped"]) == Counter(reason for key, (outcome, reason) in reasons.items()
                                                  if outcome == "dropped")
    for path in layout.dataset("synthetic").glob("*.parquet"):
        assert pq.read_schema(path).equals(schemas.SYNTHETIC, check_metadata=False)
    card = (layout.dataset("synthetic") / "README.md").read_text()
    assert "## Synthetic rewrites" in card and "| dropped | qa_unparseable | 1 |" in card


def test_no_server_is_a_clear_error_before_anything_is_sent(tmp_path, capsys):
    from pipeline.cli import main as curate
    from pipeline.llm.server import free_port

    corpus = tmp_path / "corpus"
    write_corpus(corpus)
    url = f"http://127.0.0.1:{free_port()}/v1"
    code = curate(["rewrite", "--corpus", str(corpus), "--out", str(tmp_path / "run"), "--llm-url", url])
    assert code == 2
    assert f"no LLM server answering at {url}" in capsys.readouterr().err
    # no output, no decision, no shard marker (the runtime keeps only its run-folder bookkeeping in _state/)
    layout = RunLayout(tmp_path / "run")
    assert not layout.dataset("synthetic").exists() and not layout.decisions("rewrite").exists()
    assert layout.shard_stats("rewrite") == [] and not layout.is_stage_done("rewrite")
