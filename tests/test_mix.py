"""The training mix: the allocation as a pure function (the budget hit within 1%, best first, the repeat cap, a
shortfall redistributed, weights and default_weight 0, determinism), then `curate mix` on a small hand-made
corpus (manifest, card, rows with group and repeat, counts reused when re-mixing, byte-identical output,
explain) and every bad input refused with one message and exit code 2."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline import schemas
from pipeline.cli import main
from pipeline.config import RunConfig
from pipeline.io import file_digest, write_parquet
from pipeline.mix.allocate import MixError, allocate, check_weights, first_fit, mix_order, resolve_shares
from pipeline.mix.groups import group_labels, quality_bucket
from pipeline.run import run_stages

# ------------------------------------------------------------------------------------------------ a corpus

WORDS = ("river stone garden history medicine patient doctor battle empire king queen treaty harbour market "
         "bread water light music theory planet orbit cell protein virus season winter summer paper letter "
         "city village road bridge engine wheel number proof table chair window mountain valley forest").split()
TOPICS = {"history": 50, "health": 30, "travel": 6}  # documents per topic: travel is small


def _page(rng: random.Random) -> str:
    return "\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 60))).capitalize() + "."
                     for _ in range(rng.randint(1, 6)))


def write_corpus(folder: Path, seed: int = 0, topics: dict[str, int] | None = None,
                 with_topics: bool = True) -> list[dict]:
    """A corpus as classify writes it (SCORED rows in two files, a manifest) of seeded pages; returns the rows."""
    rng = random.Random(seed)
    rows = []
    for topic, n in (topics or TOPICS).items():
        for i in range(n):
            rows.append({"doc_id": f"{rng.getrandbits(80):020x}", "url": f"https://{topic}.test/{i}",
                         "text": _page(rng),
                         "quality_prob": round(rng.random(), 4),
                         "topics": [topic, "science_and_technology"] if with_topics else None,
                         "topic_probs": [0.8, 0.1] if with_topics else None,
                         "format": [rng.choice(["knowledge_article", "news_article"])], "format_probs": [0.9]})
    rng.shuffle(rows)
    files = []
    for i, part in enumerate((rows[: len(rows) // 2], rows[len(rows) // 2:])):
        path = write_parquet(schemas.from_rows(part, schemas.SCORED), folder / f"part-{i:05d}.parquet", schemas.SCORED)
        files.append({"file": path.name, "rows": len(part), "sha256": file_digest(path).hexdigest()})
    (folder / "_manifest.json").write_text(json.dumps({"files": files, "rows": len(rows)}))
    return rows


def write_synthetic(folder: Path, corpus: list[dict], n: int = 20, seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    rows = [{"synthetic_id": f"syn{i:05d}", "doc_id": source["doc_id"], "style": "rewrite_wiki", "text": _page(rng),
             "quality_prob": source["quality_prob"]} for i, source in enumerate(corpus[:n])]
    write_parquet(schemas.from_rows(rows, schemas.SYNTHETIC), folder / "part-0001.parquet", schemas.SYNTHETIC)
    return rows


def tokenizer_copy(model_dir: Path, where: Path) -> Path:
    """A folder holding only the tiny model's tokenizer files (what mix.tokenizer points at)."""
    where.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (where / name).write_bytes((Path(model_dir) / name).read_bytes())
    return where


def mix_config(run: Path, tokenizer: Path, **mix) -> RunConfig:
    return RunConfig(out=str(run)).updated(**{"ray.executor": "local", "mix.tokenizer": str(tokenizer),
                                              **{f"mix.{k}": v for k, v in mix.items()}})


def training_tokens(tokenizer_dir: Path, texts: list[str]) -> list[int]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(tokenizer_dir) / "tokenizer.json"))
    return [len(e.ids) + 1 for e in tokenizer.encode_batch(texts, add_special_tokens=False)]


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory, tiny_model_dir):
    """(run folder with corpus/, the tokenizer folder, the corpus rows)."""
    root = tmp_path_factory.mktemp("mix")
    rows = write_corpus(root / "run" / "corpus")
    return root / "run", tokenizer_copy(tiny_model_dir, root / "tokenizer"), rows


# ------------------------------------------------------------------------------------------------ allocation


def _groups(rng: np.random.Generator, sizes: dict[str, int], low: int = 20, high: int = 3000) -> dict[str, np.ndarray]:
    return {name: rng.integers(low, high, size=n) for name, n in sizes.items()}


