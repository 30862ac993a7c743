"""The docs site as a reader sees it: built with mkdocs, served on localhost and every page loaded in headless
Chromium. Each mermaid diagram must have become an SVG (from docs/javascripts/mermaid.min.js: nothing is fetched from
outside), every image must have loaded and carry a caption, and no page may log an error or request a missing file.

Needs a chromium binary (Debian: apt-get install chromium) and playwright (the docs extra); skips without them."""

import contextlib
import functools
import http.server
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = next(
    filter(None, map(shutil.which, ["chromium", "chromium-browser", "google-chrome"])), None
)
# Hosts a page may ask for: none (the repository is a plain link, fonts and scripts are the site's own).
OPTIONAL_HOSTS = set()

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary to load the site in (apt-get install chromium)"
)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The built site's folder and the URL it is served at."""
    out = tmp_path_factory.mktemp("site")
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(out))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield out, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e '.[docs]')"
    )
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


def rendered_mermaid(page):
    """SVGs that mkdocs-material rendered: each diagram's <pre class="mermaid"> becomes a <div class="mermaid">
    holding the SVG in a closed shadow root, which only the DevTools protocol's DOM (pierce) reaches."""
    session = page.context.new_cdp_session(page)
    root = session.send("DOM.getDocument", {"depth": -1, "pierce": True})["root"]
    session.detach()
    found, stack = [], [root]
    while stack:
        node = stack.pop()
        attributes = dict(
            zip(node.get("attributes", [])[::2], node.get("attributes", [])[1::2], strict=True)
        )
        if node.get("nodeName") == "DIV" and "mermaid" in attributes.get("class", "").split():
            children = [
                child
                for shadow in node.get("shadowRoots", [])
                for child in shadow.get("children", [])
            ]
            found.append(
                [child for child in children if child.get("nodeName", "").lower() == "svg"]
            )
        stack += node.get("children", []) + node.get("shadowRoots", [])
    return found


def open_offline(browser, url):
    """A page loaded with every request to another host aborted (the test runs as a reader without the internet
    does), with the errors it logged and the hosts it asked."""
    page = browser.new_page()
    errors, outside = [], set()

    def on_console(msg):
        if (
            msg.type == "error"
            and urlparse(msg.location.get("url") or url).hostname not in OPTIONAL_HOSTS
        ):
            errors.append(f"console: {msg.text} ({msg.location.get('url')})")

    def on_response(response):
        if response.status >= 400:
            errors.append(f"HTTP {response.status}: {response.url}")

    def only_local(route, request):
        host = urlparse(request.url).hostname
        if host == "127.0.0.1":
            route.continue_()
        else:
            outside.add(host)
            route.abort()

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
    page.on("response", on_response)
    page.route("**/*", only_local)
    page.goto(url, wait_until="load")
    return page, errors, outside


VIDEOS = """() => Array.from(document.querySelectorAll('.md-content video')).map(v => ({
    src: v.getAttribute('src'), state: v.readyState, error: v.error && v.error.code,
    caption: (v.closest('figure')?.querySelector('figcaption')?.textContent || '').trim()}))"""
VIDEOS_READY = """() => Array.from(document.querySelectorAll('.md-content video'))
    .every(v => v.readyState > 0 || v.error)"""


