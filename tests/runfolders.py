"""Helpers for runs whose folder is on object storage (moto's S3 server on loopback): the config of the run
that tests repeat there, reading back a run's datasets, listing the bucket."""

from __future__ import annotations

from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.config import RunConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "runs"
# `curate run` with a given classifier and no rewriting or mix: every dataset it writes, and its stages
DATASETS = ["extracted", "docs", "unique", "safe", "scores", "corpus"]
STAGES = ["extract", "rules", "dedup", "safety", "classify-score", "classify"]


def run_config(out: str, classifier: Path | str, cache: Path, options: dict | None = None,
               overrides: list[str] = ()) -> RunConfig:
    """The demo config (its sample, blocklist, PII and eval set) with a given classifier, no rewriting, no mix."""
    cfg = load_config(ROOT / "jobs/configs/demo.yaml", [f"out={out}", f"classify.classifier={classifier}",
                                                         "rewrite.enabled=false", "mix.target_tokens=null",
                                                         f"storage.cache_dir={cache}", *overrides])
    if options:
        cfg = cfg.updated(**{"storage.options": options})
    # the demo's relative paths, absolute: commands and jobs run from other folders
    return cfg.updated(**{"input.warcs": [str(ROOT / w) for w in cfg.input.warcs],
                          "filters.url_blocklist": [str(ROOT / p) for p in cfg.filters.url_blocklist],
                          "decontam.eval_sets": [str(ROOT / p) for p in cfg.decontam.eval_sets]})


def s3_client(server):
    return boto3.client("s3", endpoint_url=server.endpoint_url, aws_access_key_id="x", aws_secret_access_key="x",
                        region_name="us-east-1")


def keys(client, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


def tables(root: Path, folder: str, named: str | None = None) -> pa.Table | None:
    """A folder's Parquet files as one table sorted by doc_id, with the run folder's own name (`named`: its URL,
    or its path) replaced by `RUN` in the text columns that name files (decisions' source and detail)."""
    files = sorted((root / folder).glob("*.parquet"))
    if not files:
        return None
    table = pa.concat_tables([pq.read_table(f) for f in files])
    for name in ("source", "detail"):
        if name in table.column_names:
            column = pc.replace_substring(table.column(name), named or str(root), "RUN")
            table = table.set_column(table.schema.get_field_index(name), name, column)
    key = "doc_id" if "doc_id" in table.column_names else table.column_names[0]
    return table.sort_by(key)


def assert_same_run(ours: Path, url: str, reference: Path) -> None:
    """Every dataset and every stage's decisions of the run in `ours` (the local copy of `url`) equal those of
    the local run in `reference`, row for row, and no document is there twice."""
    for folder in DATASETS + [f"decisions/{stage}" for stage in STAGES]:
        mine, theirs = tables(ours, folder, url), tables(reference, folder)
        assert (mine is None) == (theirs is None), folder
        if mine is not None:
            assert mine.equals(theirs), folder
            if "doc_id" in mine.column_names and not folder.startswith("decisions"):
                assert len(set(mine["doc_id"].to_pylist())) == mine.num_rows, folder
