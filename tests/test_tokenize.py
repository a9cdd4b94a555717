"""`curate tokenize`: the mix as token shards that the format's own reader loads (datatrove's
DatatroveFolderDataset; Megatron-Core's IndexedDataset when it is installed), every document followed by the
end-of-document token, the document index tracing any window back to its page, the total equal to the mix
manifest's, conserved and resumable on the runtime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer

from pipeline.cli import main
from pipeline.io import RunLayout, file_digest
from pipeline.mix.tokenize import trace_window
from pipeline.run import run_stages
from test_mix import mix_config, tokenizer_copy, write_corpus

SEQ_LEN = 63


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory, tiny_model_dir):
    """A run mixed (two topics repeated, one cut) and tokenized in the datatrove format: (run, tokenizer folder)."""
    root = tmp_path_factory.mktemp("tokenize")
    tokenizer = tokenizer_copy(tiny_model_dir, root / "tokenizer")
    write_corpus(root / "run" / "corpus", seed=2)
    weights = root / "weights.yaml"
    weights.write_text("travel: 0.3\n")
    cfg = mix_config(root / "run", tokenizer, target_tokens=12_000, tokens_per_file=4_000, weights=str(weights))
    run_stages(cfg, "mix", "tokenize", quiet=True)
    return root / "run", tokenizer


def expected_stream(run: Path, tokenizer: Path, eos: int) -> list[list[int]]:
    """Per mix/ file, its documents' ids each followed by `eos`, tokenized here, in mix order."""
    tok = Tokenizer.from_file(str(tokenizer / "tokenizer.json"))
    streams = []
    for path in sorted((run / "mix").glob("part-*.parquet")):
        texts = pq.read_table(path, columns=["text"]).column(0).to_pylist()
        streams.append([i for e in tok.encode_batch(texts, add_special_tokens=False) for i in [*e.ids, eos]])
    return streams