def test_every_page_renders_offline(site, browser):
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    out, url = site
    pages = sorted(path.relative_to(out).parent.as_posix() for path in out.rglob("index.html"))
    assert {
        ".",
        "qmix",
        "qmix_memefficient",
        "qmix_lstm",
        "qmix_multienvs",
        "env",
        "benchmarks",
    } <= set(pages)
    diagrams_seen = videos_seen = 0
    for name in pages:
        html = (out / name / "index.html").read_text()
        n_diagrams = len(re.findall(r'<pre class="mermaid"', html))
        diagrams_seen += n_diagrams
        page, errors, outside = open_offline(browser, url + ("" if name == "." else name + "/"))
        if n_diagrams:
            with contextlib.suppress(
                PlaywrightTimeoutError
            ):  # the assertions below say what is missing
                page.wait_for_function(
                    f"document.querySelectorAll('div.mermaid').length >= {n_diagrams}",
                    timeout=15_000,
                    polling=100,
                )
            svgs = rendered_mermaid(page)
            assert len(svgs) == n_diagrams and all(svgs), (
                f"{name}: {n_diagrams} mermaid diagrams, rendered: {svgs}"
            )
            assert page.locator("pre.mermaid").count() == 0, f"{name}: a diagram is left as text"
        images = page.evaluate(
            """() => Array.from(document.querySelectorAll('.md-content img')).map(img => ({
                src: img.getAttribute('src'), loaded: img.complete && img.naturalWidth > 0,
                caption: (img.closest('figure')?.querySelector('figcaption')?.textContent || '').trim()}))"""
        )
        broken = [image["src"] for image in images if not image["loaded"]]
        assert not broken, f"{name}: images that did not load: {broken}"
        uncaptioned = [image["src"] for image in images if len(image["caption"]) < 20]
        assert not uncaptioned, (
            f"{name}: figures without a caption saying what was run: {uncaptioned}"
        )
        n_videos = page.locator(".md-content video").count()
        videos_seen += n_videos
        if n_videos:  # each plays: its data has loaded (readyState > 0) and it raised no error
            with contextlib.suppress(PlaywrightTimeoutError):
                page.wait_for_function(VIDEOS_READY, timeout=15_000, polling=100)
        videos = page.evaluate(VIDEOS)
        stuck = [v["src"] for v in videos if v["state"] == 0 or v["error"] is not None]
        assert not stuck, f"{name}: videos that do not play: {videos}"
        uncaptioned = [v["src"] for v in videos if len(v["caption"]) < 20]
        assert not uncaptioned, f"{name}: videos without a caption saying what runs: {uncaptioned}"
        assert not errors, f"{name}: {errors}"
        assert outside <= OPTIONAL_HOSTS, (
            f"{name} asks other hosts for files: {sorted(outside - OPTIONAL_HOSTS)}"
        )
        page.close()
    assert diagrams_seen >= 1, "no mermaid diagram found on any page"
    assert videos_seen >= 2, f"{videos_seen} videos on the site: the policies the results show play"


# What a reader's screen shows: at a desktop width and a phone's, nothing on a page may be cut off
# (a code block, table or equation wider than the column must scroll inside its own box), every
# equation must be typeset, and no figure may be drawn much larger than it is shown.
WIDTHS = (1400, 390)
LAYOUT = """() => {
    const column = document.querySelector('.md-content');
    const right = Math.min(column.getBoundingClientRect().right, document.documentElement.clientWidth);
    const scroller = node => ['auto', 'scroll'].includes(getComputedStyle(node).overflowX);
    const scrolls = el => {  // it, a box around it, or (a code block) the code inside it scrolls
        for (let node = el; node && node !== column; node = node.parentElement) {
            if (scroller(node)) return true;
        }
        return el.tagName === 'PRE' && el.firstElementChild && scroller(el.firstElementChild);
    };
    const cut = Array.from(column.querySelectorAll('pre, table, img, video, .katex-display'))
        .filter(el => el.getBoundingClientRect().width > 0)
        .filter(el => el.getBoundingClientRect().right > right + 1 && !scrolls(el))
        .map(el => el.tagName.toLowerCase() + ': ' + (el.textContent || el.getAttribute('src') || '')
            .trim().slice(0, 60));
    const math = Array.from(column.querySelectorAll('.arithmatex'));
    const untyped = math.filter(el => !el.querySelector('.katex'))
        .map(el => el.textContent.trim().slice(0, 60));
    const oversized = Array.from(column.querySelectorAll('img'))
        .filter(img => img.naturalWidth > 2.2 * Math.max(img.getBoundingClientRect().width, 1))
        .map(img => `${img.getAttribute('src')}: ${img.naturalWidth} px shown at `
            + `${Math.round(img.getBoundingClientRect().width)}`);
    return {cut, untyped, math: math.length, oversized};
}"""


def test_nothing_is_cut_off_and_every_equation_is_typeset(site, browser):
    out, url = site
    pages = sorted(path.relative_to(out).parent.as_posix() for path in out.rglob("index.html"))
    equations = 0
    for width in WIDTHS:
        for name in pages:
            page, errors, _ = open_offline(browser, url + ("" if name == "." else name + "/"))
            page.set_viewport_size({"width": width, "height": 900})
            page.wait_for_timeout(100)
            found = page.evaluate(LAYOUT)
            page.close()
            assert not errors, f"{name}: {errors}"
            assert not found["cut"], (
                f"{name} at {width} px: cut off, not scrollable: {found['cut']}"
            )
            assert not found["untyped"], f"{name}: equations left as text: {found['untyped']}"
            if width == WIDTHS[0]:
                equations += found["math"]
                assert not found["oversized"], (
                    f"{name}: figures drawn far larger than shown: {found['oversized']}"
                )
    assert equations >= 4, "the QMIX page's equations were not found"