def test_without_weights_a_budget_cut_keeps_the_natural_proportions_best_first():
    rng = np.random.default_rng(0)
    groups = _groups(rng, {"a": 300, "b": 100, "c": 30})
    available = {g: int(t.sum()) for g, t in groups.items()}
    total = sum(available.values())
    target = total // 3
    plan = allocate(groups, resolve_shares(available), target)
    assert abs(plan.total - target) <= 0.01 * target and plan.within_tolerance
    for name, tokens in groups.items():
        group = plan.groups[name]
        assert group.action == "cut" and group.epochs < 1
        # its natural share of the budget, to within a document or two
        assert abs(group.taken - target * available[name] / total) <= 2 * tokens.max()
        # best first: a prefix of the ranking, then only documents that fill the last gap
        taken = np.flatnonzero(plan.counts[name])
        prefix = np.argmin(plan.counts[name] > 0) if not plan.counts[name].all() else len(tokens)
        assert prefix >= 0.6 * len(taken)
        assert (plan.counts[name] <= 1).all()
        gap_fill = int(tokens[taken[taken >= prefix]].sum())
        assert gap_fill <= tokens[prefix] if prefix < len(tokens) else gap_fill == 0


def test_the_budget_is_hit_within_one_percent_or_the_reason_is_given():
    rng = np.random.default_rng(1)
    for trial in range(60):
        groups = _groups(rng, {f"g{i}": int(rng.integers(1, 80)) for i in range(int(rng.integers(1, 6)))})
        available = {g: int(t.sum()) for g, t in groups.items()}
        total = sum(available.values())
        target = int(total * rng.uniform(0.05, 5.0))
        weights = {g: float(rng.uniform(0, 1)) for g in groups} if trial % 2 else None
        if weights is not None and sum(weights.values()) == 0:
            continue
        plan = allocate(groups, resolve_shares(available, weights, 0.0 if weights else None), target, max_epochs=4)
        assert plan.total <= target  # never above the budget
        for name in groups:
            assert (plan.counts[name] <= 4).all()
            assert plan.groups[name].taken <= math.floor(4 * available[name])
        if plan.capacity >= target * 1.01 and target >= 100 * max(t.max() for t in groups.values()):
            assert plan.within_tolerance, (trial, plan.total, target)
        if not plan.within_tolerance:
            assert plan.shortfall_note()


def test_a_small_group_is_repeated_up_to_the_cap_and_its_shortfall_goes_to_the_others_by_weight():
    groups = {"small": np.full(10, 100), "b": np.full(1000, 100), "c": np.full(1000, 100)}
    available = {g: int(t.sum()) for g, t in groups.items()}
    shares = resolve_shares(available, {"small": 0.5, "b": 0.3, "c": 0.2})
    plan = allocate(groups, shares, 20_000, max_epochs=4)
    small, b, c = (plan.groups[g] for g in ("small", "b", "c"))
    assert small.capped and small.taken == 4_000 and small.epochs == 4 and (plan.counts["small"] == 4).all()
    assert small.wanted == 10_000 and small.shortfall == 6_000 and small.action == "repeated"
    # the 6,000 tokens it lacks go to b and c in proportion 0.3 : 0.2
    assert (b.received, c.received) == (3_600, 2_400)
    assert (b.taken, c.taken) == (9_600, 6_400) and plan.total == 20_000
    assert small.to_json()["action"] == "repeated" and small.to_json()["capped"]


def test_a_partial_epoch_takes_the_best_documents_and_a_fractional_cap_is_respected():
    tokens = np.array([100, 100, 100, 100])
    plan = allocate({"a": tokens}, {"a": 1.0}, 650, max_epochs=4)
    assert plan.counts["a"].tolist() == [2, 2, 1, 1] and plan.total == 600  # 650 is not reachable with 100s
    assert plan.within_tolerance is False and "too large" in plan.shortfall_note()
    plan = allocate({"a": tokens}, {"a": 1.0}, 5_000, max_epochs=2.5)
    assert plan.counts["a"].tolist() == [3, 3, 2, 2] and plan.total == 1_000
    assert "not enough tokens even at the repeat cap" in plan.shortfall_note()


def test_not_enough_tokens_even_at_the_cap_is_said_exactly():
    groups = {"a": np.full(10, 100), "b": np.full(5, 100)}
    plan = allocate(groups, resolve_shares({"a": 1000, "b": 500}), 100_000, max_epochs=4)
    assert plan.total == 6_000 and all(g.capped for g in plan.groups.values())
    note = plan.shortfall_note()
    assert "not enough tokens even at the repeat cap" in note and "94,000 short" in note and "6,000" in note


