"""`curate` command line, built from the stage registry (pipeline.stages).

Every command reads a YAML config (`--config`), applies `--set a.b=c` overrides, then its own flags (each a
shorthand for a config field), and validates the result. A stage command runs its stages through the one
runner and prints the run's counts. Every fixable error (`pipeline.errors.CurateError`, or an output that
cannot be written) ends the command with one message on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from typing import Any

from pipeline.config import RunConfig, load_config
from pipeline.errors import CurateError, output_error


@dataclass(frozen=True)
class Flag:
    """A command-line shorthand for one config field, or (config None, action "store_true") a switch that only
    selects the command's stages (see Command.only_with)."""

    name: str
    config: str | None
    help: str
    type: Any = str
    nargs: str | None = None
    action: str | None = None
    # old names of this flag, still accepted for one release with a note on stderr
    deprecated: tuple[str, ...] = ()


@dataclass(frozen=True)
class Command:
    """A stage command: the stages it runs, in order, and its flags."""

    name: str
    help: str
    stages: tuple[str, ...]
    flags: tuple[Flag, ...] = ()
    llm: bool = False
    # a flag that, when given, limits the command to these stages (e.g. re-deciding without re-scoring)
    only_with: dict[str, tuple[str, ...]] = field(default_factory=dict)


STAGE_COMMANDS = (
    Command("extract", "WARC files or a Common Crawl snapshot -> extracted/ (every page, its rule metrics) -> "
                       "docs/ (the pages passing the rules) (Ray)", ("extract", "rules"), (
        Flag("--snapshot", "input.snapshot", "Common Crawl snapshot id, e.g. CC-MAIN-2024-33"),
        Flag("--warc", "input.warcs", "WARC paths, URLs (s3://, https://) or globs", nargs="+"),
        Flag("--max-warcs", "input.max_warcs", "seeded random sample of this many WARC files", int),
        Flag("--base-url", "input.base_url", "Common Crawl base URL (https://data.commoncrawl.org/ or "
                                             "s3://commoncrawl/)"),
        Flag("--rethreshold", None, "deprecated: use `curate rules` (re-decide the rules from the stored "
                                    "metrics, no WARC read)", action="store_true"),
    ), only_with={"rethreshold": ("rules",)}),
    Command("rules", "re-decide the quality rules from the stored metrics: extracted/ -> docs/ (no WARC read; "
                     "thresholds: --set extract.rules.<threshold>=V)", ("rules",)),
    Command("dedup", "docs/ -> unique/: exact, URL, MinHash near-duplicates, repeated lines (Ray)", ("dedup",), (
        Flag("--docs", "dedup.docs", "docs/ folder to deduplicate (default: <out>/docs)"),
    )),
    Command("safety", "unique/ -> safe/: benchmark text (decontam.eval_sets) and personal data (pii.mode) out; "
                      "other settings re-decide from unique/ (Ray)", ("safety",), (
        Flag("--eval-set", "decontam.eval_sets", "evaluation sets: JSONL or Parquet files, or `datasets` folders",
             nargs="+"),
        Flag("--pii", "pii.mode", "redact | drop | off"),
    )),
    Command("annotate", "LLM quality scores and topic tags for a sample -> labels/ (Ray)", ("annotate",), (
        Flag("--docs", "annotate.docs", "input Parquet folder (default: OUT/unique, else OUT/docs)"),
        Flag("--sample", "annotate.sample", "documents to annotate", int),
    ), llm=True),
    Command("classify", "score unique/ (or docs/) with a distilled classifier -> scores/, decisions/, corpus/ "
                        "(sharded Parquet)", ("classify-score", "classify"), (
        Flag("--docs", "classify.docs", "input folder: a run's unique/ or docs/ (default <out>/unique, else "
                                        "<out>/docs)"),
        Flag("--classifier", "classify.classifier", "classifier folder from `curate distil`"),
        Flag("--threshold", "classify.threshold", "keep documents whose quality probability is at least T "
                                                  "(scores stored for this classifier are reused: no model run)",
             float, deprecated=("--rethreshold",)),
        Flag("--target-tokens", "classify.target_tokens", "keep about N tokens: the threshold is found in the "
                                                          "scores (stored ones are reused)", int),
        Flag("--target-keep-rate", "classify.target_keep_rate", "keep about R (0-1] of the documents: the "
                                                                "threshold is found in the scores (stored ones "
                                                                "are reused)", float),
    )),
    Command("rewrite", "rewrite corpus pages in styles routed by quality -> synthetic/ (Ray)", ("rewrite",), (
        Flag("--corpus", "rewrite.corpus", "input Parquet folder (default: OUT/corpus, classify's kept pages)"),
        Flag("--styles", "rewrite.styles", "prompt ids to run, e.g. rewrite_wiki_v1 qa_pairs_v1", nargs="+"),
        Flag("--limit", "rewrite.limit", "rewrite only the first N pages", int),
    ), llm=True),
    Command("mix", "corpus/ (+ synthetic/) -> mix/: a training mix of N tokens by group (topic, format, quality "
                   "bucket), cut best first or repeated, in a seeded order; tokens counted once per tokenizer "
                   "(Ray)", ("mix",), (
        Flag("--target-tokens", "mix.target_tokens", "the budget, in tokens of mix.tokenizer (end-of-document "
                                                     "tokens included)", int),
        Flag("--weights", "mix.weights", "YAML file of group: weight (default: every group's natural share)"),
        Flag("--corpus", "mix.corpus", "corpus folder (default: OUT/corpus, classify's kept pages)"),
    )),
    Command("tokenize", "mix/ -> tokens/: the mix as token ids (datatrove .ds or Megatron .bin/.idx shards) with a "
                        "document index (Ray)", ("tokenize",), (
        Flag("--format", "tokenize.format", "datatrove (default) | megatron"),
    )),
)