def test_datatrove_reads_the_mix_as_token_windows(tokenized):
    from datatrove.utils.dataset import DatatroveFolderDataset

    run, tokenizer = tokenized
    manifest = json.loads((run / "tokens" / "_manifest.json").read_text())
    mix = json.loads((run / "mix" / "_manifest.json").read_text())
    assert manifest["tokens"] == mix["tokens"] and manifest["documents"] == mix["rows"]
    assert manifest["format"] == "datatrove" and manifest["dtype"] == "uint16" and manifest["token_size"] == 2
    eos = manifest["eos"]["id"]
    assert manifest["eos"]["token"] == "<|end_of_text|>"
    assert eos == Tokenizer.from_file(str(tokenizer / "tokenizer.json")).token_to_id("<|end_of_text|>")
    streams = expected_stream(run, tokenizer, eos)
    assert [f["tokens"] for f in manifest["files"]] == [len(s) for s in streams] and len(streams) >= 3
    for dataset in (
        DatatroveFolderDataset(str(run / "tokens"), seq_len=SEQ_LEN, filename_pattern="**/*.ds", token_size=2,
                               return_positions=True),
        DatatroveFolderDataset(str(run / "tokens"), seq_len=SEQ_LEN, token_size=2, return_positions=True,
                               paths_file=str(run / "tokens" / "datatrove_paths.json")),
    ):
        windows = [dataset[i] for i in range(len(dataset))]
        assert len(dataset) == sum(len(s) // (SEQ_LEN + 1) for s in streams)
        at = 0
        for stream in streams:  # each file is read in windows of seq_len + 1, its rest left out
            n = len(stream) // (SEQ_LEN + 1)
            got = [int(t) for w in windows[at:at + n] for t in w["input_ids"]]
            assert got == stream[: n * (SEQ_LEN + 1)]
            # positions (from the .ds.index) restart right after every end-of-document token
            for w in windows[at:at + n]:
                ids, positions = w["input_ids"].tolist(), w["positions"].tolist()
                for k in range(1, len(ids)):
                    assert (positions[k] == 0) == (ids[k - 1] == eos)
            at += n


def test_every_window_traces_back_to_its_pages(tokenized):
    from datatrove.utils.dataset import DatatroveFolderDataset

    run, tokenizer = tokenized
    dataset = DatatroveFolderDataset(str(run / "tokens"), seq_len=SEQ_LEN, token_size=2,
                                     paths_file=str(run / "tokens" / "datatrove_paths.json"))
    tok = Tokenizer.from_file(str(tokenizer / "tokenizer.json"))
    texts = {r["position"]: r["text"] for path in sorted((run / "mix").glob("part-*.parquet"))
             for r in pq.read_table(path, columns=["position", "text"]).to_pylist()}
    eos = json.loads((run / "tokens" / "_manifest.json").read_text())["eos"]["id"]
    for item in range(0, len(dataset), 7):
        window = dataset[item]["input_ids"].tolist()
        rows = trace_window(run / "tokens", SEQ_LEN, item)
        assert rows and rows[0]["window_start"] == 0 and rows[-1]["window_end"] == SEQ_LEN + 1
        for row in rows:  # the window's slice of each document is that document's own ids
            ids = tok.encode(texts[row["position"]], add_special_tokens=False).ids + [eos]
            part = window[row["window_start"]:row["window_end"]]
            assert part == ids[row["doc_start"]:row["doc_start"] + len(part)]
            assert row["file"] == f"{row['file'].split('/')[0]}/{row['file'].split('/')[0]}.ds"


def test_the_document_index_and_the_report(tokenized):
    run, _ = tokenized
    index = pq.read_table(sorted((run / "tokens").glob("part-*.parquet"))).to_pylist()
    mix = pq.read_table(sorted((run / "mix").glob("part-*.parquet")),
                        columns=["position", "doc_id", "group", "repeat", "n_tokens"]).to_pylist()
    assert [r["position"] for r in index] == [r["position"] for r in mix] == list(range(len(mix)))
    assert [r["doc_id"] for r in index] == [r["doc_id"] for r in mix]
    assert [r["length"] for r in index] == [r["n_tokens"] + 1 for r in mix]
    stream = 0
    for row in index:
        assert row["stream_offset"] == stream
        stream += row["length"]
    assert {r["repeat"] for r in index if r["group"] == "travel"} >= {0, 1}
    manifest = json.loads((run / "tokens" / "_manifest.json").read_text())
    for entry in manifest["files"]:
        assert file_digest(run / "tokens" / entry["file"]).hexdigest() == entry["sha256"]
    assert "DatatroveFolderDataset" in (run / "tokens" / "README.md").read_text()
    from pipeline.report import build_report

    report = build_report(RunLayout(run))
    assert report["side_stages"]["tokenize"]["input"] == report["side_stages"]["tokenize"]["kept"] == len(mix)


def test_tokenize_resumes_only_what_is_missing(tokenized):
    run, tokenizer = tokenized
    layout = RunLayout(run)
    files = {p: p.read_bytes() for p in (run / "tokens").rglob("*") if p.is_file()}
    cfg = mix_config(run, tokenizer)
    assert run_stages(cfg, "tokenize", quiet=True)["tokenize"]["shards_run"] == 0
    layout.marker("tokenize", "part-00001").unlink()  # a shard whose marker was never written (a crash)
    summary = run_stages(cfg, "tokenize", quiet=True)["tokenize"]
    assert summary["shards_run"] == 1 and summary["equal_to_mix"]
    assert {p: p.read_bytes() for p in (run / "tokens").rglob("*") if p.is_file()} == files


def test_explain_names_the_token_places(tokenized):
    from pipeline.explain import RunReader

    run, _ = tokenized
    row = pq.read_table(sorted((run / "tokens").glob("part-*.parquet"))).to_pylist()[5]
    step = RunReader(run).explainers()["tokenize"](row["doc_id"])
    assert step.status == "sampled"
    assert f"tokens/{row['file']} [{row['offset']}, {row['offset'] + row['length']})" in step.summary


def test_a_tokenizer_other_than_the_mix_is_refused(tokenized, tmp_path, capsys):
    run, tokenizer = tokenized
    other = tokenizer_copy(tokenizer, tmp_path / "other")
    config = json.loads((other / "tokenizer.json").read_text())
    config["added_tokens"].append({**config["added_tokens"][-1], "id": 99999, "content": "<|other|>"})
    (other / "tokenizer.json").write_text(json.dumps(config))
    capsys.readouterr()
    code = main(["tokenize", "--out", str(run), "--set", f"mix.tokenizer={other}", "--set", "ray.executor=local"])
    err = capsys.readouterr().err
    assert code == 2 and "the mix was counted with the tokenizer" in err and "run `curate mix` again" in err
    code = main(["tokenize", "--out", str(tmp_path / "none"), "--set", f"mix.tokenizer={tokenizer}"])
    assert code == 2 and "no mix in" in capsys.readouterr().err


def test_megatron_format_is_read_by_megatron_core(tmp_path, tiny_model_dir):
    indexed = pytest.importorskip("megatron.core.datasets.indexed_dataset",
                                  reason="Megatron-Core is not installed (pip install megatron-core)")
    tokenizer = tokenizer_copy(tiny_model_dir, tmp_path / "tokenizer")
    write_corpus(tmp_path / "run" / "corpus", seed=4)
    cfg = mix_config(tmp_path / "run", tokenizer, target_tokens=5_000, tokens_per_file=2_000).updated(
        **{"tokenize.format": "megatron"})
    run_stages(cfg, "mix", "tokenize", quiet=True)
    run = tmp_path / "run"
    manifest = json.loads((run / "tokens" / "_manifest.json").read_text())
    assert manifest["format"] == "megatron" and not (run / "tokens" / "datatrove_paths.json").exists()
    streams = expected_stream(run, tokenizer, manifest["eos"]["id"])
    for entry, stream in zip(manifest["files"], streams, strict=True):
        prefix = str(run / "tokens" / entry["file"]).removesuffix(".bin")
        dataset = indexed.IndexedDataset(prefix)
        assert len(dataset) == entry["documents"]
        got = [int(t) for i in range(len(dataset)) for t in dataset[i]]
        assert got == stream
        assert np.asarray(dataset[0]).dtype == np.uint16
        assert list(dataset.document_indices) == list(range(len(dataset) + 1))
