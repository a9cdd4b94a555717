"""Dedup on real extracted pages and small inline documents: exact, URL and near duplicates, repeated lines,
distributed connected components, determinism across partitions/workers, resume, CLI."""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
from collections import Counter
from itertools import pairwise
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline import dedup, schemas
from pipeline.config import DedupConfig, RayConfig, load_config
from pipeline.dedup.components import EDGES, connected_components, star_labels, write_undirected
from pipeline.dedup.evaluate import load_texts
from pipeline.dedup.keys import MinHasher, compact_signature, estimated_jaccard, normalise_url, true_jaccard
from pipeline.dedup.shuffle import WorkArea
from pipeline.io import RunLayout, read_dataset, write_parquet
from pipeline.report import build_report
from pipeline.runtime.executor import RayExecutor
from stagehelpers import dedup_run, extract_run

ROOT = Path(__file__).resolve().parents[1]
NEAR_DUPLICATES = ROOT / "data" / "near-duplicates"
SAMPLE_WARCS = ROOT / "data" / "sample" / "warc"


def _dedup(out: Path, docs_dir: Path | None = None, *overrides: str):
    cfg = load_config(None, [f"out={out}", "dedup.num_partitions=3", *overrides])
    summary = dedup_run(cfg, docs_dir=docs_dir, quiet=True)
    layout = RunLayout(out)
    unique = read_dataset(layout.dataset("unique"), schemas.UNIQUE)
    decisions = read_dataset(layout.decisions("dedup"), schemas.DECISIONS)
    return summary, unique.to_pylist(), decisions.to_pylist()


def _write_docs(folder: Path, rows: list[dict], name: str = "part-00000") -> None:
    full = [{"language": "en", "n_chars": len(r["text"]), "rule_failures": [], **r} for r in rows]
    write_parquet(schemas.from_rows(full, schemas.DOCS), folder / f"{name}.parquet", schemas.DOCS)


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


@pytest.fixture(scope="module")
def extracted(tmp_path_factory, ray_local):
    """The real extract stage over the ClueWeb WARC and dolma's sample-0001 (English rules off, so dolma's
    duplicate allenai.org pages survive extraction; the Japanese pages are kept either way)."""
    out = tmp_path_factory.mktemp("extracted")
    warcs = [str(SAMPLE_WARCS / "clueweb-quirk.warc.gz"), str(SAMPLE_WARCS / "sample-0001.warc.gz")]
    cfg = load_config(None, [f"out={out}", f"input.warcs={warcs!r}".replace("'", '"'), "extract.rules.enabled=false"])
    extract_run(cfg, quiet=True)
    return out


@pytest.fixture
def run_copy(tmp_path, extracted):
    """A fresh run root holding a copy of the extracted run (docs/, extract decisions and markers)."""
    out = tmp_path / "run"
    shutil.copytree(extracted, out)
    return out


# ---- MinHash ------------------------------------------------------------------------------------------------


def test_minhash_estimates_jaccard_and_is_deterministic():
    rng = random.Random(7)
    words = [f"w{rng.randrange(3000)}" for _ in range(600)]
    hasher, again = MinHasher(seed=1), MinHasher(seed=1)
    errors = []
    for rate in (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4):
        edited = [w if rng.random() >= rate else f"x{rng.randrange(10**6)}" for w in words]
        a, b = " ".join(words), " ".join(edited)
        sig_a, sig_b = hasher.text_signature(a), hasher.text_signature(b)
        assert (sig_a == again.text_signature(a)).all()  # same parameters in every worker
        estimate = estimated_jaccard(compact_signature(sig_a), compact_signature(sig_b))
        errors.append(abs(estimate - true_jaccard(a, b, 5)))
    assert max(errors) < 0.12 and sum(errors) / len(errors) < 0.05
    assert hasher.text_signature("four words only here") is None  # shorter than one 5-gram
    assert len(hasher.band_digests(hasher.text_signature(" ".join(words)))) == 14


def test_url_normalisation():
    assert normalise_url("HTTP://Example.COM:80#top") == "http://example.com/"
    assert normalise_url("https://example.com:443/a?b=1#x") == "https://example.com/a?b=1"
    assert normalise_url("https://example.com:8443/a") == "https://example.com:8443/a"
    assert normalise_url("not a url") is None and normalise_url(None) is None


