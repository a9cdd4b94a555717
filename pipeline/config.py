"""Run configuration: pydantic models loaded from YAML, overridable with `--set a.b=c`.

Unknown keys and wrong types are errors that name the field (`extract.timeout_s: Input should be ...`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from pipeline.errors import CurateError


class ConfigError(CurateError, ValueError):
    """A config that cannot be loaded or validated; the message names the field."""


class Section(BaseModel):
    # every number is finite (inf and nan pass `gt=0` and then fail deep inside a stage)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class InputConfig(Section):
    # Either explicit WARC paths/URLs/globs ...
    warcs: list[str] = Field(default_factory=list)
    # ... or a Common Crawl snapshot id resolved through `<base_url>/crawl-data/<id>/warc.paths.gz`.
    snapshot: str | None = None
    base_url: str = "https://data.commoncrawl.org/"
    max_warcs: int | None = Field(default=None, ge=1)
    # A contiguous slice of the sorted listing instead of a random sample: [start, stop).
    shard_range: tuple[int, int] | None = None
    seed: int = 0
    # fsspec storage options per protocol, e.g. {"s3": {"anon": true, "endpoint_url": "..."}}
    storage_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    retries: int = Field(default=5, ge=0)
    retry_backoff_s: float = Field(default=1.0, ge=0)

    @field_validator("snapshot")
    @classmethod
    def _snapshot_shape(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"CC-MAIN-\d{4}-\d{2}", value):
            raise ValueError(f"expected a Common Crawl snapshot id like CC-MAIN-2024-33, got {value!r}")
        return value

    @field_validator("shard_range")
    @classmethod
    def _shard_range_order(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and not 0 <= value[0] < value[1]:
            raise ValueError(f"expected [start, stop) with 0 <= start < stop, got {list(value)}")
        return value


class RayConfig(Section):
    # None: connect to RAY_ADDRESS when set, else start a local Ray bound to 127.0.0.1.
    address: str | None = None
    num_cpus: int | None = Field(default=None, ge=1)
    # Tasks in flight at once; bounds driver memory whatever the number of input files.
    max_in_flight: int = Field(default=8, ge=1)
    # "ray": shards run as Ray tasks / on Ray actors; "local": every shard in the driver process, no Ray
    # (debugging, tiny inputs). Same outputs either way.
    executor: Literal["ray", "local"] = "ray"


class RulesConfig(Section):
    """The heuristic quality rules (pipeline.rules): datatrove's Gopher quality, Gopher repetition, C4 and
    FineWeb filters, as metrics measured by extract and thresholds applied by the rules stage.

    Two kinds of fields. What the metrics are (`enabled`, `apply_to_languages`, `tokenizer`): extract
    measures them into extracted/, so they are extraction settings (another value in the same run folder is
    refused). What the metrics are compared to (the family switches, every threshold, `all_failures`): the
    rules stage decides with them, so another value re-decides docs/ from the stored metrics, without
    reading a WARC file again (`curate rules`).

    Thresholds are named after the metric they bound (`max_<metric>`: a page whose metric is above it fails;
    `min_<metric>`: below it fails); defaults are datatrove's. null turns a check off. The comparisons are
    datatrove's own (`>` for a maximum, `<` for a minimum), on the same float64 values.
    """

    enabled: bool = True
    # Languages the (English-derived) Gopher/C4/FineWeb rules are applied to; other languages are stored
    # with null metrics and pass. Empty list: apply to every language.
    apply_to_languages: list[str] = Field(default_factory=lambda: ["en"])
    # Word/sentence splitting for the metrics: "fast" (one regex, pipeline.rules.FastWordTokenizer) or
    # "spacy" (datatrove's default, spaCy's blank tokenizer: same verdicts on the bundled sample, ~5x slower).
    tokenizer: Literal["fast", "spacy"] = "fast"

    # Rule families (decided in this order; the first failing check names the drop).
    gopher_quality: bool = True
    gopher_repetition: bool = True
    c4_quality: bool = True
    fineweb_quality: bool = True
    # List every failing check in the decision's detail, not only the first (which alone decides the drop).
    all_failures: bool = False

    # Gopher quality (GopherQualityFilter). n_words: words with a character that is not punctuation.
    min_doc_words: int | None = Field(default=50, ge=0)
    max_doc_words: int | None = Field(default=100_000, ge=0)
    # mean length of those words (datatrove's min/max_avg_word_length)
    min_mean_word_length: float | None = Field(default=3, ge=0)
    max_mean_word_length: float | None = Field(default=10, ge=0)
    # '#' per word, and '...'/'…' per word (datatrove bounds both with one max_symbol_word_ratio)
    max_hash_word_ratio: float | None = Field(default=0.1, ge=0)
    max_ellipsis_word_ratio: float | None = Field(default=0.1, ge=0)
    # share of lines starting with a bullet ('•', '-'); share of lines ending with an ellipsis
    max_bullet_line_ratio: float | None = Field(default=0.9, ge=0, le=1)
    max_end_ellipsis_line_ratio: float | None = Field(default=0.3, ge=0, le=1)
    # share of words with an alphabetic character (datatrove's max_non_alpha_words_ratio, a minimum)
    min_alpha_word_ratio: float | None = Field(default=0.8, ge=0, le=1)
    # distinct stop words (the, be, to, of, and, that, have, with) present
    min_stop_words: int | None = Field(default=2, ge=0)

    # Gopher repetition (GopherRepetitionFilter): duplicated paragraphs/lines, as a share of them and of
    # the characters; characters covered by the most frequent 2/3/4-gram; characters in repeated 5..10-grams.
    max_dup_para_frac: float | None = Field(default=0.3, ge=0, le=1)
    max_dup_para_char_frac: float | None = Field(default=0.2, ge=0, le=1)
    max_dup_line_frac: float | None = Field(default=0.3, ge=0, le=1)
    max_dup_line_char_frac: float | None = Field(default=0.2, ge=0, le=1)
    max_top_2gram_char_frac: float | None = Field(default=0.2, ge=0)
    max_top_3gram_char_frac: float | None = Field(default=0.18, ge=0)
    max_top_4gram_char_frac: float | None = Field(default=0.16, ge=0)
    max_dup_5gram_char_frac: float | None = Field(default=0.15, ge=0)
    max_dup_6gram_char_frac: float | None = Field(default=0.14, ge=0)
    max_dup_7gram_char_frac: float | None = Field(default=0.13, ge=0)
    max_dup_8gram_char_frac: float | None = Field(default=0.12, ge=0)
    max_dup_9gram_char_frac: float | None = Field(default=0.11, ge=0)
    max_dup_10gram_char_frac: float | None = Field(default=0.10, ge=0)

    # C4 quality (C4QualityFilter as FineWeb runs it: lines without terminal punctuation are kept, the text
    # is never edited). n_sentences: sentences in the lines C4 keeps (lines of >= 3 words, no word over 1000
    # characters, no "javascript", no cookie/terms-of-use phrase); a page with "lorem ipsum" or "{" in such
    # a line is dropped whole.
    min_sentences: int | None = Field(default=5, ge=0)
    drop_lorem_ipsum: bool = True
    drop_curly_bracket: bool = True

    # FineWeb quality (FineWebQualityFilter), over the non-blank lines: share ending in terminal punctuation,
    # share of at most 30 characters, duplicated-line characters per character, newlines per word.
    min_line_punct_ratio: float | None = Field(default=0.12, ge=0, le=1)
    max_short_line_ratio: float | None = Field(default=0.67, ge=0, le=1)
    max_char_dup_ratio: float | None = Field(default=0.01, ge=0, le=1)
    max_list_ratio: float | None = Field(default=0.3, ge=0)

    @field_validator("max_doc_words", "max_mean_word_length")
    @classmethod
    def _maximum_not_below_minimum(cls, value, info):
        # info.data holds the fields validated before this one (on assignment: all the others)
        minimum_name = info.field_name.replace("max_", "min_", 1)
        minimum = info.data.get(minimum_name)
        if value is not None and minimum is not None and value < minimum:
            raise PydanticCustomError("threshold_order", "{value} is below extract.rules.{minimum_name} ({minimum})",
                                      {"value": value, "minimum_name": minimum_name, "minimum": minimum})
        return value

    def metric_settings(self) -> dict[str, Any]:
        """The fields extracted/'s metrics depend on (extraction settings: the extract stage is bound to them)."""
        return {name: getattr(self, name) for name in ("enabled", "apply_to_languages", "tokenizer")}

    def decision_settings(self) -> dict[str, Any]:
        """The fields docs/'s decisions depend on besides the metrics (the rules stage re-decides when they
        change): the family switches, `all_failures` and every threshold."""
        metric = self.metric_settings()
        return {name: value for name, value in self.model_dump(mode="json").items() if name not in metric}