def common_flags(parser: argparse.ArgumentParser, *, out: bool = True) -> None:
    parser.add_argument("--config", help="YAML run config (jobs/configs/*.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set extract.timeout_s=10 (repeatable)")
    if out:
        parser.add_argument("--out", help="output root of the run (config: out)")


def lock_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wait-lock", action="store_true",
                        help="when another command is writing into --out, wait for it instead of stopping")


def writing(args: argparse.Namespace, cfg: RunConfig):
    """The run folder's lock for a command that writes into it (one writer at a time; see pipeline.runlock)."""
    from pipeline.io import RunLayout
    from pipeline.runlock import RunLock
    from pipeline.runtime.runner import check_output_root

    check_output_root(RunLayout(cfg.out))
    command = " ".join(["curate", args.command])
    return RunLock(cfg.out, command, wait=getattr(args, "wait_lock", False))


def llm_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--llm-url", help="OpenAI-compatible API root, e.g. http://127.0.0.1:8000/v1 (config: llm.url)")
    parser.add_argument("--llm-model", help="served model name (config: llm.model)")


def _dest(flag: Flag) -> str:
    return _dest_of(flag.name)


def _dest_of(name: str) -> str:
    return name.removeprefix("--").replace("-", "_")


def config_from_args(args: argparse.Namespace, flags: tuple[Flag, ...] = ()) -> RunConfig:
    overrides = list(args.overrides)
    if getattr(args, "out", None):
        overrides.append(f"out={args.out}")
    if getattr(args, "llm_url", None):
        # an endpoint named on the command line is the one to use: no tiny demo server
        overrides += [f"llm.url={args.llm_url}", "llm.serve_tiny_model=false"]
    if getattr(args, "llm_model", None):
        overrides.append(f"llm.model={args.llm_model}")
    for flag in flags:
        for old in flag.deprecated:
            value = getattr(args, _dest_of(old), None)
            if value is not None:
                print(f"curate: {old} is deprecated, use {flag.name} (same meaning)", file=sys.stderr)
                setattr(args, _dest(flag), value)
        value = getattr(args, _dest(flag), None)
        if value is not None and flag.config is not None:
            overrides.append(f"{flag.config}={json.dumps(value) if isinstance(value, list) else value}")
    cfg = load_config(args.config or getattr(args, "config_path", None), overrides)
    use_storage(cfg)
    return cfg


def use_storage(cfg: RunConfig) -> None:
    from pipeline import store

    store.configure(cfg.storage.cache_dir, cfg.storage.options, cfg.storage.retries)


def print_report(cfg: RunConfig, *, verify: bool = False) -> None:
    from pipeline.io import RunLayout
    from pipeline.report import build_report, format_report

    layout = RunLayout(cfg.out)
    layout.pull()  # a run folder on object storage: its local copy, up to date
    print(format_report(build_report(layout, verify=verify)))
    print(f"outputs: {cfg.out}")


