"""The URL blocklist: pages of blocked sites are dropped before their HTML is parsed.

`UrlBlocklist.load(paths, banned_words)` reads each PATH, a plain list or a UT1-style folder:

- a plain list: one entry a line, `#` comments (whole line or after an entry), blank lines; hosts-file lines
  (`0.0.0.0 example.com`) give their names. An entry with a scheme or a path (`https://example.com/a`,
  `example.com/a`) is a URL entry, anything else (`example.com`, `93.184.216.34`) a domain entry;
- a UT1-style folder (Université Toulouse 1 Capitole's blacklists): `<category>/domains` and
  `<category>/urls`, each plain or gzipped (`domains.gz`); the category is reported with a match. A folder
  holding `domains`/`urls` itself is one category named after the folder. Files are gunzipped whatever
  their name when they start with the gzip magic.

Matching a URL (`match`), in this order, the first match wins:

1. **domain**: the URL's host and each of its parent domains, label by label (`a.b.example.com`,
   `b.example.com`, `example.com`, `com`): a domain entry blocks itself and every subdomain, never a name
   that merely ends with the same letters (`notexample.com` is not under `example.com`). An IP host is
   looked up as it is (no parents). One dict lookup a label: 3-5 for real hosts.
2. **url**: the normalised URL, then the URL without its query, then each parent path at a `/` boundary
   down to the bare host: a URL entry blocks that page and every page under it (`example.com/dir` blocks
   `example.com/dir/a.html`, not `example.com/directory`), on that exact host (no subdomains). Only hosts
   that have URL entries pay for this walk (one set lookup otherwise).
3. **word**: banned words (see `BannedWords`) among the words of the host and the (percent-decoded) path.

Normalisation, the same for list entries and for the URLs checked (`normalize_url`): surrounding
whitespace and the scheme dropped, user info dropped, the host lower-cased, its trailing dot dropped,
IDNA-encoded when not ASCII (`bücher.de` = `xn--bcher-kva.de`), one leading `www.` dropped, ports 80 and
443 dropped (the scheme is gone, so both count as default; other ports stay part of URL entries, never of
the host matched against domains), the fragment dropped, trailing slashes of the path dropped, an empty
query dropped. The path and query keep their case (servers tell `/A` from `/a`).

Structures: one dict `entry -> source id` for the domains and one for the URLs (a source is a list, or a
list's category and kind), so a match costs a few hash lookups whatever the number of lists or categories;
a 1,000,000-domain list loads in about a second (see `benchmarks/blocklist.py` for the measured figures).
"""

from __future__ import annotations

import gzip
import hashlib
import ipaddress
import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from pipeline.io import named_files_digest
from pipeline.safety import SafetyInputError

__all__ = ["BannedWords", "SafetyInputError", "UrlBlocklist", "UrlMatch", "normalize_url", "split_url"]

UT1_FILES = {"domains": "domain", "urls": "url"}
# hosts-file sink addresses: `0.0.0.0 example.com` lists example.com, not 0.0.0.0
SINK_ADDRESSES = frozenset({"0.0.0.0", "127.0.0.1", "::", "::1", "255.255.255.255"})
DEFAULT_PORTS = frozenset({"", "80", "443"})
# an entry line needing the general parser: whitespace inside, a scheme, a path, a port, user info, a comment
_SPECIAL = re.compile(r"[\s/:@?#\[\]\\]")
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
_WORDS = re.compile(r"[^\W_]+")
_URL_AUTHORITY = re.compile(r"\[[^\]]*\](?::\d+)?|[^/?]*")


@dataclass(frozen=True)
class UrlMatch:
    """Why a URL is blocked: the list (its path as given, or `banned_words`), the UT1 category (None for a
    plain list), the entry that matched (normalised) and its kind: "domain", "url" or "word"."""

    list: str
    category: str | None
    entry: str
    kind: str


# --- URL normalisation -------------------------------------------------------------------------------------

