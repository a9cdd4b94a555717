"""The URL blocklist (pipeline.safety.urls): normalisation, domain and URL matching, UT1 folders, plain lists,
banned words, bad input. Lists under tests/fixtures/safety/: a UT1-style folder (adult: plain `domains` and
`urls`; gambling: gzipped `domains.gz` and an empty `urls`) and a plain list with comments."""

from __future__ import annotations

import gzip
import hashlib
import random
import time
from pathlib import Path

import pytest

from pipeline.errors import CurateError
from pipeline.safety import SafetyInputError
from pipeline.safety.urls import UrlBlocklist, UrlMatch, normalize_url, split_url

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "safety"
UT1 = str(FIXTURES / "ut1")
PLAIN = str(FIXTURES / "blocklist.txt")


@pytest.fixture(scope="module")
def both() -> UrlBlocklist:
    return UrlBlocklist.load([UT1, PLAIN])


@pytest.mark.parametrize(("url", "expected"), [
    ("https://www.Example.COM/Path/To/Page.html", "example.com/Path/To/Page.html"),  # scheme, www., host case
    ("http://example.com/a/b/", "example.com/a/b"),                                   # trailing slash
    ("http://example.com/", "example.com"),
    ("http://example.com", "example.com"),
    ("http://example.com:80/x", "example.com/x"),                                     # default ports
    ("https://example.com:443/x", "example.com/x"),
    ("http://example.com:8080/x", "example.com:8080/x"),                              # other ports kept
    ("http://example.com/x#section-2", "example.com/x"),                              # fragment
    ("http://example.com/x?b=1&a=2#f", "example.com/x?b=1&a=2"),                      # query kept as it is
    ("http://example.com/x/?", "example.com/x"),                                      # empty query
    ("http://user:secret@example.com/x", "example.com/x"),                            # user info
    ("http://example.com./x", "example.com/x"),                                       # trailing dot of the host
    ("http://bücher.de/Straße", "xn--bcher-kva.de/Straße"),                           # IDNA host, path untouched
    ("HTTP://WWW.BÜCHER.DE", "xn--bcher-kva.de"),
    ("//www.example.com/x", "example.com/x"),                                         # scheme-relative
    ("example.com/x/", "example.com/x"),                                              # no scheme (UT1 urls)
    ("  https://example.com/x \n", "example.com/x"),
    ("http://[2001:DB8:0::1]:8080/p/", "[2001:db8::1]:8080/p"),                        # IPv6
    ("http://www2.example.com/", "www2.example.com"),                                 # only `www.` is dropped
])
def test_normalize_url(url, expected):
    assert normalize_url(url) == expected


def test_split_url_parts():
    assert split_url("HTTPS://www.Example.com:443/A/?q=1#f") == ("example.com", "", "/A?q=1")
    assert split_url("http://93.184.216.34:8080/") == ("93.184.216.34", "8080", "")


@pytest.mark.parametrize(("url", "entry"), [
    ("http://example.com/", "example.com"),
    ("https://www.example.com/anything?x=1", "example.com"),
    ("https://ads.example.com/x", "example.com"),
    ("https://a.b.c.example.com/x", "example.com"),
    ("https://EXAMPLE.com:8443/", "example.com"),
    ("http://hot-tube.example.net/v/1", "hot-tube.example.net"),
    ("http://cdn.hot-tube.example.net/", "hot-tube.example.net"),
])
def test_a_domain_blocks_itself_and_its_subdomains(both, url, entry):
    match = both.match(url)
    assert match == UrlMatch(UT1, "adult", entry, "domain")


@pytest.mark.parametrize("url", [
    "http://notexample.com/",           # same ending, not a subdomain
    "http://example.com.evil.net/",     # the entry as a label inside another host
    "http://example.co/",
    "http://example-com.org/example.com",  # the entry in the path is not the host
    "http://example.net/",
    "http://tube.example.net/",         # a parent of a listed domain is not blocked
    "",
    "not a url",
])
def test_not_blocked(both, url):
    assert both.match(url) is None


def test_ut1_category_kind_and_detail(both):
    match = both.match("http://casino-royal.example/play")  # from gambling/domains.gz
    assert match == UrlMatch(UT1, "gambling", "casino-royal.example", "domain")
    assert both.detail(match) == f"{UT1}/gambling/domains: gambling (casino-royal.example)"
    adult = both.match("https://www.example.com/")
    assert both.detail(adult) == f"{UT1}/adult/domains: adult (example.com)"
    assert both.match("http://sub.bet.example.org/").category == "gambling"


