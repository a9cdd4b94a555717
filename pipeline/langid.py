"""Offline language identification: py3langid's shipped model by default, or a local fastText LID model
(lid.176.bin, GlotLID) given by path. Nothing is downloaded."""

from __future__ import annotations

from pathlib import Path


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
        sample = " ".join(text[:5000].split())
        if not sample:
            return None, 0.0
        if self._py3 is not None:
            language, prob = self._py3.classify(sample)
            return str(language), float(prob)
        labels, probs = self._fasttext.predict(sample, k=1)
        # "__label__en" (lid.176) or "__label__eng_Latn" (GlotLID)
        label = labels[0].removeprefix("__label__")
        return label, float(min(probs[0], 1.0))
