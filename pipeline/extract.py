"""Extract stage: WARC records -> HTML -> main text (trafilatura) -> language -> rule metrics -> extracted/.

`Extractor.process` is the pure per-record step; `ExtractStage.process` runs it over one WARC file (one
shard). The runtime (pipeline.runtime) plans, resumes, writes and runs the shards on Ray. A file that could
not be read at all (HTTP 5xx/429, a timeout, a reset connection, a local file not there yet) is errored
and transient: its shard is not done, and the next run tries it again. Damage inside a readable file is
final.

Score first, decide later: every page that got text and passed the checks before the rules (language,
score) is kept here, in extracted/ (schema EXTRACTED), with every rule metric measured
(`pipeline.rules.RuleSet.measure`). The rules stage (`pipeline.rules_stage`, next in the registry) decides
from those metrics into docs/; other thresholds re-decide there without reading a WARC file again.
`curate extract` runs both.
"""

from __future__ import annotations

import hashlib
import signal
import threading
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pipeline import schemas
from pipeline.config import ExtractConfig, RunConfig
from pipeline.io import describe_error, local_copy, shard_key, unreadable_is_transient
from pipeline.langid import LanguageIdentifier
from pipeline.rules import RuleSet
from pipeline.runtime import Output, Shard, ShardResult, Stage
from pipeline.warc import RawRecord, WarcDamage, decode_html, iter_warc, looks_binary, parse_http_response

STAGE = "extract"
HTML_TYPES = ("text/html", "application/xhtml+xml", "application/xml", "text/xml")


class ExtractTimeout(BaseException):
    """Raised into the extraction when its time is up. A BaseException, like KeyboardInterrupt, because
    trafilatura wraps parsing steps in `except Exception` and would otherwise swallow it and carry on."""


@contextmanager
def time_limit(seconds: float):
    """Interrupt the body with ExtractTimeout after `seconds`.

    On the main thread (where Ray runs tasks) a one-shot SIGALRM timer raises it from the signal handler.
    On any other thread a watchdog timer injects it asynchronously into that thread
    (PyThreadState_SetAsyncExc). Both take effect between Python bytecodes, which is where trafilatura
    spends its time; a single C call that never returned could not be interrupted this way.
    """
    if threading.current_thread() is threading.main_thread():
        with _signal_time_limit(seconds):
            yield
    else:
        with _thread_time_limit(seconds):
            yield


@contextmanager
def _signal_time_limit(seconds: float):
    def on_alarm(signum, frame):
        raise ExtractTimeout(f"extraction exceeded {seconds}s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextmanager
def _thread_time_limit(seconds: float):
    import ctypes

    thread_id = threading.get_ident()
    lock = threading.Lock()
    state = {"active": True, "fired": False}

    def fire() -> None:
        with lock:
            if state["active"]:
                state["fired"] = True
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(ExtractTimeout))

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        with lock:
            state["active"] = False
            if state["fired"]:
                # clear an injected exception that has not been raised yet, so it cannot escape later
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), None)


def make_doc_id(record_id: str | None, url: str | None, payload: bytes) -> str:
    """Stable id: from the WARC record id (with the URL: some writers reuse one id for several records), or
    from url + a digest of the payload's first 64 KiB when the record has none."""
    if record_id:
        key = f"{record_id}\x00{url}"
    else:
        key = f"{url}\x00{hashlib.sha1(memoryview(payload)[:65536]).hexdigest()}"
    return hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()[:20]


@dataclass
class Outcome:
    """What became of one record: an extracted row, or a decision row (dropped/errored with a reason)."""

    doc: dict[str, Any] | None = None
    decision: dict[str, Any] | None = None


TextExtractor = Callable[[str, str | None], str | None]


