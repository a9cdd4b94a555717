"""`curate explain`: what happened to one page, stage by stage, ending with its fate.

A page is named by its URL or its doc_id. The answer walks the stages in pipeline order: the extract record
and language; every quality-rule check (metric, threshold, pass or fail); the dedup cluster, its size and
survivor (with the survivor's URL); the LLM labels with their provenance, and the self-consistency pass; the
classifier's probabilities, the threshold and the decision; each rewrite unit's outcome. It ends with the fate:
kept in `corpus/part-...`, or the stage and reason the page left at.

Reading stays small on a run of millions of rows (`RowFinder`): for each Parquet file it reads the footer,
skips the row groups whose min/max statistics cannot hold the key, reads only the key column of the others,
and then only the wanted columns of the row groups that hold a match. A query that matches nothing gets the
nearest URLs the run knows (same host first).

`explain(run_dir, query)` returns plain data (also `--json`); `format_text` and `render_html` present it for the
terminal and the inspection notebook.
"""

from __future__ import annotations

import bisect
import difflib
import html
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import schemas
from pipeline.config import RulesConfig
from pipeline.errors import CurateError
from pipeline.io import RunLayout, parquet_files, read_json_or_empty
from pipeline.rules import CHECKS, METRICS, failures

DOC_ID = re.compile(r"^[0-9a-f]{20}$")
PREVIEW_CHARS = 400
SUGGESTIONS = 5
MAX_DIFFLIB = 2000  # candidate URLs compared character by character for suggestions


class ExplainError(CurateError):
    """The folder is not a run, or a query matched no page (the message gives the nearest URLs)."""


def damaged(path: Path, exc: BaseException) -> ExplainError:
    return ExplainError(f"{path} is damaged ({exc}); `curate report --out RUN` lists every damaged file, and "
                        "running the command that wrote it again redoes it")


# ------------------------------------------------------------------------------------------------ reading


class RowFinder:
    """Rows of the Parquet files of one folder whose `key` column holds one of some values, reading as little
    as it can: footers (cached), the key column of row groups whose statistics may hold a value, then the
    wanted columns of the row groups that do."""

    def __init__(self, folder: Path):
        self.files = parquet_files(folder) if folder.is_dir() else []
        # footers only: a ParquetFile keeps its file open, and a run has thousands of files
        self._meta: dict[Path, pq.FileMetaData] = {}

    def _metadata(self, path: Path) -> pq.FileMetaData:
        if path not in self._meta:
            try:
                self._meta[path] = pq.read_metadata(path)
            except (OSError, pa.ArrowInvalid) as exc:
                raise damaged(path, exc) from None
        return self._meta[path]

    @staticmethod
    def _may_hold(stats, values: list[str]) -> bool:
        if stats is None or not stats.has_min_max:
            return True
        return any(stats.min <= value <= stats.max for value in values)

    def find(self, key: str, values: Iterable[str], columns: list[str] | None = None) -> list[dict[str, Any]]:
        """Matching rows as dicts (only `columns` when given, which should include `key`), each with the file
        it came from under "_file"."""
        wanted = sorted({v for v in values if v})
        if not wanted:
            return []
        out: list[dict[str, Any]] = []
        for path in self.files:
            meta = self._metadata(path)
            names = meta.schema.to_arrow_schema().names
            if key not in names:
                continue
            index = names.index(key)
            groups = [g for g in range(meta.num_row_groups)
                      if self._may_hold(meta.row_group(g).column(index).statistics, wanted)]
            if not groups:
                continue
            read = [c for c in (columns or names) if c in names]
            try:
                out += self._matches(path, meta, groups, key, wanted, read)
            except (OSError, pa.ArrowInvalid) as exc:
                raise damaged(path, exc) from None
        return out

    @staticmethod
    def _matches(path: Path, meta, groups: list[int], key: str, wanted: list[str], read: list[str]) -> list[dict]:
        out: list[dict[str, Any]] = []
        with pq.ParquetFile(path, metadata=meta) as parquet:
            for group in groups:
                keys = parquet.read_row_group(group, columns=[key]).column(0)
                mask = pc.is_in(keys, value_set=pa.array(wanted, keys.type))
                if not pc.any(mask).as_py():
                    continue
                rows = parquet.read_row_group(group, columns=read).filter(mask)
                out += [{**row, "_file": path.name} for row in rows.to_pylist()]
        return out

    def columns(self, column: str) -> Iterable[pa.ChunkedArray]:
        """One column of every file, as Arrow (for suggestions: vectorised, never a Python list of it all)."""
        for path in self.files:
            if column in self._metadata(path).schema.to_arrow_schema().names:
                yield pq.read_table(path, columns=[column]).column(0)