def test_ut1_urls_block_the_page_and_pages_under_it(both):
    match = both.match("http://blog.example.org/adult/2024/post.html")
    assert match == UrlMatch(UT1, "adult", "blog.example.org/adult", "url")
    assert both.detail(match) == f"{UT1}/adult/urls: adult (blog.example.org/adult)"
    assert both.match("https://www.blog.example.org/adult/") is not None
    assert both.match("http://blog.example.org/adult?page=2") is not None
    assert both.match("http://blog.example.org/adulthood") is None      # a prefix, not a parent path
    assert both.match("http://blog.example.org/") is None               # the site itself is not listed
    assert both.match("http://other.blog.example.org/adult") is None    # URL entries: that host only
    assert both.match("http://photos.example.net/Gallery/private/1.jpg") is not None
    assert both.match("http://photos.example.net/gallery/private/1.jpg") is None  # path case kept


def test_ip_entries(both):
    assert both.match("http://93.184.216.34/a") == UrlMatch(UT1, "adult", "93.184.216.34", "domain")
    assert both.match("http://198.51.100.7:8080/x").entry == "198.51.100.7"
    assert both.match("http://198.51.100.70/") is None
    assert both.match("http://51.100.7/") is None  # an IP has no parent domains


def test_plain_list_with_comments(both):
    assert both.match("http://spam.example.org/x") == UrlMatch(PLAIN, None, "spam.example.org", "domain")
    assert both.detail(both.match("http://spam.example.org/x")) == f"{PLAIN}: domain (spam.example.org)"
    assert both.match("http://tracker.example/").entry == "tracker.example"          # `www.` entry, inline comment
    assert both.match("http://www.tracker.example/").entry == "tracker.example"
    assert both.match("http://malware.example/").entry == "malware.example"          # hosts-file line
    assert both.match("http://0.0.0.0/") is None                                      # its sink address is not
    assert both.match("http://xn--bcher-kva.example/").entry == "xn--bcher-kva.example"  # IDN entry
    assert both.match("http://BÜCHER.example/").entry == "xn--bcher-kva.example"
    url = both.match("https://news.example.edu/Leaked/Story.html/")
    assert url == UrlMatch(PLAIN, None, "news.example.edu/Leaked/Story.html", "url")
    assert both.match("https://news.example.edu/") is None
    # words of the comments are no entries
    for word in ("comments", "a", "plain", "line", "dropped"):
        assert both.match(f"http://{word}/") is None
    described = {d["path"]: d for d in both.describe()}[PLAIN]
    assert (described["entries"], described["domains"], described["urls"], described["skipped_lines"]) == (6, 5, 1, 0)
    assert described["sha256"] == hashlib.sha256(Path(PLAIN).read_bytes()).hexdigest()


def test_describe_ut1_categories(both):
    described = {d["path"]: d for d in both.describe()}[UT1]
    assert described["format"] == "ut1"
    assert described["categories"] == {"adult": {"domains": 3, "urls": 2}, "gambling": {"domains": 2, "urls": 0}}
    assert described["entries"] == 7


def test_first_list_wins_and_gzip_plain_list(tmp_path):
    listed = tmp_path / "mine.txt.gz"
    listed.write_bytes(gzip.compress(b"example.com\nonly-here.example\n"))
    blocklist = UrlBlocklist.load([str(listed), UT1])
    assert blocklist.match("http://example.com/").list == str(listed)
    assert blocklist.match("http://only-here.example/").list == str(listed)
    assert blocklist.match("http://casino-royal.example/").list == UT1


def test_a_single_category_folder(tmp_path):
    folder = tmp_path / "phishing"
    folder.mkdir()
    (folder / "domains").write_text("bank-login.example\n")
    match = UrlBlocklist.load([str(folder)]).match("https://secure.bank-login.example/")
    assert match == UrlMatch(str(folder), "phishing", "bank-login.example", "domain")


