"""The in-process engine backend (vLLM's `LLM` inside a Ray actor) on the CPU build: same prompts, parsers,
label rows and response cache as the HTTP backend."""

from __future__ import annotations

import pytest

from pipeline import schemas
from pipeline.config import load_config
from pipeline.io import RunLayout, read_dataset, write_parquet
from pipeline.llm.prompts import load_prompt
from stagehelpers import annotate_run


@pytest.mark.slow
def test_engine_backend_labels_with_score_probabilities_and_shares_the_cache(tmp_path, ray_local, tiny_model_dir,
                                                                             vllm_server):
    """Labels on the engine (one vLLM engine load: the costly part of this test): provenance on every row,
    topics from the taxonomy, p(0..5) in range, summing to 1, the expected score consistent with them; the
    HTTP backend builds the same requests, so it then answers them all from the shared cache."""
    texts = {f"page-{i}": f"Page {i}. " + "A short article about gardening and tomatoes. " * (i + 1) for i in range(4)}
    rows = [{"doc_id": k, "text": v, "language": "en", "rule_failures": []} for k, v in texts.items()]
    write_parquet(schemas.from_rows(rows, schemas.DOCS), tmp_path / "docs" / "part-0.parquet", schemas.DOCS)
    common = [f"out={tmp_path}", "annotate.sample=4", f"llm.cache_dir={tmp_path / 'cache'}",
              "annotate.consistency_sample=0"]
    engine = annotate_run(load_config(None, common + ["llm.backend=engine", f"llm.engine_model={tiny_model_dir}"]),
                          quiet=True)
    labels = read_dataset(RunLayout(tmp_path).dataset("labels"), schemas.LABELS).to_pylist()
    assert engine["complete"] and len(labels) == 4 and {row["task"] for row in labels} == {"labels"}
    assert engine["this_run"]["requests"] == 4 and engine["this_run"]["completions"] == 4
    taxonomy = set(load_prompt("topics_v1").topic_ids)
    for row in labels:
        assert row["prompt_id"] and row["prompt_hash"] and row["model"] == "tiny-llama" and row["raw_text"]
        if row["error"] is None:
            assert 0 <= row["quality_score"] <= 5 and set(row["topics"] or []) <= taxonomy
    with_probs = [row for row in labels if row["error"] is None and row["quality_probs"] is not None]
    assert with_probs, [row["error_detail"] for row in labels]
    for row in with_probs:
        probs = row["quality_probs"]
        assert len(probs) == 6 and all(0 <= p <= 1 for p in probs) and sum(probs) == pytest.approx(1, abs=1e-3)
        assert row["quality_expected"] == pytest.approx(sum(k * p for k, p in enumerate(probs)), abs=1e-3)
        assert probs[row["quality_score"]] > 0  # the sampled score is among the alternatives

    for path in RunLayout(tmp_path).state("annotate").glob("*.json"):
        path.unlink()
    server = annotate_run(load_config(None, common + [f"llm.url={vllm_server.url}"]), quiet=True)
    assert server["this_run"]["requests"] == 0 and server["this_run"]["cache_hits"] == 4
