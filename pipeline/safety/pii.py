"""Personal data in page text: e-mail addresses, IP addresses and phone numbers, found and redacted.

    find_pii(text) -> [Span(type, start, end), ...]   sorted by start, non-overlapping
    redact(text, spans) -> text with each span replaced by "<EMAIL_ADDRESS>", "<IP_ADDRESS>" or "<PHONE_NUMBER>"

How each type is found (docs/safety.md, "Personal data", has the measured precision and recall):

- E-mail addresses: a regular expression (the common subset of RFC 5322: an ASCII local part, domain
  labels that may be internationalized, an ASCII top-level domain), plus the bracketed obfuscations pages
  use to hide them from scrapers (`jane [at] example [dot] org`, `jane(at)example.org`). Retina image names
  (`logo@2x.png`) are not addresses. Every address is redacted, role and example addresses included.
- IP addresses: a regular expression finds IPv4 dotted quads and IPv6 candidates; Python's `ipaddress`
  validates them. Addresses that identify no one are kept: loopback, unspecified, the documentation ranges
  (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32, 3fff::/20), multicast, broadcast and
  netmasks. Public and private (10/8, 172.16/12, 192.168/16, link-local, carrier NAT) addresses are
  redacted: a private address still identifies a machine on someone's network in a log or a forum post.
  A dotted quad that is a version or a section number by its context (`v1.2.3.4`, `version 10.0.0.1`,
  `Chrome/1.2.3.4`, `§ 1.2.3.4`, a heading `1.2.3.4 Scope`) is not an address.
- Phone numbers: Google's libphonenumber (the `phonenumbers` port): its `PhoneNumberMatcher`, run over
  each digit run that could be a number, over the regions NATIONAL_REGIONS, keeps the numbers that are
  valid for their region. On top of that, to keep the digit runs of real pages out: dates, times, prices,
  ISBNs, DOIs, URLs, coordinates, decimals and IP addresses are masked first; a national number must carry
  its trunk prefix (`030 …`, `020 …`, `01 …`) or be a grouped North-American number (`(415) 555-0132`) or
  Indian mobile (`98765 43210`); an ungrouped digit run, or a number written without its `+`, needs a
  phone word before it (`Tel.`, `call`, `Mobile:` …); and an identifier word before it (`Order`,
  `Invoice`, `ISBN`, `Ref`, `Account`, `#` …) vetoes it. A number written after a phone word is accepted
  when libphonenumber only finds it possible, not valid (fictional 555 numbers, newly assigned ranges).

Cost: cheap pre-checks first (an `@`, a dotted quad, two colons around a hex run, seven digits in a row
with separators); the look-alike masks run only around a candidate digit run, and libphonenumber only on
the candidates that survive them, for the regions their shape allows. A 10 KB page without personal data
takes about 0.13 ms (median; benchmarks/pii.py).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from functools import lru_cache

import phonenumbers
from phonenumbers import CountryCodeSource, Leniency, PhoneNumberMatcher

EMAIL_ADDRESS, IP_ADDRESS, PHONE_NUMBER = "EMAIL_ADDRESS", "IP_ADDRESS", "PHONE_NUMBER"
PII_TYPES = (EMAIL_ADDRESS, IP_ADDRESS, PHONE_NUMBER)

# Regions whose national forms (without a country code) are recognized. Any region's number written in
# international form (+CC or 00CC) is recognized whatever this list says.
NATIONAL_REGIONS = ("US", "GB", "DE", "FR", "IN")


@dataclass(frozen=True)
class Span:
    type: str
    start: int  # character offsets in the text
    end: int


# ---------------------------------------------------------------------------------------------- e-mail

# The local part is ASCII (text in scripts without spaces runs straight into it: "网站地图fyzw88@126.com"), the
# domain labels may be internationalized, the top-level domain is ASCII letters (or punycode).
_LOCAL = r"(?<![A-Za-z0-9.%+_\-])[A-Za-z0-9%+_\-]+(?:\.[A-Za-z0-9%+_\-]+)*"
_LABEL = r"[^\W_](?:[\w\-]{0,61}[^\W_])?"
_TLD = r"(?:[A-Za-z]{2,24}|xn--[A-Za-z0-9\-]{2,59})(?![A-Za-z0-9\-]|\.[A-Za-z0-9])"
_EMAIL = re.compile(rf"{_LOCAL}@(?:{_LABEL}\.)+{_TLD}")
_EMAIL_OBFUSCATED = re.compile(
    rf"{_LOCAL}\s?[\[({{<]\s?(?:at|@)\s?[\])}}>]\s?(?:{_LABEL}(?:\.|\s?[\[({{<]\s?dot\s?[\])}}>]\s?))+{_TLD}",
    re.IGNORECASE,
)
_OBFUSCATED_AT = re.compile(r"[\[({<]\s?(?:at|@)\s?[\])}>]", re.IGNORECASE)
# file extensions that follow an `@2x`-style image-density suffix, never top-level domains
_NOT_TLDS = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp", "avif", "bmp", "ico", "tif", "tiff", "css", "js",
                       "json", "html", "htm", "xml", "pdf", "mp4", "webm", "txt"})
_DENSITY_LABEL = re.compile(r"@\d+(?:[.,]\d+)?x\.", re.IGNORECASE)


_LOCAL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789%+_-.")


def _emails(text: str) -> list[Span]:
    spans = []
    at, searched_to = text.find("@"), 0
    while at >= 0:  # around each "@" only: a regex scan of the whole page costs ten times more
        begin = at
        while begin > 0 and at - begin < 64 and text[begin - 1] in _LOCAL_CHARS:
            begin -= 1
        match = _EMAIL.search(text, max(begin, searched_to), at + 320)
        if match is not None and match.start() <= at < match.end():
            value = match.group()
            if value.rsplit(".", 1)[1].lower() not in _NOT_TLDS and not _DENSITY_LABEL.search(value):
                spans.append(Span(EMAIL_ADDRESS, match.start(), match.end()))
            searched_to = match.end()
        at = text.find("@", max(at + 1, searched_to))
    if _OBFUSCATED_AT.search(text):
        spans.extend(Span(EMAIL_ADDRESS, m.start(), m.end()) for m in _EMAIL_OBFUSCATED.finditer(text))
    return spans


# ------------------------------------------------------------------------------------------ IP address

_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)")
# hex groups with at least two colons, optionally an embedded IPv4 tail; validated by ipaddress afterwards
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{1,4})?(?::[0-9A-Fa-f]{0,4}){2,8}(?:(?<=:)(?:\d{1,3}\.){3}\d{1,3})?"
                   r"(?!\w|\.\d|:[0-9A-Fa-f])")
# pre-checks that start with a literal character: a regex that does is searched for at C speed
_IPV4_PRECHECK = re.compile(r"\.\d{1,3}\.\d{1,3}\.\d")
_IPV6_PRECHECK = re.compile(r":[0-9A-Fa-f]{0,4}:")

_KEPT_V4 = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8",        # unspecified / "this network"
    "127.0.0.0/8",      # loopback
    "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24",  # documentation (RFC 5737)
    "224.0.0.0/4",      # multicast groups: a protocol constant, not a host
    "240.0.0.0/4",      # reserved, and 255.255.255.255 broadcast
))
_KEPT_V6 = tuple(ipaddress.ip_network(n) for n in (
    "2001:db8::/32", "3fff::/20",  # documentation (RFC 3849, RFC 9637)
    "ff00::/8",                    # multicast
))
# what an IPv6 literal in text must fall in to be an address of someone's machine: global unicast,
# unique-local, link-local (others, like `a::b` or `dead::beef`, are code, not addresses)
_HOST_V6 = tuple(ipaddress.ip_network(n) for n in ("2000::/3", "fc00::/7", "fe80::/10"))

# words that make the dotted quad after them a version, a section or a product number
_VERSION_BEFORE = re.compile(
    r"(?:\b(?:v|ver|vers|version|versions|versión|release|releases|rel|build|builds|firmware|fw|update|patch|"
    r"sdk|driver|bios|kernel|rev|revision|edition|upgrade|upgraded|downgrade|windows|chrome|firefox|safari|"
    r"android|ios|macos|java|python|php|perl|ruby|section|sections|sect|sec|clause|paragraph|para|art|article|"
    r"chapter|chap|figure|fig|table|step|appendix|annex|oid|isbn|doi)\.?|§+|[A-Za-z][/\-_@])\s*[:=]?\s*$",
    re.IGNORECASE,
)
_VERSION_AFTER = re.compile(r"[\-+~](?:alpha|beta|rc|dev|pre|snapshot|final|release|stable|lts)", re.IGNORECASE)
_HEADING_AFTER = re.compile(r"[ \t]+[A-Z]")


def _ipv4_kept(address: ipaddress.IPv4Address) -> bool:
    if any(address in net for net in _KEPT_V4):
        return True
    value = int(address)
    inverted = ~value & 0xFFFFFFFF
    return value >> 24 == 255 and inverted & (inverted + 1) == 0  # a netmask: 255.255.255.0, 255.255.0.0...


def _ipv4_is_version(text: str, start: int, end: int) -> bool:
    line_start = text.rfind("\n", 0, start) + 1
    before = text[max(line_start, start - 30):start]
    if _VERSION_BEFORE.search(before):
        return True
    if _VERSION_AFTER.match(text, end):
        return True
    # a numbered heading at the start of a line: "1.2.3.4 Scope" (small parts, none zero; 10.x is a private
    # network far more often than a tenth chapter's fourth-level section)
    if not text[line_start:start].strip() and _HEADING_AFTER.match(text, end):
        parts = [int(p) for p in text[start:end].split(".")]
        return parts[0] != 10 and all(1 <= p <= 30 for p in parts)
    return False


def _ipv4s(text: str) -> list[Span]:
    spans = []
    for match in _IPV4.finditer(text):
        try:
            address = ipaddress.IPv4Address(match.group())
        except ValueError:  # an octet over 255, or a leading zero (05.06.07.08: a date or a list)
            continue
        if _ipv4_kept(address) or _ipv4_is_version(text, match.start(), match.end()):
            continue
        spans.append(Span(IP_ADDRESS, match.start(), match.end()))
    return spans


def _ipv6s(text: str) -> list[Span]:
    spans = []
    for match in _IPV6.finditer(text):
        value, end = match.group(), match.end()
        if value.count(":") < 2:
            continue
        try:
            address = ipaddress.IPv6Address(value)
        except ValueError:
            if not value.endswith(":") or value.endswith("::"):
                continue
            try:  # "… at 2001:db8::1:" : the colon ends the sentence
                address, end = ipaddress.IPv6Address(value[:-1]), end - 1
            except ValueError:
                continue
        if address.ipv4_mapped is not None:
            if _ipv4_kept(address.ipv4_mapped):
                continue
        elif not any(address in net for net in _HOST_V6) or any(address in net for net in _KEPT_V6):
            continue
        spans.append(Span(IP_ADDRESS, match.start(), end))
    return spans


# --------------------------------------------------------------------------------------------- phones

# seven digits with short separators between them: the pre-check for any phone number
_SEVEN_DIGITS = re.compile(r"\d(?:[ \u00a0().\-/]{0,3}\d){6}")

_AMOUNT = r"\d+(?:[.,' \u00a0]\d{3})*(?:[.,]\d{1,2})?"
# look-alikes masked before phone candidates are searched (replaced by as many "_")
_MASKS = re.compile("|".join((
    r"(?:https?://|www\.)\S+",                                                   # URLs
    r"\b10\.\d{4,9}/\S+",                                                        # DOIs
    r"\bISBN(?:-1[03])?:?[ \u00a0]*[\dXx][\d\- \u00a0]{8,16}[\dXx]\b",           # ISBNs with their label
    r"(?<![\d\-])97[89][\- ]?(?:\d[\- ]?){9}\d(?![\d\-])",                       # bare ISBN-13
    r"(?<![\w.\-/])\d{4}[\-/.]\d{1,2}[\-/.]\d{1,2}(?:[T ]\d{1,2}:\d{2}(?::\d{2})?)?(?![\-/.]?\d)",  # 2024-01-15
    r"(?<![\w.\-/])\d{1,2}[\-/.]\d{1,2}[\-/.](?:\d{4}|\d{2})(?:,? \d{1,2}:\d{2}(?::\d{2})?)?(?![\-/.]?\d)",
    r"(?<![\w.])\d{1,2}:\d{2}(?::\d{2})?\b",                                     # times
    rf"[$€£¥₹₩][ \u00a0]?{_AMOUNT}",                                            # prices
    rf"\b(?:Rs|INR|USD|EUR|GBP|CHF|CAD|AUD|JPY|CNY|RMB|SEK|NOK|DKK|PLN)\.?[ \u00a0]?{_AMOUNT}",
    rf"{_AMOUNT}[ \u00a0]?(?:[$€£¥₹₩]|(?:USD|EUR|GBP|CHF|INR|Rs|kr|zł|Kč|Ft|lei|руб)\b)",
    r"-?\d{1,3}\.\d{3,}°?[ \u00a0]?[NSEW]?,?[ \u00a0]*-?\d{1,3}\.\d{3,}",          # coordinates
    r"(?<![\w.,])0[.,]\d+",                                                      # decimals below one
    r"(?<![\w.\-])(?:\d{1,3}\.){3}\d{1,3}(?![\w\-]|\.\d)",                        # dotted quads
    r"\b[vV]\d+(?:\.\d+)+",                                                      # versions
    r"#[ \u00a0]?\d[\d\- ]*",                                                    # "#1234567"
)))
# a digit run with the separators phone numbers use; a dot only between digits (". " ends a sentence)
# (the lookahead first: a pattern that starts with a character set is scanned for faster)
_CANDIDATE = re.compile(r"(?=[+(\d])(?<![\w@#$€£¥₹%&+=/\\])(?<!\d[.,])"
                        r"(?:\+[ \u00a0]?)?\(?\d(?:[\d \u00a0()\-/]|\.(?=\d)){5,40}\d\)?(?![\w%°])")
# a candidate that is nothing but a date: skipped before its neighbourhood is masked (pages list many)
_JUST_A_DATE = re.compile(r"\d{4}([\-/.])\d{1,2}\1\d{1,2}|\d{1,2}([\-/.])\d{1,2}\2(?:\d{4}|\d{2})")
# the shapes that can start a national number of NATIONAL_REGIONS, or an international one
_IDD = re.compile(r"(?<![\d.])00[1-9]")
_TRUNK = re.compile(r"(?<![\d.])0[1-9]|(?<!\d)0[ \u00a0.\-]?8\d\d")  # 030 …, 020 …, 06 …, 0 800 …
_NANP = r"\(?\d{3}\)?[ \u00a0.\-]?\d{3}[ \u00a0.\-]\d{4}"
_IN_SHAPE = re.compile(r"(?<!\d)[6-9]\d{4}[ \u00a0\-]?\d{5}(?!\d)|(?<!\d)18[06]0")  # mobile, toll-free
_NANP_LOOSE = re.compile(rf"(?<!\d){_NANP}(?!\d)")
_BARE_RUN = re.compile(r"(?<!\d)\d{9,12}(?!\d)")
_PLAUSIBLE = re.compile(rf"\+|{_IDD.pattern}|{_TRUNK.pattern}|{_NANP_LOOSE.pattern}|{_IN_SHAPE.pattern}"
                        rf"|{_BARE_RUN.pattern}")
_PHONE_WORDS = (
    r"tel|tél|tele|telephone|telephones|téléphone|telefon|telefono|teléfono|telf|phone|phones|ph|call|calls|"
    r"calling|fax|telefax|mobile|mobiles|mob|mobil|mobilnummer|cell|cellphone|handy|whatsapp|sms|text|contact|"
    r"contacts|hotline|helpline|ring|dial|reach|numéro|nummer|rufnummer|durchwahl|portable|fixe|landline|"
    r"toll[\- ]?free|freephone|direct|switchboard|office|enquiries|inquiries|appel|appelez|anrufen|ruf|"
    r"kontakt|contactez|tfn"
)
_ID_WORDS = (
    r"isbn|issn|doi|order|orders|invoice|inv|receipt|ref|reference|tracking|track|account|acct|iban|bic|swift|"
    r"sku|item|part|model|serial|s/n|sn|case|ticket|patent|pmid|arxiv|lot|batch|licen[cs]e|registration|reg|"
    r"registered|company|charity|crn|vat|tax|ein|tin|pan|gst|gstin|ust|ust-idnr|steuernummer|siret|siren|"
    r"customer|member|membership|policy|claim|transaction|txn|booking|confirmation|shipment|parcel|waybill|awb|"
    r"postcode|zip|version|build|cas|id|ids|code|pin|otp|amount|total|price|population|isin|cusip|ean|upc|gtin|"
    r"asin|imei|issue|vol|volume|pp|page|pages|bestellnummer|rechnung|kundennummer|commande|facture|zoom|"
    r"meeting|webinar|passcode|password|conference"
)
# the last word before a number decides: phone word or identifier word (single letters only as labels: "T:")
_CONTEXT_WORD = re.compile(
    rf"(?P<phone>\b(?:{_PHONE_WORDS})\b|\b[tmfph](?=[ \u00a0]?[.:])|[☎📞✆📱])|(?P<id>\b(?:{_ID_WORDS})\b|[#№])",
    re.IGNORECASE,
)
_NANP_SHAPE = re.compile(r"(?:\+?1[ \u00a0.\-]?)?(?:\(\d{3}\)[ \u00a0]?|\d{3}[ \u00a0.\-])\d{3}[ \u00a0.\-]\d{4}")
_IN_MOBILE_SHAPE = re.compile(r"(?:\+?91[ \u00a0\-]?|0)?[6-9]\d{4}[ \u00a0\-]?\d{5}")
_SEPARATOR = re.compile(r"[ \u00a0().\-/]")


def _mask(text: str) -> str:
    return _MASKS.sub(lambda m: "_" * (m.end() - m.start()), text)


def _context(text: str, start: int) -> str | None:
    """'phone' or 'id' by the last context word in the 40 characters before `start` on its line (or, for a
    number that starts its line, at the end of the line before: a form's or a table's label), else None."""
    line_start = text.rfind("\n", 0, start) + 1
    window_start = max(line_start, start - 40)
    if not text[line_start:start].strip() and line_start > 0:
        window_start = max(text.rfind("\n", 0, line_start - 1) + 1, line_start - 41)
    words = list(_CONTEXT_WORD.finditer(text, window_start, start))
    if not words:
        return None
    return "phone" if words[-1].group("phone") else "id"


@lru_cache(maxsize=8192)
def _match_window(window: str, regions: tuple[str, ...], phone_context: bool) -> tuple[tuple[int, int], ...]:
    """The accepted phone numbers in one candidate digit run, as (start, end) offsets in it."""
    found: list[tuple[int, int]] = []
    leniencies = (Leniency.VALID, Leniency.POSSIBLE) if phone_context else (Leniency.VALID,)
    for leniency in leniencies:
        for region in regions:
            for match in PhoneNumberMatcher(window, region, leniency=leniency, max_tries=50):
                if _accept(match.raw_string, match.number, region, phone_context):
                    found.append((match.start, match.end))
        if found:
            break
    return tuple(found)


def _accept(raw: str, number: phonenumbers.PhoneNumber, region: str, phone_context: bool) -> bool:
    if raw.startswith("(") and ")" not in raw:  # the parentheses as _balance_parentheses will leave them
        raw = raw[1:]
    elif ")" in raw and "(" not in raw[:raw.index(")")]:
        raw = "(" + raw
    digits = re.sub(r"\D", "", raw)
    # the matcher does not keep how the country code was written: parse again with the raw input kept
    source = phonenumbers.parse(raw, region, keep_raw_input=True).country_code_source
    grouped = bool(_SEPARATOR.search(raw.strip("()")))
    if source in (CountryCodeSource.FROM_NUMBER_WITH_PLUS_SIGN, CountryCodeSource.FROM_NUMBER_WITH_IDD):
        return grouped or raw.startswith("+") or phone_context
    if source == CountryCodeSource.FROM_NUMBER_WITHOUT_PLUS_SIGN and not (region == "US" and digits[0] == "1"):
        return phone_context  # "44 20 7946 0958": a country code without its "+" ("1-800-…" is national)
    if not grouped and not phone_context:
        return False
    if region == "US":
        return len(str(number.national_number)) == 10 and (phone_context or bool(_NANP_SHAPE.fullmatch(raw)))
    if region == "IN" and not digits.startswith("0"):
        return bool(_IN_MOBILE_SHAPE.fullmatch(raw)) or digits.startswith(("1800", "1860"))  # toll-free
    return digits.startswith("0")  # the trunk prefix of GB, DE, FR, IN landlines


def _balance_parentheses(text: str, start: int, end: int) -> tuple[int, int]:
    """"(0900 4683643" -> "0900 4683643"; "509) 459-5382" -> "(509) 459-5382" when the "(" is just before."""
    value = text[start:end]
    opened, closed = value.find("("), value.find(")")
    if opened == 0 and closed < 0:
        return start + 1, end
    if closed >= 0 and (opened < 0 or opened > closed) and start > 0 and text[start - 1] == "(":
        return start - 1, end
    return start, end


def _regions(value: str, phone_context: bool) -> tuple[str, ...]:
    """The regions of NATIONAL_REGIONS whose matcher can find a number in this digit run."""
    wanted = set()
    if "+" in value:
        wanted.add("US")  # a number with its country code parses the same under any region
    if _IDD.search(value):
        wanted.add("DE")  # "0049 …", "0044 …": 00 is the international prefix in DE (and GB, FR, IN)
    if _TRUNK.search(value):
        wanted.update(("GB", "DE", "FR", "IN"))
    if _NANP_LOOSE.search(value):
        wanted.add("US")
    if _IN_SHAPE.search(value):
        wanted.add("IN")
    if phone_context and _BARE_RUN.search(value):
        wanted.update(NATIONAL_REGIONS)
    return tuple(region for region in NATIONAL_REGIONS if region in wanted)


def _phones(text: str) -> list[Span]:
    if not _SEVEN_DIGITS.search(text):
        return []
    spans = []
    for raw in _CANDIDATE.finditer(text):
        if (sum(ch.isdigit() for ch in raw.group()) < 7 or _JUST_A_DATE.fullmatch(raw.group())
                or not _PLAUSIBLE.search(raw.group())):
            continue
        # mask the look-alikes of the candidate's neighbourhood (its line, 120 characters before, 40 after)
        line_start = text.rfind("\n", 0, raw.start()) + 1
        line_end = text.find("\n", raw.end())
        offset = max(line_start, raw.start() - 120)
        masked = _mask(text[offset:min(raw.end() + 40, len(text) if line_end < 0 else line_end)])
        for candidate in _CANDIDATE.finditer(masked, raw.start() - offset, raw.end() - offset):
            value = candidate.group()
            if sum(ch.isdigit() for ch in value) < 7 or not _PLAUSIBLE.search(value):
                continue
            start = offset + candidate.start()
            context = _context(text, start)
            if context == "id":
                continue
            regions = _regions(value, context == "phone")
            for s, e in _match_window(value, regions, context == "phone") if regions else ():
                s, e = _balance_parentheses(text, start + s, start + e)
                spans.append(Span(PHONE_NUMBER, s, e))
    return spans


# ------------------------------------------------------------------------------------------ interface

def _resolve(spans: list[Span]) -> list[Span]:
    """Sorted by start; where spans overlap the longer (then the earlier) wins."""
    chosen: list[Span] = []
    for span in sorted(spans, key=lambda s: (s.start, -(s.end - s.start))):
        if chosen and span.start < chosen[-1].end:
            if span.end - span.start > chosen[-1].end - chosen[-1].start:
                chosen[-1] = span
            continue
        chosen.append(span)
    return chosen


def find_pii(text: str) -> list[Span]:
    """E-mail addresses, IP addresses and phone numbers in `text`: sorted by start, non-overlapping."""
    if not text:
        return []
    spans = _emails(text)
    if _IPV4_PRECHECK.search(text):
        spans += _ipv4s(text)
    if _IPV6_PRECHECK.search(text):
        spans += _ipv6s(text)
    spans += _phones(text)
    return _resolve(spans)


def redact(text: str, spans: list[Span]) -> str:
    """`text` with each span replaced by its type in angle brackets ("<EMAIL_ADDRESS>")."""
    parts, position = [], 0
    for span in sorted(spans, key=lambda s: s.start):
        if span.start < position:  # overlapping spans: the part already replaced stays replaced
            if span.end > position:
                position = span.end
            continue
        parts.append(text[position:span.start])
        parts.append(f"<{span.type}>")
        position = span.end
    parts.append(text[position:])
    return "".join(parts)