def text_extractor(cfg: ExtractConfig) -> TextExtractor:
    """The main-text function of `extract.extractor` with its options: (decoded HTML, URL) -> text or None.

    The stage calls it under `extract.timeout_s`; `benchmarks/extract.py` calls the very same function in its
    bare loop, so the stage is compared with exactly the extraction it runs.

    - trafilatura: `trafilatura.extract` with the trade-off switches, tables as configured, no comments, no
      deduplication inside the page, no metadata.
    - trafilatura-fast: the same with `fast=True` (trafilatura's own extraction only, without its
      readability/jusText fallbacks).
    - resiliparse: `extract_plain_text(main_content=True)` without comments, alt texts and post metadata (what
      trafilatura leaves out too), tables skipped unless included; the blank lines it puts between blocks are
      dropped, so its text has one line per block as trafilatura's has and the line and paragraph rules
      measure both alike.
    """
    if cfg.extractor == "resiliparse":
        from resiliparse.extract.html2text import extract_plain_text

        skip = None if cfg.include_tables else ["table"]

        def resiliparse_text(html: str, url: str | None) -> str:
            text = extract_plain_text(html, preserve_formatting=True, main_content=True, comments=False,
                                      alt_texts=False, post_meta=False, skip_elements=skip)
            return "\n".join(line for line in text.splitlines() if not line.isspace() and line)

        return resiliparse_text
    import functools

    import trafilatura

    options: dict[str, Any] = {
        "include_comments": False, "include_tables": cfg.include_tables, "favor_precision": cfg.favor_precision,
        "favor_recall": cfg.favor_recall, "deduplicate": False, "with_metadata": False}
    if cfg.extractor == "trafilatura-fast":
        options["fast"] = True
    return functools.partial(trafilatura.extract, **options)


class Extractor:
    """Per-worker state (language model, the rules' tokenizer, the text extractor) and the per-record
    pipeline."""

    def __init__(self, cfg: ExtractConfig, blocklist: Any = None):
        self.cfg = cfg
        self._extract = text_extractor(cfg)
        self.langid = LanguageIdentifier(cfg.langid_model)
        self.rules = RuleSet(cfg.rules) if cfg.rules.enabled else None
        self.blocklist = blocklist  # pipeline.safety.urls.UrlBlocklist, or None

    def _decision(self, doc_id: str, outcome: str, reason: str, url: str | None, source: str,
                  detail: str | None = None) -> Outcome:
        return Outcome(decision={"doc_id": doc_id, "stage": STAGE, "outcome": outcome, "reason": reason,
                                 "detail": detail, "url": url, "source": source})

    def extract_text(self, html: str, url: str | None) -> str | None:
        with time_limit(self.cfg.timeout_s):
            return self._extract(html, url=url)

    def process(self, record: RawRecord, source: str) -> Outcome:
        """One record from start to end: `extract_page`, then `measure_page`."""
        return self.measure_page(self.extract_page(record, source))

    def extract_page(self, record: RawRecord, source: str) -> Outcome:
        """A record up to its main text: a decision, or a page (a doc row whose language and rule metrics
        `measure_page` adds)."""
        doc_id = make_doc_id(record.record_id, record.url, record.block)
        url = record.url
        # a damaged record is errored whatever its type: its bytes cannot be trusted
        if record.length_error:
            return self._decision(doc_id, schemas.ERRORED, "warc_bad_content_length", url, source,
                                  f"{source}@{record.offset}: {record.length_error}")
        if record.truncated:
            return self._decision(doc_id, schemas.ERRORED, "warc_truncated_record", url, source,
                                  f"{source}@{record.offset}: block has {len(record.block)} of "
                                  f"{record.content_length} bytes")
        if record.record_type != "response":
            return self._decision(doc_id, schemas.DROPPED, f"warc_{record.record_type}", url, source)
        if not (url or "").startswith(("http://", "https://")):
            return self._decision(doc_id, schemas.DROPPED, "not_http", url, source)
        if self.blocklist is not None and (match := self.blocklist.match(url)) is not None:
            # before the HTTP body is parsed or the HTML extracted: a blocked page costs no trafilatura time
            return self._decision(doc_id, schemas.DROPPED, "blocked_url", url, source, self.blocklist.detail(match))
        response = parse_http_response(record.block)
        if response.status != 200:
            return self._decision(doc_id, schemas.DROPPED, "http_not_200", url, source, f"status {response.status}")
        if response.content_type and response.content_type not in HTML_TYPES:
            return self._decision(doc_id, schemas.DROPPED, "not_html", url, source, response.content_type)
        if len(response.body) > self.cfg.max_html_bytes:
            return self._decision(doc_id, schemas.DROPPED, "html_too_large", url, source,
                                  f"{len(response.body)} bytes > extract.max_html_bytes={self.cfg.max_html_bytes}")
        html, _charset = decode_html(response.body, response.charset)
        if looks_binary(html):
            return self._decision(doc_id, schemas.DROPPED, "binary_payload", url, source, response.content_type)
        try:
            text = self.extract_text(html, url)
        except ExtractTimeout as exc:
            return self._decision(doc_id, schemas.ERRORED, "extract_timeout", url, source, str(exc))
        except Exception as exc:  # noqa: BLE001 - one page's parser crash must not stop the file
            return self._decision(doc_id, schemas.ERRORED, "extract_failed", url, source,
                                  f"{type(exc).__name__}: {exc}"[:500])
        text = (text or "").strip()
        if len(text) < max(self.cfg.min_text_chars, 1):
            return self._decision(doc_id, schemas.DROPPED, "no_text", url, source)
        return Outcome(doc={"doc_id": doc_id, "url": url, "warc_path": source, "warc_record_id": record.record_id,
                            "crawl_date": record.date, "text": text})

    def measure_page(self, outcome: Outcome) -> Outcome:
        """A page's language (dropped when not wanted) and rule metrics; a decision is returned as it is."""
        doc = outcome.doc
        if doc is None:
            return outcome
        text = doc["text"]
        language, language_score = self.langid.identify(text)
        if self.cfg.languages and language not in self.cfg.languages:
            return self._decision(doc["doc_id"], schemas.DROPPED, "language_not_selected", doc["url"],
                                  doc["warc_path"], language)
        if language_score < self.cfg.min_language_score:
            return self._decision(doc["doc_id"], schemas.DROPPED, "low_language_score", doc["url"], doc["warc_path"],
                                  f"{language_score:.3f}")
        doc.update(language=language, language_score=language_score, n_chars=len(text), rules_applied=False)
        if self.rules is not None and self.rules.applies_to(language):
            # every metric, whatever the page's verdict: the rules stage decides, at any thresholds
            doc.update(self.rules.measure(text), rules_applied=True)
        return outcome


