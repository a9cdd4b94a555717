"""Extract stage: WARC records -> HTML -> main text (trafilatura) -> language -> rule scores -> docs/.

`Extractor.process` is the pure per-record step; `extract_warc` runs it over one WARC file and writes that
file's shard (docs, decisions, stats marker). Ray is only the adapter that maps `extract_warc` over files
(see pipeline.ray_exec); nothing here imports Ray.
"""

from __future__ import annotations

import hashlib
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pipeline import schemas
from pipeline.config import ExtractConfig, InputConfig
from pipeline.io import RunLayout, local_copy, shard_key, write_json, write_parquet
from pipeline.langid import LanguageIdentifier
from pipeline.report import ShardStats
from pipeline.rules import RuleSet, rule_scores
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
    """What became of one record: a docs row, or a decision row (dropped/errored with a reason)."""

    doc: dict[str, Any] | None = None
    decision: dict[str, Any] | None = None


class Extractor:
    """Per-worker state (language model, rule filters) and the per-record pipeline."""

    def __init__(self, cfg: ExtractConfig):
        self.cfg = cfg
        self.langid = LanguageIdentifier(cfg.langid_model)
        self.rules = RuleSet(cfg.rules) if cfg.rules.enabled else None

    def _decision(self, doc_id: str, outcome: str, reason: str, url: str | None, source: str,
                  detail: str | None = None) -> Outcome:
        return Outcome(decision={"doc_id": doc_id, "stage": STAGE, "outcome": outcome, "reason": reason,
                                 "detail": detail, "url": url, "source": source})

    def extract_text(self, html: str, url: str | None) -> str | None:
        import trafilatura

        with time_limit(self.cfg.timeout_s):
            return trafilatura.extract(
                html, url=url, include_comments=False, include_tables=self.cfg.include_tables,
                favor_precision=self.cfg.favor_precision, favor_recall=self.cfg.favor_recall, deduplicate=False,
                with_metadata=False,
            )

    def process(self, record: RawRecord, source: str) -> Outcome:
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
        language, language_score = self.langid.identify(text)
        if self.cfg.languages and language not in self.cfg.languages:
            return self._decision(doc_id, schemas.DROPPED, "language_not_selected", url, source, language)
        if language_score < self.cfg.min_language_score:
            return self._decision(doc_id, schemas.DROPPED, "low_language_score", url, source, f"{language_score:.3f}")
        doc: dict[str, Any] = {
            "doc_id": doc_id, "url": url, "warc_path": source, "warc_record_id": record.record_id,
            "crawl_date": record.date, "text": text, "language": language, "language_score": language_score,
            "n_chars": len(text), "rule_failures": [],
        }
        if self.rules is not None and self.rules.applies_to(language):
            doc.update(rule_scores(text))
            doc["rule_failures"] = self.rules.failures(text, doc_id)
            if doc["rule_failures"]:
                return self._decision(doc_id, schemas.DROPPED, doc["rule_failures"][0], url, source,
                                      ",".join(doc["rule_failures"]))
        return Outcome(doc=doc)


_EXTRACTORS: dict[str, Extractor] = {}


def get_extractor(cfg: ExtractConfig) -> Extractor:
    """One Extractor per worker process and config (building rules and language models costs ~1 s)."""
    key = cfg.model_dump_json()
    if key not in _EXTRACTORS:
        _EXTRACTORS[key] = Extractor(cfg)
    return _EXTRACTORS[key]


def _damage_decision(source: str, damage: WarcDamage) -> dict[str, Any]:
    where = f"{source}: unreadable bytes from offset {damage.offset}"
    where += f", resumed at {damage.resumed_at}" if damage.resumed_at is not None else " to the end"
    return {"doc_id": make_doc_id(f"{source}@{damage.offset}", None, b""), "stage": STAGE,
            "outcome": schemas.ERRORED, "reason": "warc_damaged", "detail": f"{where} ({damage.message})",
            "url": None, "source": source}