class ExtractConfig(Section):
    # Keep only these languages (ISO 639-1); empty keeps all and records the language.
    languages: list[str] = Field(default_factory=list)
    min_language_score: float = Field(default=0.0, ge=0, le=1)
    # "py3langid" (shipped model) or a local fastText LID model path (lid.176.bin, GlotLID).
    langid_model: str = "py3langid"
    timeout_s: float = Field(default=5.0, gt=0, le=86400)  # per page; a day bounds what a timer can hold
    max_html_bytes: int = Field(default=5_000_000, ge=1)
    min_text_chars: int = Field(default=1, ge=0)
    # The main-text extractor, quality against speed (docs/extract.md#choosing-the-extractor: F1 on the 181-page
    # extraction benchmark, the extract stage's speed against the default's): trafilatura (best F1, 0.965),
    # trafilatura-fast (without trafilatura's fallback extractors: F1 0.961 and 1.2x with favor_precision off,
    # 0.946 and 1.45x with it on), resiliparse (its main-content HTML-to-text: F1 0.937, 3.1x).
    extractor: Literal["trafilatura", "trafilatura-fast", "resiliparse"] = "trafilatura"
    # trafilatura's trade-off switches (include_tables also for resiliparse). Precision by default:
    # boilerplate in pretraining text costs more than a missed paragraph, and it scores best on the extraction
    # benchmark (F1 0.965 against 0.959 without; benchmarks/extraction_quality.py).
    favor_precision: bool = True
    favor_recall: bool = False
    include_tables: bool = True
    rules: RulesConfig = Field(default_factory=RulesConfig)