def _damage_decision(source: str, damage: WarcDamage) -> dict[str, Any]:
    where = f"{source}: unreadable bytes from offset {damage.offset}"
    where += f", resumed at {damage.resumed_at}" if damage.resumed_at is not None else " to the end"
    return {"doc_id": make_doc_id(f"{source}@{damage.offset}", None, b""), "stage": STAGE,
            "outcome": schemas.ERRORED, "reason": "warc_damaged", "detail": f"{where} ({damage.message})",
            "url": None, "source": source}


def extract_records(extractor: Extractor, path, source: str, stats, docs: list, decisions: list) -> None:
    """Every record of one local WARC file through `extractor`, into extracted rows or decision rows, in
    record order. Damage inside the file (a corrupt or cut record) is final and recorded per damaged region.

    Two passes: the main text of every record first, then the language and rule metrics of every page. The
    same work as `Extractor.process` record by record, ~0.4 ms less per page: interleaved with the
    extractor's, the language ID and the rules ran ~40% slower, each evicting the other's data from the CPU
    caches. The pages of one file are held until it is written anyway."""
    outcomes: list[Outcome] = []
    for item in iter_warc(path):
        stats.input += 1
        if isinstance(item, WarcDamage):
            outcomes.append(Outcome(decision=_damage_decision(source, item)))
        else:
            outcomes.append(extractor.extract_page(item, source))
    for pending in outcomes:
        outcome = extractor.measure_page(pending)
        if outcome.doc is not None:
            stats.kept += 1
            docs.append(outcome.doc)
        else:
            decision = outcome.decision
            (stats.drop if decision["outcome"] == schemas.DROPPED else stats.error)(decision["reason"])
            decisions.append(decision)


def check_langid_model(cfg: ExtractConfig) -> None:
    """Fail before any task starts when the configured fastText LID model is not there (every task would
    fail the same way)."""
    from pathlib import Path

    from pipeline.config import ConfigError

    if cfg.langid_model != "py3langid" and not Path(cfg.langid_model).is_file():
        raise ConfigError(f"extract.langid_model: no fastText language-ID model file at {cfg.langid_model} "
                          "(give a local path to lid.176.bin / GlotLID's model.bin, or py3langid)")


def check_extractor(cfg: ExtractConfig) -> None:
    """Fail before any task starts when the chosen extractor's package is not installed."""
    from pipeline.config import ConfigError

    try:
        text_extractor(cfg)
    except ImportError as exc:
        raise ConfigError(f"extract.extractor: {cfg.extractor} needs a package that is not installed ({exc}); "
                          "install the project's pinned dependencies (requirements/constraints.txt)") from None


