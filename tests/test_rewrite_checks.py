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
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from classifiers.distil import distil
from classifiers.extraction_benchmark import labelled_texts, load_pages, write_teacher_run
from classifiers.labels import load_llm_labels
from pipeline import rewrite, schemas
from pipeline.config import DistilConfig, load_config
from pipeline.io import RunLayout, SettingsChanged, read_dataset, write_parquet
from pipeline.report import build_report
from test_llm_client import StubLLM, completion

FRUITS = ("apples", "bananas", "cherries")
GERMAN = "Die Seite beschreibt Obst, das viele Menschen jeden Tag gerne essen, und erklärt, woher es kommt."
# The styles' prompts open their system message with these words.
STYLES = ("You rewrite", "You write question-answer", "You condense", "You extract knowledge")
# Faithful plain-English answers per kind of chunk (see `page` and DOCS: a market line, a valley line, a line
# on growing) and style: each rephrases its chunk, keeps most of what it says and adds no number or name.
VALID = {
    "market": {
        "You rewrite": "The weekly market on the old town square sells {s}.",
        "You write question-answer": "Question: Where are {s} sold?\nAnswer: At the weekly market on the old town "
                                     "square.",
        "You condense": "{S} are on sale at the weekly market of the old town square.",
        "You extract knowledge": "- {S} are sold at a weekly market.\n- The market is in the old town square.",
    },
    "valley": {
        "You rewrite": "Before dawn on Saturday mornings, farmers carry {s} in from the valley.",
        "You write question-answer": "Question: When do farmers bring {s} from the valley?\nAnswer: Every Saturday "
                                     "morning, before dawn.",
        "You condense": "Farmers bring {s} down from the valley on Saturday mornings before dawn.",
        "You extract knowledge": "- Farmers bring {s} from the valley.\n- They come every Saturday morning before "
                                 "dawn.",
    },
    "grown": {
        "You rewrite": "Farmers in many regions of the country grow {s}.",
        "You write question-answer": "Question: What does the text say about {s}?\nAnswer: That farmers in many "
                                     "regions of the country grow {s}.",
        "You condense": "{S} are a crop of farmers in many regions of the country.",
        "You extract knowledge": "- {S} are grown by farmers.\n- They grow in many regions of the country.",
    },
}


def valid_answer(style: str, document: str) -> str:
    """The faithful answer to a chunk of a fruit page, in `style`."""
    kind = "market" if "market" in document else "valley" if "valley" in document else "grown"
    subject = next(fruit for fruit in FRUITS if fruit in document.lower())
    return VALID[kind][style].format(s=subject, S=subject.capitalize())


def scripted_answer(body: dict, attempt: int) -> tuple[int, dict, float, dict]:
    """The stub's script (see test_llm_client.StubLLM): the answer depends on a `case-...` tag in the page text
    and on the style, read from the system message."""
    system, user = body["messages"][0]["content"], body["messages"][-1]["content"]
    document = user.split("<document>\n", 1)[1].rsplit("\n</document>", 1)[0]
    style = next(prefix for prefix in STYLES if system.startswith(prefix))
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
        text, finish = valid_answer(style, document), "stop"
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


def run_rewrite(cfg, corpus) -> dict:
    """The rewrite stage through the registry (what `curate rewrite --corpus CORPUS` runs): its summary."""
    from pipeline.run import run_stages

    return run_stages(cfg.updated(**{"rewrite.corpus": str(corpus)}), "rewrite", quiet=True)["rewrite"]


def units(layout: RunLayout) -> tuple[dict, dict]:
    """{(doc_id, style prompt id): reason} from decisions/rewrite and {(doc_id, style): row} from synthetic/."""
    decisions = read_dataset(layout.decisions("rewrite"), schemas.DECISIONS).to_pylist()
    reasons = {}
    for row in decisions:
        style = row["detail"].split(";", 1)[0].removeprefix("style=") if row["detail"].startswith("style=") else None
        reasons[(row["doc_id"], style)] = (row["outcome"], row["reason"])
    synthetic = read_dataset(layout.dataset("synthetic"), schemas.SYNTHETIC).to_pylist()
    rows = {(r["doc_id"], r["prompt_id"]): r for r in synthetic}
    return reasons, rows


