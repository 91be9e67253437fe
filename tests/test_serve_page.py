"""serve's pages for a browser, on the real server (tests/test_serve.py's): the page at / and the API docs at
/docs load every file from the server itself (offline, no CDN; /redoc is off), the page posts to the API's own
endpoint and colours labels as training/errors.html does, and in a headless Chromium (where installed) it
shows each entity with its label, probability and colour, and the API's refusals in words."""

import os
import re
import shutil
import subprocess
import sys
from fnmatch import fnmatch
from html.parser import HTMLParser
from typing import List, Tuple
from urllib.parse import quote, urljoin, urlsplit

import pytest
import spacy

pytest.importorskip("fastapi_offline", reason="serving is optional: pip install -r requirements-serve.txt")
httpx = pytest.importorskip("httpx", reason="serving is optional: pip install -r requirements-serve.txt")

from conftest import ROOT  # noqa: E402
from test_predict import SCORED_TEXTS, make_pipeline, scored_entities  # noqa: E402
from test_serve import SMALL, serving  # noqa: E402

from iob_ner.report import write_errors_html  # noqa: E402

# what makes a browser load (or go to) a URL: these attributes, url(...) and @import in CSS, and the
# OpenAPI document that Swagger UI's inline script names
LOADING_ATTRIBUTES = {"script": "src", "link": "href", "img": "src", "a": "href"}
CSS_URL = re.compile(r"""url\(\s*['"]?([^'")]+)|@import\s+['"]([^'"]+)""")
SWAGGER_SPEC = re.compile(r"""\burl: '([^']+)'""")
FETCH = re.compile(r"""fetch\("([^"]+)\"""")  # page.js's calls to the API
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


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


class Marks(HTMLParser):
    """(text, label, score, background) of each entity mark in the page's DOM after its script ran."""

    def __init__(self) -> None:
        super().__init__()
        self.marks: List[Tuple[str, str, str, str]] = []
        self.error, self._in, self._parts = "", "", {}

    def handle_starttag(self, tag, attrs) -> None:
        attrs = dict(attrs)
        if tag == "mark":
            self._in, self._parts = "text", {"text": "", "tag": "", "score": "", "style": attrs.get("style", "")}
        elif self._in and tag == "span":
            self._in = attrs.get("class", "")
        elif attrs.get("id") == "error" and "hidden" not in attrs:
            self._in, self._parts = "error", {"error": ""}

    def handle_data(self, data) -> None:
        if self._in:
            self._parts[self._in] += data

    def handle_endtag(self, tag) -> None:
        if tag == "mark":
            p = self._parts
            self.marks.append((p["text"], p["tag"], p["score"], p["style"]))
            self._in = ""
        elif self._in == "error" and tag == "p":
            self.error, self._in = self._parts["error"], ""


def page_after_script(url: str, tmp_path) -> Marks:
    """The page's DOM in headless Chromium once its requests are answered (virtual time waits for them)."""
    browser = next((shutil.which(name) for name in BROWSERS if shutil.which(name)), None)
    if browser is None:
        pytest.skip("no Chromium: apt-get install chromium")
    command = [browser, "--headless", "--disable-gpu", "--virtual-time-budget=20000", "--dump-dom"]
    command += [f"--user-data-dir={tmp_path / 'profile'}", url]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
    dom = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout
    marks = Marks()
    marks.feed(dom)
    return marks


def rgb(hex_color: str) -> str:
    return "rgb({}, {}, {})".format(*(int(hex_color[i : i + 2], 16) for i in (1, 3, 5)))


def test_in_a_browser_the_page_marks_each_entity_with_label_probability_and_colour(scored_model, tmp_path):
    nlp = spacy.load(scored_model)
    text = "𝛼-phase ZnO films grown by pulsed laser deposition"  # an astral character before the first entity
    with serving(nlp, SMALL) as url:
        info = httpx.get(f"{url}/info").json()
        marks = page_after_script(f"{url}/?text={quote(text)}", tmp_path).marks
        refused = page_after_script(f"{url}/?text={quote('ZnO ' * 60)}", tmp_path / "2")
    # the API rounds a score to 4 digits and the page shows that to 2: 0.35504 is sent as 0.355, shown "0.35"
    expected = [(text[s:e], label, f"{round(score, 4):.2f}") for s, e, label, score in scored_entities(nlp, text)]
    assert expected and [m[:3] for m in marks] == expected
    assert all(rgb(info["colors"][label]) in style for _, label, _, style in marks)
    assert refused.marks == [] and "(413): text 0 has 240 characters; the limit is 200" in refused.error


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
