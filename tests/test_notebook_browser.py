"""The inspection notebook as a person sees it: executed on a real small run, exported to HTML by nbconvert
and opened in Debian's headless Chromium (selenium + chromium-driver) at 1200 x 900.

The run is the cheap stages on the bundled sample WARCs plus one planted WARC file (extract, rules, dedup, then a
classifier distilled in seconds from the extraction benchmark's person-made labels, classify-score and
classify), all in this process. The planted pages hold markup that would run if the notebook let it render:
a <script> setting `window.__pwned` and `document.title`, an <img onerror>, an element with a known id
after a `</div>`, an <iframe> to a remote host; one of them has a URL made of markup too, and another an
unbroken 900-character token. The checks: every page-text box sits inside the viewport, is visible, at most
its fixed height and non-empty; the payload is on screen as literal text and did nothing; no card makes the
page scroll sideways; the page requested nothing from the network; the plots and what-if tables are there;
"Explain one page" rendered when `pipeline.explain` exists, else said why not.

Chromium and chromedriver come from the project's set-up (scripts/setup-test-deps.sh, run by
scripts/setup.sh): without them these tests fail and say so, rather than skip.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import time
from pathlib import Path

import pytest

from stagehelpers import quick_classifier

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "inspect_decisions.ipynb"
SAMPLE_WARCS = ROOT / "data" / "sample" / "warc"
BENCHMARK = ROOT / "data" / "extraction-benchmark"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WIDTH, HEIGHT = 1200, 900
pytestmark = pytest.mark.slow

PAGE_TITLE = "inspect_decisions"  # nbconvert titles the page after the notebook file
PLANTED_URL = 'https://planted.invalid/xss-notes?q="><script>window.__pwned="url"</script>&page=1'
LONG_URL = "https://planted.invalid/long-token"
LONG_TOKEN = "x7Qk" * 225  # 900 characters with no break opportunity: must wrap, not widen the card
SCRIPT_PAYLOAD = "<script>window.__pwned = 1; document.title = 'pwned'</script>"
IMG_PAYLOAD = "<img src=x onerror=window.__pwned=2>"
ELEMENT_PAYLOAD = "</div></article></section><b id=wc-injected>INJECTED</b>"
IFRAME_PAYLOAD = "<iframe src=https://planted.invalid/frame></iframe>"
PAYLOADS = (SCRIPT_PAYLOAD, IMG_PAYLOAD, ELEMENT_PAYLOAD, IFRAME_PAYLOAD)

PROSE = [
    "Every web page that quotes markup has to escape it before a browser sees it again.",
    "A page about cross-site scripting shows the attacks it explains, and a careless viewer runs them.",
    "The notes below were written for people who review crawled text by hand, one page at a time.",
    "They show what a hostile page looks like when its own examples are copied into a report.",
    "Reviewers read the text, check the reason a filter gave, and move on to the next page.",
    "Nothing in that work needs the page to run code, load images or open frames of its own.",
    "So the viewer treats all of it as plain words, including the angle brackets and the quotes.",
    "If the escaping is right, the examples appear on screen exactly as they are written here.",
    "If it is wrong, the page changes the title of the report or adds an element to it.",
    "The following lines are the examples that the notes discuss in the sections after them.",
]


def _page_html(title: str, paragraphs: list[str]) -> bytes:
    """A page whose visible text is `paragraphs`: each is escaped into the HTML, so the extracted text holds
    the markup literally (as a page that quotes an attack does)."""
    import html

    body = "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"</head><body><article><h1>{html.escape(title)}</h1>{body}</article></body></html>").encode()


def write_planted_warc(path: Path) -> None:
    """A WARC file of two response records: the payload page and the long-token page."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    pages = [
        (PLANTED_URL, _page_html("Notes on escaping quoted markup",
                                 PROSE[:6] + [f"Example {i + 1}: {p}." for i, p in enumerate(PAYLOADS)] + PROSE[6:])),
        (LONG_URL, _page_html("A page with one very long token",
                              PROSE[:5] + [f"The token is {LONG_TOKEN} and it ends here."] + PROSE[5:])),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        writer = WARCWriter(fh, gzip=True)
        for url, body in pages:
            headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                                                  ("Content-Length", str(len(body)))], protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(body),
                                                          http_headers=headers))


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory) -> Path:
    """Every stage but the LLM's (extract, rules, dedup, classify-score, classify) on the bundled WARCs plus
    the planted one, in this process (the runtime's local executor), and report.json."""
    from pipeline.config import load_config
    from pipeline.io import RunLayout
    from pipeline.report import build_report
    from pipeline.runtime.executor import LocalExecutor
    from pipeline.runtime.runner import run_stage
    from pipeline.stages import make_stage, pipeline_order, stage_class

    root = tmp_path_factory.mktemp("notebook-browser")
    planted = root / "input" / "planted.warc.gz"
    write_planted_warc(planted)
    classifier = quick_classifier(root)
    warcs = json.dumps([str(SAMPLE_WARCS / "*.warc.gz"), str(SAMPLE_WARCS / "*.warc"), str(planted)])
    cfg = load_config(None, [f"out={root / 'run'}", f"input.warcs={warcs}", "ray.executor=local",
                             "dedup.num_partitions=2", f"classify.classifier={classifier}"])
    for name in [n for n in pipeline_order()  # every stage this config enables but the LLM's
                 if stage_class(n).enabled(cfg) and not stage_class(n).needs_llm and n != "distil"]:
        run_stage(make_stage(name, cfg), executor=LocalExecutor(), quiet=True)
    build_report(RunLayout(root / "run"))
    return root / "run"


