"""NeMo Curator (1.4) at one scale, run by NeMo Curator's own venv (not the project's): its CPU text path on
the same local WARC files, as separate pipelines with Parquet in between so each is timed apart (like
datatrove's executor runs and our stages), the process tree sampled every 0.2 s (sampler.py).

  1 extract   FilePartitioningStage (1 WARC file per task) -> DocumentIterateExtractStage(
              CommonCrawlWarcIterator (warcio), CommonCrawlHTMLExtractor("trafilatura"): pycld2 language of the
              HTML, trafilatura for languages with a stop list) -> ParquetWriter
  2 filters   ParquetReader -> language == ENGLISH -> the 20 heuristic filters of NeMo Curator's own
              config/text/heuristic_filter_english_pipeline.yaml -> ParquetWriter
  3 dedup     fuzzy (MinHash LSH) and exact dedup: imported and run when they can be; in 1.4 both import cudf
              (RAPIDS, GPU only), so on this machine they fail at import and the error is recorded
  4 classify  ParquetReader -> ScoreFilter(FastTextQualityFilter, the same quality.bin; kept when P(hq) >= the
              classifier card's threshold, as ours and datatrove decide, instead of NeMo's Pareto sampling)
              -> ParquetWriter

Executor: XennaExecutor (NeMo Curator's default, cosmos-xenna on Ray). Ray is started by this script on
127.0.0.1 with 2 CPUs before each pipeline (the executor shuts Ray down at its end); that start is timed
apart and not counted in the stage's seconds.

    /work/bench-venvs/nemo/bin/python benchmarks/pipeline_peers/nemo_run.py --warcs F... --records N --out DIR
        --model quality.bin --threshold T --result FILE [--workers 2] [--executor xenna|ray_data]
"""

from __future__ import annotations

import json
import os
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent

from sampler import Timer, TreeSampler, peer_arguments, stop_leftovers  # noqa: E402