# ---- distributed connected components -------------------------------------------------------------------------


def _union_find(pairs: list[tuple[str, str]]) -> dict[str, str]:
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {node: find(node) for node in list(parent)}


def test_components_on_ray_match_union_find(tmp_path, ray_local):
    rng = random.Random(3)
    # a long path in shuffled order (the slow case for label propagation), plus random sparse components
    path = [f"p{i:04d}" for i in range(200)]
    rng.shuffle(path)
    pairs = list(pairwise(path))
    nodes = [f"n{i:04d}" for i in range(300)]
    pairs += [(rng.choice(nodes), rng.choice(nodes)) for _ in range(250)]
    pairs = [(a, b) for a, b in pairs if a != b]
    partitions = 4
    work = WorkArea(tmp_path / "work")
    for task in range(3):  # edges arrive from several writers, as from the group step
        chunk = pairs[task::3]
        write_undirected(work, "edges", f"{task:05d}", *(pa.array(side) for side in zip(*chunk)),
                         partitions)

    def run_tasks(fn, items, *args):
        return RayExecutor(RayConfig(max_in_flight=4)).map(fn, items, *args, label="cc", quiet=True)

    final, rounds = connected_components(work, "edges", partitions, run_tasks)
    assert rounds >= 1
    labels = {}
    sizes = {}
    for partition in range(partitions):
        table = star_labels(work.read_partition(final, partition, EDGES)).to_pylist()
        for row in table:
            assert row["node"] not in labels
            labels[row["node"]] = row["root"]
            if row["size"] is not None:
                sizes[row["node"]] = row["size"]
    expected = _union_find(pairs)
    assert labels == expected
    assert labels[path[0]] == "p0000" and sizes["p0000"] == 200
    assert sizes == dict(Counter(expected.values()))


# ---- real pages -----------------------------------------------------------------------------------------------


def test_clueweb_shop_pages(run_copy):
    """29 pages of one shop: 8 have identical text (the ranking page), two pairs are the same product under
    two URLs; the shop's boilerplate lines are repeated everywhere and removed."""
    docs = [d for d in read_dataset(run_copy / "docs", schemas.DOCS).to_pylist()
            if "clueweb" in Path(d["warc_path"]).name]
    assert len(docs) == 29
    by_text = Counter(_norm(d["text"]) for d in docs)
    assert sorted(by_text.values())[-1] == 8 and len(by_text) == 22
    _summary, unique, decisions = _dedup(run_copy)
    clueweb_decisions = [r for r in decisions if "clueweb" in Path(r["source"]).name]
    reasons = Counter(r["reason"] for r in clueweb_decisions)
    assert reasons["exact_duplicate"] == 7
    by_id = {d["doc_id"]: d for d in docs}
    identical = [d for d in docs if by_text[_norm(d["text"])] == 8]
    survivor = min(identical, key=lambda d: (d["crawl_date"], d["doc_id"]))
    for row in clueweb_decisions:
        if row["reason"] == "exact_duplicate":
            assert row["duplicate_of"] == survivor["doc_id"]
    near = [r for r in clueweb_decisions if r["reason"] == "near_duplicate"]
    assert len(near) == 2
    for row in near:
        assert true_jaccard(by_id[row["doc_id"]]["text"], by_id[row["duplicate_of"]]["text"], 5) > 0.9
    # the ranking page is nothing but boilerplate: once its repeated lines go, too little is left
    assert reasons["too_short_after_line_dedup"] == 1
    too_short = [r["doc_id"] for r in clueweb_decisions if r["reason"] == "too_short_after_line_dedup"]
    assert too_short == [survivor["doc_id"]]
    kept = [u for u in unique if "clueweb" in Path(u["warc_path"]).name]
    assert len(kept) == 29 - 7 - 2 - 1 and all(u["lines_removed"] > 0 for u in kept)
    ranked_item = "レッスン ブロックチェック柄 キーケース（初）"  # a line of the shop-wide ranking block
    assert all(ranked_item in d["text"] for d in docs) and not any(ranked_item in u["text"] for u in kept)
    assert build_report(RunLayout(run_copy))["conserved"]