def _idna(host: str) -> str:
    """The ASCII (punycode) form of a host, label by label; a label that cannot be encoded stays as it is."""
    labels = []
    for label in host.split("."):
        if label.isascii():
            labels.append(label)
            continue
        try:
            labels.append(label.encode("idna").decode("ascii"))
        except UnicodeError:
            labels.append(label)
    return ".".join(labels)


def split_url(url: str) -> tuple[str, str, str]:
    """(host, port, path and query) of a URL or of a scheme-less `host/path`, normalised as the module
    docstring says: `split_url("HTTPS://www.Example.com:443/A/?q=1#f") == ("example.com", "", "/A?q=1")`.
    The port is "" when absent or default (80, 443)."""
    text = url.strip()
    scheme_end = text.find("://")
    if scheme_end != -1 and (scheme_end == 0 or text[:scheme_end].replace("+", "").replace("-", "").isalnum()):
        text = text[scheme_end + 3:]
    elif text.startswith("//"):
        text = text[2:]
    fragment = text.find("#")
    if fragment != -1:
        text = text[:fragment]
    end = len(text)
    for sep in "/?\\":
        position = text.find(sep, 0, end)
        if position != -1:
            end = position
    authority, rest = text[:end], text[end:]
    if "@" in authority:
        authority = authority.rpartition("@")[2]
    port = ""
    if authority.startswith("["):  # [IPv6]:port
        host, _, tail = authority[1:].partition("]")
        if tail.startswith(":"):
            port = tail[1:]
    elif ":" in authority:
        host, _, port = authority.rpartition(":")
    else:
        host = authority
    if port in DEFAULT_PORTS or not port.isdigit():
        port = ""
    host = host.lower().rstrip(".")
    if not host.isascii():
        host = _idna(host)
    if host.startswith("www."):
        host = host[4:]
    if rest:
        path, _, query = rest.partition("?")
        path = path.replace("\\", "/").rstrip("/")
        rest = f"{path}?{query}" if query else path
    return host, port, rest


def normalize_url(url: str) -> str:
    """The URL as URL entries are stored and compared: `host[:port]/path[?query]` (see `split_url`)."""
    host, port, rest = split_url(url)
    return _authority(host, port) + rest


def _authority(host: str, port: str) -> str:
    if ":" in host:  # IPv6
        host = f"[{_ip_key(host)}]"
    return f"{host}:{port}" if port else host


def _is_ip(host: str) -> bool:
    return ":" in host or (host[-1:].isdigit() and _IPV4.fullmatch(host) is not None)


def _ip_key(host: str) -> str:
    """An IPv6 address in its compressed form (as list entries are stored); IPv4 as it is."""
    if ":" in host:
        try:
            return ipaddress.ip_address(host).compressed
        except ValueError:
            return host
    return host


# --- banned words ------------------------------------------------------------------------------------------