def _stage_handler(command: Command):
    def handler(args: argparse.Namespace) -> int:
        from pipeline.run import run_stages

        cfg = config_from_args(args, command.flags)
        stages = command.stages
        for flag, only in command.only_with.items():
            if getattr(args, flag, None) not in (None, False):
                if flag == "rethreshold" and command.name == "extract":
                    print("curate: `curate extract --rethreshold` is deprecated, use `curate rules` (same meaning)",
                          file=sys.stderr)
                stages = only
        complete = True
        with writing(args, cfg):
            for summary in run_stages(cfg, *stages).values():
                complete = complete and (summary.get("skipped") or summary.get("complete", True))
        print_report(cfg)
        return 0 if complete else 1

    return handler


def cmd_report(args: argparse.Namespace) -> int:
    print_report(config_from_args(args), verify=args.verify)
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    """What happened to each named page; exit 2 when a query matched no page (after the ones that did)."""
    from pipeline.explain import ExplainError, explain_many, format_text

    out = config_from_args(args).out  # (also sets up the storage of a run folder on object storage)
    results = explain_many(out, args.queries)
    if args.json:
        print(json.dumps(results if len(results) > 1 else results[0], indent=2, ensure_ascii=False, default=str))
    else:
        print("\n\n".join(format_text(r) for r in results if r["pages"]))
    missing = [r for r in results if not r["pages"]]
    if missing:
        raise ExplainError("\n".join(format_text(r) for r in missing))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from pipeline.run import format_summary, run_pipeline

    cfg = config_from_args(args)
    with writing(args, cfg):
        report = run_pipeline(cfg)
    print(format_summary(report))
    return 0 if report.get("conserved") and report.get("complete", True) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="curate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="the whole pipeline: extract -> rules -> dedup -> annotate -> distil -> classify "
                                   "-> rewrite")
    p.add_argument("config_path", nargs="?", help="YAML run config (same as --config)")
    common_flags(p)
    llm_flags(p)
    lock_flags(p)
    p.set_defaults(handler=cmd_run)

    for command in STAGE_COMMANDS:
        p = sub.add_parser(command.name, help=command.help)
        common_flags(p)
        lock_flags(p)
        if command.llm:
            llm_flags(p)
        for flag in command.flags:
            if flag.action:
                p.add_argument(flag.name, dest=_dest(flag), action=flag.action, help=flag.help)
            else:
                p.add_argument(flag.name, dest=_dest(flag), type=flag.type, nargs=flag.nargs,
                               help=f"{flag.help} (config: {flag.config})")
            for old in flag.deprecated:
                p.add_argument(old, dest=_dest_of(old), type=flag.type, nargs=flag.nargs,
                               help=f"deprecated name of {flag.name}")
        p.set_defaults(handler=_stage_handler(command))

    p = sub.add_parser("report", help="print a run's counts per stage and reason, and check conservation and that "
                                      "every recorded file is there whole")
    common_flags(p)
    p.add_argument("--verify", action="store_true",
                   help="also compare every file's sha256 with its shard marker (reads the whole run)")
    p.set_defaults(handler=cmd_report)

    p = sub.add_parser("explain", help="what happened to a page, stage by stage, and its fate (by URL or doc_id)")
    p.add_argument("queries", nargs="+", metavar="URL_OR_DOC_ID")
    common_flags(p)
    p.add_argument("--json", action="store_true", help="print the answer as JSON")
    p.set_defaults(handler=cmd_explain)

    # commands that are not stages: distil and the classifier tools, the LLM server tools
    from classifiers.cli import register_cli as register_classifier_cli
    from pipeline.llm.cli import register_cli as register_llm_cli

    register_classifier_cli(sub, common_flags)
    register_llm_cli(sub)
    return parser


_CREDENTIALS = re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^/\s@]+@", re.IGNORECASE)


def mask_credentials(text: str) -> str:
    """URLs with a user or password (`http://user:secret@host/`) printed as `http://***@host/`."""
    return _CREDENTIALS.sub(r"\1***@", text)


def fixable_message(exc: BaseException) -> str | None:
    if isinstance(exc, CurateError):
        return mask_credentials(str(exc))
    if type(exc).__name__ in ("ArrowInvalid", "JSONDecodeError"):  # a damaged file read outside the checked paths
        return (f"a file of the run is damaged or not what it should be ({exc}); `curate report --out RUN` "
                "names every damaged file")
    converted = output_error(exc) if isinstance(exc, OSError) else None
    return mask_credentials(str(converted)) if converted is not None else None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (CurateError, OSError, ValueError) as exc:
        message = fixable_message(exc)
        if message is None:
            raise
        print(f"curate {args.command}: {message}", file=sys.stderr)
        if args.command == "run":
            print("(finished stages are kept: fix the cause and run the same command again to go on from there)",
                  file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