def test_every_output_check_fires_with_its_reason_and_failures_never_reach_synthetic(tmp_path, ray_local):
    corpus = tmp_path / "corpus"
    write_corpus(corpus)
    with StubLLM(scripted_answer) as stub:
        cfg = load_config(None, [
            f"out={tmp_path / 'run'}", f"llm.url={stub.url}", "llm.max_retries=0",
            # no classifier here: the format checks are under test (scores: test_scores_decide_...)
            "rewrite.min_quality_prob=null",
            "rewrite.mid_threshold=0.2", "rewrite.high_threshold=0.6", "rewrite.chunk_tokens=32",
            "rewrite.shard_size=4",
            "rewrite.max_output_tokens={rewrite_wiki: 90, qa_pairs: 80, distill: 70, knowledge_list: 60}",
        ])
        first = run_rewrite(cfg, corpus)
        layout = RunLayout(cfg.out)
        reasons, rows = units(layout)
        requests_first = len(stub.bodies)

        # a transient failure leaves the stage incomplete; the next run redoes only what is missing
        assert not first["complete"] and first["transient_errors"] == 1
        assert reasons[("flaky", "rewrite_wiki_v1")] == ("errored", "request_http_500")
        assert not layout.is_stage_done("rewrite")
        second = run_rewrite(cfg, corpus)
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
    # every kept rewrite was scored for faithfulness and passed the default threshold; with no classifier
    # (and rewrite.min_quality_prob off) the quality score is null
    threshold = cfg.rewrite.min_faithfulness
    assert all(threshold <= r["faithfulness"] <= 1 and r["invented_frac"] == 0 for r in rows.values())
    assert all(r["rewrite_quality_prob"] is None for r in rows.values())
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
    # 8 wiki pages, 2 high pages x 3 styles, 1 low page
    assert summary["conserved"] and summary["input"] == 8 + 3 + 3 + 1
    assert summary["kept"] == len(rows) and summary["errored"] == {"request_http_400": 1}
    assert Counter(summary["dropped"]) == Counter(reason for key, (outcome, reason) in reasons.items()
                                                  if outcome == "dropped")
    for path in layout.dataset("synthetic").glob("*.parquet"):
        assert pq.read_schema(path).equals(schemas.SYNTHETIC, check_metadata=False)
    card = (layout.dataset("synthetic") / "README.md").read_text()
    assert "## Synthetic rewrites" in card and "| dropped | qa_unparseable | 1 |" in card
    assert "`rewrite_quality_prob` >= off" in card and "not scored: no quality classifier" in card
    assert f"| rewrites scored | {len(rows)} | 0 | 0 | 0 |" in card


def test_no_server_is_a_clear_error_before_anything_is_sent(tmp_path, capsys):
    from pipeline.cli import main as curate
    from pipeline.llm.server import free_port

    corpus = tmp_path / "corpus"
    write_corpus(corpus)
    url = f"http://127.0.0.1:{free_port()}/v1"
    code = curate(["rewrite", "--corpus", str(corpus), "--out", str(tmp_path / "run"), "--llm-url", url,
                   "--set", "rewrite.min_quality_prob=null"])
    assert code == 2
    assert f"no LLM server answering at {url}" in capsys.readouterr().err
    # no output, no decision, no shard marker (the runtime keeps only its run-folder bookkeeping in _state/)
    layout = RunLayout(tmp_path / "run")
    assert not layout.dataset("synthetic").exists() and not layout.decisions("rewrite").exists()
    assert layout.shard_stats("rewrite") == [] and not layout.is_stage_done("rewrite")


# ------------------------------------------------------------------------------------------------ scores
BENCHMARK = Path(__file__).resolve().parents[1] / "data" / "extraction-benchmark"

# Three real-world pages of two paragraphs each (rewrite.chunk_tokens=100: one chunk per paragraph).
EIFFEL = ["The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named after "
          "the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889.",
          "The tower is 330 metres tall and was the tallest structure built by people in the world until the "
          "Chrysler Building in New York City was finished in 1930."]