def _preview(text: str | None) -> str | None:
    if text is None:
        return None
    return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS].rstrip() + " …"


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


# ------------------------------------------------------------------------------------------------ the answer


@dataclass
class Step:
    """What one stage did with the page. `status`: passed (went on), kept, dropped, errored, sampled (an LLM
    label; not a filter), not_sampled, not_reached (it left before), not_run (the stage has no output here)."""

    stage: str
    status: str
    summary: str
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass
class PageStory:
    doc_id: str
    url: str | None
    steps: list[Step]
    fate: str
    fate_stage: str | None
    fate_outcome: str  # kept | dropped | errored | in_progress
    fate_reason: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RunReader:
    """The datasets of one run folder, opened lazily, with the lookups `explain` needs."""

    def __init__(self, run_dir: str | Path):
        self.layout = RunLayout(run_dir)
        self.layout.pull()  # a run folder on object storage: its local copy, up to date
        root = self.layout.root
        if not root.is_dir() or not (root / "_state").is_dir():
            raise ExplainError(f"--out {root}: not a run folder (no _state/ in it; give the --out of a `curate` run)")
        self._finders: dict[Path, RowFinder] = {}
        # rows `resolve` found, by doc_id: the extract step reads them instead of scanning again
        self._extracted: dict[str, dict[str, Any]] = {}
        self._extract_decisions: dict[str, dict[str, Any]] = {}

    def finder(self, folder: Path) -> RowFinder:
        if folder not in self._finders:
            self._finders[folder] = RowFinder(folder)
        return self._finders[folder]

    def dataset(self, name: str) -> RowFinder:
        return self.finder(self.layout.dataset(name))

    def decisions(self, stage: str) -> RowFinder:
        return self.finder(self.layout.decisions(stage))

    def decision(self, stage: str, doc_id: str) -> list[dict[str, Any]]:
        return self.decisions(stage).find("doc_id", [doc_id])

    def extracted(self) -> RowFinder:
        """extracted/ (every page with its rule metrics) when the run has it, else docs/."""
        folder = self.layout.dataset("extracted")
        return self.finder(folder if parquet_files(folder) else self.layout.dataset("docs"))

    def ran(self, stage: str) -> bool:
        return self.layout.state(stage).is_dir()

    # -------------------------------------------------------------------------------- finding the page

    def resolve(self, query: str) -> list[tuple[str, str | None]]:
        """(doc_id, url) of every record the query names: a doc_id (20 hex characters), or a URL (exact; else
        the same URL with or without a trailing slash, or with the other of http/https)."""
        tries = [("doc_id", [query])] if DOC_ID.match(query) else [("url", [query]), ("url", url_variants(query))]
        for key, values in tries:
            pages = self.extracted().find(key, values, EXTRACT_COLUMNS)
            records = self.decisions("extract").find(key, values)
            if pages or records:
                self._extracted.update((r["doc_id"], r) for r in pages)
                self._extract_decisions.update((r["doc_id"], r) for r in records)
                return sorted({r["doc_id"]: r["url"] for r in records + pages}.items())
        return []

    def suggestions(self, query: str, n: int = SUGGESTIONS) -> list[str]:
        """The run's URLs nearest to `query`: of the same host (either scheme) when it has any, else of the
        hosts whose names are nearest. Vectorised over the URL columns; difflib only on the few candidates."""
        if DOC_ID.match(query):
            return []
        parts = urlsplit(query)
        host = parts.netloc.lower()
        sources = [self.extracted(), self.decisions("extract")]
        prefixes = [f"{scheme}://{host}" for scheme in ("http", "https")] if host else []
        candidates: set[str] = set()
        hosts: set[str] = set()
        for source in sources:
            for urls in source.columns("url"):
                urls = pc.drop_null(urls)
                if prefixes:
                    hit = pc.or_(*[pc.starts_with(urls, pattern=p) for p in prefixes])
                    candidates.update(pc.filter(urls, hit).to_pylist())
                if not candidates:
                    found = pc.struct_field(pc.extract_regex(urls, r"^https?://(?P<host>[^/?#]+)"), "host")
                    hosts.update(pc.unique(pc.drop_null(found)).to_pylist())
        if not candidates:
            near_hosts = difflib.get_close_matches(host or query, sorted(hosts), n=n, cutoff=0.0)
            for source in sources:
                for urls in source.columns("url"):
                    urls = pc.drop_null(urls)
                    for near in near_hosts:
                        hit = pc.or_(pc.starts_with(urls, pattern=f"http://{near}"),
                                     pc.starts_with(urls, pattern=f"https://{near}"))
                        candidates.update(pc.filter(urls, hit).to_pylist()[:n])
        pool = sorted(candidates)
        if len(pool) > MAX_DIFFLIB:  # the neighbours in sort order of the query, then the closest of those
            at = bisect.bisect_left(pool, query)
            pool = pool[max(0, at - MAX_DIFFLIB // 2): at + MAX_DIFFLIB // 2]
        return difflib.get_close_matches(query, pool, n=n, cutoff=0.0)

    # -------------------------------------------------------------------------------- the stages

    def extract_step(self, doc_id: str) -> tuple[Step, dict[str, Any] | None]:
        decided = self._extract_decisions.get(doc_id)
        for row in [decided] if decided else self.decision("extract", doc_id):
            return Step("extract", row["outcome"], f"{row['outcome']}: {row['reason']}",
                        {"reason": row["reason"], "detail": row["detail"], "source": row["source"]}), None
        found = self._extracted.get(doc_id)
        rows = [found] if found else self.extracted().find("doc_id", [doc_id], EXTRACT_COLUMNS)
        if not rows:
            return Step("extract", "not_run", "no extract record of this page"), None
        row = rows[0]
        facts = {"warc_path": row.get("warc_path"), "warc_record_id": row.get("warc_record_id"),
                 "crawl_date": row.get("crawl_date"), "language": row.get("language"),
                 "language_score": _rounded(row.get("language_score")), "n_chars": row.get("n_chars"),
                 "text_preview": _preview(row.get("text"))}
        return Step("extract", "passed",
                    f"text extracted: {row.get('n_chars')} characters, language {row.get('language')} "
                    f"({(row.get('language_score') or 0):.2f})", facts), row

    def rules_step(self, doc_id: str, row: dict[str, Any]) -> Step:
        checks = rule_checks(row, self.rules_config())
        dropped = self.decision("rules", doc_id)
        facts: dict[str, Any] = {"checks": checks}
        if dropped:
            d = dropped[0]
            facts.update(reason=d["reason"], detail=d["detail"])
            return Step("rules", d["outcome"], f"{d['outcome']}: {d['reason']} ({d['detail']})", facts)
        if row.get("rules_applied") is False or all(c["passed"] is None for c in checks):
            return Step("rules", "passed", f"rules not applied (language {row.get('language')}; "
                        "extract.rules.apply_to_languages)", facts)
        if not self.ran("rules") and not parquet_files(self.layout.dataset("docs")):
            return Step("rules", "not_run", "the rules stage has not run", facts)
        failing = [c for c in checks if c["passed"] is False]
        return Step("rules", "passed", f"passed {sum(c['passed'] is True for c in checks)} rule checks"
                    + (f" ({len(failing)} failing ones are disabled)" if failing else ""), facts)

    def rules_config(self):
        from pipeline.config import RulesConfig

        plan = read_json_or_empty(self.layout.settings_path("rules").with_suffix(".plan.json"))
        decision = plan.get("extract.rules") or {}
        try:
            return RulesConfig(**decision)
        except ValueError:
            return RulesConfig()

    def dedup_step(self, doc_id: str) -> Step:
        for d in self.decision("dedup", doc_id):
            survivor = d.get("duplicate_of")
            facts = {"reason": d["reason"], "detail": d["detail"], "survivor_doc_id": survivor, "survivor_url": None}
            cluster = self.dataset("unique").find("doc_id", [survivor],
                                                  ["doc_id", "url", "dup_cluster_id", "dup_cluster_size"])
            if cluster:
                facts.update(survivor_url=cluster[0]["url"], dup_cluster_id=cluster[0]["dup_cluster_id"],
                             dup_cluster_size=cluster[0]["dup_cluster_size"])
            return Step("dedup", d["outcome"], f"{d['outcome']}: {d['reason']}, duplicate of {survivor} "
                        f"({facts['survivor_url']})", facts)
        rows = self.dataset("unique").find("doc_id", [doc_id], ["doc_id", "dup_cluster_id", "dup_cluster_size",
                                                                "lines_removed"])
        if not rows:
            return Step("dedup", "not_run", "dedup has not run (later stages read docs/)")
        row = rows[0]
        size = row["dup_cluster_size"] or 1
        facts = {"dup_cluster_id": row["dup_cluster_id"], "dup_cluster_size": size,
                 "lines_removed": row["lines_removed"], "survivor_doc_id": doc_id}
        summary = ("unique" if size <= 1 else f"survivor of a cluster of {size} near/exact duplicates") + (
            f"; {row['lines_removed']} repeated lines removed" if row["lines_removed"] else "")
        return Step("dedup", "passed", summary, facts)

    def safety_step(self, doc_id: str) -> Step | None:
        """Benchmark text and personal data: the drop with its reason, or what was redacted (type and position in
        the text before redaction, never the value) and how many contaminated spans were cut."""
        for d in self.decision("safety", doc_id):
            return Step("safety", d["outcome"], f"{d['outcome']}: {d['reason']} ({d['detail']})",
                        {"reason": d["reason"], "detail": d["detail"]})
        rows = self.dataset("safe").find("doc_id", [doc_id], ["doc_id", "pii_spans", "decontam_cut"])
        if not rows:
            return Step("safety", "not_run", "the safety stage has not run") if not self.ran("safety") else None
        spans = rows[0]["pii_spans"] or []
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(Counter(s["type"] for s in spans).items()))
        summary = f"personal data redacted: {kinds}" if spans else "no personal data found"
        if rows[0]["decontam_cut"]:
            summary += f"; {rows[0]['decontam_cut']} benchmark span(s) cut"
        return Step("safety", "passed", summary, {"redacted": spans, "decontam_cut": rows[0]["decontam_cut"]})

    def annotate_steps(self, doc_id: str) -> list[Step]:
        columns = ["doc_id", "task", "prompt_id", "prompt_hash", "model", "sampling_params", "quality_score",
                   "quality_reason", "topics", "format", "quality_probs", "quality_expected", "field_errors",
                   "error", "error_detail", "cached"]
        steps = []
        for name, title in (("labels", "annotate"), ("labels_consistency", "consistency")):
            rows = self.dataset(name).find("doc_id", [doc_id], columns)
            if not rows:
                if name == "labels":
                    steps.append(Step(title, "not_sampled" if self.ran("annotate") else "not_run",
                                      "not in the LLM sample" if self.ran("annotate") else "annotate has not run"))
                continue
            answers = [{k: _rounded(v) for k, v in r.items() if k not in ("doc_id", "_file") and v is not None}
                       for r in rows]
            parts = []
            for r in rows:
                if r["error"]:
                    parts.append(f"{r['task']}: {r['error']}")
                    continue
                bits = [f"score {r['quality_score']}" if r["quality_score"] is not None else None,
                        f"expected {r['quality_expected']:.2f}" if r["quality_expected"] is not None else None,
                        f"topics {', '.join(r['topics'])}" if r["topics"] else None,
                        f"format {', '.join(r['format'])}" if r["format"] else None]
                parts.append(f"{r['task']} ({r['prompt_id']}, {r['model']}): " + "; ".join(b for b in bits if b))
            prefix = "second labelling (another seed, temperature > 0): " if name == "labels_consistency" else ""
            steps.append(Step(title, "sampled", prefix + " | ".join(parts), {"answers": answers}))
        return steps

    def classify_step(self, doc_id: str) -> Step:
        """The classifier's scores, threshold and decision, and the corpus file a kept page is in."""
        rows = self.dataset("scores").find("doc_id", [doc_id], ["doc_id", "quality_prob", "topics", "topic_probs",
                                                                "format", "format_probs"])
        marker = read_json_or_empty(self.layout.stage_marker("classify"))
        facts: dict[str, Any] = {"threshold": _rounded(marker.get("threshold")),
                                 "threshold_reason": marker.get("threshold_reason")}
        if rows:
            facts.update({k: _rounded(v) for k, v in rows[0].items() if k not in ("doc_id", "_file")})
        for d in self.decision("classify", doc_id):
            facts.update(reason=d["reason"], detail=d["detail"])
            return Step("classify", d["outcome"], f"{d['outcome']}: {d['reason']} ({d['detail']})", facts)
        kept = self.dataset("corpus").find("doc_id", [doc_id], ["doc_id"])
        if kept:
            facts["corpus_file"] = f"corpus/{kept[0]['_file']}"
            return Step("classify", "kept", f"kept: quality_prob {facts.get('quality_prob')} >= threshold "
                        f"{facts['threshold']} ({facts['threshold_reason']})", facts)
        if rows:
            return Step("classify", "not_run", "scored; not decided yet", facts)
        return Step("classify", "not_run", "classify has not run")

    def rewrite_step(self, doc_id: str) -> Step | None:
        made = self.dataset("synthetic").find("doc_id", [doc_id])
        decided = self.decision("rewrite", doc_id)
        if not made and not decided:
            return None if not self.ran("rewrite") else Step("rewrite", "not_run", "not rewritten (not in the "
                                                                                   "rewritten part of the corpus)")
        units = [{"outcome": "kept", **{k: _rounded(v) for k, v in r.items() if k not in ("text", "_file", "doc_id")},
                  "text_preview": _preview(r.get("text"))} for r in made]
        units += [{"outcome": d["outcome"], "reason": d["reason"], "detail": d["detail"]} for d in decided]
        summary = ", ".join(f"{u.get('style') or ''} {u['outcome']}".strip()
                            + (f" ({u['reason']})" if u.get("reason") else "") for u in units)
        return Step("rewrite", "sampled", f"{len(made)} of {len(units)} rewrite units kept: {summary}",
                    {"units": units})

    # -------------------------------------------------------------------------------- one page

    def generic_step(self, name: str, doc_id: str) -> Step | None:
        """A stage without an explainer of its own, from what it declares: its decision row for the page
        (dropped or errored, with reason and detail), else the file of its kept dataset that holds the page.
        Steps (scoring, training) show nothing; a side stage shows its rows of the page, if any."""
        from pipeline.stages import kept_dataset, stage_class

        cls = stage_class(name)
        if cls.role == "step":
            return None
        for d in self.decision(name, doc_id) if cls.writes_decisions else []:
            return Step(name, d["outcome"], f"{d['outcome']}: {d['reason']} ({d['detail']})",
                        {"reason": d["reason"], "detail": d["detail"]})
        dataset = kept_dataset(name) if cls.role == "filter" else (cls.outputs[0].dataset if cls.outputs else None)
        found = self.dataset(dataset).find("doc_id", [doc_id], ["doc_id"]) if dataset else []
        if found:
            status = "passed" if cls.role == "filter" else "sampled"
            return Step(name, status, f"{'kept' if cls.role == 'filter' else 'made'} in {dataset}/{found[0]['_file']}",
                        {"file": f"{dataset}/{found[0]['_file']}"})
        if not self.ran(name):
            return Step(name, "not_run", f"{name} has not run") if cls.role == "filter" else None
        return Step(name, "not_run", f"no {name} record of this page") if cls.role == "filter" else None

    def explainers(self) -> dict[str, Any]:
        """The stages with an explainer of their own (richer than `generic_step`), by registry name."""
        from functools import partial

        from pipeline.mix import explain as mix

        return {"rules": self.rules_step, "dedup": self.dedup_step, "safety": self.safety_step,
                "annotate": self.annotate_steps,
                "classify": self.classify_step, "rewrite": self.rewrite_step,
                "mix": partial(mix.mix_step, self, make=Step), "tokenize": partial(mix.tokens_step, self, make=Step)}

    def walk(self, doc_id: str) -> Iterator[Step]:
        """The page's steps in the registry's order, lazily: the caller stops at the step the page left at.
        A stage after the one that wrote the corpus (rewrite) is shown only for a page kept in it."""
        from pipeline.stages import pipeline_order

        extract, row = self.extract_step(doc_id)
        yield extract
        if row is None:
            return
        explainers, kept = self.explainers(), False
        for name in pipeline_order()[1:]:
            if name == "rules":
                steps: Any = self.rules_step(doc_id, row)
            elif name in explainers:
                if name == "rewrite" and not kept:
                    continue
                steps = explainers[name](doc_id)
            else:
                steps = self.generic_step(name, doc_id)
            for step in steps if isinstance(steps, list) else [steps]:
                if step is None:
                    continue
                kept = kept or bool(step.facts.get("corpus_file"))
                yield step

    def story(self, doc_id: str, url: str | None) -> PageStory:
        steps: list[Step] = []
        for step in self.walk(doc_id):
            steps.append(step)
            if step.status in (schemas.DROPPED, schemas.ERRORED):
                text = f"{step.status} at {step.stage}: {step.facts.get('reason')}"
                return PageStory(doc_id, url, steps, text, step.stage, step.status, step.facts.get("reason"))
        corpus_file = next((s.facts["corpus_file"] for s in steps if s.facts.get("corpus_file")), None)
        if corpus_file:
            return PageStory(doc_id, url, steps, f"kept in {corpus_file}", "classify", schemas.KEPT, None)
        last = next((s for s in reversed(steps) if s.status != "not_run"), steps[-1])
        return PageStory(doc_id, url, steps, f"still in the run: last seen at {last.stage} (later stages have not "
                         "run)", last.stage, "in_progress", None)


def url_variants(url: str) -> list[str]:
    """The same URL with and without a trailing slash, and with the other of http/https."""
    stems = {url, url.rstrip("/"), url.rstrip("/") + "/"}
    for stem in list(stems):
        if stem.startswith("https://"):
            stems.add("http://" + stem[len("https://"):])
        elif stem.startswith("http://"):
            stems.add("https://" + stem[len("http://"):])
    return sorted(stems - {url})


# what the extract and rules steps show of an extracted page
EXTRACT_COLUMNS = ["doc_id", "url", "warc_path", "warc_record_id", "crawl_date", "language", "language_score",
                   "n_chars", "text", "rules_applied", *METRICS]


def rule_checks(row: dict[str, Any], cfg: RulesConfig) -> list[dict[str, Any]]:
    """Every quality-rule check of the enabled families against one page's stored metrics: metric, value,
    threshold, kind (min/max/line) and whether it passed (None: not checked, a null metric or threshold)."""
    failed = {f.reason for f in failures(row, cfg)} if row.get("rules_applied", True) else set()
    out = []
    for check in CHECKS:
        if not getattr(cfg, check.family) or check.metric not in row:
            continue
        value, threshold = row.get(check.metric), getattr(cfg, check.threshold)
        checked = value is not None and threshold not in (None, False) and row.get("rules_applied", True)
        out.append({"reason": check.reason, "metric": check.metric, "value": _rounded(value),
                    "threshold_field": check.threshold, "threshold": threshold, "kind": check.kind,
                    "passed": (check.reason not in failed) if checked else None})
    return out


# ------------------------------------------------------------------------------------------------ API


def explain(run_dir: str | Path, query: str, *, reader: RunReader | None = None) -> dict[str, Any]:
    """One query's answer: {"query", "pages": [PageStory dicts], "records": [the WARC records of the same URL
    that are not pages (request, metadata, ...), when a page matched], "suggestions": [nearest URLs when
    nothing matched]}."""
    reader = reader or RunReader(run_dir)
    stories = [reader.story(doc_id, url).to_dict() for doc_id, url in reader.resolve(query.strip())]
    pages = [p for p in stories if not _bookkeeping(p)]
    records = [p for p in stories if _bookkeeping(p)]
    if not pages:  # only records (a doc_id of a request record, say): they are the answer
        pages, records = records, []
    return {"query": query, "pages": pages, "records": records,
            "suggestions": [] if pages else reader.suggestions(query.strip())}


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def terminal_safe(value: Any) -> Any:
    """Every string in `value` with its control characters escaped (`\\n`, `\\x1b`): a page's URL or text must
    not move the cursor, clear the screen or start a line of its own on the terminal."""
    if isinstance(value, str):
        return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), value)
    if isinstance(value, dict):
        return {key: terminal_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [terminal_safe(item) for item in value]
    return value


def format_text(result: dict[str, Any]) -> str:
    """The terminal rendering: one block per page, a line per stage, the rule checks as a small table. Every
    string that came from a page or a WARC is printed with its control characters escaped."""
    result = terminal_safe(result)
    if not result["pages"]:
        near = "".join(f"\n  {u}" for u in result["suggestions"]) or " (the run has no URLs)"
        return f"no page of this run matches {result['query']!r}; nearest URLs:{near}"
    blocks = []
    pages, records = result["pages"], result.get("records", [])
    for page in pages:
        lines = [f"{page['url']}  (doc_id {page['doc_id']})"]
        for step in page["steps"]:
            lines.append(f"  {step['stage']:<10} {step['status']:<12} {step['summary']}")
            facts = step["facts"]
            if step["stage"] == "extract" and facts.get("warc_path"):
                lines.append(f"{'':14}from {facts['warc_path']} ({facts.get('warc_record_id')}, "
                             f"{facts.get('crawl_date')})")
            for check in facts.get("checks", []):
                if check["passed"] is None:
                    continue
                sign = {"min": ">=", "max": "<=", "line": "no line"}[check["kind"]]
                bound = check["threshold"] if check["kind"] != "line" else ""
                lines.append(f"{'':14}{'ok  ' if check['passed'] else 'FAIL'} {check['metric']:<24} "
                             f"{check['value']!s:<10} {sign} {bound}")
            for answer in facts.get("answers", []):
                lines.append(f"{'':14}{answer.get('task')}: prompt {answer.get('prompt_id')} "
                             f"({answer.get('prompt_hash', '')[:12]}), model {answer.get('model')}, params "
                             f"{answer.get('sampling_params')}"
                             + (f", p(score) {answer['quality_probs']}" if answer.get("quality_probs") else "")
                             + (f", reason: {answer['quality_reason'][:160]}" if answer.get("quality_reason") else ""))
            if step["stage"] == "classify" and "quality_prob" in facts:
                lines.append(f"{'':14}topics {facts.get('topics')} {facts.get('topic_probs')}; format "
                             f"{facts.get('format')} {facts.get('format_probs')}")
            if facts.get("redacted"):
                places = ", ".join(f"{span['type']} {span['start']}-{span['end']}" for span in facts["redacted"][:12])
                more = f" (+{len(facts['redacted']) - 12} more)" if len(facts["redacted"]) > 12 else ""
                lines.append(f"{'':14}redacted at (characters of the text before redaction): {places}{more}")
            for unit in facts.get("units", []):
                scores = ", ".join(f"{k} {unit[k]}" for k in ("rewrite_quality_prob", "faithfulness") if k in unit)
                lines.append(f"{'':14}{unit.get('style', '')} {unit['outcome']} "
                             f"{unit.get('reason') or ''} {unit.get('detail') or ''} {scores}".rstrip())
        lines.append(f"  fate: {page['fate']}")
        blocks.append("\n".join(lines))
    if records:
        blocks.append(f"(and {len(records)} WARC record(s) of this URL that are not pages: "
                      + ", ".join(f"{p['doc_id']} {p['fate_reason']}" for p in records) + ")")
    return "\n\n".join(blocks)


def _bookkeeping(page: dict[str, Any]) -> bool:
    """A WARC request/metadata/... record of the URL, dropped at extract for its type: not a page."""
    return page["fate_stage"] == "extract" and (page["fate_reason"] or "").startswith("warc_") and \
        page["fate_outcome"] == schemas.DROPPED


_STATUS_COLOURS = {"kept": "#1a7f37", "passed": "#1a7f37", "dropped": "#b35900", "errored": "#cf222e",
                   "sampled": "#0969da"}


def render_html(result: dict[str, Any]) -> str:
    """The notebook rendering: a table per page (stage, status, what happened), every value escaped."""
    esc = html.escape
    if not result["pages"]:
        near = "".join(f"<li><code>{esc(u)}</code></li>" for u in result["suggestions"])
        return (f"<div class='explain'><p>No page of this run matches <code>{esc(result['query'])}</code>. "
                f"Nearest URLs:</p><ul>{near}</ul></div>")
    parts = []
    for page in result["pages"]:
        rows = []
        for step in page["steps"]:
            colour = _STATUS_COLOURS.get(step["status"], "#57606a")
            detail = ""
            checks = [c for c in step["facts"].get("checks", []) if c["passed"] is not None]
            if checks:
                detail = "<br>".join(
                    f"{'✓' if c['passed'] else '✗'} {esc(c['metric'])} {esc(str(c['value']))} "
                    f"({esc(c['kind'])} {esc(str(c['threshold']))})" for c in checks)
                detail = f"<details><summary>{len(checks)} rule checks</summary>{detail}</details>"
            rows.append(f"<tr><td>{esc(step['stage'])}</td><td style='color:{colour}'>{esc(step['status'])}</td>"
                        f"<td style='overflow-wrap:anywhere'>{esc(step['summary'])}{detail}</td></tr>")
        parts.append(
            f"<div class='explain' style='max-width:100%'><h4 style='overflow-wrap:anywhere'>{esc(page['url'] or '')}"
            f" <small>({esc(page['doc_id'])})</small></h4>"
            f"<table style='table-layout:fixed;width:100%'><colgroup><col style='width:9em'><col style='width:7em'>"
            f"<col></colgroup>{''.join(rows)}</table><p><b>Fate:</b> {esc(page['fate'])}</p></div>")
    return "".join(parts)


def explain_many(run_dir: str | Path, queries: list[str]) -> list[dict[str, Any]]:
    """Answers for several queries, sharing one reader (footers are read once)."""
    reader = RunReader(run_dir)
    return [explain(run_dir, q, reader=reader) for q in queries]