def _planted_doc_ids(run: Path) -> dict[str, str]:
    """{url: doc_id} of the planted pages, as extract recorded them (extracted/, or docs/ in a run without a
    separate rules stage): they must have got through extract with their text."""
    import pyarrow.parquet as pq

    folder = run / "extracted" if (run / "extracted").is_dir() else run / "docs"
    rows = [r for f in sorted(folder.glob("*.parquet"))
            for r in pq.read_table(f, columns=["doc_id", "url"]).to_pylist()]
    return {r["url"]: r["doc_id"] for r in rows if r["url"] in (PLANTED_URL, LONG_URL)}


@pytest.fixture(scope="module")
def executed(planted_run, tmp_path_factory):
    """The stored notebook executed headless on the planted run (every document sampled, "Explain one page"
    pointed at the payload page), and its nbconvert HTML export written to a file."""
    _require_modules("nbclient", "nbconvert")
    import nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    env = {"CURATE_RUN_DIR": str(planted_run), "CURATE_SAMPLE_PER_REASON": "1000", "CURATE_EXPLAIN_URL": PLANTED_URL}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    started = time.perf_counter()
    try:
        NotebookClient(notebook, timeout=240, kernel_name="python3",
                       resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    finally:
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    seconds = time.perf_counter() - started
    # the page must load nothing from the network: no require.js / MathJax from a CDN
    exporter = HTMLExporter(require_js_url="data:text/javascript,", mathjax_url="data:text/javascript,")
    body, _ = exporter.from_notebook_node(notebook, resources={"metadata": {"name": PAGE_TITLE}})
    page = tmp_path_factory.mktemp("notebook-html") / f"{PAGE_TITLE}.html"
    page.write_text(body, encoding="utf-8")
    return notebook, page, seconds


def _outputs(notebook) -> list[dict]:
    return [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]


def _require_modules(*modules: str) -> None:
    """Fail (not skip) with what to run when the set-up did not install the test's dev dependencies."""
    absent = [m for m in modules if importlib.util.find_spec(m) is None]
    if absent:
        pytest.fail(f"{', '.join(absent)} not installed in .venv: run `bash scripts/setup.sh`", pytrace=False)


def _require_browser() -> None:
    """Fail (not skip) with what to run when the set-up did not install Chromium and its driver."""
    _require_modules("selenium")
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: run `bash scripts/setup.sh` (it installs Debian's "
                    "chromium and chromium-driver, as root) or `bash scripts/setup-test-deps.sh`", pytrace=False)


@pytest.fixture(scope="module")
def browser(executed, tmp_path_factory):
    """Headless Chromium at 1200 x 900 with the exported notebook open (file://), cut off from the network
    (Chromium's own background services off; any host name resolves to nothing)."""
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--disable-extensions", "--host-resolver-rules=MAP * ~NOTFOUND",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}", f"--window-size={WIDTH},{HEIGHT}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.set_window_size(WIDTH, HEIGHT)
        driver.set_page_load_timeout(60)
        driver.get(executed[1].as_uri())
        shot = os.environ.get("NOTEBOOK_SCREENSHOT")
        if shot:  # a picture of the cards as they open (the links to the groups, then the first groups)
            driver.execute_script("document.querySelector('.wc-toc').scrollIntoView()")
            driver.save_screenshot(shot)
            driver.execute_script("window.scrollTo(0, 0)")
        yield driver
    finally:
        driver.quit()


BOXES_JS = """
return Array.from(document.querySelectorAll('.wc-cards .wc-text')).map(el => {
  const r = el.getBoundingClientRect(), s = getComputedStyle(el);
  return {left: r.left, right: r.right, height: r.height, maxHeight: s.maxHeight, fontSize: s.fontSize,
          overflowY: s.overflowY, whiteSpace: s.whiteSpace, text: el.innerText,
          card: el.closest('.wc-card').getAttribute('data-doc-id'), visible: el.checkVisibility()};
});
"""


def test_notebook_runs_with_plots_and_what_if_tables(executed):
    notebook, _, seconds = executed
    outputs = _outputs(notebook)
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert len([o for o in outputs if "image/png" in o.get("data", {})]) >= 3
    html_out = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "kept_tokens" in html_out and "precision" in html_out  # classify's threshold what-if table
    assert "wc-cards" in html_out
    assert seconds < 120, f"the notebook took {seconds:.0f}s"


def test_every_text_box_fits_the_viewport_and_shows_text(browser, planted_run):
    boxes = browser.execute_script(BOXES_JS)
    width = browser.execute_script("return window.innerWidth")
    planted = _planted_doc_ids(planted_run)
    assert set(planted) == {PLANTED_URL, LONG_URL}, "the planted pages did not survive extract"
    shown = {b["card"] for b in boxes}
    assert set(planted.values()) <= shown  # every planted page is on a card (every document is sampled)
    assert len(boxes) >= 20
    for box in boxes:
        limit = float(box["maxHeight"].removesuffix("px"))
        em = limit / float(box["fontSize"].removesuffix("px"))
        assert 8 <= em <= 16, box["maxHeight"]  # a fixed, short height (em of the box's own font)
        assert box["visible"] and 0 < box["height"] <= limit + 0.5, box
        assert 0 <= box["left"] and box["right"] <= width, box
        assert box["text"].strip(), box["card"]
        assert box["overflowY"] == "auto" and box["whiteSpace"] == "pre-wrap"
    long_box = next(b for b in boxes if b["card"] == planted[LONG_URL])
    assert LONG_TOKEN[:200] in long_box["text"].replace("\n", "")


def test_planted_payload_is_literal_text_and_never_ran(browser, planted_run):
    planted = _planted_doc_ids(planted_run)
    assert browser.execute_script("return typeof window.__pwned") == "undefined"
    assert browser.title == PAGE_TITLE
    assert browser.execute_script(
        "return document.querySelectorAll('#wc-injected, .wc-cards iframe, .wc-cards img, .wc-cards script')"
        ".length") == 0
    text = browser.execute_script(
        "return document.querySelector(`.wc-card[data-doc-id='${arguments[0]}'] .wc-text`).innerText",
        planted[PLANTED_URL])
    for payload in PAYLOADS:
        assert payload in text
    # the hostile URL is shown as text; its link is the escaped URL, opening without the opener
    link = browser.execute_script(
        "const a = document.querySelector(`.wc-card[data-doc-id='${arguments[0]}'] a.wc-url`);"
        "return [a.textContent, a.getAttribute('href'), a.rel, a.target]", planted[PLANTED_URL])
    assert link[0] == link[1] == PLANTED_URL
    assert "noopener" in link[2].split() and link[3] == "_blank"


def test_cards_do_not_scroll_sideways(browser):
    widths = browser.execute_script(
        "const c = document.querySelector('.wc-cards').getBoundingClientRect();"
        "return [document.documentElement.scrollWidth, window.innerWidth, c.right, c.left]")
    scroll_width, inner_width, right, left = widths
    assert 0 <= left and right <= inner_width
    # the cards' own styles applied (a broken style attribute would leave the notebook's font)
    assert "system-ui" in browser.execute_script(
        "return getComputedStyle(document.querySelector('.wc-cards')).fontFamily")
    assert scroll_width <= inner_width, "the page scrolls sideways"


def test_page_requests_nothing_from_the_network(browser, executed):
    """Every request the browser logged is local (the notebook file, data: URLs, Chromium's own chrome://
    pages): no card link, planted <img>/<iframe> or nbconvert script reached for a network host."""
    requested = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            requested.append(message["params"]["request"]["url"])
    assert executed[1].as_uri() in requested, "the network log does not show the page itself: it is not working"
    local = ("file:", "data:", "blob:", "about:", "chrome:", "chrome-untrusted:", "devtools:")
    assert [u for u in requested if not u.startswith(local)] == []


def test_explain_one_page_section(browser, executed):
    notebook, _, _ = executed
    printed = "".join(o.get("text", "") for o in _outputs(notebook) if o.get("output_type") == "stream")
    if importlib.util.find_spec("pipeline.explain") is None:
        assert "pipeline.explain is not in this checkout yet" in printed
        return
    section = browser.execute_script(
        "const e = document.querySelector('.wc-explain'); return e && [e.innerText, e.getBoundingClientRect().right]")
    assert section, "pipeline.explain imports but the notebook rendered no explanation"
    assert PLANTED_URL in section[0] and section[1] <= browser.execute_script("return window.innerWidth")