GOLDEN_GATE = ["The Golden Gate Bridge is a suspension bridge over the Golden Gate strait, the channel between San "
               "Francisco Bay and the Pacific Ocean. It connects the city of San Francisco to Marin County.",
               "The bridge was designed by the engineer Joseph Strauss and opened in 1937. Its main span is 1,280 "
               "metres long, the longest of any suspension bridge in the world until 1964."]
BAIKAL = ["Lake Baikal is a rift lake in the south of Siberia, Russia, between Irkutsk Oblast and the Republic of "
          "Buryatia. It is the deepest lake in the world, with a maximum depth of 1,642 metres.",
          "The lake holds about a fifth of the fresh surface water of the planet, and its water is known for its "
          "clarity: in winter the ice is clear enough to see the stones below."]
# The scripted answers, by the opening words of the chunk: faithful paraphrases, an invention, a copy.
FAITHFUL = {
    "The Eiffel Tower": "Gustave Eiffel's company designed and built a lattice tower of wrought iron in Paris between "
                        "1887 and 1889; it stands on the Champ de Mars and carries the engineer's name.",
    "The tower is": "At 330 metres, the tower remained the tallest structure people had built anywhere in the world "
                    "until New York City's Chrysler Building was completed in 1930.",
    "The Golden Gate": "Spanning the Golden Gate strait, where San Francisco Bay meets the Pacific Ocean, the Golden "
                       "Gate Bridge is a suspension bridge linking San Francisco with Marin County.",
}
HALLUCINATED = ("Planned by the architect Frank Lloyd Wright, the bridge opened to traffic in 1952. Its central span "
                "measures 2,150 metres, and Queen Elizabeth attended the opening with President Roosevelt.")


def scores_answer(body: dict, attempt: int) -> tuple[int, dict, float, dict]:
    document = body["messages"][-1]["content"].split("<document>\n", 1)[1].rsplit("\n</document>", 1)[0]
    if document.startswith("The bridge was"):
        text = HALLUCINATED  # the second chunk of the Golden Gate page: made up
    elif document.startswith(("Lake Baikal", "The lake holds")):
        text = document  # the Baikal page: copied
    else:
        text = next(answer for opening, answer in FAITHFUL.items() if document.startswith(opening))
    return 200, completion(text, "stop"), 0, {}


SCORE_DOCS = [("faithful", EIFFEL), ("hallucinated", GOLDEN_GATE), ("copy", BAIKAL)]


@pytest.fixture(scope="module")
def quality_classifier(tmp_path_factory):
    """A real distilled classifier (article text against the same pages' boilerplate, people's labels)."""
    root = tmp_path_factory.mktemp("rewrite-teacher")
    write_teacher_run(root, labelled_texts(BENCHMARK, page_ids=sorted(load_pages(BENCHMARK))[:40]))
    distil(load_llm_labels(root / "labels", root / "docs", 3), DistilConfig(bucket=50000, dim=32),
           root / "classifier", quiet=True)
    return root / "classifier"


def write_score_corpus(folder) -> None:
    rows = [{"doc_id": doc_id, "url": f"https://example.org/{doc_id}", "text": "\n".join(paragraphs),
             "language": "en", "n_chars": len("\n".join(paragraphs)), "quality_prob": 0.3, "topics": [],
             "topic_probs": []} for doc_id, paragraphs in SCORE_DOCS]
    write_parquet(schemas.from_rows(rows, schemas.SCORED), folder / "part-00000.parquet", schemas.SCORED)


def score_cfg(out, stub, classifier, *overrides: str):
    return load_config(None, [f"out={out}", f"llm.url={stub.url}", "llm.max_retries=0",
                              f"classify.classifier={classifier}",
                              "rewrite.mid_threshold=0.2", "rewrite.high_threshold=0.6", "rewrite.chunk_tokens=100",
                              *overrides])


def run_scored(tmp_path, answer, classifier):
    """The score corpus rewritten through a stub server answering with `answer`: (config, stage summary)."""
    corpus = tmp_path / "corpus"
    write_score_corpus(corpus)
    with StubLLM(answer) as stub:
        cfg = score_cfg(tmp_path / "run", stub, classifier)
        return cfg, run_rewrite(cfg, corpus)


