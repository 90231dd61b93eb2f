"""The single-file HTML report in a real browser: headless Debian Chromium via Playwright.

Skipped where /usr/bin/chromium or Playwright is missing, unless BENCH_REQUIRE_BROWSER=1
(CI sets it, and installs Debian's chromium), then it fails instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.report import write_report

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


# per image: alt, loaded, natural width, src scheme, share of drawn pixels that are not blank
# (a truncated PNG can still report its width from the header, but draws nothing)
INSPECT_IMAGES = """els => els.map(e => {
  const c = document.createElement('canvas');
  c.width = e.naturalWidth; c.height = e.naturalHeight;
  const ctx = c.getContext('2d');
  ctx.drawImage(e, 0, 0);
  const px = e.naturalWidth ? ctx.getImageData(0, 0, c.width, c.height).data : [];
  let inked = 0;
  for (let i = 0; i < px.length; i += 4) if (px[i + 3] > 0 && px[i] + px[i + 1] + px[i + 2] < 700) inked++;
  return [e.alt, e.complete, e.naturalWidth, e.src.slice(0, 21), inked / Math.max(1, px.length / 4)];
})"""


def _unavailable(why: str) -> None:
    if os.environ.get("BENCH_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{why} (BENCH_REQUIRE_BROWSER=1)")
    pytest.skip(why)


def test_report_html_renders_offline_without_errors(synthetic_store):
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} missing: apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright (Python) not installed")
    _, html_path = write_report(synthetic_store)
    errors, requests = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(html_path.as_uri(), wait_until="load")
            images = page.eval_on_selector_all("img", INSPECT_IMAGES)
            headers = page.eval_on_selector_all("th", "els => els.map(e => e.textContent)")
            h2 = page.eval_on_selector_all("h2", "els => els.map(e => e.textContent)")
            tables = page.locator("table").count()
            folded = page.eval_on_selector_all("details", "els => els.map(e => [e.querySelector('h2').textContent,"
                                               " e.open, e.querySelector('table').checkVisibility()])")
            page.click("summary:has-text('Headline')")
            opened = page.eval_on_selector("details:has(h2:text('Headline')) table", "e => e.checkVisibility()")
        finally:
            browser.close()
    assert errors == []
    assert all(u.startswith(("file:", "data:")) for u in requests), requests
    assert len(images) == 5  # families, 2 learning curves, parity, elastic constants
    for alt, complete, width, src, inked in images:
        assert complete and width > 0 and src == "data:image/png;base64" and inked > 0.01, (alt, inked)
    assert h2[:4] == ["Summary", "Families compared", "Learning curves", "Headline"]  # the answer first
    assert {name for name, is_open, shown in folded if not is_open and not shown} >= {
        "Headline", "Results per dataset, model, strategy and size", "Timing and cost"}  # wide tables folded
    assert opened is True, folded  # and one click opens them
    assert "F within 10 % from" in headers and "chem. acc. from" in headers
    assert tables >= 7