def test_dolma_exact_duplicates_collapse(run_copy):
    docs = [d for d in read_dataset(run_copy / "docs", schemas.DOCS).to_pylist()
            if "sample-0001" in Path(d["warc_path"]).name]
    allenai = [d for d in docs if d["url"] == "https://allenai.org/"]
    assert len(allenai) == 3 and len({_norm(d["text"]) for d in allenai}) == 1  # three pairs, one text
    _, unique, decisions = _dedup(run_copy)
    dolma = [r for r in decisions if "sample-0001" in Path(r["source"]).name]
    dropped = [r for r in dolma if r["reason"] == "exact_duplicate"]
    first = min(allenai, key=lambda d: (d["crawl_date"], d["doc_id"]))
    assert sorted(r["doc_id"] for r in dropped) == sorted(d["doc_id"] for d in allenai if d is not first)
    assert {r["duplicate_of"] for r in dropped} == {first["doc_id"]}
    survivor = next(u for u in unique if u["doc_id"] == first["doc_id"])
    assert survivor["dup_cluster_id"] == first["doc_id"] and survivor["dup_cluster_size"] == 3
    assert len([u for u in unique if "sample-0001" in Path(u["warc_path"]).name]) + len(dolma) == len(docs) == 15


def test_licence_near_duplicates(tmp_path, ray_local):
    texts = {p.stem: p.read_text() for p in NEAR_DUPLICATES.glob("*.txt")}
    rows = [{"doc_id": name, "url": f"https://example.org/{name}", "crawl_date": "2024-01-01T00:00:00Z", "text": text}
            for name, text in sorted(texts.items())]
    _write_docs(tmp_path / "docs", rows)
    _, unique, decisions = _dedup(tmp_path / "out", tmp_path / "docs", "dedup.line=false")
    assert [(r["doc_id"], r["reason"], r["duplicate_of"]) for r in decisions] == [
        ("react_mit_license", "near_duplicate", "rails_mit_license")]
    assert sorted(u["doc_id"] for u in unique) == ["pytorch_license", "rails_mit_license"]
    rails = next(u for u in unique if u["doc_id"] == "rails_mit_license")
    assert rails["dup_cluster_size"] == 2


def test_url_duplicates_and_survivor_rule(tmp_path, ray_local):
    body = "A page about {} with enough words in it to be a page of its own, number {}."
    rows = [
        {"doc_id": "b", "url": "https://Example.org/a#top", "crawl_date": "2024-03-01T00:00:00Z",
         "text": body.format("cats", 1)},
        {"doc_id": "a", "url": "https://example.org:443/a", "crawl_date": "2024-03-02T00:00:00Z",
         "text": body.format("dogs", 2)},
        {"doc_id": "c", "url": "https://example.org/c", "crawl_date": None, "text": body.format("cats", 1).upper()},
    ]
    _write_docs(tmp_path / "docs", rows)
    _, unique, decisions = _dedup(tmp_path / "out", tmp_path / "docs", "dedup.line=false")
    # "b" is the earliest: "a" is the same URL, "c" (undated, so never first) the same text up to case
    assert {(r["doc_id"], r["reason"], r["duplicate_of"]) for r in decisions} == {
        ("a", "url_duplicate", "b"), ("c", "exact_duplicate", "b")}
    assert [(u["doc_id"], u["dup_cluster_size"]) for u in unique] == [("b", 3)]


def test_repeated_lines_removed_and_short_docs_dropped(tmp_path, ray_local):
    boiler = "Subscribe to our newsletter for weekly updates"
    rare = "This line is shared by exactly six documents"
    articles = load_texts(ROOT / "data" / "dedup-texts" / "articles.jsonl")[:8]
    rows = []
    for i, article in enumerate(articles):
        lines = [boiler, article["text"]] + ([rare] if i < 6 else [])
        rows.append({"doc_id": f"d{i}", "url": f"https://example.org/{i}", "crawl_date": "2024-01-01T00:00:00Z",
                     "text": "\n".join(lines)})
    rows.append({"doc_id": "short", "url": "https://example.org/s", "crawl_date": "2024-01-01T00:00:00Z",
                 "text": f"{boiler}\nOnly a little own text."})
    rows.append({"doc_id": "tiny", "url": "https://example.org/t", "crawl_date": "2024-01-01T00:00:00Z",
                 "text": "Short but untouched."})
    _write_docs(tmp_path / "docs", rows)
    _, unique, decisions = _dedup(tmp_path / "out", tmp_path / "docs", "dedup.max_line_repeats=6",
                                  "dedup.min_chars_after_line_dedup=100")
    assert [(r["doc_id"], r["reason"]) for r in decisions] == [("short", "too_short_after_line_dedup")]
    assert "1 repeated line(s) removed" in decisions[0]["detail"]
    kept = {u["doc_id"]: u for u in unique}
    assert set(kept) == {f"d{i}" for i in range(8)} | {"tiny"}
    for i in range(8):
        assert boiler not in kept[f"d{i}"]["text"] and kept[f"d{i}"]["lines_removed"] == 1
        assert (rare in kept[f"d{i}"]["text"]) == (i < 6)  # six occurrences is not more than six
        assert kept[f"d{i}"]["n_chars"] == len(kept[f"d{i}"]["text"])
    assert kept["tiny"]["lines_removed"] == 0  # short already, nothing removed: not dropped


