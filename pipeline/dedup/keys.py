"""What dedup compares documents by: digests of normalised text and URL, MinHash signatures, LSH band keys,
and line digests. Pure functions of one document; nothing here knows about files or Ray.

MinHash: words are `\\w+` runs of the lower-cased text; a shingle is `ngram` consecutive words. Each word is
hashed once (xxh3), an n-gram's hash is a polynomial combination of its word hashes, finalised with the
splitmix64 mixer, all vectorised in numpy. Each of the `bands * rows` permutations is `a*x + b mod 2**64`
with a random odd `a` (multiply-add hashing: its high bits, which decide the minimum, are universal), so
there is no modulo in the inner loop. Signatures are uint64.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import xxhash

WORD_RE = re.compile(r"\w+")
_COMBINE = np.uint64(0x9E3779B97F4A7C15)  # odd constant for combining word hashes into an n-gram hash
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
# Rows of the (shingles x permutations) matrix computed at once: bounds memory on very long documents.
_SHINGLE_BLOCK = 2048

KEY_BYTES = 16  # exact, URL and band keys are 128-bit digests: no accidental collisions at 10^10 documents


def normalise_text(text: str, *, case: bool, whitespace: bool) -> str:
    if whitespace:
        text = " ".join(text.split())
    if case:
        text = text.casefold()
    return text


def exact_digest(text: str, *, case: bool = True, whitespace: bool = True) -> bytes:
    normalised = normalise_text(text, case=case, whitespace=whitespace)
    return xxhash.xxh3_128_digest(b"x" + normalised.encode("utf-8", "surrogatepass"))


def normalise_url(url: str | None) -> str | None:
    """Scheme and host lower-cased, default port and fragment dropped, empty path as `/`; None when the URL
    has no host (those never count as URL duplicates)."""
    if not url:
        return None
    try:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError:
        return None
    if not host:
        return None
    scheme = parts.scheme.lower()
    if port is not None and not ((scheme == "http" and port == 80) or (scheme == "https" and port == 443)):
        host = f"{host}:{port}"
    return urlunsplit((scheme, host, parts.path or "/", parts.query, ""))


def url_digest(url: str | None) -> bytes | None:
    normalised = normalise_url(url)
    return None if normalised is None else xxhash.xxh3_128_digest(b"u" + normalised.encode("utf-8", "surrogatepass"))


def _mix64(values: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, in place on a uint64 array (a bijection that spreads every input bit)."""
    values ^= values >> np.uint64(30)
    values *= _MIX1
    values ^= values >> np.uint64(27)
    values *= _MIX2
    values ^= values >> np.uint64(31)
    return values


class MinHasher:
    """MinHash signatures and LSH band keys with fixed parameters (same seed -> same permutations everywhere)."""

    def __init__(self, ngram: int = 5, num_bands: int = 14, rows_per_band: int = 8, seed: int = 1):
        self.ngram = ngram
        self.num_bands = num_bands
        self.rows_per_band = rows_per_band
        self.num_perm = num_bands * rows_per_band
        rng = np.random.default_rng(seed)
        self._mult = (rng.integers(0, np.iinfo(np.uint64).max, size=self.num_perm, dtype=np.uint64, endpoint=True)
                      | np.uint64(1))
        self._add = rng.integers(0, np.iinfo(np.uint64).max, size=self.num_perm, dtype=np.uint64, endpoint=True)

    def shingles(self, text: str) -> np.ndarray:
        """uint64 hashes of the text's word n-grams (empty when it has fewer than `ngram` words)."""
        words = WORD_RE.findall(text.lower())
        count = len(words) - self.ngram + 1
        if count <= 0:
            return np.empty(0, dtype=np.uint64)
        digest = xxhash.xxh3_64_intdigest
        word_hashes = np.fromiter((digest(word.encode("utf-8", "surrogatepass")) for word in words),
                                  dtype=np.uint64, count=len(words))
        combined = word_hashes[:count].copy()
        for offset in range(1, self.ngram):
            combined *= _COMBINE
            combined += word_hashes[offset:offset + count]
        return _mix64(combined)

    def signature(self, shingles: np.ndarray) -> np.ndarray | None:
        """Minimum of every permutation over the shingles: uint64[num_perm], or None without shingles."""
        if shingles.size == 0:
            return None
        signature = np.full(self.num_perm, np.iinfo(np.uint64).max, dtype=np.uint64)
        for start in range(0, shingles.size, _SHINGLE_BLOCK):
            block = shingles[start:start + _SHINGLE_BLOCK, None] * self._mult[None, :]
            block += self._add[None, :]
            np.minimum(signature, block.min(axis=0), out=signature)
        return signature

    def text_signature(self, text: str) -> np.ndarray | None:
        return self.signature(self.shingles(text))

    def band_digests(self, signature: np.ndarray) -> list[bytes]:
        """One 128-bit key per band: two documents share a key when all rows of that band are equal."""
        rows = signature.reshape(self.num_bands, self.rows_per_band)
        return [xxhash.xxh3_128_digest(band.to_bytes(2, "little") + rows[band].tobytes())
                for band in range(self.num_bands)]


def compact_signature(signature: np.ndarray) -> bytes:
    """The signature's low 32 bits per permutation, for estimating Jaccard (a false equal is 2**-32 likely)."""
    return signature.astype(np.uint32).tobytes()


def estimated_jaccard(a: bytes | np.ndarray, b: bytes | np.ndarray) -> float:
    left = np.frombuffer(a, dtype=np.uint32) if isinstance(a, bytes) else a
    right = np.frombuffer(b, dtype=np.uint32) if isinstance(b, bytes) else b
    return float(np.mean(left == right))


def line_digest(line: str, *, case: bool = True, whitespace: bool = True) -> int:
    normalised = normalise_text(line, case=case, whitespace=whitespace)
    return xxhash.xxh3_64_intdigest(normalised.encode("utf-8", "surrogatepass"))


def shingle_set(text: str, ngram: int) -> set[tuple[str, ...]]:
    """The exact set of word n-grams MinHash estimates the Jaccard of (for measuring, not for dedup)."""
    words = WORD_RE.findall(text.lower())
    return {tuple(words[i:i + ngram]) for i in range(len(words) - ngram + 1)}


def true_jaccard(a: str, b: str, ngram: int) -> float:
    left, right = shingle_set(a, ngram), shingle_set(b, ngram)
    if not left and not right:
        return 1.0
    return len(left & right) / len(left | right)