def extract_warc(source: str, extract_cfg: ExtractConfig, input_cfg: InputConfig, out_root: str) -> dict[str, Any]:
    """Process one WARC file into its shard. Skips the file when its shard is already complete."""
    layout = RunLayout(out_root)
    key = shard_key(source)
    if layout.is_shard_done(STAGE, key):
        return {"skipped": True, "shard": key}
    started = time.perf_counter()
    stats = ShardStats(stage=STAGE, shard=key, source=source)
    docs: list[dict[str, Any]] = []
    decisions: list[dict[str, Any]] = []
    extractor = get_extractor(extract_cfg)

    def file_error(reason: str, detail: str) -> None:
        stats.input += 1
        stats.error(reason)
        decisions.append({"doc_id": make_doc_id(source, None, b""), "stage": STAGE, "outcome": schemas.ERRORED,
                          "reason": reason, "detail": detail, "url": None, "source": source})

    try:
        with local_copy(source, input_cfg.storage_options, attempts=input_cfg.retries,
                        backoff_s=input_cfg.retry_backoff_s) as path:
            records_seen = 0
            for item in iter_warc(path):
                if isinstance(item, WarcDamage):
                    decision = _damage_decision(source, item)
                    stats.input += 1
                    stats.error(decision["reason"])
                    decisions.append(decision)
                    continue
                records_seen += 1
                stats.input += 1
                outcome = extractor.process(item, source)
                if outcome.doc is not None:
                    stats.kept += 1
                    docs.append(outcome.doc)
                else:
                    decision = outcome.decision
                    (stats.drop if decision["outcome"] == schemas.DROPPED else stats.error)(decision["reason"])
                    decisions.append(decision)
            if records_seen == 0 and stats.input == 0:
                file_error("warc_empty", f"{source}: no WARC records in the file")
    except FileNotFoundError as exc:
        file_error("warc_unreadable", f"{source}: file not found ({exc})")
    except Exception as exc:  # noqa: BLE001 - any failure to open/fetch is recorded against the file
        file_error("warc_unreadable", f"{source}: {type(exc).__name__}: {exc}"[:1000])

    stats.check()
    write_parquet(schemas.from_rows(docs, schemas.DOCS), layout.dataset("docs") / f"part-{key}.parquet", schemas.DOCS)
    write_parquet(schemas.from_rows(decisions, schemas.DECISIONS), layout.decisions(STAGE) / f"part-{key}.parquet",
                  schemas.DECISIONS)
    stats.extra["seconds"] = round(time.perf_counter() - started, 3)
    write_json(stats.to_json(), layout.marker(STAGE, key))
    return stats.to_json()


def check_langid_model(cfg: ExtractConfig) -> None:
    """Fail before any task starts when the configured fastText LID model is not there (every task would
    fail the same way)."""
    from pathlib import Path

    from pipeline.config import ConfigError

    if cfg.langid_model != "py3langid" and not Path(cfg.langid_model).is_file():
        raise ConfigError(f"extract.langid_model: no fastText language-ID model file at {cfg.langid_model} "
                          "(give a local path to lid.176.bin / GlotLID's model.bin, or py3langid)")


def extract_settings(cfg) -> dict[str, Any]:
    """What docs/ depends on: the input selection and the extract settings (not retries, credentials or Ray)."""
    selection = cfg.input.model_dump(mode="json", exclude={"retries", "retry_backoff_s", "storage_options"})
    return {**{f"input.{k}": v for k, v in selection.items()},
            **{f"extract.{k}": v for k, v in cfg.extract.model_dump(mode="json").items()}}


def run(cfg, *, quiet: bool = False) -> dict[str, Any]:
    """Extract every input WARC of `cfg` (a RunConfig) into `<cfg.out>/docs`, on Ray, resumable."""
    from pipeline.ray_exec import ray_map
    from pipeline.sources import resolve_warcs

    layout = RunLayout(cfg.out)
    if not layout.is_stage_done(STAGE):
        check_langid_model(cfg.extract)  # before anything is written
    layout.check_settings(STAGE, extract_settings(cfg))
    if layout.is_stage_done(STAGE):
        if not quiet:
            print(f"[{STAGE}] complete in {layout.root}, skipped")
        return {"skipped": True}
    sources = resolve_warcs(cfg.input)
    started = time.perf_counter()
    results = ray_map(extract_warc, sources, cfg.extract, cfg.input, str(layout.root), cfg=cfg.ray,
                      label=STAGE, quiet=quiet)
    seconds = time.perf_counter() - started
    shards = layout.shard_stats(STAGE)
    expected = {shard_key(s) for s in sources}
    missing = expected - {s["shard"] for s in shards}
    if missing:
        raise RuntimeError(f"{STAGE}: {len(missing)} shard(s) did not finish: {sorted(missing)[:5]}")
    kept = sum(s["kept"] for s in shards)
    write_json({"stage": STAGE, "sources": len(sources), "kept": kept, "seconds": round(seconds, 3)},
               layout.stage_marker(STAGE))
    ran = sum(1 for r in results if not r.get("skipped"))
    if not quiet:
        print(f"[{STAGE}] {len(sources)} WARC files ({ran} processed, {len(sources) - ran} already done), "
              f"{kept} docs kept, {seconds:.1f}s")
    return {"sources": len(sources), "kept": kept, "seconds": seconds}