class BannedWords:
    """Words that block a URL when they occur in its host or path, in the manner of datatrove's URLFilter
    (which splits the URL on non-alphanumerics and also looks for banned subwords in the URL with its
    separators removed), kept to one list with one simple syntax:

    - `word`: a whole word of the host and path, split on every non-alphanumeric character
      (`porn` blocks `porn.example.com` and `example.com/porn/x`, not `pornography.org` nor `sporne.pl`);
    - `two words` (any separator inside): those words in a row (`free-porn.com`, `/free_porn/`);
    - `*word*`: a subword, anywhere in the host and path once lower-cased and stripped of everything but
      letters and digits (`*porn*` blocks `freepornsite.com` and `free-porn.com`);
    - `word*` / `*word`: a word starting / ending with it (`porn*` blocks `pornhub.com`).

    Matching is case-insensitive and Unicode-aware (letters and digits of any script); the path is
    percent-decoded first; the query is not looked at (`?q=porn` is a search, not a site). datatrove's
    soft words (blocking at two of them) are left out: one list, one rule per entry."""

    def __init__(self, entries: Iterable[str]):
        self.entries = tuple(entries)
        self.words: dict[str, str] = {}  # normalised -> the entry as written (for the decision detail)
        self.phrases: dict[str, str] = {}
        self.subwords: dict[str, str] = {}
        self.prefixes: dict[str, str] = {}
        self.suffixes: dict[str, str] = {}
        for raw in self.entries:
            text = raw.strip().lower()
            star_start, star_end = text.startswith("*"), text.endswith("*")
            parts = _WORDS.findall(text)
            if not parts:
                raise SafetyInputError(f"url_banned_words: {raw!r} has no letter or digit")
            if star_start and star_end:
                self.subwords.setdefault("".join(parts), raw)
            elif star_start or star_end:
                if len(parts) > 1:
                    raise SafetyInputError(f"url_banned_words: {raw!r}: a prefix or suffix is a single word")
                (self.suffixes if star_start else self.prefixes).setdefault(parts[0], raw)
            elif len(parts) == 1:
                self.words.setdefault(parts[0], raw)
            else:
                self.phrases.setdefault(" " + " ".join(parts) + " ", raw)
        self._prefixes, self._suffixes = tuple(self.prefixes), tuple(self.suffixes)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def find(self, host: str, path: str) -> str | None:
        """The banned entry (as written) found in this host and path, or None. `host` is lower-case (its
        punycode labels are decoded back to Unicode first)."""
        if "xn--" in host:
            try:
                host = host.encode("ascii").decode("idna")
            except UnicodeError:
                pass
        if "%" in path:
            path = unquote(path)
        words = _WORDS.findall(f"{host} {path.lower()}")
        if self.words:
            for word in words:
                if word in self.words:
                    return self.words[word]
        if self._prefixes or self._suffixes:
            for word in words:
                if self._prefixes and word.startswith(self._prefixes):
                    return next(raw for p, raw in self.prefixes.items() if word.startswith(p))
                if self._suffixes and word.endswith(self._suffixes):
                    return next(raw for s, raw in self.suffixes.items() if word.endswith(s))
        if self.phrases:
            joined = " " + " ".join(words) + " "
            for phrase, raw in self.phrases.items():
                if phrase in joined:
                    return raw
        if self.subwords:
            squeezed = "".join(words)
            for subword, raw in self.subwords.items():
                if subword in squeezed:
                    return raw
        return None


# --- reading lists -----------------------------------------------------------------------------------------