os.environ.update({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"})


def rows(folder: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(p).metadata.num_rows for p in folder.rglob("*.parquet"))


def start_ray(cpus: int) -> None:
    import ray
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False
    os.environ.pop("RAY_ADDRESS", None)
    if not ray.is_initialized():
        # cosmos-xenna reads actor states through the dashboard's state API: the dashboard is on, on loopback
        context = ray.init(num_cpus=cpus, include_dashboard=True, dashboard_host="127.0.0.1",
                           _node_ip_address="127.0.0.1", log_to_driver=False)
        # the executors call ray.init() again: point them at this instance, not at another Ray on the machine
        os.environ["RAY_ADDRESS"] = context.address_info["gcs_address"]


def main() -> None:
    parser = peer_arguments()
    parser.add_argument("--executor", default="xenna")
    args = parser.parse_args()

    import hydra.utils
    import nemo_curator
    import yaml
    from nemo_curator.pipeline import Pipeline
    from nemo_curator.stages.file_partitioning import FilePartitioningStage
    from nemo_curator.stages.text.download.base.iterator import DocumentIterateExtractStage
    from nemo_curator.stages.text.download.common_crawl.extract import CommonCrawlHTMLExtractor
    from nemo_curator.stages.text.download.common_crawl.warc_iterator import CommonCrawlWarcIterator
    from nemo_curator.stages.text.filters.doc_filter import DocumentFilter
    from nemo_curator.stages.text.filters.fasttext.fasttext_filters import FastTextQualityFilter
    from nemo_curator.stages.text.filters.score_filter import ScoreFilter
    from nemo_curator.stages.text.io.reader import ParquetReader
    from nemo_curator.stages.text.io.writer import ParquetWriter

    if args.executor == "xenna":
        from nemo_curator.backends.xenna import XennaExecutor as Executor
    else:
        from nemo_curator.backends.ray_data import RayDataExecutor as Executor

    class LanguageIs(DocumentFilter):
        def __init__(self, language: str):
            super().__init__()
            self.language = language
            self._name = "language_is"

        def score_document(self, text: str) -> float:
            return 1.0 if text == self.language else 0.0

        def keep_document(self, score: float) -> bool:
            return score == 1.0

    class ThresholdFastTextQualityFilter(FastTextQualityFilter):
        def __init__(self, model_path: str, threshold: float):
            super().__init__(model_path=model_path, label="__label__hq")
            self.threshold = threshold

        def keep_document(self, score: float) -> bool:
            return score >= self.threshold

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = Path(nemo_curator.__file__).parent / "config" / "text" / "heuristic_filter_english_pipeline.yaml"
    heuristic = [stage for stage in yaml.safe_load(config.read_text())["stages"]
                 if stage["_target_"].endswith("ScoreFilter")]
    for stage in heuristic:
        stage["text_field"] = "text"
    notes = [f"heuristic filters: the {len(heuristic)} ScoreFilter stages of {config.name}",
             "extraction: CommonCrawlHTMLExtractor('trafilatura') with NeMo Curator's defaults (its own language "
             "detection, pycld2, on the HTML; trafilatura only for languages with a stop list)",
             f"executor: {Executor.__name__}"]

    # streaming (the default) wants a CPU per stage at once (2.5 to 31.5 here) and refuses to start on 2 CPUs;
    # batch mode runs the stages one after another on all CPUs. 0.95 of 2 CPUs rounds down to 1: use both.
    executor_config = ({"execution_mode": "batch", "cpu_allocation_percentage": 1.0}
                       if args.executor == "xenna" else {})
    notes.append(f"executor config: {executor_config}")

    def pipeline(name: str, stages: list) -> None:
        Pipeline(name=name, stages=stages).run(Executor(config=executor_config))

    import psutil

    run_started = psutil.Process().create_time()
    sampler = TreeSampler(0.2).start()
    timer = Timer(sampler)
    errors = {}
    partial = False
    started = time.perf_counter()
    try:
        def step(name, stages_fn, pages_in):
            nonlocal partial
            _, row = timer.run(f"ray-start ({name})", lambda: start_ray(args.workers))
            row["setup"] = True
            try:
                timer.run(name, lambda: pipeline(name, stages_fn()), pages_in)
            except Exception as exc:  # noqa: BLE001 - recorded, the next pipelines still run
                errors[name] = f"{type(exc).__name__}: {exc}"
                timer.sampler.set_stage(f"after-{name}")
                timer.results.append({"stage": name, "seconds": 0.0, "error": errors[name], "pages_in": pages_in,
                                      **timer.sampler.summary(name)})
                traceback.print_exc()
                partial = True
            finally:
                import ray

                if ray.is_initialized():
                    ray.shutdown()

        step("extract (warcio + trafilatura)", lambda: [
            FilePartitioningStage(file_paths=list(args.warcs), files_per_partition=1, file_extensions=[".gz"]),
            DocumentIterateExtractStage(iterator=CommonCrawlWarcIterator(),
                                        extractor=CommonCrawlHTMLExtractor(algorithm="trafilatura")),
            ParquetWriter(path=str(out / "extracted")),
        ], args.records)
        n_extracted = rows(out / "extracted") if (out / "extracted").exists() else 0
        step("heuristic filters (en + 20)", lambda: [
            ParquetReader(file_paths=str(out / "extracted")),
            ScoreFilter(LanguageIs("ENGLISH"), text_field="language"),
            *[hydra.utils.instantiate(stage) for stage in heuristic],
            ParquetWriter(path=str(out / "filtered")),
        ], n_extracted)
        n_filtered = rows(out / "filtered") if (out / "filtered").exists() else 0
        # dedup: GPU only in 1.4; try the imports and record what happens
        for label, module, cls in (("fuzzy dedup", "nemo_curator.stages.deduplication.fuzzy.workflow",
                                    "FuzzyDeduplicationWorkflow"),
                                   ("exact dedup", "nemo_curator.stages.deduplication.exact.workflow",
                                    "ExactDeduplicationWorkflow")):
            try:
                __import__(module, fromlist=[cls])
                errors[label] = "imported, but not run by this script (it needs a GPU: cudf/RAPIDS)"
            except Exception as exc:  # noqa: BLE001
                errors[label] = f"{type(exc).__name__}: {exc} (import {module}.{cls})"
            partial = True
        step("classify (FastTextQualityFilter)", lambda: [
            ParquetReader(file_paths=str(out / "filtered")),
            ScoreFilter(ThresholdFastTextQualityFilter(args.model, args.threshold), text_field="text"),
            ParquetWriter(path=str(out / "final")),
        ], n_filtered)
    finally:
        sampler.stop()
        leftovers = stop_leftovers(sampler, run_started)
    result = {"system": "nemo", "stages": timer.results, "total_seconds": round(time.perf_counter() - started, 3),
              "records": args.records, "workers": args.workers, "partial": partial,
              "leftover_processes_stopped": len(leftovers), "errors": errors,
              "notes": notes + [f"{k}: {v}" for k, v in errors.items()],
              "kept": {name: rows(out / name) for name in ("extracted", "filtered", "final") if (out / name).exists()},
              "version": getattr(nemo_curator, "__version__", "?")}
    Path(args.result).write_text(json.dumps(result, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
