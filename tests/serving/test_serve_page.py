"""serve's pages for a browser, on the real server (tests/support/serving.py's): the page at / and the API docs at
/docs load every file from the server itself (offline, no CDN; /redoc is off), the page posts to the API's own
endpoint and colours labels as training/errors.html does, and in a headless Chromium (where installed) it
shows each entity with its label, probability and colour, and the API's refusals in words."""

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from fnmatch import fnmatch
from html.parser import HTMLParser
from pathlib import Path
from typing import List
from urllib.parse import quote, urljoin, urlsplit

import pytest
import spacy

pytest.importorskip("fastapi_offline", reason="serving is optional: pip install -r requirements-serve.txt")
httpx = pytest.importorskip("httpx", reason="serving is optional: pip install -r requirements-serve.txt")

from support.browser import Browser, find_browser  # noqa: E402
from support.paths import ROOT  # noqa: E402
from support.pipelines import SCORED_TEXTS, make_pipeline, scored_entities  # noqa: E402
from support.serving import SMALL, serving  # noqa: E402

from iob_ner.evaluation.report.errors_html import write_errors_html  # noqa: E402
from iob_ner.serving.app import Limits  # noqa: E402

# what makes a browser load (or go to) a URL: these attributes, url(...) and @import in CSS, and the
# OpenAPI document that Swagger UI's inline script names
LOADING_ATTRIBUTES = {"script": "src", "link": "href", "img": "src", "a": "href"}
CSS_URL = re.compile(r"""url\(\s*['"]?([^'")]+)|@import\s+['"]([^'"]+)""")
SWAGGER_SPEC = re.compile(r"""\burl: '([^']+)'""")
FETCH = re.compile(r"""fetch\("([^"]+)\"""")  # page.js's calls to the API