@pytest.mark.parametrize(("url", "entry"), [
    ("http://site.org/porn/video", "porn"),          # whole word of the path
    ("http://porn.example/", "porn"),                # whole word of the host
    ("http://site.org/Watch-PORN-now", "porn"),      # case-insensitive
    ("http://site.org/free%20porn", "porn"),         # percent-decoded
    ("http://free-porn.example/", "porn"),
    ("http://mycasinos.net/", "*casino*"),           # subword, anywhere
    ("http://bestcasino.example/", "*casino*"),
    ("http://xxxvideos.org/", "xxx*"),               # word prefix
    ("http://hot_dates.example/", "hot dates"),      # words in a row
    ("http://example.org/hot/dates", "hot dates"),
])
def test_banned_words(url, entry):
    blocklist = UrlBlocklist.load([], ["porn", "*casino*", "xxx*", "hot dates"])
    assert blocklist.match(url) == UrlMatch("banned_words", None, entry, "word")
    assert blocklist.detail(blocklist.match(url)) == f"banned word: {entry}"


@pytest.mark.parametrize("url", [
    "http://pornography.org/",           # a whole word only
    "http://sporne.pl/",
    "http://site.org/search?q=porn",     # the query is not looked at
    "http://site.org/#porn",
    "http://casin.example/",             # the subword is not there
    "http://cas.example/ino",            # nor across the host and the path
    "http://exxx.org/",                  # xxx* is a prefix of a word
    "http://hot.example/dates-later",    # `hot dates` are not in a row
])
def test_banned_words_counter_cases(url):
    assert UrlBlocklist.load([], ["porn", "*casino*", "xxx*", "hot dates"]).match(url) is None


def test_domains_before_words(both):
    blocklist = UrlBlocklist.load([UT1], ["casino"])
    assert blocklist.match("http://casino-royal.example/").kind == "domain"
    assert blocklist.match("http://casino.example/").kind == "word"


def test_fingerprint_follows_content_and_words(tmp_path):
    listed = tmp_path / "list.txt"
    listed.write_text("a.example\n")
    first = UrlBlocklist.load([str(listed)]).fingerprint()
    assert UrlBlocklist.load([str(listed)]).fingerprint() == first
    assert UrlBlocklist.load([str(listed)], ["porn"]).fingerprint() != first
    listed.write_text("b.example\n")
    assert UrlBlocklist.load([str(listed)]).fingerprint() != first


@pytest.mark.parametrize(("content", "problem"), [
    (None, "does not exist"),
    (b"", "holds no domain or URL"),
    (b"# only a comment\n\n   \n", "holds no domain or URL"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not a text file"),
    (b"caf\xe9.example\n", "not a text file"),
    (b"\x1f\x8b\x08\x00garbage", "damaged gzip"),
])
def test_bad_list_files(tmp_path, content, problem):
    path = tmp_path / "list.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SafetyInputError, match=problem) as caught:
        UrlBlocklist.load([str(path)])
    assert str(path) in str(caught.value)
    assert isinstance(caught.value, CurateError)


def test_bad_folders(tmp_path):
    with pytest.raises(SafetyInputError, match="UT1 layout") as caught:
        UrlBlocklist.load([str(tmp_path)])
    assert str(tmp_path) in str(caught.value)
    (tmp_path / "adult").mkdir()
    (tmp_path / "adult" / "domains").write_text("# nothing\n")
    (tmp_path / "adult" / "urls").write_text("")
    with pytest.raises(SafetyInputError, match="is empty"):
        UrlBlocklist.load([str(tmp_path)])
    (tmp_path / "adult" / "urls").write_bytes(b"\x00\x01\x02")
    with pytest.raises(SafetyInputError, match="adult/urls: not a text file"):
        UrlBlocklist.load([str(tmp_path)])


@pytest.mark.parametrize("word", ["", "***", "--"])
def test_bad_banned_words(word):
    with pytest.raises(SafetyInputError, match="url_banned_words"):
        UrlBlocklist.load([], [word])


def test_a_large_list_is_quick_and_exact(tmp_path):
    rng = random.Random(7)
    names = {"".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(4, 12))) + ".com"
             for _ in range(200_000)}
    path = tmp_path / "domains"
    path.write_text("\n".join(sorted(names)) + "\n")
    started = time.perf_counter()
    blocklist = UrlBlocklist.load([str(path)])
    assert time.perf_counter() - started < 10  # ~0.1 s here; a per-line slow path would take far longer
    assert len(blocklist) == len(names)
    some = sorted(names)[:1000]
    assert all(blocklist.match(f"https://www.{name}/x") is not None for name in some)
    assert all(blocklist.match(f"https://{name}.evil/x") is None for name in some)