# ---- determinism, resume, CLI -----------------------------------------------------------------------------------


def _snapshot(out: Path) -> tuple[list, list]:
    layout = RunLayout(out)
    unique = read_dataset(layout.dataset("unique"), schemas.UNIQUE).sort_by("doc_id").to_pylist()
    decisions = read_dataset(layout.decisions("dedup"), schemas.DECISIONS).sort_by("doc_id").to_pylist()
    return unique, decisions


def test_same_output_with_one_or_many_partitions_and_workers_and_on_resume(tmp_path, extracted):
    outs = {}
    runs = {"one": ["dedup.num_partitions=1", "ray.max_in_flight=1"],
            "many": ["dedup.num_partitions=7", "ray.max_in_flight=4", "dedup.shards_per_task=2"]}
    for name, overrides in runs.items():
        out = tmp_path / name
        shutil.copytree(extracted, out)
        cfg = load_config(None, [f"out={out}", *overrides])
        dedup_run(cfg, quiet=True)
        outs[name] = (out, cfg)
    one, many = _snapshot(outs["one"][0]), _snapshot(outs["many"][0])
    assert one == many and len(one[1]) > 10
    out, cfg = outs["many"]
    layout = RunLayout(out)
    assert not (out / "_work").exists() or not any((out / "_work").iterdir())
    # rerun of a complete stage: skipped, nothing rewritten
    assert dedup_run(cfg, quiet=True) == {"skipped": True}
    # a crash after some shards were written: stage marker, one shard's marker and output are gone
    layout.stage_marker("dedup").unlink()
    victim = sorted(p for p in layout.state("dedup").glob("*.json") if not p.name.startswith("_"))[0]
    victim.unlink()
    (layout.dataset("unique") / f"{victim.stem}.parquet").unlink()
    untouched = sorted(layout.dataset("unique").glob("*.parquet"))[0]
    mtime = untouched.stat().st_mtime_ns
    dedup_run(cfg, quiet=True)
    assert victim.exists() and untouched.stat().st_mtime_ns == mtime
    assert _snapshot(out) == many
    report = build_report(layout)
    assert report["conserved"] and report["stages"]["dedup"]["input"] == report["stages"]["extract"]["kept"]


def _task_folders(out: Path, step: str) -> list[str]:
    return sorted(p.name for p in (out / "_work" / "dedup" / step).iterdir() if p.is_dir() and p.name != "_done")


def _routed_to(out: Path, step: str) -> set[str]:
    return {p.name for p in (out / "_work" / "dedup" / step).glob("*/to-*.parquet")}


