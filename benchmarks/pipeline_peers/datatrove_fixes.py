"""The two changes datatrove 0.10.1 needs to run here (see datatrove_run.py): a language filter whose model is
local, and the MinHash signature step's xxhash called on bytes."""

from __future__ import annotations

import xxhash
from datatrove.pipeline.dedup.minhash import MinhashDedupSignature
from datatrove.pipeline.filters.language_filter import LanguageFilter
from datatrove.utils.lid import LID


class LocalLID(LID):
    """datatrove's LID interface over the project's offline identifier (py3langid, first 2,000 characters).
    Scores: the best language's probability; the others 0 (only the best is known)."""

    def __init__(self, languages=None):
        super().__init__(languages)
        self._lid = None

    def predict(self, doc):
        if self._lid is None:
            from pipeline.langid import LanguageIdentifier

            self._lid = LanguageIdentifier()
        lang, score = self._lid.identify(doc.text)
        lang = lang or "unknown"
        pairs = {lang: score}
        if self.languages:
            return (lang, score), {code: pairs.get(code, 0.0) for code in self.languages}
        return (lang, score), pairs


class LocalLanguageFilter(LanguageFilter):
    def __init__(self, languages=None, language_threshold: float = 0.65, **kwargs):
        super().__init__(languages=languages, language_threshold=language_threshold, **kwargs)
        self.model = LocalLID(self.languages)


def _xxhash64_bytes(text: str) -> int:
    return xxhash.xxh64_intdigest(text.encode("utf-8"))


class XxhashMinhashDedupSignature(MinhashDedupSignature):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._hash_func = _xxhash64_bytes
