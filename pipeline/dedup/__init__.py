"""Dedup stage: exact, URL and MinHash-LSH near-duplicates with distributed connected components on Ray, then
repeated-line removal. `run(cfg, docs_dir=None)` is the driver; `curate dedup` is its command."""

from __future__ import annotations

import argparse

from pipeline.dedup.stage import STAGE, DedupInputError, run

__all__ = ["STAGE", "DedupInputError", "register_cli", "run"]


def cmd_dedup(args: argparse.Namespace) -> int:
    from pipeline.cli import _config, _print_report

    cfg = _config(args)
    run(cfg, docs_dir=args.docs)
    _print_report(cfg)
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    from pipeline.cli import _common

    parser = subparsers.add_parser("dedup", help="docs/ -> unique/: exact, URL, MinHash near-duplicates, repeated lines (Ray)")
    _common(parser)
    parser.add_argument("--docs", help="docs/ folder to deduplicate (default: <out>/docs)")
    parser.set_defaults(handler=cmd_dedup)
