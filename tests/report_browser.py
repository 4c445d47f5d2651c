"""Open a report in headless Chromium (the system's, driven by playwright) and say what the page did:
console errors, page errors, the plots and whether each drew its svg, the contact sheet's images
and whether each decoded; a full-page screenshot is kept. No network is reached from the page."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
LOAD_TIMEOUT_MS = 120_000


@dataclass
class PageCheck:
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)     # every URL the page asked for besides itself
    plots: dict[str, bool] = field(default_factory=dict)  # data-plot name -> drawn (a plotly div with its svg)
    images: list[int] = field(default_factory=list)       # naturalWidth of each contact-sheet image
    text: str = ""


def browser_missing() -> str | None:
    """Why the browser check can't run here (after trying to install Chromium), or None."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "the Python package playwright is not installed (pip install playwright)"
    for refresh in (False, True):  # a fresh machine may have no package lists yet
        if CHROMIUM.exists() or not shutil.which("apt-get") or os.geteuid() != 0:
            break
        if refresh:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=600, check=False)
        subprocess.run(["apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=300", "chromium"],
                       capture_output=True, timeout=900, check=False)
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is absent and could not be installed (apt-get install -y chromium)"
    return None


_PLOTS = """() => Object.fromEntries([...document.querySelectorAll('figure.plot')].map(f => [f.dataset.plot,
  !!f.querySelector('.plotly-graph-div.js-plotly-plot svg.main-svg')]))"""
_IMAGES = "() => [...document.querySelectorAll('.sheet img')].map(i => i.complete ? i.naturalWidth : 0)"


def check_page(report: Path, screenshot: Path) -> PageCheck:
    """Load `report`, wait until every plot has drawn, and read back what the page shows."""
    from playwright.sync_api import sync_playwright

    found = PageCheck()
    url = report.resolve().as_uri()
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: found.console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda err: found.page_errors.append(str(err)))
            page.on("request", lambda r: found.requests.append(r.url) if r.url != url and not
                    r.url.startswith("data:") else None)
            page.goto(url, wait_until="load", timeout=LOAD_TIMEOUT_MS)
            page.wait_for_function("() => [...document.querySelectorAll('figure.plot')].every(f => "
                                   "f.querySelector('svg.main-svg'))", timeout=LOAD_TIMEOUT_MS)
            page.wait_for_function("() => [...document.querySelectorAll('.sheet img')].every(i => i.complete)",
                                   timeout=LOAD_TIMEOUT_MS)
            found.plots = page.evaluate(_PLOTS)
            found.images = page.evaluate(_IMAGES)
            found.text = page.inner_text("body")
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return found