class DedupConfig(Section):
    docs: str | None = None  # input dataset folder; default: <out>/docs
    exact: bool = True
    url: bool = True
    near: bool = True
    line: bool = True
    normalize_case: bool = True
    normalize_whitespace: bool = True
    ngram: int = Field(default=5, ge=1)
    num_bands: int = Field(default=14, ge=1)
    rows_per_band: int = Field(default=8, ge=1)
    seed: int = 1
    # Verify LSH candidates by signature-estimated Jaccard before linking them (None: link every candidate).
    # 0.75 sits between "duplicate" (true Jaccard >= 0.8) and "not" (< 0.7); the estimate's std is ~0.04.
    verify_threshold: float | None = Field(default=0.75, ge=0, le=1)
    # A line seen in more than this many documents is removed from all of them.
    max_line_repeats: int = Field(default=6, ge=1)
    min_line_chars: int = Field(default=10, ge=0)
    min_chars_after_line_dedup: int = Field(default=200, ge=0)
    num_partitions: int = Field(default=8, ge=1)
    # Docs shards handled by one sign / line-count task and one routing destination: every such task writes one
    # file per partition, so raise it at scale until shards / shards_per_task is a few thousand.
    shards_per_task: int = Field(default=1, ge=1)
    # Keep the scratch shuffle files under <out>/_work/dedup after the stage completes (for inspection).
    keep_work: bool = False


_ENDPOINT_SUFFIXES = ("/chat/completions", "/completions", "/models", "/embeddings")


