"""`curate` command line. Every command reads a YAML config (`--config`), applies `--set a.b=c` overrides,
then its own flags (which are shorthands for config fields), and validates the result."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from pipeline.config import ConfigError, RunConfig, load_config


def _common(parser: argparse.ArgumentParser, *, out: bool = True) -> None:
    parser.add_argument("--config", help="YAML run config (jobs/configs/*.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set extract.timeout_s=10 (repeatable)")
    if out:
        parser.add_argument("--out", help="output root of the run (config: out)")


def _llm_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--llm-url", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 (config: llm.url)")
    parser.add_argument("--llm-model", help="served model name (config: llm.model)")


def _config(args: argparse.Namespace, extra: list[str] | None = None) -> RunConfig:
    overrides = list(args.overrides)
    if getattr(args, "out", None):
        overrides.append(f"out={args.out}")
    if getattr(args, "llm_url", None):
        # an endpoint named on the command line is the one to use: no tiny demo server
        overrides += [f"llm.url={args.llm_url}", "llm.serve_tiny_model=false"]
    if getattr(args, "llm_model", None):
        overrides.append(f"llm.model={args.llm_model}")
    return load_config(args.config, overrides + (extra or []))


def _print_report(cfg: RunConfig) -> None:
    from pipeline.io import RunLayout
    from pipeline.report import build_report, format_report

    report = build_report(RunLayout(cfg.out))
    print(format_report(report))
    print(f"outputs: {cfg.out}")


def cmd_extract(args: argparse.Namespace) -> int:
    import json

    extra: list[str] = []
    if args.snapshot:
        extra.append(f"input.snapshot={args.snapshot}")
    if args.warc:
        extra.append(f"input.warcs={json.dumps(args.warc)}")
    if args.max_warcs:
        extra.append(f"input.max_warcs={args.max_warcs}")
    if args.base_url:
        extra.append(f"input.base_url={args.base_url}")
    cfg = _config(args, extra)
    from pipeline import extract

    extract.run(cfg)
    _print_report(cfg)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    _print_report(_config(args))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="curate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("extract", help="WARC files or a Common Crawl snapshot -> docs/ (Ray)")
    _common(p)
    p.add_argument("--snapshot", help="Common Crawl snapshot id, e.g. CC-MAIN-2024-33")
    p.add_argument("--warc", nargs="+", help="WARC paths, URLs (s3://, https://) or globs")
    p.add_argument("--max-warcs", type=int, help="seeded random sample of this many WARC files")
    p.add_argument("--base-url", help="Common Crawl base URL (https://data.commoncrawl.org/ or s3://commoncrawl/)")
    p.set_defaults(handler=cmd_extract)

    p = sub.add_parser("report", help="print a run's counts per stage and reason, and check conservation")
    _common(p)
    p.set_defaults(handler=cmd_report)

    for register in _stage_commands():
        register(sub)
    return parser


# Modules that define commands of their own: each has register_cli(subparsers), imported only when the
# parser is built (their heavy imports stay inside their handlers).
COMMAND_MODULES = ("pipeline.dedup", "pipeline.annotate", "pipeline.llm.cli", "classifiers.cli",
                   "pipeline.classify", "pipeline.rewrite", "pipeline.run")


def _stage_commands() -> list[Callable[[argparse._SubParsersAction], None]]:
    import importlib

    return [importlib.import_module(name).register_cli for name in COMMAND_MODULES]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from pipeline.sources import InputError

    try:
        return args.handler(args)
    except (ConfigError, InputError) as exc:
        print(f"curate: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