# The text a reader sees without scrolling: every text node wholly inside the viewport
FIRST_SCREEN = """() => {
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT), seen = [];
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        const range = document.createRange();
        range.selectNodeContents(node);
        const box = range.getBoundingClientRect();
        if (box.height > 0 && box.top >= 0 && box.bottom <= innerHeight) seen.push(node.textContent);
    }
    return seen.join(' ').replace(/\\s+/g, ' ');
}"""


def test_the_home_pages_first_screen_answers_what_how_and_whether_it_works(site, browser):
    """At 1400x900 without scrolling: how to get it (clone), the commands that train and test, the
    LBF result with its scale, the SMAClite result and the speed line."""
    out, url = site
    page, errors, _ = open_offline(browser, url)
    page.set_viewport_size({"width": 1400, "height": 900})
    text = page.evaluate(FIRST_SCREEN)
    for shown in [
        "git clone https://github.com/cleanmarl/cleanmarl",
        "python cleanmarl/qmix.py",
        "python -m pytest -n auto",
        "0.99 (1.0 is every food collected)",
        "of the 22 maps",
        "env steps/s",
    ]:
        assert shown in text, f"not on the first screen: {shown!r}"
    page.close()


TABLES = """() => Array.from(document.querySelectorAll('.md-content table')).map(t => [
    t.getBoundingClientRect().width,
    (t.closest('.md-typeset__scrollwrap') || t.parentElement).clientWidth,
    t.rows[0].cells.length])"""


def test_the_smaclite_core_table_fits_its_column(site, browser):
    """At 1400 px the SMAClite page's first table (map, difficulty, script and flags, 90% won at,
    best checkpoint) is read without scrolling sideways; each seed's values come in a second."""
    out, url = site
    page, errors, _ = open_offline(browser, url + "smaclite/")
    page.set_viewport_size({"width": 1400, "height": 900})
    page.wait_for_timeout(100)
    (core, column, cells), *others = page.evaluate(TABLES)
    page.close()
    assert not errors, errors
    assert cells == 5 and core <= column, (core, column, cells)
    assert others and others[0][2] > cells  # the per-seed table


FIGURES = """() => Array.from(document.querySelectorAll('.md-content img')).map(img => [
    img.currentSrc, img.naturalWidth, img.getBoundingClientRect().width,
    img.getBoundingClientRect().height])"""


def png_text(path):
    """A PNG's tEXt metadata: key -> value."""
    data, i, found = Path(path).read_bytes(), 8, {}
    while i < len(data):
        size, kind = int.from_bytes(data[i : i + 4], "big"), data[i + 4 : i + 8]
        if kind == b"tEXt":
            key, value = data[i + 8 : i + 8 + size].split(b"\0", 1)
            found[key.decode("latin-1")] = value.decode("latin-1")
        i += 12 + size
    return found


def test_every_figure_is_read_without_zooming(site, browser):
    """At 1400x900 each figure's smallest text (the size drawn, MinTextPx, which the drawing code
    writes into the PNG: benchmarks/smaclite_maps.save_figure) scaled to the width it is shown at is
    10 px or more, and no figure is taller than two screens."""
    out, url = site
    pages = sorted(path.relative_to(out).parent.as_posix() for path in out.rglob("index.html"))
    seen = 0
    for name in pages:
        page, errors, _ = open_offline(browser, url + ("" if name == "." else name + "/"))
        page.set_viewport_size({"width": 1400, "height": 900})
        page.wait_for_timeout(100)
        figures = page.evaluate(FIGURES)
        page.close()
        for src, natural, width, height in figures:
            path = out / urlparse(src).path.lstrip("/")
            drawn = png_text(path).get("MinTextPx")
            assert drawn is not None, f"{name}: {src} says nothing of its text size"
            shown = float(drawn) * width / natural
            assert shown >= 10, f"{name}: {src}'s smallest text is {shown:.1f} px as shown"
            assert height <= 2 * 900, f"{name}: {src} is {height:.0f} px tall as shown"
            seen += 1
    assert seen >= 8, f"{seen} figures on the site"
