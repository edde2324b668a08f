"""The HTML report in a real headless Chromium: no console error, no network request, hostile
names stay inert text, and the page is not blank.

The screenshots are saved under the pytest temp dir (``report-screens``) for a person to look at.
"""

from __future__ import annotations

import base64
import json

import pytest

from conftest import HOSTILE_ALPN, HOSTILE_SNI
from dotaudit.pipeline import audit
from dotaudit.report import html

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _open(ctx, page_html: str):
    """Load ``page_html`` into a new page; return (page, console errors, requests made)."""
    page = ctx.new_page()
    errors: list[str] = []
    requests: list[str] = []
    dialogs: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    def on_dialog(d):
        dialogs.append(d.message)
        d.dismiss()

    page.on("dialog", on_dialog)

    def route(r):
        url = r.request.url
        if url.startswith("data:"):
            r.continue_()
        else:
            requests.append(url)
            r.abort()

    page.route("**/*", route)
    page.set_content(page_html, wait_until="load")
    page.wait_for_timeout(150)   # let any (unwanted) onerror / timer fire
    return page, errors, requests, dialogs


def _non_background_pixels(ctx, png: bytes) -> int:
    """Count pixels that differ from the top-left (background) pixel, decoded by the browser."""
    page = ctx.new_page()
    try:
        url = "data:image/png;base64," + base64.b64encode(png).decode()
        return page.evaluate("""async (url) => {
            const img = new Image(); img.src = url; await img.decode();
            const c = document.createElement('canvas'); c.width = img.width; c.height = img.height;
            const g = c.getContext('2d'); g.drawImage(img, 0, 0);
            const d = g.getImageData(0, 0, c.width, c.height).data;
            let n = 0;
            for (let i = 0; i < d.length; i += 4) {
              if (Math.abs(d[i] - d[0]) + Math.abs(d[i+1] - d[1]) + Math.abs(d[i+2] - d[2]) > 30) n++;
            }
            return n;
        }""", url)
    finally:
        page.close()


def test_hostile_names_render_inert(browser_context, hostile_pcap, tmp_path_factory):
    report = audit([str(hostile_pcap)])
    qnames = [q for f in report["flows"] if f["dns"] for q in f["dns"]["qnames"]]
    assert any("<script>" in q for q in qnames)
    assert any((f["tls"] or {}).get("sni") == HOSTILE_SNI for f in report["flows"])
    page_html = html.render(report)
    page, errors, requests, dialogs = _open(browser_context, page_html)
    try:
        assert errors == []
        assert requests == []
        assert dialogs == []
        assert page.evaluate("window.__xss") is None
        # No element was injected: the only script is ours, no <img> at all.
        assert page.locator("script").count() == 1
        assert page.locator("img").count() == 0
        text = page.inner_text("body")
        for q in qnames:
            assert q in text
        assert HOSTILE_SNI in text
        assert HOSTILE_ALPN in text
        shots = tmp_path_factory.mktemp("report-screens")
        png = page.screenshot(path=str(shots / "hostile.png"), full_page=True)
        assert _non_background_pixels(browser_context, png) > 1000
    finally:
        page.close()


def test_gateway_report_in_browser(browser_context, repo, tmp_path_factory):
    report = json.loads((repo / "reports" / "gateway.json").read_text(encoding="utf-8"))
    page, errors, requests, dialogs = _open(browser_context, html.render(report))
    try:
        assert errors == [] and requests == [] and dialogs == []
        assert page.inner_text("#verdict .word") == "FAIL"
        assert page.locator("#findings details.finding").count() == len(report["findings"])
        # The flow table filters and sorts (the inline script runs under the CSP).
        rows = page.locator("#flows-table tbody tr")
        assert rows.count() == len(report["flows"])
        page.select_option("#flow-class", "do53")
        visible = [r for r in range(rows.count()) if rows.nth(r).is_visible()]
        assert len(visible) == report["summary"]["flows_by_class"]["do53"]
        assert page.inner_text("#flows-shown") == str(len(visible))
        page.select_option("#flow-class", "")
        page.fill("#flow-filter", "TLS 1.0")
        assert page.inner_text("#flows-shown") == "1"
        page.fill("#flow-filter", "")
        page.click("#flows-table th:nth-child(11)")   # pkts, ascending
        page.click("#flows-table th:nth-child(11)")   # descending
        first = page.locator("#flows-table tbody tr").first.locator("td").nth(10).inner_text()
        assert int(first) == max(f["packets"]["c2s"] + f["packets"]["s2c"] for f in report["flows"])
        shots = tmp_path_factory.mktemp("report-screens")
        png = page.screenshot(path=str(shots / "gateway.png"), full_page=True)
        assert _non_background_pixels(browser_context, png) > 5000
    finally:
        page.close()
