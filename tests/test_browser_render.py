"""A run's report.html and an export's model card (README.md, as the Hub shows it: the
Markdown without its YAML header, converted to HTML) in a real headless browser: every
image loads, the console stays free of errors, the tables are there and every relative
link points to a file that exists.

The browser: Selenium driving Chromium and its chromedriver (Debian: `apt-get install
chromium chromium-driver`; `pip install selenium`), or else Playwright with the same
Chromium or its own (`pip install playwright && playwright install chromium`). Where
neither is installed the test skips, saying which is missing.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

pytestmark = pytest.mark.slow

#: what the page reports, by one script in the page
PAGE_FACTS = """
return {
  images: Array.from(document.images).map(
    i => ({src: i.getAttribute('src').slice(0, 80), complete: i.complete, width: i.naturalWidth})),
  tables: document.querySelectorAll('table').length,
  rows: document.querySelectorAll('table tr').length,
  links: Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href')),
  ids: Array.from(document.querySelectorAll('[id]')).map(e => e.id),
};
"""

CHROMIUMS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _chromium() -> str | None:
    return next((path for name in CHROMIUMS if (path := shutil.which(name))), None)


class SeleniumPage:
    def __init__(self):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = _chromium()
        for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--allow-file-access-from-files"):  # fmt: skip
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(options=options,
                                       service=Service(shutil.which("chromedriver")))  # fmt: skip

    def open(self, url: str) -> tuple[dict, list[str]]:
        self.driver.get(url)
        facts = self.driver.execute_script(PAGE_FACTS)
        errors = [entry["message"] for entry in self.driver.get_log("browser")
                  if entry["level"] == "SEVERE"]  # fmt: skip
        return facts, errors

    def close(self):
        self.driver.quit()


class PlaywrightPage:
    def __init__(self):
        from playwright.sync_api import sync_playwright

        self.manager = sync_playwright().start()
        try:  # its own Chromium, else the system's
            self.browser = self.manager.chromium.launch()
        except Exception:
            if _chromium() is None:
                self.manager.stop()
                raise
            self.browser = self.manager.chromium.launch(executable_path=_chromium(),
                                                        args=["--no-sandbox"])  # fmt: skip

    def open(self, url: str) -> tuple[dict, list[str]]:
        page = self.browser.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url, wait_until="load")
        facts = page.evaluate(f"() => {{ {PAGE_FACTS} }}")
        page.close()
        return facts, errors

    def close(self):
        self.browser.close()
        self.manager.stop()


@pytest.fixture(scope="module")
def browser():
    reasons = []
    try:
        import selenium  # noqa: F401

        if _chromium() is None or shutil.which("chromedriver") is None:
            reasons.append("Selenium is installed but Chromium or chromedriver is not "
                           "(Debian: apt-get install chromium chromium-driver)")  # fmt: skip
        else:
            page = SeleniumPage()
            yield page
            page.close()
            return
    except ImportError:
        reasons.append("no Selenium (pip install selenium; with Debian's chromium and "
                       "chromium-driver packages)")  # fmt: skip
    try:
        page = PlaywrightPage()
    except ImportError:
        reasons.append("no Playwright (pip install playwright)")
    except Exception as err:  # installed without a browser it can start
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        reasons.append(f"Playwright has no browser (playwright install chromium): {first}")
    else:
        yield page
        page.close()
        return
    pytest.skip("no headless browser: " + "; ".join(reasons))


def check_page(browser, path: Path) -> dict:
    facts, errors = browser.open(path.resolve().as_uri())
    assert errors == [], errors
    assert facts["images"], "no image on the page"
    broken = [img for img in facts["images"] if not (img["complete"] and img["width"] > 0)]
    assert broken == [], broken
    assert facts["tables"] >= 1 and facts["rows"] >= 2
    for href in facts["links"]:
        url = urlparse(href)
        if url.scheme in ("http", "https", "mailto"):
            continue  # outside the page's folder: not fetched here
        if href.startswith("#"):
            assert href[1:] in facts["ids"], f"{path.name}: no anchor {href}"
            continue
        assert not url.scheme, f"{path.name}: unexpected link {href}"
        target = path.parent / unquote(url.path)
        assert target.exists(), f"{path.name}: {href} -> {target} does not exist"
    return facts


@pytest.fixture(scope="module")
def run_with_report(tmp_path_factory):
    from otae.cli import main

    run = tmp_path_factory.mktemp("browser") / "run"
    args = ["train", "mnist/vae-quick", "training.epochs=1", "data.train_subset=64",
            "data.test_subset=32", "training.batch_size=16", "training.progress=false",
            "training.tensorboard=false", "evaluation.timing_steps=0",
            "evaluation.latent_points=32", "network.architecture=mlp",
            "network.options={hidden: [16]}", "--run-dir", str(run)]  # fmt: skip
    assert main(args) == 0
    assert (run / "report.html").is_file()
    return run


def test_report_html_renders(browser, run_with_report):
    facts = check_page(browser, run_with_report / "report.html")
    assert len(facts["images"]) >= 3  # samples, reconstructions, losses at least
    assert any(not link.startswith(("#", "http")) for link in facts["links"])  # figure files


def _card_html(readme: Path) -> Path:
    """The model card as the Hub renders it: YAML header off, Markdown (tables, code) to
    HTML, next to the card so its relative links resolve as on the Hub."""
    markdown = pytest.importorskip("markdown", reason="the markdown package (mkdocs') converts")
    text = readme.read_text(encoding="utf-8")
    body = re.sub(r"\A---\n.*?\n---\n", "", text, flags=re.DOTALL)
    assert body != text, "the card has no YAML header"
    html = markdown.markdown(body, extensions=["tables", "fenced_code"])
    page = readme.with_name("README.html")
    page.write_text(f'<!doctype html>\n<html><head><meta charset="utf-8"><title>card</title>'
                    f"</head><body>\n{html}\n</body></html>\n", encoding="utf-8")  # fmt: skip
    return page


def test_model_card_renders(browser, run_with_report, tmp_path):
    from otae.cli import main

    out = tmp_path / "export"
    assert main(["export", str(run_with_report), str(out)]) == 0
    facts = check_page(browser, _card_html(out / "README.md"))
    assert [img["src"] for img in facts["images"]] == ["samples.png"]