def test_weights_shares_of_the_named_groups_and_natural_shares_of_the_others():
    available = {"a": 600, "b": 300, "c": 100}
    assert resolve_shares(available) == {"a": 0.6, "b": 0.3, "c": 0.1}
    shares = resolve_shares(available, {"c": 0.5})  # c gets half; a and b share the rest 2:1
    assert shares == pytest.approx({"a": 1 / 3, "b": 1 / 6, "c": 0.5})
    shares = resolve_shares(available, {"a": 2, "b": 1, "c": 1})  # every group named: relative weights
    assert shares == pytest.approx({"a": 0.5, "b": 0.25, "c": 0.25})
    shares = resolve_shares(available, {"b": 1}, default_weight=0)  # default_weight 0: only b
    assert shares == {"a": 0.0, "b": 1.0, "c": 0.0}
    plan = allocate({g: np.full(n // 10, 10) for g, n in available.items()}, shares, 300)
    assert plan.groups["a"].action == plan.groups["c"].action == "left out" and plan.groups["b"].taken == 300
    with pytest.raises(MixError, match="sum to 1.5, above 1"):
        resolve_shares(available, {"a": 1, "b": 0.5})
    with pytest.raises(MixError, match="every group has weight 0"):
        resolve_shares(available, {"a": 0}, default_weight=0)


def test_weights_are_checked_against_the_groups():
    with pytest.raises(MixError, match=r"group\(s\) the corpus does not have: sports\. Its groups are: a, b"):
        check_weights({"a": 1, "sports": 2}, ["a", "b"])
    with pytest.raises(MixError, match="'a' is -1: a weight is 0 or more"):
        check_weights({"a": -1}, ["a", "b"])
    with pytest.raises(MixError, match="not a number"):
        check_weights({"a": "lots"}, ["a", "b"])
    assert check_weights({"a": 1, "b": 0}, ["a", "b"]) == {"a": 1.0, "b": 0.0}


def test_first_fit_is_a_prefix_then_the_gap_filled_in_rank_order():
    mask, used = first_fit(np.array([50, 40, 30, 20, 10]), 100)
    assert mask.tolist() == [True, True, False, False, True] and used == 100
    mask, used = first_fit(np.array([500, 40]), 100)
    assert mask.tolist() == [False, True] and used == 40


def test_allocation_and_order_are_deterministic_and_copies_are_spread():
    rng = np.random.default_rng(3)
    groups = _groups(rng, {"a": 50, "b": 10})
    shares = resolve_shares({g: int(t.sum()) for g, t in groups.items()}, {"a": 0.5, "b": 0.5})
    first, second = (allocate(groups, shares, 60_000) for _ in range(2))
    assert all(np.array_equal(first.counts[g], second.counts[g]) for g in groups)
    copies = np.concatenate([first.counts["a"], first.counts["b"]])
    doc, repeat = mix_order(copies, seed=7)
    again = mix_order(copies, seed=7)
    assert np.array_equal(doc, again[0]) and np.array_equal(repeat, again[1])
    assert not np.array_equal(doc, mix_order(copies, seed=8)[0])
    assert np.bincount(doc, minlength=len(copies)).tolist() == copies.tolist()
    # a document's copy r sits in the r-th c-th of the stream, in order
    n = len(doc)
    for d in np.flatnonzero(copies > 1):
        at = np.flatnonzero(doc == d)
        assert repeat[at].tolist() == list(range(copies[d]))
        assert all(r * n / copies[d] - 1 <= p < (r + 1) * n / copies[d] + 1 for r, p in enumerate(at))


def test_groups_from_labels_alone_and_crossed():
    import pyarrow as pa

    assert quality_bucket(np.array([0.05, 0.2, 0.59, 0.99, np.nan]), [0.2, 0.4, 0.6, 0.8],
                          ["low", "ml", "m", "mh", "high"]).tolist() == ["low", "ml", "m", "high", "(none)"]
    table = pa.table({"topics": pa.array([["history", "x"], [], None], pa.list_(pa.string())),
                      "format": pa.array([["faq"], ["news_article"], ["faq"]], pa.list_(pa.string())),
                      "quality_prob": pa.array([0.9, 0.1, None], pa.float32())})
    assert group_labels(table, ["topic"], [0.5], ["lo", "hi"]).tolist() == ["history", "(none)", "(none)"]
    assert group_labels(table, ["topic", "quality_bucket"], [0.5], ["lo", "hi"]).tolist() == [
        "history/hi", "(none)/lo", "(none)/(none)"]
    assert group_labels(table, ["format", "topic"], [0.5], ["lo", "hi"]).tolist() == [
        "faq/history", "news_article/(none)", "faq/(none)"]


# ------------------------------------------------------------------------------------------------ the stage


def test_mix_writes_rows_manifest_and_card(corpus_run):
    run, tokenizer, rows = corpus_run
    target = 6_000
    summary = run_stages(mix_config(run, tokenizer, target_tokens=target, tokens_per_file=2_000), "mix",
                         quiet=True)["mix"]
    manifest = json.loads((run / "mix" / "_manifest.json").read_text())
    assert manifest["target_tokens"] == target and abs(manifest["tokens"] - target) <= 0.01 * target
    assert manifest["within_1pct"] and manifest["note"] is None
    table = pq.read_table(sorted((run / "mix").glob("part-*.parquet"))).to_pylist()
    assert len(manifest["files"]) >= 3 and len(table) == manifest["rows"]
    assert [r["position"] for r in table] == list(range(len(table)))
    # every row's count is the target tokenizer's, and the training tokens add up to the manifest's
    assert [r["n_tokens"] + 1 for r in table] == training_tokens(tokenizer, [r["text"] for r in table])
    assert sum(r["n_tokens"] + 1 for r in table) == manifest["tokens"]
    for entry in manifest["files"]:
        assert file_digest(run / "mix" / entry["file"]).hexdigest() == entry["sha256"]
        assert entry["tokens"] == sum(r["n_tokens"] + 1 for r in pq.read_table(run / "mix" / entry["file"]).to_pylist())
    by_id = {r["doc_id"]: r for r in rows}
    for row in table:
        assert row["group"] == by_id[row["doc_id"]]["topics"][0] and row["repeat"] == 0 and row["source"] == "corpus"
    # natural proportions, best first within each group
    groups = manifest["groups"]
    assert set(groups) == set(TOPICS)
    for name, group in groups.items():
        assert group["action"] == "cut" and group["share"] == pytest.approx(group["available"] / sum(
            g["available"] for g in groups.values()), abs=1e-6)
        # best first: every page above the cut is in, and below it only the few that filled the last gap
        members = [r for r in rows if r["topics"][0] == name]
        chosen = {r["doc_id"] for r in table}
        assert all(r["doc_id"] in chosen for r in members if r["quality_prob"] > group["cut_quality"])
        below = [r for r in members if r["doc_id"] in chosen and r["quality_prob"] < group["cut_quality"]]
        assert len(below) == group["gap_fillers"] <= 3
    # the seeded order is not the corpus order
    assert [r["doc_id"] for r in table] != [r["doc_id"] for r in rows if r["doc_id"] in {t["doc_id"] for t in table}]
    card = (run / "mix" / "README.md").read_text()
    assert "| group | documents | tokens before | share | wanted | tokens after |" in card
    assert "cut best first" in card and "tokens_per_group.svg" in card
    svg = (run / "mix" / "tokens_per_group.svg").read_text()
    assert svg.startswith("<svg") and all(name in svg for name in TOPICS)
    assert summary["mix"]["tokens"] == manifest["tokens"] and summary["mix_rewritten"]


def test_remixing_reuses_the_counts_and_weights_repeat_a_small_group(corpus_run, tmp_path):
    run, tokenizer, _ = corpus_run
    cfg = mix_config(run, tokenizer, target_tokens=6_000)
    run_stages(cfg, "mix", quiet=True)
    weights = tmp_path / "weights.yaml"
    weights.write_text("travel: 0.5\n")
    summary = run_stages(mix_config(run, tokenizer, target_tokens=20_000, weights=str(weights)), "mix",
                         quiet=True)["mix"]
    assert summary["shards_run"] == 0  # another budget and weights: nothing tokenized again
    travel = summary["mix"]["groups"]["travel"]
    assert travel["capped"] and travel["epochs"] == pytest.approx(4.0) and travel["shortfall"] > 0
    assert "repeat cap (4 epochs)" in travel["what_happened"] and "given to the others" in travel["what_happened"]
    others = [summary["mix"]["groups"][g] for g in ("history", "health")]
    assert all(g["received"] > 0 for g in others)
    assert abs(summary["mix"]["tokens"] - 20_000) <= 200
    table = pq.read_table(sorted((run / "mix").glob("part-*.parquet")), columns=["group", "repeat"]).to_pylist()
    assert {r["repeat"] for r in table if r["group"] == "travel"} == {0, 1, 2, 3}
    card = (run / "mix" / "README.md").read_text()
    assert "`travel` 0.5" in card and "given to the others" in card
    # default_weight 0: only the named group, repeated to the cap, and the budget missed with the reason
    summary = run_stages(mix_config(run, tokenizer, target_tokens=20_000, weights=str(weights), default_weight=0),
                         "mix", quiet=True)["mix"]
    assert set(g for g, v in summary["mix"]["groups"].items() if v["taken"]) == {"travel"}
    assert "not enough tokens even at the repeat cap" in summary["mix"]["note"]
    # the same settings again: mix/ is left as it is
    before = {p.name: p.stat().st_mtime_ns for p in (run / "mix").iterdir()}
    summary = run_stages(mix_config(run, tokenizer, target_tokens=20_000, weights=str(weights), default_weight=0),
                         "mix", quiet=True)["mix"]
    assert not summary["mix_rewritten"] and {p.name: p.stat().st_mtime_ns for p in (run / "mix").iterdir()} == before


def test_another_tokenizer_counts_again(corpus_run, tmp_path):
    run, tokenizer, _ = corpus_run
    other = tokenizer_copy(tokenizer, tmp_path / "other")
    config = json.loads((other / "tokenizer.json").read_text())
    config["added_tokens"].append({**config["added_tokens"][-1], "id": 99999, "content": "<|other|>"})
    (other / "tokenizer.json").write_text(json.dumps(config))
    summary = run_stages(mix_config(run, other, target_tokens=6_000), "mix", quiet=True)["mix"]
    assert summary["shards_run"] == 2
    summary = run_stages(mix_config(run, tokenizer, target_tokens=6_000), "mix", quiet=True)["mix"]
    assert summary["shards_run"] == 2


def test_the_same_inputs_give_byte_identical_mix_folders(tmp_path, tiny_model_dir):
    tokenizer = tokenizer_copy(tiny_model_dir, tmp_path / "tokenizer")
    outputs = []
    for name in ("one", "two"):
        write_corpus(tmp_path / name / "corpus", seed=5)
        run_stages(mix_config(tmp_path / name, tokenizer, target_tokens=9_000, tokens_per_file=3_000,
                              group_by=["topic", "quality_bucket"], seed=11), "mix", quiet=True)
        outputs.append({p.name: p.read_bytes() for p in sorted((tmp_path / name / "mix").iterdir())})
    assert outputs[0] == outputs[1] and len(outputs[0]) >= 5
    shutil.rmtree(tmp_path / "one" / "mix")  # made again from the stored counts: the same bytes
    run_stages(mix_config(tmp_path / "one", tokenizer, target_tokens=9_000, tokens_per_file=3_000,
                          group_by=["topic", "quality_bucket"], seed=11), "mix", quiet=True)
    assert {p.name: p.read_bytes() for p in sorted((tmp_path / "one" / "mix").iterdir())} == outputs[0]
    groups = json.loads(outputs[0]["_manifest.json"])["groups"]
    assert all("/" in name for name in groups)  # topic x quality bucket


def test_a_share_of_synthetic_rewrites(tmp_path, tiny_model_dir):
    tokenizer = tokenizer_copy(tiny_model_dir, tmp_path / "tokenizer")
    rows = write_corpus(tmp_path / "run" / "corpus")
    write_synthetic(tmp_path / "run" / "synthetic", rows, n=40)
    summary = run_stages(mix_config(tmp_path / "run", tokenizer, target_tokens=8_000, synthetic_share=0.25), "mix",
                         quiet=True)["mix"]["mix"]
    synthetic = sum(g["taken"] for name, g in summary["groups"].items() if name.startswith("synthetic:"))
    assert synthetic == pytest.approx(0.25 * summary["tokens"], rel=0.05)
    table = pq.read_table(sorted((tmp_path / "run" / "mix").glob("part-*.parquet"))).to_pylist()
    rewrites = [r for r in table if r["source"] == "synthetic"]
    assert rewrites and all(r["synthetic_id"] and r["group"].startswith("synthetic:") for r in rewrites)


def test_explain_says_whether_a_page_is_in_the_mix(corpus_run, tmp_path):
    from pipeline.explain import RunReader

    run, tokenizer, rows = corpus_run
    weights = tmp_path / "w.yaml"
    weights.write_text("travel: 0.5\n")
    run_stages(mix_config(run, tokenizer, target_tokens=20_000, weights=str(weights)), "mix", quiet=True)
    table = pq.read_table(sorted((run / "mix").glob("part-*.parquet"))).to_pylist()
    reader = RunReader(run)
    step = reader.explainers()["mix"]
    repeated = next(r["doc_id"] for r in table if r["repeat"] == 3)
    answer = step(repeated)
    assert answer.status == "sampled" and answer.facts["copies"] == 4 and answer.facts["group"] == "travel"
    assert "in the mix: group travel, 4 time(s)" in answer.summary and "repeat cap" in answer.summary
    left = next(r for r in rows if r["doc_id"] not in {t["doc_id"] for t in table} and r["topics"][0] == "history")
    answer = step(left["doc_id"])
    assert answer.status == "not_sampled" and answer.facts["group"] == "history"
    assert "not in the mix: its group history was cut best first" in answer.summary


# ------------------------------------------------------------------------------------------------ bad input


def _curate(capsys, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(args))
    return code, capsys.readouterr().err


def test_bad_input_gets_one_message_and_exit_2(corpus_run, tmp_path, capsys):
    run, tokenizer, _ = corpus_run
    base = ["mix", "--out", str(run), "--set", "ray.executor=local", "--set", f"mix.tokenizer={tokenizer}"]
    weights = tmp_path / "weights.yaml"
    weights.write_text("history: 1\nsports: 2\n")
    code, err = _curate(capsys, *base, "--target-tokens", "1000", "--weights", str(weights))
    assert code == 2 and "names 1 group(s) the corpus does not have: sports" in err
    assert "Its groups are: health, history, travel" in err and "Traceback" not in err
    weights.write_text("history: -1\n")
    code, err = _curate(capsys, *base, "--target-tokens", "1000", "--weights", str(weights))
    assert code == 2 and "a weight is 0 or more" in err
    code, err = _curate(capsys, *base, "--target-tokens", "0")
    assert code == 2 and "mix.target_tokens: the budget must be at least 1 token" in err
    code, err = _curate(capsys, "mix", "--out", str(run), "--set", f"mix.tokenizer={tokenizer}")
    assert code == 2 and "no budget: give --target-tokens N" in err
    (tmp_path / "empty").mkdir()
    code, err = _curate(capsys, *base, "--target-tokens", "1000", "--set", f"mix.tokenizer={tmp_path / 'empty'}")
    assert code == 2 and "is a folder without tokenizer.json: not a tokenizer" in err
    (tmp_path / "tokenizer.json").write_text("{not json")
    code, err = _curate(capsys, *base, "--target-tokens", "1000", "--set",
                        f"mix.tokenizer={tmp_path / 'tokenizer.json'}")
    assert code == 2 and "is not a tokenizer" in err
    code, err = _curate(capsys, *base, "--target-tokens", "1000", "--set", f"mix.tokenizer={tmp_path / 'nowhere'}")
    assert code == 2 and "does not exist" in err
    # a corpus without the labels the grouping needs: the stage that writes them is named
    unlabelled = tmp_path / "unlabelled"
    write_corpus(unlabelled / "corpus", with_topics=False)
    code, err = _curate(capsys, "mix", "--out", str(unlabelled), "--set", "ray.executor=local", "--set",
                        f"mix.tokenizer={tokenizer}", "--target-tokens", "1000")
    assert code == 2 and "mix.group_by needs 'topics'" in err and "curate distil" in err and "curate classify" in err
    code, err = _curate(capsys, *base, "--target-tokens", "1000", "--set", "mix.synthetic_share=0.2")
    assert code == 2 and "no rewrites in" in err and "curate rewrite" in err
    code, err = _curate(capsys, "mix", "--out", str(tmp_path / "nothing"), "--set", f"mix.tokenizer={tokenizer}",
                        "--target-tokens", "1000")
    assert code == 2 and "no corpus in" in err and "curate classify" in err
    assert not (tmp_path / "nothing" / "mix").exists()


def test_curate_run_mixes_and_tokenizes_only_with_a_budget():
    from pipeline.stages import pipeline_order, wanted

    order = pipeline_order()
    assert order.index("classify") < order.index("mix") < order.index("tokenize")
    assert order.index("rewrite") < order.index("mix")  # a mix may take a share of the rewrites
    assert "mix" not in wanted(RunConfig()) and "tokenize" not in wanted(RunConfig())
    cfg = RunConfig().updated(**{"mix.target_tokens": 1000})
    assert [name for name in wanted(cfg) if name in ("mix", "tokenize")] == ["mix", "tokenize"]