def test_scores_decide_faithful_kept_hallucinated_and_copy_dropped(tmp_path, ray_local, quality_classifier):
    from classifiers import QualityClassifier

    cfg, summary = run_scored(tmp_path, scores_answer, quality_classifier)
    layout = RunLayout(cfg.out)
    reasons, rows = units(layout)
    decisions = {row["doc_id"]: row for row in read_dataset(layout.decisions("rewrite"), schemas.DECISIONS).to_pylist()}

    # the faithful rewrite is kept with both scores; the one inventing in its second chunk is unfaithful; the
    # copy is dropped for copying before it is scored
    assert set(rows) == {("faithful", "rewrite_wiki_v1")}
    assert {key: value for key, value in reasons.items()} == {
        ("hallucinated", "rewrite_wiki_v1"): ("dropped", "unfaithful_rewrite"),
        ("copy", "rewrite_wiki_v1"): ("dropped", "copied_input")}
    kept = rows[("faithful", "rewrite_wiki_v1")]
    expected_quality = float(QualityClassifier.load(quality_classifier).score([kept["text"]])[0])
    assert kept["rewrite_quality_prob"] == pytest.approx(expected_quality, abs=1e-6)
    assert kept["rewrite_quality_prob"] >= cfg.rewrite.min_quality_prob
    assert kept["faithfulness"] >= cfg.rewrite.min_faithfulness and kept["invented_frac"] == 0
    assert 0 < kept["kept_content_frac"] <= 1 and kept["n_chunks"] == 2

    detail = decisions["hallucinated"]["detail"]
    faithfulness = float(detail.split("faithfulness ", 1)[1].split(" ", 1)[0])
    assert faithfulness < cfg.rewrite.min_faithfulness
    assert f"< rewrite.min_faithfulness {cfg.rewrite.min_faithfulness}" in detail
    assert "rewrite_quality_prob=0." in detail and "invented_frac=" in detail  # both scores, for `curate explain`
    assert all(fact in detail for fact in ("1952", "2150", "Frank Lloyd Wright", "Roosevelt"))
    assert "lowest faithfulness in chunk 2/2" in detail
    assert "rewrite.max_copy_ratio" in decisions["copy"]["detail"] and "faithfulness" not in decisions["copy"]["detail"]

    # conservation, and the card: thresholds and both distributions
    assert summary["input"] == 3 == (summary["kept"] + sum(summary["dropped"].values())
                                     + sum(summary["errored"].values()))
    assert build_report(layout)["side_stages"]["rewrite"]["conserved"]
    assert summary["scores"]["kept"]["faithfulness"]["n"] == summary["scores"]["dropped"]["faithfulness"]["n"] == 1
    assert summary["quality_classifier"]["found_by"] == "classify.classifier"
    card = (layout.dataset("synthetic") / "README.md").read_text()
    assert f"`faithfulness` >= {cfg.rewrite.min_faithfulness}" in card
    assert f"`rewrite_quality_prob` >= {cfg.rewrite.min_quality_prob}" in card and str(quality_classifier) in card
    assert "| rewrites scored | 1 | 1 | 1 | 1 |" in card
    print(f"faithful: faithfulness {kept['faithfulness']:.3f} kept_content_frac {kept['kept_content_frac']:.3f} "
          f"rewrite_quality_prob {kept['rewrite_quality_prob']:.3f}; hallucinated: {detail}")

    # the thresholds are settings: another one for the same run folder is refused, naming it
    with StubLLM(scores_answer) as stub:
        with pytest.raises(SettingsChanged, match=r"rewrite.min_faithfulness: 0.6 -> None"):
            run_rewrite(score_cfg(tmp_path / "run", stub, quality_classifier, "rewrite.min_faithfulness=null"),
                        tmp_path / "corpus")


# A faithful rewrite of the Golden Gate page that reads like site navigation: it invents nothing, but the
# classifier (trained on articles against boilerplate) gives it a low quality probability.
TERSE = {"The Golden Gate": "Golden Gate Bridge\nSuspension bridge\nGolden Gate strait\nSan Francisco Bay\n"
                            "Pacific Ocean\nMarin County",
         "The bridge was": "Joseph Strauss\nOpened 1937\nMain span 1,280 metres\nLongest suspension bridge until 1964"}