def extract_settings(cfg: RunConfig) -> dict[str, Any]:
    """What extracted/ depends on: the input selection and the extract settings (not retries, credentials or
    Ray), of the rules only what the metrics depend on: the thresholds are the rules stage's, and changing
    them re-decides docs/ from extracted/ instead of extracting again."""
    selection = cfg.input.model_dump(mode="json", exclude={"retries", "retry_backoff_s", "storage_options"})
    extraction = cfg.extract.model_dump(mode="json", exclude={"rules"})
    settings = {**{f"input.{k}": v for k, v in selection.items()},
                **{f"extract.{k}": v for k, v in extraction.items()},
                "extract.rules": cfg.extract.rules.metric_settings()}
    if cfg.filters.url_blocklist or cfg.filters.url_banned_words:
        # the lists' content, not only their paths: an updated list in the same place is another setting
        settings["filters"] = {"url_blocklist": blocklist_fingerprint(cfg.filters.url_blocklist),
                               "url_banned_words": sorted(cfg.filters.url_banned_words)}
    return settings


def blocklist_fingerprint(paths: list[str]) -> dict[str, str]:
    """sha256 of each blocklist (a folder: of its files, by relative name), by path."""
    from pathlib import Path

    from pipeline.io import tree_digest

    return {entry: tree_digest(entry)[:16] for entry in paths if Path(entry).exists()}


def load_blocklist(cfg: RunConfig) -> Any:
    """The URL blocklist of `filters` (None without one)."""
    if not (cfg.filters.url_blocklist or cfg.filters.url_banned_words):
        return None
    from pipeline.safety.urls import UrlBlocklist

    return UrlBlocklist.load(list(cfg.filters.url_blocklist), list(cfg.filters.url_banned_words))


class ExtractStage(Stage):
    """WARC files -> extracted/: one shard per WARC file, a Ray task each."""

    name = STAGE
    section = "extract"
    outputs = (Output("extracted", schemas.EXTRACTED),)
    plan_follows_settings = True  # the input selection is one of the settings
    unit = "WARC file"

    def settings(self) -> dict[str, Any]:
        return extract_settings(self.cfg)

    def check(self) -> None:
        check_langid_model(self.cfg.extract)
        check_extractor(self.cfg.extract)
        blocklist = load_blocklist(self.cfg)  # missing, empty or not text: one message before any task
        # only its description stays on the stage (the stage object travels to every worker; the list does not)
        self.blocklists = blocklist.describe() if blocklist is not None else None

    def finish(self, summary: dict[str, Any], markers: list[dict[str, Any]]) -> dict[str, Any]:
        """The blocklists used (path, entries, sha256), for the dataset card."""
        blocklists = getattr(self, "blocklists", None)
        return {"blocklists": blocklists} if blocklists else {}

    def plan(self) -> list[Shard]:
        from pipeline.sources import resolve_warcs

        return [Shard(key=f"part-{shard_key(source)}", source=source) for source in resolve_warcs(self.cfg.input)]

    def setup(self) -> Extractor:
        return Extractor(self.cfg.extract, load_blocklist(self.cfg))  # once per worker, not per WARC file

    def process(self, extractor: Extractor, shard: Shard) -> ShardResult:
        source, input_cfg = shard.source, self.cfg.input
        stats = self.new_stats(shard)
        docs: list[dict[str, Any]] = []
        decisions: list[dict[str, Any]] = []
        transient = 0
        try:
            with local_copy(source, input_cfg.storage_options, attempts=input_cfg.retries,
                            backoff_s=input_cfg.retry_backoff_s) as path:
                extract_records(extractor, path, source, stats, docs, decisions)
            if stats.input == 0:
                docs, decisions = [], [self._file_error(stats, "warc_empty", f"{source}: no WARC records in the file")]
        except Exception as exc:  # noqa: BLE001 - a file that cannot be opened or fetched is recorded against it
            # Nothing of the file is kept when it could not be read to the end: a rerun reads it whole.
            transient = int(unreadable_is_transient(exc))
            stats.input, stats.kept = 0, 0
            stats.dropped.clear()
            stats.errored.clear()
            detail = f"{source}: {describe_error(exc)}"
            if transient:
                detail += " (transient: the next run tries this file again)"
            docs, decisions = [], [self._file_error(stats, "warc_unreadable", detail)]
        return ShardResult(rows={"extracted": docs}, decisions=decisions, stats=stats, transient=transient)

    @staticmethod
    def _file_error(stats, reason: str, detail: str) -> dict[str, Any]:
        stats.input += 1
        stats.error(reason)
        return {"doc_id": make_doc_id(stats.source, None, b""), "stage": STAGE, "outcome": schemas.ERRORED,
                "reason": reason, "detail": detail[:1000], "url": None, "source": stats.source}
