"""Extract on the bundled real WARC files: counts, conservation, charsets, resume."""

from __future__ import annotations

from collections import Counter

import pyarrow.parquet as pq

from pipeline import schemas
from pipeline.config import load_config
from pipeline.io import RunLayout, read_dataset
from pipeline.report import build_report
from stagehelpers import extract_run


def _run(tmp_path, warcs, *overrides):
    cfg = load_config(None, [f"out={tmp_path}", f"input.warcs={warcs!r}".replace("'", '"'), *overrides])
    extract_run(cfg, quiet=True)
    return cfg, RunLayout(tmp_path)


def test_sample_every_record_accounted_and_conserved(tmp_path, ray_local, sample_warcs):
    _cfg, layout = _run(tmp_path, sample_warcs)
    report = build_report(layout)
    stage, rules = report["stages"]["extract"], report["stages"]["rules"]
    assert report["conserved"] and stage["conserved"] and rules["conserved"]
    extracted = read_dataset(layout.dataset("extracted"), schemas.EXTRACTED)
    decisions = read_dataset(layout.decisions("extract"), schemas.DECISIONS)
    assert stage["kept"] == extracted.num_rows > 80
    assert stage["input"] == extracted.num_rows + decisions.num_rows
    ids = extracted.column("doc_id").to_pylist() + decisions.column("doc_id").to_pylist()
    assert len(ids) == len(set(ids)), "doc_id must be unique per record"
    reasons = Counter(decisions.column("reason").to_pylist())
    # request/metadata/revisit records and non-200 responses are dropped with their reason
    assert reasons["warc_request"] > 0 and reasons["warc_revisit"] >= 1 and reasons["http_not_200"] > 0
    # the rules stage reads every extracted page: kept ones in docs/, the others with their rule's reason
    docs = read_dataset(layout.dataset("docs"), schemas.DOCS)
    dropped = read_dataset(layout.decisions("rules"), schemas.DECISIONS)
    assert rules["input"] == extracted.num_rows and rules["kept"] == docs.num_rows > 40
    assert sorted(docs.column("doc_id").to_pylist() + dropped.column("doc_id").to_pylist()) == sorted(
        extracted.column("doc_id").to_pylist())
    assert {r.split("_")[0] for r in dropped.column("reason").to_pylist()} <= {"gopher", "c4", "fineweb"}
    # the schemas on disk are the declared ones
    assert pq.read_schema(next(layout.dataset("docs").glob("*.parquet"))).equals(schemas.DOCS, check_metadata=False)
    assert pq.read_schema(next(layout.dataset("extracted").glob("*.parquet"))).equals(schemas.EXTRACTED,
                                                                                       check_metadata=False)


def test_clueweb_euc_jp_is_readable_japanese(tmp_path, ray_local, sample_warcs):
    clueweb = [w for w in sample_warcs if "clueweb" in w]
    _, layout = _run(tmp_path, clueweb)
    docs = read_dataset(layout.dataset("docs"), schemas.DOCS).to_pylist()
    assert len(docs) == 29
    assert all(d["language"] == "ja" for d in docs)
    assert "ブリーフケース" in docs[0]["text"]
    assert all("\ufffd" not in d["text"] for d in docs)


def test_wget_wrapped_target_uri_is_unwrapped(tmp_path, ray_local, sample_warcs):
    _, layout = _run(tmp_path, [w for w in sample_warcs if "sample-0000" in w])
    urls = read_dataset(layout.dataset("docs"), schemas.DOCS).column("url").to_pylist()
    assert urls and all(u.startswith("http") and not u.startswith("<") for u in urls)


def test_rerun_skips_and_half_finished_redoes_only_missing(tmp_path, ray_local, sample_warcs):
    cfg, layout = _run(tmp_path, sample_warcs)
    first = read_dataset(layout.dataset("docs"), schemas.DOCS).sort_by("doc_id")
    # simulate a crash: the stage marker and one shard's marker are gone, a stray temp file is left
    layout.stage_marker("extract").unlink()
    victim = sorted(layout.state("extract").glob("*.json"))[0]
    victim.unlink()
    untouched = sorted(layout.state("extract").glob("*.json"))[1]
    mtime = untouched.stat().st_mtime_ns
    extract_run(cfg, quiet=True)
    assert victim.exists() and untouched.stat().st_mtime_ns == mtime
    second = read_dataset(layout.dataset("docs"), schemas.DOCS).sort_by("doc_id")
    assert second.column("doc_id").to_pylist() == first.column("doc_id").to_pylist()
    assert build_report(layout)["conserved"]


def test_other_settings_in_the_same_folder_are_refused_naming_the_change(tmp_path, ray_local, sample_warcs):
    import pytest

    from pipeline.io import SettingsChanged

    _cfg, layout = _run(tmp_path, sample_warcs[:2])
    docs = {p.name: p.stat().st_mtime_ns for p in layout.dataset("docs").iterdir()}
    # retries and Ray settings do not change docs/: the finished stage is still skipped
    assert extract_run(load_config(None, [f"out={tmp_path}", f"input.warcs={sample_warcs[:2]!r}".replace("'", '"'),
                                          "input.retries=9", "ray.max_in_flight=1"]), quiet=True) == {"skipped": True}
    # more input files, or another extraction setting, would mix two different runs in one docs/
    with pytest.raises(SettingsChanged, match=r"extract: .* other settings \(input\.warcs: .*Use another --out"):
        _run(tmp_path, sample_warcs[:3])
    with pytest.raises(SettingsChanged, match=r"extract\.favor_precision: True -> False"):
        _run(tmp_path, sample_warcs[:2], "extract.favor_precision=false")
    assert {p.name: p.stat().st_mtime_ns for p in layout.dataset("docs").iterdir()} == docs