def test_same_output_whatever_shards_per_task_and_no_stale_scratch(tmp_path, extracted):
    """The extracted pages dealt round-robin into 7 shards (copies of a page land in different groups), deduplicated
    with 1, 3 and 10 shards per task: same output, fewer writers, labels and repeated lines routed to groups."""
    docs = read_dataset(extracted / "docs", schemas.DOCS)
    for shard in range(7):
        write_parquet(docs.take(list(range(shard, docs.num_rows, 7))), tmp_path / "docs" / f"part-{shard:05d}.parquet",
                      schemas.DOCS)
    runs = {}
    for per_task in (1, 3, 10):
        out = tmp_path / f"k{per_task}"
        summary, _, _ = _dedup(out, tmp_path / "docs", "dedup.keep_work=true", f"dedup.shards_per_task={per_task}")
        runs[per_task] = (out, summary, _snapshot(out))
    unique, decisions = runs[1][2]
    assert {r["reason"] for r in decisions} >= {"exact_duplicate", "near_duplicate", "too_short_after_line_dedup"}
    assert any(u["lines_removed"] for u in unique)
    for per_task, (out, summary, snapshot) in runs.items():
        groups = -(-7 // per_task)
        assert snapshot == runs[1][2], per_task
        assert summary["key_records"] == runs[1][1]["key_records"] and summary["sign_tasks"] == groups
        assert _task_folders(out, "sign") == _task_folders(out, "lines") == [f"{g:06d}" for g in range(groups)]
        for step in ("labels", "repeated"):
            assert _routed_to(out, step) and _routed_to(out, step) <= {f"to-{g:05d}.parquet" for g in range(groups)}
    out = runs[3][0]
    layout = RunLayout(out)

    def crash() -> None:  # every output shard, its marker and the stage marker gone; scratch files kept
        layout.stage_marker("dedup").unlink()
        for marker in layout.state("dedup").glob("*.json"):
            marker.unlink()
            (layout.dataset("unique") / f"{marker.stem}.parquet").unlink()

    # same config: the finished sign tasks are reused, not rewritten
    crash()
    signed = {p: p.stat().st_mtime_ns for p in (out / "_work" / "dedup" / "sign").rglob("*") if p.is_file()}
    dedup_run(load_config(None, [f"out={out}", "dedup.num_partitions=3", "dedup.keep_work=true",
                                 "dedup.shards_per_task=3"]), docs_dir=tmp_path / "docs", quiet=True)
    assert {p: p.stat().st_mtime_ns for p in signed} == signed and _snapshot(out) == runs[1][2]
    # another shards_per_task: the old scratch files are discarded, not mixed with the new groups
    crash()
    summary, _, _ = _dedup(out, tmp_path / "docs", "dedup.keep_work=true", "dedup.shards_per_task=2")
    assert _task_folders(out, "sign") == [f"{g:06d}" for g in range(4)]
    assert summary["key_records"] == runs[1][1]["key_records"] and _snapshot(out) == runs[1][2]


def test_cli_and_clear_errors(tmp_path, ray_local, capsys):
    from pipeline.cli import main

    rows = [{"doc_id": f"d{i}", "url": "https://example.org/same", "crawl_date": f"2024-01-0{i + 1}",
             "text": f"text {i}"} for i in range(3)]
    _write_docs(tmp_path / "docs", rows)
    assert main(["dedup", "--docs", str(tmp_path / "docs"), "--out", str(tmp_path / "out"),
                 "--set", "dedup.num_partitions=2"]) == 0
    printed = capsys.readouterr().out
    assert "url_duplicate" in printed and "conservation dedup: 3 in = 1 kept + 2 dropped" in printed
    # a second main() in this process would register the optional commands twice: use a fresh process
    failed = subprocess.run([sys.executable, "-m", "pipeline.cli", "dedup", "--docs", str(tmp_path / "nowhere"),
                             "--out", str(tmp_path / "out2")], capture_output=True, text=True, cwd=ROOT)
    assert failed.returncode == 2 and f"docs folder {tmp_path / 'nowhere'} does not exist" in failed.stderr
    bad = tmp_path / "bad"
    write_parquet(pa.table({"doc_id": ["x"]}), bad / "part-0.parquet", pa.schema([("doc_id", pa.string())]))
    with pytest.raises(dedup.DedupInputError, match=r"part-0.parquet is not a docs shard: missing column\(s\) url"):
        dedup_run(load_config(None, [f"out={tmp_path / 'out3'}"]), docs_dir=bad, quiet=True)


def test_config_names_bad_field():
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match="dedup.verify_threshold"):
        load_config(None, ["dedup.verify_threshold=1.5"])
    assert DedupConfig().num_bands * DedupConfig().rows_per_band == 112


def test_other_dedup_settings_in_the_same_folder_are_refused(run_copy):
    from pipeline.io import SettingsChanged

    _dedup(run_copy)
    # how the work is split does not change unique/: the finished stage is skipped
    assert dedup_run(load_config(None, [f"out={run_copy}", "dedup.num_partitions=5", "dedup.shards_per_task=2"]),
                     quiet=True) == {"skipped": True}
    with pytest.raises(SettingsChanged, match=r"dedup\.ngram: 5 -> 3"):
        _dedup(run_copy, None, "dedup.ngram=3")
