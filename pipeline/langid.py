"""Offline language identification: py3langid's shipped model by default, or a local fastText LID model
(lid.176.bin, GlotLID) given by path. Nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

# The first 2,000 characters (at most 2,000 bytes of them) decide as the first 5,000 characters do on 90 of
# the bundled sample's 91 pages (the other is a garbled Chinese page that 5,000 characters call Japanese).
SAMPLE_CHARS = 2000
SAMPLE_BYTES = 2000


class LanguageIdentifier:
    def __init__(self, model: str = "py3langid"):
        self.model = model
        if model == "py3langid":
            from py3langid.langid import MODEL_FILE
            from py3langid.langid import LanguageIdentifier as _Py3

            self._py3 = _Py3.from_pickled_model(MODEL_FILE, norm_probs=True)
            self._fasttext = None
        else:
            if not Path(model).is_file():
                raise FileNotFoundError(f"extract.langid_model: no fastText LID model at {model}")
            import fasttext

            self._py3 = None
            self._fasttext = fasttext.load_model(model)

    def identify(self, text: str) -> tuple[str | None, float]:
        """(ISO 639-1 code or None for empty text, probability)."""
        sample = " ".join(text[:SAMPLE_CHARS].split())
        if not sample:
            return None, 0.0
        if self._py3 is not None:
            return self._classify_py3(sample)
        labels, probs = self._fasttext.predict(sample, k=1)
        # "__label__en" (lid.176) or "__label__eng_Latn" (GlotLID)
        label = labels[0].removeprefix("__label__")
        return label, float(min(probs[0], 1.0))

    def _classify_py3(self, sample: str) -> tuple[str, float]:
        """py3langid's classify, scoring only the features that occur: its dense product with the whole
        7480x97 weight matrix (2.9 MB) is mostly zeros and, between pages of trafilatura work that evict
        it from the cache, costs more than the byte scan itself."""
        import numpy as np

        model = self._py3
        next_state, outputs = model.tk_nextmove, model.tk_output
        features: list[int] = []
        extend = features.extend
        state = 0
        # bytes, not characters, bound the scan (2,000 CJK characters are 6,000 bytes)
        for byte in sample.encode("utf-8", errors="surrogatepass")[:SAMPLE_BYTES]:
            state = next_state[(state << 8) + byte]
            if state in outputs:
                extend(outputs[state])
        if features:
            ids, counts = np.unique(np.asarray(features, dtype=np.intp), return_counts=True)
            scores = counts.astype(np.float32) @ model.nb_ptc[ids] + model.nb_pc
        else:
            scores = model.nb_pc.copy()
        probs = model.norm_probs(scores)
        best = int(np.argmax(probs))
        return str(model.nb_classes[best]), float(probs[best])