class References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: List[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        value = dict(attrs).get(LOADING_ATTRIBUTES.get(tag, ""))
        if value:
            self.urls.append(value)


def referenced(html_or_css: str, is_css: bool) -> List[str]:
    urls = [a or b for a, b in CSS_URL.findall(html_or_css)]  # in a style sheet, a <style> or a style=""
    if not is_css:
        parser = References()
        parser.feed(html_or_css)
        urls += parser.urls + SWAGGER_SPEC.findall(html_or_css)
    return [url for url in urls if not url.startswith("data:")]  # inline: nothing to load


def fetch_everything(server: str, path: str) -> List[str]:
    """Every URL the page at `path` references, and those its style sheets reference, each checked to be on
    `server` and to answer 200 (with no other server reachable, as offline)."""
    todo, seen = [urljoin(server, path)], []
    while todo:
        url = todo.pop()
        if url in seen:
            continue
        seen.append(url)
        assert urlsplit(url)[:2] == urlsplit(server)[:2], f"{url} (from {path}) is not on the server"
        answer = httpx.get(url, timeout=30)
        assert answer.status_code == 200, f"{url} (from {path}): {answer.status_code}"
        kind = answer.headers.get("content-type", "")
        if kind.startswith(("text/html", "text/css")):
            todo += [urljoin(url, ref) for ref in referenced(answer.text, kind.startswith("text/css"))]
    return seen


@pytest.mark.parametrize(
    "path, loads",
    [
        ("/", ["/page/page.js", "/page/page.css", "/docs"]),
        (
            "/docs",
            ["/static-offline-docs/swagger-ui-bundle.js", "/static-offline-docs/swagger-ui.css", "/openapi.json"],
        ),
    ],
)
def test_the_page_and_the_api_docs_load_every_file_from_the_server_itself(path, loads):
    with serving(make_pipeline(False)) as url:
        fetched = [urlsplit(u).path for u in fetch_everything(url, path)]
        assert set(loads) <= set(fetched), fetched  # the check above did see the page's script and style
        assert httpx.get(f"{url}/redoc").status_code == 404  # its script fetches a logo from cdn.redoc.ly


def test_the_page_posts_to_ner_and_shows_its_entities_coloured_as_in_errors_html(scored_model, tmp_path):
    nlp = spacy.load(scored_model)
    with serving(nlp, SMALL) as url:
        script = httpx.get(f"{url}/page/page.js").text
        endpoints = FETCH.findall(script)
        assert sorted(endpoints) == ["info", "ner"] and "JSON.stringify({ text })" in script
        page_url = f"{url}/"
        info = httpx.get(urljoin(page_url, "info")).json()
        for text in SCORED_TEXTS:
            shown = httpx.post(urljoin(page_url, "ner"), json={"text": text}, timeout=30).json()["entities"]
            assert [(e["start"], e["end"], e["label"], e["score"]) for e in shown] == [
                (start, end, label, round(score, 4)) for start, end, label, score in scored_entities(nlp, text)
            ]
    docs = [nlp(text) for text in SCORED_TEXTS]
    assert {e.label_ for d in docs for e in d.ents} == set(info["labels"])  # every label is in errors.html
    write_errors_html(docs, docs, tmp_path / "errors.html")
    in_errors_html = dict(
        (label, color)
        for color, label in re.findall(
            r"background: (#\w+);.*?<span[^>]*>\s*(\w+)\s*</span>", (tmp_path / "errors.html").read_text(), re.S
        )
    )
    assert info["colors"] == in_errors_html


# -- in a browser --------------------------------------------------------------------------------------


MARKS = """[...document.querySelectorAll('#entities mark.entity')].map(m => [m.textContent, m.dataset.label,
  m.dataset.score || '', m.style.background, getComputedStyle(m, '::after').content, m.title])"""
ROWS = "[...document.querySelectorAll('#table tbody tr')].map(r => [...r.cells].map(c => c.textContent))"
RESULTS_HIDDEN = "document.getElementById('results').hidden"
ERROR = "document.getElementById('error').hidden ? '' : document.getElementById('error').textContent"
CTRL, META = 2, 4


def rgb(hex_color: str) -> str:
    return "rgb({}, {}, {})".format(*(int(hex_color[i : i + 2], 16) for i in (1, 3, 5)))


@pytest.fixture
def browser(tmp_path):
    if find_browser() is None:
        pytest.skip("no Chromium: apt-get install chromium")
    opened = Browser(tmp_path / "profile")
    yield opened
    opened.close()


def open_page(browser: Browser, url: str) -> None:
    browser.open(url, "document.querySelectorAll('#legend span').length > 0")  # /info has answered


def submit_with_keys(browser: Browser, text: str, modifiers: int = CTRL) -> None:
    """Empty the box, type `text` and press Ctrl+Enter (or Cmd+Enter)."""
    browser.js("(() => { const t = document.getElementById('text'); t.value = ''; t.focus(); })()")
    if text:
        browser.type(text)
    browser.key("Enter", "Enter", 13, modifiers=modifiers)


def wait_answered(browser: Browser) -> None:
    browser.wait_for(
        "!document.getElementById('submit').disabled && document.getElementById('summary').textContent !== '…'"
    )


def test_in_a_browser_the_page_marks_each_entity_with_label_probability_and_colour(scored_model, browser):
    nlp = spacy.load(scored_model)
    text = "𝛼-phase ZnO films grown by pulsed laser deposition"  # an astral character before the first entity
    with serving(nlp, SMALL) as url:
        info = httpx.get(f"{url}/info").json()
        open_page(browser, f"{url}/?text={quote(text)}")
        browser.wait_for("document.querySelectorAll('#entities mark').length > 0")
        marks = browser.js(MARKS)
        open_page(browser, f"{url}/?text={quote('ZnO ' * 60)}")
        browser.wait_for(ERROR)
        assert browser.js(MARKS) == [] and "(413): text 0 has 240 characters; the limit is 200" in browser.js(ERROR)
    # the API rounds a score to 4 digits and the page shows that to 2: 0.35504 is sent as 0.355, shown "0.35"
    expected = [(text[s:e], label, f"{round(score, 4):.2f}") for s, e, label, score in scored_entities(nlp, text)]
    assert expected and [tuple(m[:3]) for m in marks] == expected
    assert all(rgb(info["colors"][label]) in style for _, label, _, style, _, _ in marks)
    assert all(after == f'"{label}\u00a0\u00a0{score}"' for _, label, score, _, after, _ in marks), marks


def test_ctrl_enter_submits_enter_is_a_new_line_and_a_blank_text_is_not_sent(scored_model, browser):
    nlp = spacy.load(scored_model)
    with serving(nlp, SMALL) as url:
        open_page(browser, f"{url}/")
        browser.js("document.getElementById('text').focus()")
        browser.type("ZnO films grown by pulsed laser deposition")
        browser.key("Enter", "Enter", 13, text="\r")  # plain Enter: a new line, nothing sent
        browser.type("NiO was studied by Raman spectroscopy")
        assert browser.js("document.getElementById('text').value") == (
            "ZnO films grown by pulsed laser deposition\nNiO was studied by Raman spectroscopy"
        )
        time.sleep(0.3)
        assert browser.js(RESULTS_HIDDEN) and httpx.get(f"{url}/health").json()["requests"] == 0
        browser.key("Enter", "Enter", 13, modifiers=CTRL)
        browser.wait_for("document.querySelectorAll('#entities mark').length > 0")
        text = browser.js("document.getElementById('text').value")
        assert [tuple(m[:2]) for m in browser.js(MARKS)] == [
            (text[s:e], lab) for s, e, lab, _ in scored_entities(nlp, text)
        ]
        submit_with_keys(browser, "NiO was studied by Raman spectroscopy", META)  # Cmd+Enter on a Mac
        browser.wait_for("document.getElementById('entities').textContent.startsWith('NiO was')")
        assert httpx.get(f"{url}/health").json()["requests"] == 2
        for blank in ("", "   \n\t  "):
            submit_with_keys(browser, blank)
            assert "Type or paste a text first" in browser.wait_for(ERROR)
            assert browser.js(RESULTS_HIDDEN) and browser.js(MARKS) == []  # the old entities went with it
        assert httpx.get(f"{url}/health").json()["requests"] == 2  # nothing was sent


def test_a_refusal_or_a_server_gone_clears_the_previous_entities(scored_model, browser):
    nlp = spacy.load(scored_model)
    with serving(nlp, SMALL) as url:
        open_page(browser, f"{url}/")
        submit_with_keys(browser, "ZnO films grown by pulsed laser deposition")
        browser.wait_for("document.querySelectorAll('#entities mark').length > 0")
        assert browser.js(ROWS)
        submit_with_keys(browser, "ZnO " * 60)  # over max_chars: 413
        assert "(413)" in browser.wait_for(ERROR)
        assert browser.js(RESULTS_HIDDEN) and browser.js(MARKS) == [] and browser.js(ROWS) == []
        assert browser.js("document.getElementById('summary').textContent") == ""
        submit_with_keys(browser, "ZnO films grown by pulsed laser deposition")
        browser.wait_for("document.querySelectorAll('#entities mark').length > 0")
        assert browser.js(ERROR) == ""  # the error went with the new answer
    submit_with_keys(browser, "NiO was studied by Raman spectroscopy")  # the server has stopped
    assert "No answer from the server" in browser.wait_for(ERROR)
    wait_answered(browser)
    assert browser.js(RESULTS_HIDDEN) and browser.js(MARKS) == [] and browser.js(ROWS) == []


def test_copying_the_highlighted_text_copies_the_text_alone(scored_model, browser):
    nlp = spacy.load(scored_model)
    text = "LiFePO4 was measured by X-ray diffraction"
    with serving(nlp, SMALL) as url:
        open_page(browser, f"{url}/?text={quote(text)}")
        browser.wait_for("document.querySelectorAll('#entities mark').length > 0")
        marks = browser.js(MARKS)
        selected = browser.js(
            "(() => { const r = document.createRange(); r.selectNodeContents(document.getElementById('entities'));"
            " const s = getSelection(); s.removeAllRanges(); s.addRange(r); return s.toString(); })()"
        )
    assert marks and all(m[1] in m[4] for m in marks)  # the label is drawn: in ::after
    assert selected == text  # and not "LiFePO4MAT0.86 was ..."


def test_the_table_slider_and_label_filter_show_the_same_entities_and_json_gives_them(scored_model, browser, tmp_path):
    nlp = spacy.load(scored_model)
    text = ". ".join(SCORED_TEXTS)
    found = scored_entities(nlp, text)
    labels = sorted({label for _, _, label, _ in found})
    assert len(found) >= 3 and len(labels) >= 2, found
    descriptions = {labels[0]: "What the first label means"}
    with serving(nlp, Limits(max_chars=2_000, timeout_s=30), descriptions=descriptions) as url:
        open_page(browser, f"{url}/?text={quote(text)}")
        browser.wait_for("document.querySelectorAll('#entities mark').length > 0")
        browser.send(
            "Browser.grantPermissions", permissions=["clipboardReadWrite", "clipboardSanitizedWrite"], origin=url
        )

        def shown():
            marks = [(m[0], m[1]) for m in browser.js(MARKS)]
            rows = browser.js(ROWS)
            assert marks == [(r[0], r[1]) for r in rows]  # the table lists what is highlighted
            return rows

        rows = shown()
        assert [(r[0], r[1], r[3], r[4]) for r in rows] == [(text[s:e], lab, str(s), str(e)) for s, e, lab, _ in found]
        assert [float(r[2]) for r in rows] == [round(score, 4) for _, _, _, score in found]
        # the descriptions of labels.json: tooltips on the legend, the label filter and the marks
        assert (
            browser.js(
                f"[...document.querySelectorAll('#legend span')].find(s => s.textContent === '{labels[0]}').title"
            )
            == "What the first label means"
        )
        assert all(("What the first label means" in m[5]) == (m[1] == labels[0]) for m in browser.js(MARKS))
        # the slider between the scores: only those at least as probable stay, in the text and in the table
        scores = sorted(score for _, _, _, score in found)
        middle = round((scores[0] + scores[-1]) / 2, 2)
        browser.js(
            f"(() => {{ const s = document.getElementById('min-score'); s.value = {middle};"
            " s.dispatchEvent(new Event('input')); })()"
        )
        kept = [(text[s:e], lab) for s, e, lab, score in found if round(score, 4) >= middle]
        assert [(r[0], r[1]) for r in shown()] == kept and 0 < len(kept) < len(found)
        assert browser.js("document.getElementById('min-score-value').textContent") == f"{middle:.2f}"
        assert (
            browser.js("document.getElementById('summary').textContent")
            == f"{len(kept)} of {len(found)} entities shown"
        )
        browser.js(
            "document.getElementById('min-score').value = 0; document.getElementById('min-score').dispatchEvent(new Event('input'))"
        )
        browser.js(f"document.querySelector('#label-filter input[value=\"{labels[0]}\"]').click()")  # unticked
        assert [(r[0], r[1]) for r in shown()] == [(text[s:e], lab) for s, e, lab, _ in found if lab != labels[0]]
        assert browser.js("document.getElementById('entities').textContent") == text  # the text stays whole
        browser.click("#copy-json")
        assert browser.wait_for("document.getElementById('copied').textContent") == "Copied."
        copied = json.loads(browser.js("navigator.clipboard.readText()"))
        assert copied["text"] == text and [e["label"] for e in copied["entities"]] == [
            lab for _, _, lab, _ in found if lab != labels[0]
        ]
        browser.send("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(tmp_path / "downloads"))
        browser.click("#download-json")
        downloaded = tmp_path / "downloads" / "entities.json"
        deadline = time.monotonic() + 20
        while not downloaded.is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert json.loads(downloaded.read_text(encoding="utf8")) == copied
        browser.js(f"document.querySelector('#label-filter input[value=\"{labels[0]}\"]').click()")
        # narrow (400 px): nothing sticks out sideways; a screenshot of each width for a person to look at
        browser.screenshot(tmp_path / "page-1200.png", 1200, 1300)
        browser.screenshot(tmp_path / "page-400.png", 400, 2000)
        assert browser.js("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
        wide = "[...document.querySelectorAll('main *')].filter(e => e.getBoundingClientRect().right > innerWidth)"
        assert browser.js(f"{wide}.map(e => e.tagName)") == []
        shutil.copy(tmp_path / "page-400.png", Path(tempfile.gettempdir()) / "iob_ner-page-400.png")
        shutil.copy(tmp_path / "page-1200.png", Path(tempfile.gettempdir()) / "iob_ner-page-1200.png")


def test_without_scores_there_is_no_slider_and_the_marks_and_table_show_no_probability(browser):
    text = "ZnO films by sputtering"
    with serving(make_pipeline(False)) as url:  # an entity_ruler: entities without scores
        open_page(browser, f"{url}/?text={quote(text)}")
        browser.wait_for("!document.getElementById('results').hidden")
        assert browser.js("getComputedStyle(document.getElementById('min-score-box')).display") == "none"
        assert [(m[0], m[1], m[2], m[4]) for m in browser.js(MARKS)] == [
            ("ZnO", "MAT", "", '"MAT"'),
            ("sputtering", "PRO", "", '"PRO"'),
        ]
        assert browser.js(ROWS) == [["ZnO", "MAT", "–", "0", "3"], ["sputtering", "PRO", "–", "13", "23"]]


def test_the_example_button_fills_in_the_servers_example_and_finds_its_entities(scored_model, browser):
    nlp = spacy.load(scored_model)
    with serving(nlp, SMALL) as url:
        example = httpx.get(f"{url}/info").json()["example"]
        open_page(browser, f"{url}/")
        assert browser.js("document.getElementById('text').placeholder") == example
        browser.js("document.getElementById('example').click()")
        browser.wait_for("!document.getElementById('results').hidden")
        assert browser.js("document.getElementById('text').value") == example
        assert browser.js("document.getElementById('entities').textContent") == example
        assert [tuple(m[:2]) for m in browser.js(MARKS)] == [
            (example[s:e], lab) for s, e, lab, _ in scored_entities(nlp, example)
        ]


def test_user_text_goes_into_the_page_as_text_never_as_html(scored_model, browser):
    nlp = spacy.load(scored_model)
    text = "<img src=x onerror=\"document.title='pwned'\"> ZnO films"
    with serving(nlp, SMALL) as url:
        open_page(browser, f"{url}/?text={quote(text)}")
        wait_answered(browser)
        browser.wait_for("!document.getElementById('results').hidden")
        assert browser.js("document.querySelectorAll('#entities img, #table img').length") == 0
        assert browser.js("document.getElementById('entities').textContent") == text
        assert browser.js("document.title") != "pwned"
    script = (ROOT / "src" / "iob_ner" / "serving" / "page" / "page.js").read_text()
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script


def test_without_fastapi_offline_serve_says_what_to_install():
    code = (
        "import runpy, sys\n"
        "sys.modules['fastapi_offline'] = None\n"
        "sys.argv = ['serve.py']\n"
        f"runpy.run_path({str(ROOT / 'scripts' / 'serve.py')!r}, run_name='__main__')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    said = " ".join(result.stdout.split())
    assert result.returncode == 1 and "serving needs fastapi_offline" in said and "requirements-serve.txt" in said


def test_every_file_of_the_page_is_package_data():
    """A wheel holds only the package data pyproject.toml names: a file of the page left out would be a
    404 once installed (the tests above run from the source tree, where every file is there)."""
    from setuptools.config.pyprojecttoml import read_configuration

    globs = read_configuration(ROOT / "pyproject.toml")["tool"]["setuptools"]["package-data"]["iob_ner.serving"]
    serving = ROOT / "src" / "iob_ner" / "serving"
    files = [p.relative_to(serving).as_posix() for p in (serving / "page").rglob("*") if p.is_file()]
    assert files and all(any(fnmatch(f, glob) for glob in globs) for f in files), (files, globs)