def terse_answer(body: dict, attempt: int) -> tuple[int, dict, float, dict]:
    document = body["messages"][-1]["content"].split("<document>\n", 1)[1].rsplit("\n</document>", 1)[0]
    for opening, text in TERSE.items():
        if document.startswith(opening):
            return 200, completion(text, "stop"), 0, {}
    return scores_answer(body, attempt)


def test_quality_threshold_drops_low_rewrite_quality(tmp_path, ray_local, quality_classifier):
    """Two faithful rewrites, scored by the real classifier at the default thresholds: the prose one is kept,
    the navigation-like one is dropped as low_rewrite_quality (its faithfulness passes: quality decided it)."""
    from classifiers import QualityClassifier

    cfg, summary = run_scored(tmp_path, terse_answer, quality_classifier)
    layout = RunLayout(cfg.out)
    reasons, rows = units(layout)
    assert set(rows) == {("faithful", "rewrite_wiki_v1")}
    assert reasons[("hallucinated", "rewrite_wiki_v1")] == ("dropped", "low_rewrite_quality")
    terse_text = "\n\n".join(TERSE.values())  # what the stage would have stored: the answers, a blank line apart
    terse_quality = float(QualityClassifier.load(quality_classifier).score([terse_text])[0])
    threshold = cfg.rewrite.min_quality_prob
    assert terse_quality < threshold <= rows[("faithful", "rewrite_wiki_v1")]["rewrite_quality_prob"]
    detail = next(row["detail"] for row in read_dataset(layout.decisions("rewrite"), schemas.DECISIONS).to_pylist()
                  if row["doc_id"] == "hallucinated")
    assert f"rewrite_quality_prob {terse_quality:.3f} < rewrite.min_quality_prob {threshold}" in detail
    faithfulness = float(detail.split("faithfulness=", 1)[1].split(";", 1)[0])
    assert faithfulness >= cfg.rewrite.min_faithfulness and "invented_frac=0.000" in detail
    assert summary["input"] == 3 == (summary["kept"] + sum(summary["dropped"].values())
                                     + sum(summary["errored"].values()))
    assert summary["scores"]["dropped"]["rewrite_quality_prob"]["hist"][0] == 1
    print(f"terse: rewrite_quality_prob {terse_quality:.5f}, {detail}")


def test_quality_classifier_is_found_or_its_absence_is_a_config_error(tmp_path, quality_classifier):
    from pipeline.config import ConfigError
    from pipeline.rewrite.stage import RewriteStage, resolve_quality_classifier

    corpus = tmp_path / "corpus"
    write_score_corpus(corpus)
    base = [f"out={tmp_path / 'run'}", f"rewrite.corpus={corpus}"]
    # nothing to find, threshold on: refused before anything runs, naming the field and the fix
    with pytest.raises(ConfigError, match=r"rewrite.min_quality_prob=0.1 needs the quality classifier.*"
                                          r"classify.classifier.*rewrite.min_quality_prob to null"):
        RewriteStage(load_config(None, base)).check()
    # threshold off (null or 0): allowed, rewrites are kept without a quality score
    for off in ("null", "0"):
        stage = RewriteStage(load_config(None, [*base, f"rewrite.min_quality_prob={off}"]))
        stage.check()
        assert stage.quality_classifier.folder is None
    # the corpus manifest names the classifier that scored the corpus (classify writes `classifier.path`); the
    # corpus card is not read for it
    (corpus / "README.md").write_text(f"---\nclassifier:\n  path: {tmp_path}\n  sha256: x\n---\n\n# card\n")
    (corpus / "_manifest.json").write_text(json.dumps({"files": [], "classifier": {
        "path": str(quality_classifier), "fingerprint": "x"}}))
    choice = resolve_quality_classifier(load_config(None, base))
    assert choice.folder == str(quality_classifier) and choice.found_by.startswith("the corpus manifest")
    assert RewriteStage(load_config(None, base)).quality_classifier == choice
    # classify.classifier first; a folder that is not a classifier is an error naming the setting
    with pytest.raises(ConfigError, match="classify.classifier"):
        resolve_quality_classifier(load_config(None, [*base, f"classify.classifier={tmp_path}"]))
