"""Ours at one scale, in its own process (a fresh local Ray, so every peak RSS belongs to this run): the project's
real entry `pipeline.run.run_stages(cfg, name)` for extract, rules, dedup, classify-score, classify, each timed
apart, with the process tree sampled every 0.2 s (sampler.py). Writes a JSON result file.

    python benchmarks/pipeline_peers/ours_run.py --warcs F1 F2 ... --out DIR --classifier DIR --result FILE
        [--num-cpus 2] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

from sampler import Timer, TreeSampler  # noqa: E402

STAGES = ("extract", "rules", "dedup", "classify-score", "classify")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--warcs", nargs="+", required=True)
    parser.add_argument("--records", type=int, required=True, help="WARC records in the input (pages in to extract)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--classifier", required=True)
    parser.add_argument("--result", required=True)
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()

    from pipeline.config import load_config
    from pipeline.run import run_stages
    from pipeline.runtime.executor import ensure_ray

    cfg = load_config(None, [f"out={args.out}", f"ray.num_cpus={args.num_cpus}", "extract.languages=[en]",
                             "extract.timeout_s=5", f"classify.classifier={args.classifier}", *args.overrides])
    cfg.input.warcs = list(args.warcs)
    sampler = TreeSampler(0.2).start()
    timer = Timer(sampler)
    try:
        started = time.perf_counter()
        _, ray_row = timer.run("ray-start", lambda: ensure_ray(cfg.ray))
        ray_row["setup"] = True
        import ray

        import pipeline

        code = {"driver": pipeline.__file__,
                "workers": ray.get(ray.remote(lambda: __import__("pipeline").__file__).remote())}
        summaries = {}
        pages_in = args.records
        for name in STAGES:
            summary, row = timer.run(name, lambda name=name: run_stages(cfg, name, quiet=True)[name], pages_in)
            summaries[name] = {k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool))}
            row["out"] = summary.get("kept", summary.get("out"))
            row["summary"] = summaries[name]
            if name == "extract":
                pages_in = summary.get("kept")
            elif name == "classify-score":
                pages_in = summary.get("in", pages_in)
            else:
                pages_in = summary.get("kept", pages_in)
        total = time.perf_counter() - started
    finally:
        sampler.stop()
        import ray

        if ray.is_initialized():
            ray.shutdown()
    result = {"system": "ours", "stages": timer.results, "total_seconds": round(total, 3),
              "end_to_end_seconds": round(sum(r["seconds"] for r in timer.results if r["stage"] in STAGES), 3),
              "records": args.records, "num_cpus": args.num_cpus, "code": code}
    Path(args.result).write_text(json.dumps(result, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