def api_root_suggestion(url: str) -> str | None:
    """None when `url` is an http(s) API root ending in `/v1` (trailing slash allowed); "" when it is not an
    http(s) URL at all; else the API root to use instead (endpoint suffixes stripped, `/v1` added)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return ""
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        return None
    if "/v1/" in path:  # .../v1/chat/completions, .../v1/models: cut after the last /v1
        return f"{parts.scheme}://{parts.netloc}{path[: path.rindex('/v1/') + 3]}"
    for endpoint in _ENDPOINT_SUFFIXES:
        if path.endswith(endpoint):
            path = path[: -len(endpoint)]
            break
    path += "/v1"
    return f"{parts.scheme}://{parts.netloc}{path}"


class LLMConfig(Section):
    url: str = "http://127.0.0.1:8000/v1"
    model: str = "tiny-llama"
    api_key_env: str = "CURATE_LLM_API_KEY"
    max_concurrency: int = Field(default=16, ge=1)
    timeout_s: float = Field(default=120.0, gt=0, le=86400)
    max_retries: int = Field(default=4, ge=0)
    retry_backoff_s: float = Field(default=0.5, ge=0)
    temperature: float = Field(default=0.0, ge=0)
    seed: int | None = 0
    cache_dir: str | None = None  # default: <out>/.llm_cache
    # Start a local tiny vLLM server for the run (demo) instead of using `url`.
    serve_tiny_model: bool = False
    tiny_model_dir: str | None = None
    # "server": HTTP to `url` (any OpenAI-compatible vLLM). "engine": vLLM's in-process LLM on Ray actors,
    # loading `engine_model` (a model folder); same prompts, parsers and cache.
    backend: Literal["server", "engine"] = "server"
    engine_model: str | None = None
    engine_max_model_len: int = Field(default=8192, ge=256)
    engine_num_gpus: float = Field(default=0, ge=0)  # per engine actor: 1 on a GPU cluster, 0 on CPU
    prompts_dir: str | None = None  # default: the repository's prompts/

    @field_validator("url")
    @classmethod
    def _url_is_api_root(cls, value: str) -> str:
        """The OpenAI-compatible API root (`.../v1`, the client appends `/chat/completions`): a URL without
        `/v1`, or an endpoint URL, would make every request 404, so it is refused here with the one to use."""
        suggestion = api_root_suggestion(value)
        if suggestion is None:
            return value
        if suggestion == "":
            raise PydanticCustomError("llm_url", "{url} is not an http(s) URL: use the server's API root, e.g. "
                                      "http://127.0.0.1:8000/v1", {"url": value})
        path = urlsplit(value).path.rstrip("/")
        if any(path.endswith(endpoint) for endpoint in _ENDPOINT_SUFFIXES):
            raise PydanticCustomError("llm_url", "{url} is an endpoint, not the API root: use {root}",
                                      {"url": value, "root": suggestion})
        raise PydanticCustomError("llm_url", "{url} does not end in /v1 (the OpenAI-compatible API root): use {root}",
                                  {"url": value, "root": suggestion})


class AnnotateConfig(Section):
    sample: int = Field(default=200, ge=1)
    seed: int = 0
    tasks: list[Literal["quality", "topics"]] = Field(default_factory=lambda: ["quality", "topics"])
    quality_prompt: str = "quality_v1"
    topics_prompt: str = "topics_v1"
    # combined: one request per page answers every label (labels_prompt: reason, score, topics, format);
    # separate: one request per task of `tasks` (quality_prompt, topics_prompt)
    mode: Literal["combined", "separate"] = "combined"
    labels_prompt: str = "labels_v1"
    max_doc_chars: int = Field(default=1500, ge=100)
    max_tokens: int = Field(default=160, ge=8)
    labels_max_tokens: int = Field(default=256, ge=8)  # the combined answer is longer than a quality one
    # Ask for the logprobs of score answers (top 20 per token) to keep p(score = 0..5); false: sampled scores only
    score_probs: bool = True
    # Teacher self-consistency: this many pages of the sample (seeded) are labelled a second time, with
    # their own temperature and seed, into labels_consistency/; 0 turns it off. Agreement of the two passes
    # goes to the annotate summary and labels/README.md; below min_kappa the labels are called too noisy.
    consistency_sample: int = Field(default=200, ge=0)
    consistency_temperature: float = Field(default=0.7, ge=0)
    consistency_seed: int = 1
    min_kappa: float = Field(default=0.4, ge=-1, le=1)
    num_actors: int = Field(default=1, ge=1)
    docs: str | None = None  # input dataset folder; default: <out>/unique when it exists, else <out>/docs
    shard_size: int = Field(default=64, ge=1)  # documents per labels/ file (and resume unit)


class DistilConfig(Section):
    label_threshold: int = Field(default=3, ge=1, le=5)
    # sampled: the teacher's sampled score >= label_threshold; expected: its expected score (sum k * p(k) from
    # the score token's probabilities) >= label_threshold, the sampled score where no distribution was kept
    label_source: Literal["sampled", "expected"] = "sampled"
    holdout_fraction: float = Field(default=0.2, gt=0, lt=1)
    seed: int = 0
    word_ngrams: int = Field(default=2, ge=1)
    dim: int = Field(default=64, ge=2)
    epoch: int = Field(default=25, ge=1)
    lr: float = Field(default=0.5, gt=0)
    min_count: int = Field(default=1, ge=1)
    # Hash buckets for word n-grams: the model file is about (vocabulary + bucket) * dim * 4 bytes.
    bucket: int = Field(default=200_000, ge=1000)
    # fastText training threads. 1 (default): reproducible, the same labels and settings give the same model
    # byte for byte (seeded, and the input-matrix rows fastText leaves uninitialised are zero-filled, see
    # classifiers.training.zeroed_allocations). More threads train faster but hogwild: not reproducible.
    threads: int = Field(default=1, ge=1)
    min_labels: int = Field(default=20, ge=2)
    # Part of the training split set aside to choose the decision threshold (metrics use the held-out split).
    validation_fraction: float = Field(default=0.15, gt=0, lt=1)
    threshold_target: Literal["keep_rate", "precision", "f1"] = "f1"
    target_value: float = Field(default=0.5, gt=0, le=1)
    # A topic (a format) is assigned when its one-vs-all probability reaches this.
    topic_threshold: float = Field(default=0.5, gt=0, lt=1)
    format_threshold: float = Field(default=0.5, gt=0, lt=1)
    quantize: bool = False
    # Quantise (.ftz) only from this many training examples: product quantisation needs enough rows.
    quantize_min_labels: int = Field(default=5000, ge=100)
    # Tune the quality model's lr / epoch / word_ngrams / dim / min_count on labels it is then not scored on
    # (never the held-out ones): the configured values first, then the grid in a seeded order, until
    # tune_budget_s is spent. An axis missing from tune_grid stays at its configured value. The topic and
    # format models keep the configured values. docs/classifier.md#choosing-the-settings.
    tune: bool = True
    tune_budget_s: float = Field(default=60.0, ge=0)
    # The default grid: 16 bigram configurations (unigram and high-lr models saturate on small label sets,
    # P(hq) = 1 for many texts; trigrams did not help), all at or below the configured lr and epoch.
    tune_grid: dict[str, list[float]] = Field(default_factory=lambda: {
        "lr": [0.1, 0.5], "epoch": [10, 25], "dim": [32, 64], "min_count": [1, 3]})
    # How settings are ranked. auto: by mean out-of-fold ROC AUC of a cv_folds-fold cross-validation over the
    # training labels (every label but the held-out ones) up to cv_max_labels of them, on one validation split
    # (validation_fraction of them) above; cross_validation / validation force one. The threshold is chosen on
    # the same out-of-sample scores of the chosen settings.
    selection: Literal["auto", "cross_validation", "validation"] = "auto"
    cv_max_labels: int = Field(default=20_000, ge=0)
    cv_folds: int = Field(default=5, ge=2)
    # The k-fold split is repeated with another seed (cv_repeats splits in all) below cv_repeat_below labels.
    cv_repeats: int = Field(default=2, ge=1)
    cv_repeat_below: int = Field(default=2_000, ge=0)
    # One-standard-error rule: the simplest settings (classifiers.selection.SIMPLICITY) whose mean AUC is within
    # one standard error of the best; false: the best mean.
    one_se: bool = True
    # validation mode: a validation split smaller than this chooses the decision threshold on out-of-fold
    # scores of cv_folds models over train+validation instead.
    cv_min_validation: int = Field(default=200, ge=0)
    # Ship a model refit on every label (held-out ones included) with the chosen settings and threshold; the
    # held-out metrics stay those of a model that never saw the held-out labels. false: ship that model.
    refit_all: bool = True
    # Training lines in a seeded random order (fastText learns in file order, its learning rate decaying);
    # false: the labels' own order.
    shuffle: bool = True
    # Bagging: the mean P(hq) of this many models (the shipped quality.bin plus bag-1 more trained on
    # bootstrap samples or another seed, bag_sampling), averaged by QualityClassifier; 1: one model.
    bag: int = Field(default=1, ge=1, le=32)
    bag_sampling: Literal["bootstrap", "seed"] = "bootstrap"
    # Spread of the held-out AUC: the held-out model trained again with this many training seeds (fastText's
    # seed and the line order) and on this many other seeded splits; 0 or 1: not measured.
    variance_seeds: int = Field(default=5, ge=0, le=50)
    # What the student reads: teacher = the first teacher_chars characters of a page (what the teacher read:
    # annotate.max_doc_chars as the labels' run recorded it), page = the whole page. Trained and scored alike.
    text_view: Literal["teacher", "page"] = "teacher"
    teacher_chars: int | None = Field(default=None, ge=1)

    @field_validator("tune_grid")
    @classmethod
    def _check_tune_grid(cls, grid: dict[str, list[float]]) -> dict[str, list[float]]:
        minimum = {"lr": 0.0, "epoch": 1, "word_ngrams": 1, "dim": 2, "min_count": 1}
        checked: dict[str, list[float]] = {}
        for key, values in grid.items():
            if key not in minimum:
                raise PydanticCustomError("tune_grid", "unknown axis {key} (expected some of {axes})",
                                          {"key": key, "axes": ", ".join(minimum)})
            if not values:
                raise PydanticCustomError("tune_grid", "axis {key} has no values", {"key": key})
            if key == "lr":
                if any(v <= 0 for v in values):
                    raise PydanticCustomError("tune_grid", "lr values must be > 0", {})
                checked[key] = sorted({float(v) for v in values})
            else:
                if any(v != int(v) or v < minimum[key] for v in values):
                    raise PydanticCustomError("tune_grid", "{key} values must be integers >= {minimum}",
                                              {"key": key, "minimum": minimum[key]})
                checked[key] = sorted({int(v) for v in values})
        return checked


class ClassifyConfig(Section):
    docs: str | None = None  # input dataset folder; default: <out>/unique when it exists, else <out>/docs
    classifier: str | None = None  # default: <out>/classifier (distil's output)
    threshold: float | None = Field(default=None, ge=0, le=1)  # None: the classifier card's threshold
    # Or the threshold that keeps about this many tokens / this share of the documents, found in the stored
    # scores (pipeline.classify.thresholds.threshold_for_target). At most one of threshold, target_tokens,
    # target_keep_rate.
    target_tokens: int | None = Field(default=None, ge=1)
    target_keep_rate: float | None = Field(default=None, gt=0, le=1)
    rows_per_file: int | None = Field(default=None, ge=1)
    bytes_per_file: int = Field(default=256 * 1024 * 1024, ge=1024)
    num_actors: int = Field(default=2, ge=1)
    batch_size: int = Field(default=1024, ge=1)
    # Topics stored per document (most probable first) when the classifier has a topic model.
    topics_top_k: int = Field(default=3, ge=1)
    # Formats stored per document (WebOrganizer format ids, most probable first) when it has a format model.
    formats_top_k: int = Field(default=2, ge=1)

    @model_validator(mode="after")
    def _one_way_to_choose_the_threshold(self) -> ClassifyConfig:
        """At most one of threshold, target_tokens, target_keep_rate (each chooses the threshold); checked on the
        whole section, so loading, `--set`, `RunConfig.updated` and assignment refuse the same pairs alike."""
        chosen = [f"classify.{name}" for name in ("threshold", "target_tokens", "target_keep_rate")
                  if getattr(self, name) is not None]
        if len(chosen) > 1:
            raise PydanticCustomError(
                "threshold_choice", "{fields} are mutually exclusive (each chooses the threshold): set only one",
                {"fields": ", ".join(chosen)})
        return self


class RewriteConfig(Section):
    enabled: bool = False
    corpus: str | None = None  # input dataset folder; default: <out>/corpus (classify's kept documents)
    # Prompt ids to run (any subset of the routed ones below); `--styles` on the command line.
    styles: list[str] = Field(
        default_factory=lambda: ["rewrite_wiki_v1", "qa_pairs_v1", "distill_v1", "knowledge_list_v1"])
    limit: int | None = Field(default=None, ge=1)  # rewrite only the first N documents of the corpus
    # Routing by the classifier's quality_prob (Nemotron-CC): >= high_threshold -> high_styles;
    # >= mid_threshold -> mid_styles; below mid_threshold -> not rewritten (reason below_rewrite_threshold).
    mid_threshold: float = Field(default=0.0, ge=0, le=1)
    high_threshold: float = Field(default=0.5, ge=0, le=1)
    mid_styles: list[str] = Field(default_factory=lambda: ["rewrite_wiki_v1"])
    high_styles: list[str] = Field(default_factory=lambda: ["qa_pairs_v1", "distill_v1", "knowledge_list_v1"])
    # Source tokens per request: pages are split on paragraph boundaries into chunks within this budget.
    chunk_tokens: int = Field(default=384, ge=32)
    # Pages needing more chunks are not rewritten (reason source_too_long).
    max_chunks_per_doc: int = Field(default=32, ge=1)
    # Folder with the served model's tokenizer.json for counting tokens; None: llm.engine_model or
    # llm.tiny_model_dir when they hold one, else an estimate (pipeline.rewrite.chunking.estimate_tokens).
    tokenizer: str | None = None
    # Output token limit per chunk answer, by style (the prompt file's `task:`); an answer that reaches it
    # is truncated_output.
    max_output_tokens: dict[str, int] = Field(default_factory=lambda: {
        "rewrite_wiki": 640, "qa_pairs": 640, "distill": 384, "knowledge_list": 512})
    temperature: float | None = Field(default=None, ge=0)  # None: llm.temperature (seeded by llm.seed)
    max_copy_ratio: float = Field(default=0.9, gt=0, le=1)
    copy_ngram: int = Field(default=8, ge=2)  # words in a run that counts as verbatim copying
    check_language: bool = True
    # Scores of every rewrite that passed the checks above, and the thresholds it is decided at (None or 0: off;
    # docs/rewrite.md#scores). The quality classifier's P(high quality) of the rewrite's text, with the classifier
    # that scored the corpus (classify.classifier, else the corpus card's, else <out>/classifier; none found
    # while this is on is an error): a floor against degenerate rewrites, below the corpus threshold on purpose
    # (a rewrite in another format, such as question-answer pairs, scores lower than prose of the same quality).
    min_quality_prob: float | None = Field(default=0.1, ge=0, le=1)
    # Faithfulness to the source chunk (pipeline.rewrite.faithfulness: invented numbers and names, kept content):
    # 0.6 passes a rewrite inventing at most 40% of the facts it states when it keeps its style's share of the
    # source; a faithful paraphrase scores about 1, one that makes up names and numbers far below.
    min_faithfulness: float | None = Field(default=0.6, ge=0, le=1)
    shard_size: int = Field(default=32, ge=1)  # documents per synthetic/ file (and resume unit)
    num_actors: int = Field(default=1, ge=1)

    @field_validator("high_threshold")
    @classmethod
    def _high_above_mid(cls, value: float, info) -> float:
        mid = info.data.get("mid_threshold")
        if mid is not None and value < mid:
            raise ValueError(f"must be >= rewrite.mid_threshold ({mid})")
        return value


class FiltersConfig(Section):
    """Pages removed before extraction, by their WARC record's URL (`reason: blocked_url`). Each blocklist PATH is
    a plain list (one domain or URL per line, `#` comments) or a UT1-style folder (`<category>/domains`,
    `<category>/urls`). A domain blocks itself and its subdomains. Part of extract's settings: another list
    is refused in a run folder that has extracted pages (they were never extracted, or were: either way
    extracted/ would not follow the list), like every extraction setting."""

    url_blocklist: list[str] = Field(default_factory=list)
    # whole words or subwords of the URL's host and path that block a page (datatrove's banned words)
    url_banned_words: list[str] = Field(default_factory=list)


class PIIConfig(Section):
    """Personal data in the documents (e-mail addresses, IP addresses, phone numbers): `redact` replaces each
    span with a typed placeholder (<EMAIL_ADDRESS>, <IP_ADDRESS>, <PHONE_NUMBER>); `drop` also drops a page
    whose count per 1,000 words is above `max_per_1k_words` (`reason: too_much_pii`); `off` does neither."""

    mode: Literal["redact", "drop", "off"] = "redact"
    max_per_1k_words: float = Field(default=10.0, ge=0)

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML reads a bare `off` as false


class DecontamConfig(Section):
    """Benchmark text removed from the documents and the synthetic rewrites: a document holding an n-gram (of
    normalised words) of an item of an evaluation set is dropped (`reason: contaminated`), or with
    `mode: cut` the matching spans are removed and the rest kept. Items shorter than `ngram` words match
    whole."""

    eval_sets: list[str] = Field(default_factory=list)  # JSONL or Parquet files, or `datasets` folders
    text_fields: list[str] = Field(default_factory=lambda: ["text"], min_length=1)
    ngram: int = Field(default=13, ge=3, le=64)
    mode: Literal["drop", "cut"] = "drop"


class MixConfig(Section):
    """The training mix (`curate mix`, pipeline.mix): the corpus (and the synthetic rewrites) grouped by topic,
    format and quality bucket, each group given its share of a token budget: cut best first when it has more,
    repeated up to `max_epochs` when it has less (a shortfall past that goes to the other groups). Off in
    `curate run` unless `target_tokens` is set. docs/mix.md."""

    corpus: str | None = None  # input folder; default: <out>/corpus (classify's kept documents)
    synthetic: str | None = None  # default: <out>/synthetic (the rewrites), read when synthetic_share > 0
    # The budget, in training tokens of `tokenizer` (a document's tokens plus its one end-of-document token).
    target_tokens: int | None = None
    # YAML file of group -> weight (`--weights`); None: every group keeps its natural share.
    weights: str | None = None
    # The weight of a group the weights file does not name: None = its natural share of what the named groups
    # leave; 0 = left out; another number = that weight.
    default_weight: float | None = Field(default=None, ge=0)
    # What a group is: one or more of topic (the top topic), format (the top WebOrganizer format) and
    # quality_bucket (quality_prob cut at quality_edges), crossed in this order ("history/high").
    group_by: list[Literal["topic", "format", "quality_bucket"]] = Field(default_factory=lambda: ["topic"],
                                                                         min_length=1)
    # Quality buckets (Nemotron-CC's five levels): quality_prob < edges[0] is buckets[0], and so on.
    quality_edges: list[float] = Field(default_factory=lambda: [0.2, 0.4, 0.6, 0.8])
    quality_buckets: list[str] = Field(
        default_factory=lambda: ["low", "medium_low", "medium", "medium_high", "high"])
    # A group with fewer tokens than its share is repeated up to this many epochs (about four cost little:
    # Muennighoff et al. 2023, "Scaling Data-Constrained Language Models").
    max_epochs: float = Field(default=4.0, ge=1)
    # Share of the budget taken from synthetic/ (grouped like the corpus, by its source page's labels).
    synthetic_share: float = Field(default=0.0, ge=0, lt=1)
    # A local tokenizer.json or a folder holding one; None: the served model's (pipeline.llm.tokens).
    tokenizer: str | None = None
    seed: int = 0
    # mix/ files: a new one past this many training tokens (and rows, when set); tokenize makes one token
    # shard per mix/ file.
    tokens_per_file: int = Field(default=100_000_000, ge=1)
    rows_per_file: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=1000, ge=1)  # documents per tokenizer call when counting

    @field_validator("target_tokens")
    @classmethod
    def _a_budget(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise PydanticCustomError("budget", "the budget must be at least 1 token", {})
        return value

    @field_validator("group_by")
    @classmethod
    def _each_label_once(cls, labels: list[str]) -> list[str]:
        if len(set(labels)) != len(labels):
            raise ValueError(f"each label at most once, got {labels}")
        return labels

    @field_validator("quality_edges")
    @classmethod
    def _edges_increase(cls, edges: list[float]) -> list[float]:
        if any(not 0 < edge < 1 for edge in edges) or sorted(set(edges)) != edges:
            raise ValueError(f"expected increasing values strictly between 0 and 1, got {edges}")
        return edges

    @field_validator("quality_buckets")
    @classmethod
    def _one_name_per_bucket(cls, names: list[str], info) -> list[str]:
        edges = info.data.get("quality_edges")
        if edges is not None and len(names) != len(edges) + 1:
            raise ValueError(f"{len(edges)} quality_edges make {len(edges) + 1} buckets: give that many names, "
                             f"got {len(names)}")
        if len(set(names)) != len(names):
            raise ValueError(f"bucket names must differ, got {names}")
        return names


class TokenizeConfig(Section):
    """The mix as token ids for training (`curate tokenize`, pipeline.mix.tokenize): one token shard per mix/
    file, an end-of-document token after each document, and a document index beside them. docs/mix.md."""

    enabled: bool = True  # in `curate run`, when mix.target_tokens is set
    mix: str | None = None  # input folder; default: <out>/mix
    # datatrove: .ds + .ds.index files (datatrove's DatatroveFolderDataset, nanotron); megatron: .bin + .idx
    # (Megatron-LM's IndexedDataset, GPT-NeoX, NeMo).
    format: Literal["datatrove", "megatron"] = "datatrove"
    # The end-of-document token; None: <|end_of_text|>, else the tokenizer's own eos_token, else </s> or
    # <|endoftext|>, whichever the vocabulary has.
    eos_token: str | None = None
    batch_size: int = Field(default=1000, ge=1)  # documents per tokenizer call


class StorageConfig(Section):
    """Where a run folder on object storage (`out: s3://bucket/prefix`) is copied locally, and how it is reached."""

    # The local copies of run folders on object storage: the same path on every node, on a local disk with room
    # for what a node reads and writes (None: /tmp/curate-runs, or CURATE_RUN_CACHE when set).
    cache_dir: str | None = None
    # fsspec options per protocol, e.g. {"s3": {"endpoint_url": "http://127.0.0.1:9000"}}; credentials come
    # from the usual environment (AWS_ACCESS_KEY_ID, ...) unless given here.
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # attempts after a transient error (SlowDown, 503, a timeout) of one put, get, list or delete
    retries: int = Field(default=5, ge=0, le=20)


class RunConfig(Section):
    name: str = "run"
    out: str = "runs/demo"
    input: InputConfig = Field(default_factory=InputConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    extract: ExtractConfig = Field(default_factory=ExtractConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    annotate: AnnotateConfig = Field(default_factory=AnnotateConfig)
    distil: DistilConfig = Field(default_factory=DistilConfig)
    classify: ClassifyConfig = Field(default_factory=ClassifyConfig)
    rewrite: RewriteConfig = Field(default_factory=RewriteConfig)
    filters: FiltersConfig = Field(default_factory=FiltersConfig)
    pii: PIIConfig = Field(default_factory=PIIConfig)
    decontam: DecontamConfig = Field(default_factory=DecontamConfig)
    mix: MixConfig = Field(default_factory=MixConfig)
    tokenize: TokenizeConfig = Field(default_factory=TokenizeConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)

    def get(self, key: str) -> Any:
        """The value at a dotted key (`classify.docs`)."""
        node: Any = self
        for part in key.split("."):
            node = getattr(node, part)
        return node

    def updated(self, **values: Any) -> RunConfig:
        """A copy with dotted keys set (`updated(**{"classify.threshold": 0.5})`), validated like a config file:
        a value out of range or two settings that exclude each other is a ConfigError naming the field."""
        data = self.model_dump()
        for key, value in values.items():
            node = data
            *parents, last = key.split(".")
            for part in parents:
                node = node[part]
            node[last] = value
        try:
            return RunConfig.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(_format_validation_error(exc, "overrides")) from None


def _format_validation_error(error: ValidationError, source: str) -> str:
    lines = [f"invalid config ({source}):"]
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "<root>"
        message = "unknown field" if item["type"] == "extra_forbidden" else item["msg"]
        lines.append(f"  {field}: {message} (got {item.get('input')!r})")
    return "\n".join(lines)


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one `a.b.c=value` override in place; the value is parsed as YAML (`3`, `true`, `[en, de]`)."""
    if "=" not in assignment:
        raise ConfigError(f"--set expects key=value, got {assignment!r}")
    key, raw = assignment.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"--set has an empty key: {assignment!r}")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {part!r} is not a section")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"--set {key}: the value {raw!r} is not valid YAML ({problem}); quote it or fix it") from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        data = loaded or {}
    for assignment in overrides or []:
        apply_override(data, assignment)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None
