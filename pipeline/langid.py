"""Offline language identification: py3langid's shipped model by default, or a local fastText LID model
(lid.176.bin, GlotLID) given by path. Nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np

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
            self._features = ByteNgramFeatures(self._py3.tk_nextmove, self._py3.tk_output)
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
        model = self._py3
        # bytes, not characters, bound the scan (2,000 CJK characters are 6,000 bytes)
        features = self._features.find(sample.encode("utf-8", errors="surrogatepass")[:SAMPLE_BYTES])
        if features.size:
            ids, counts = np.unique(features, return_counts=True)
            scores = counts.astype(np.float32) @ model.nb_ptc[ids] + model.nb_pc
        else:
            scores = model.nb_pc.copy()
        probs = model.norm_probs(scores)
        best = int(np.argmax(probs))
        return str(model.nb_classes[best]), float(probs[best])


class ByteNgramFeatures:
    """Every occurrence of py3langid's features (byte strings of 1 to 4 bytes) in a byte string, as feature ids:
    what py3langid's tokenizer finds, in numpy.

    py3langid walks an Aho-Corasick automaton (`tk_nextmove`, `tk_output`) byte by byte and collects, at each
    byte, every feature that ends there: one Python step per byte, ~0.15 ms for a 2,000-byte sample. The same
    occurrences, found from where they start: from the root, the automaton follows its trie as long as each
    byte leads one level deeper, and a state whose whole path is a feature marks an occurrence. So every
    start position takes its first byte, then its second, ... (at most the deepest feature's length),
    all positions at once."""

    def __init__(self, next_state, outputs: dict[int, tuple[int, ...]]):
        self.next_state = np.frombuffer(next_state, dtype=np.dtype(next_state.typecode)).astype(np.int32)
        transitions = self.next_state.reshape(-1, 256)
        # A state's depth is the length of its trie path: the fewest bytes that reach it from the root.
        self.depth = np.full(len(transitions), -1, dtype=np.int8)
        self.depth[0] = 0
        frontier, depth = np.zeros(1, dtype=np.intp), 0
        while frontier.size:
            depth += 1
            reached = transitions[frontier].ravel()
            frontier = np.unique(reached[self.depth[reached] < 0])
            self.depth[frontier] = depth
        self.max_depth = depth - 1
        # A state outputs the features that are suffixes of its path; the one as long as the path is the path
        # itself (a feature's length: the depth of the shallowest state that outputs it).
        length: dict[int, int] = {}
        for state, features in outputs.items():
            for feature in features:
                length[feature] = min(length.get(feature, depth), int(self.depth[state]))
        self.feature_at = np.full(len(transitions), -1, dtype=np.intp)
        for state, features in outputs.items():
            for feature in features:
                if length[feature] == self.depth[state]:
                    self.feature_at[state] = feature

    def find(self, data: bytes) -> np.ndarray:
        """The feature id of every occurrence in `data` (in no particular order)."""
        codes = np.frombuffer(data, dtype=np.uint8)
        starts = np.arange(len(codes))
        states = np.zeros(len(codes), dtype=np.int32)
        in_trie = []
        for depth in range(1, self.max_depth + 1):
            fit = np.searchsorted(starts, len(codes) - depth + 1)  # the starts with `depth` bytes left
            starts, states = starts[:fit], states[:fit]
            states = self.next_state[(states << 8) + codes[starts + depth - 1]]
            deeper = self.depth[states] == depth  # else no feature begins with the bytes from `start`
            starts, states = starts[deeper], states[deeper]
            in_trie.append(states)
        features = self.feature_at[np.concatenate(in_trie)]
        return features[features >= 0]