def _read_text(path: Path, shown: str) -> str:
    """A list file's text (gunzipped when it starts with the gzip magic), or SafetyInputError when it is
    binary: not UTF-8, or holding NUL bytes."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SafetyInputError(f"URL blocklist {shown}: cannot read it ({exc.strerror or exc})") from None
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise SafetyInputError(f"URL blocklist {shown}: a damaged gzip file ({exc})") from None
    if b"\x00" in data[:65536]:
        raise SafetyInputError(f"URL blocklist {shown}: not a text file (binary content)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SafetyInputError(f"URL blocklist {shown}: not a text file (not UTF-8 at byte {exc.start})") from None


def _domain_of(token: str) -> str:
    """A domain entry's normalised host: `*.example.com` and `.example.com` (squid's forms) are
    `example.com`; a bare IPv6 address is kept whole (compressed)."""
    token = token.lstrip("*.")
    if token.count(":") > 1:
        try:
            return ipaddress.ip_address(token.strip("[]")).compressed
        except ValueError:
            pass
    return split_url(token)[0]


def _parse(text: str, default_kind: str) -> tuple[list[str], list[str], int]:
    """(domains, urls, skipped lines) of one list's text. `default_kind` is "domain" for plain lists and
    UT1 `domains` files, "url" for UT1 `urls` files (whose entries are URLs even without a path)."""
    domains: list[str] = []
    urls: list[str] = []
    skipped = 0
    if default_kind == "domain":
        # the fast path (nearly every line of a real domain list): lower-case ASCII name, nothing to parse
        for line in text.lower().splitlines():
            line = line.strip()
            if not line or line[0] == "#":
                continue
            if _SPECIAL.search(line) is None and line.isascii():
                line = line.strip("*.")
                if line.startswith("www."):
                    line = line[4:]
                if line:
                    domains.append(line)
                else:
                    skipped += 1
                continue
            skipped += _parse_line(line, default_kind, domains, urls)
        if urls:  # URL entries keep their path's case: parse those lines again from the original text
            urls.clear()
            for line in text.splitlines():
                line = line.strip()
                if line and line[0] != "#" and _SPECIAL.search(line) is not None:
                    _parse_line(line, default_kind, [], urls)
    else:
        for line in text.splitlines():
            line = line.strip()
            if line and line[0] != "#":
                skipped += _parse_line(line, default_kind, domains, urls)
    return domains, urls, skipped


def _parse_line(line: str, default_kind: str, domains: list[str], urls: list[str]) -> int:
    """Append the entries of one non-comment line; return 1 when it holds none (skipped), else 0."""
    line = line.partition(" #")[0].partition("\t#")[0].strip()
    tokens = line.split()
    if len(tokens) > 1 and tokens[0] in SINK_ADDRESSES:
        tokens = tokens[1:]
    found = 0
    for token in tokens:
        is_url = default_kind == "url" or "/" in token or "://" in token
        if is_url:
            key = normalize_url(token)
            if key and not key.startswith(("/", "?")):
                urls.append(key)
                found += 1
        else:
            host = _domain_of(token)
            if host:
                domains.append(host)
                found += 1
    return 0 if found else 1




def _ut1_files(folder: Path) -> dict[str, dict[str, Path]]:
    """category -> {"domains": file, "urls": file} of a UT1-style folder (a folder that itself holds
    `domains`/`urls` is one category named after it)."""
    def files_of(category_dir: Path) -> dict[str, Path]:
        found = {}
        for stem in UT1_FILES:
            for name in (stem, f"{stem}.gz"):
                if (category_dir / name).is_file():
                    found[stem] = category_dir / name
                    break
        return found

    own = files_of(folder)
    if own:
        return {folder.name: own}
    out = {}
    for child in sorted(folder.iterdir()):
        if child.is_dir() and (found := files_of(child)):
            out[child.name] = found
    return out


# --- the blocklist -----------------------------------------------------------------------------------------

class UrlBlocklist:
    """Blocked domains, URLs and banned words; `match(url)` tells whether and why a URL is blocked."""

    def __init__(self) -> None:
        self._sources: list[tuple[str, str | None, str]] = []  # (list path, category, kind) by source id
        self._domains: dict[str, int] = {}
        self._urls: dict[str, int] = {}
        self._url_hosts: set[str] = set()
        self._described: list[dict] = []
        self.banned = BannedWords(())

    @classmethod
    def load(cls, paths: list[str], banned_words: Iterable[str] = ()) -> UrlBlocklist:
        """Read every list (SafetyInputError naming the path when one does not exist, holds no entry, or is
        not text). An entry found in several lists is reported as the first list's."""
        self = cls()
        self.banned = BannedWords(banned_words)
        for entry in paths:
            path = Path(entry)
            if not path.exists():
                raise SafetyInputError(f"URL blocklist {entry}: does not exist")
            if path.is_dir():
                self._load_folder(entry, path)
            else:
                domains, urls, skipped = _parse(_read_text(path, entry), "domain")
                if not domains and not urls:
                    raise SafetyInputError(f"URL blocklist {entry}: holds no domain or URL (empty, or only "
                                           "comments and blank lines)")
                self._add(domains, urls, entry, None)
                self._described.append({"path": entry, "format": "list", "entries": len(domains) + len(urls),
                                        "domains": len(domains), "urls": len(urls), "skipped_lines": skipped,
                                        "sha256": named_files_digest([("", path)])})
        return self

    def _load_folder(self, entry: str, path: Path) -> None:
        categories = _ut1_files(path)
        if not categories:
            raise SafetyInputError(f"URL blocklist {entry}: a folder without <category>/domains or "
                                   "<category>/urls files (UT1 layout), nor a list file")
        counts: dict[str, dict[str, int]] = {}
        files: list[tuple[str, Path]] = []
        skipped = 0
        for category, found in categories.items():
            counts[category] = {"domains": 0, "urls": 0}
            for stem, file in found.items():
                shown = f"{entry}/{file.relative_to(path)}" if file.parent != path else f"{entry}/{file.name}"
                domains, urls, bad = _parse(_read_text(file, shown), UT1_FILES[stem])
                self._add(domains, urls, entry, category)
                counts[category]["domains"] += len(domains)
                counts[category]["urls"] += len(urls)
                skipped += bad
                files.append((str(file.relative_to(path)), file))
        total = sum(c["domains"] + c["urls"] for c in counts.values())
        if not total:
            raise SafetyInputError(f"URL blocklist {entry}: every domains/urls file of its "
                                   f"{len(categories)} categories is empty")
        self._described.append({"path": entry, "format": "ut1", "entries": total,
                                "domains": sum(c["domains"] for c in counts.values()),
                                "urls": sum(c["urls"] for c in counts.values()), "skipped_lines": skipped,
                                "categories": counts, "sha256": named_files_digest(files)})

    def _source(self, path: str, category: str | None, kind: str) -> int:
        key = (path, category, kind)
        self._sources.append(key)
        return len(self._sources) - 1

    def _add(self, domains: list[str], urls: list[str], path: str, category: str | None) -> None:
        if domains:
            source = self._source(path, category, "domain")
            if self._domains:
                self._domains.update({d: source for d in domains if d not in self._domains})
            else:
                self._domains = dict.fromkeys(domains, source)
        if urls:
            source = self._source(path, category, "url")
            for url in urls:
                self._urls.setdefault(url, source)
                self._url_hosts.add(_URL_AUTHORITY.match(url).group())

    def __len__(self) -> int:
        return len(self._domains) + len(self._urls)

    def match(self, url: str) -> UrlMatch | None:
        """Why `url` is blocked, or None when it is not (see the module docstring for the rules)."""
        host, port, rest = split_url(url)
        if not host:
            return None
        domains = self._domains
        if domains:
            if ":" in host or (host[-1].isdigit() and _is_ip(host)):  # an IP: itself only, no parents
                address = _ip_key(host)
                source = domains.get(address)
                if source is not None:
                    return self._found(source, address)
            else:
                name = host
                while True:
                    source = domains.get(name)
                    if source is not None:
                        return self._found(source, name)
                    dot = name.find(".")
                    if dot == -1:
                        break
                    name = name[dot + 1:]
        if self._urls:
            authority = _authority(host, port)
            if authority in self._url_hosts:
                key = authority + rest
                source = self._urls.get(key)
                if source is not None:
                    return self._found(source, key)
                path = rest.partition("?")[0]
                while True:
                    candidate = authority + path
                    source = self._urls.get(candidate)
                    if source is not None:
                        return self._found(source, candidate)
                    if not path:
                        break
                    path = path[:path.rfind("/")]
        if self.banned:
            word = self.banned.find(host, rest.partition("?")[0])
            if word is not None:
                return UrlMatch("banned_words", None, word, "word")
        return None

    def _found(self, source: int, entry: str) -> UrlMatch:
        path, category, kind = self._sources[source]
        return UrlMatch(path, category, entry, kind)

    def detail(self, m: UrlMatch) -> str:
        """One line for a decision row: `ut1/adult/domains: adult (example.com)`, `lists/x.txt: url
        (example.com/a)`, `banned word: porn`."""
        if m.kind == "word":
            return f"banned word: {m.entry}"
        if m.category is not None:
            return f"{m.list.rstrip('/')}/{m.category}/{m.kind}s: {m.category} ({m.entry})"
        return f"{m.list}: {m.kind} ({m.entry})"

    def describe(self) -> list[dict]:
        """Per list: path, format (list or ut1), entries, domains, urls, skipped lines, categories (UT1:
        per category domains and urls) and sha256 of its files: for the dataset card."""
        return [dict(d) for d in self._described]

    def fingerprint(self) -> str:
        """sha256 (hex, 16 characters) over the lists' contents, in order, and the banned words."""
        digest = hashlib.sha256(b"url-blocklist-v1\x00")
        for described in self._described:
            digest.update(described["sha256"].encode() + b"\x00")
        for word in self.banned.entries:
            digest.update(b"w\x00" + word.encode() + b"\x00")
        return digest.hexdigest()[:16]
