"""The dashboard pages in a real browser: headless Chromium (Debian's package) opens each
page from disk and must render every chart without reaching the network (tests/browser.py
says what it needs and where screenshots go)."""
from __future__ import annotations

from pathlib import Path

import pytest
from browser import chromium, screenshot_dir

from dashboards import build as dash_build
from dashboards import pages

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")
CHARTS_READY = """() => {
  const graphs = [...document.querySelectorAll('.plotly-graph-div')];
  return graphs.every(gd => gd.classList.contains('js-plotly-plot') && gd.data && gd.data.length > 0
                            && gd.querySelector('svg.main-svg'));
}"""
CHART_FACTS = """() => {
  const graphs = [...document.querySelectorAll('.plotly-graph-div')];
  return {
    containers: graphs.length,
    plotted: document.querySelectorAll('.js-plotly-plot').length,
    withData: graphs.filter(gd => gd.data && gd.data.length > 0).length,
    withPoints: graphs.filter(gd => gd.querySelectorAll('.scatterlayer .point, .scatterlayer .js-line').length > 0).length,
    traceNames: graphs.flatMap(gd => (gd.data || []).map(t => t.name || '')),
    brokenImages: [...document.images].filter(img => !img.complete || img.naturalWidth === 0).length,
    images: document.images.length,
  };
}"""


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


def open_page(browser, path: Path, shot: Path) -> dict:
    """Load one page from disk; returns what the browser saw (requests, errors, charts)."""
    context = browser.new_context(viewport={"width": 1400, "height": 900}, service_workers="block")
    external: list[str] = []
    errors: list[str] = []

    def guard(route):
        url = route.request.url
        if url.startswith(LOCAL_SCHEMES):
            route.continue_()
        else:
            external.append(url)
            route.abort()

    context.route("**/*", guard)
    page = context.new_page()
    page.on("request", lambda r: None if r.url.startswith(LOCAL_SCHEMES) else external.append(r.url))
    page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    try:
        page.goto(path.resolve().as_uri(), wait_until="load", timeout=60_000)
        page.wait_for_function(CHARTS_READY, timeout=60_000)
        facts = page.evaluate(CHART_FACTS)
        page.screenshot(path=str(shot), full_page=True)
    finally:
        context.close()
    facts.update(external=sorted(set(external)), errors=errors, screenshot=shot)
    return facts


def test_pages_render_offline(browser, tmp_path):
    from known_store import UI, populate_store  # the known store (tests/known_store.py)

    populate_store()
    out = tmp_path / "out"
    dash_build.build(out, ui_url=UI)
    shots = screenshot_dir(tmp_path)
    for key, name in pages.page_files().items():
        facts = open_page(browser, out / name, shots / f"{key}.png")
        assert facts["external"] == [], f"{name} reached the network: {facts['external']}"
        assert facts["errors"] == [], f"{name}: {facts['errors']}"
        assert facts["containers"] > 0, f"{name} has no chart"
        assert facts["plotted"] == facts["containers"] == facts["withData"] == facts["withPoints"], (name, facts)
        assert any("Pareto front" in t for t in facts["traceNames"]), (name, facts["traceNames"])
        assert facts["brokenImages"] == 0, name
        assert facts["screenshot"].stat().st_size > 10_000
    assert "confusion" in (out / "mammography.html").read_text()


def test_pages_without_data_render(browser, tmp_path):
    dash_build.build(tmp_path, ui_url="http://127.0.0.1:5000")
    shots = screenshot_dir(tmp_path)
    for key, name in pages.page_files().items():
        facts = open_page(browser, tmp_path / name, shots / f"empty-{key}.png")
        assert facts["external"] == [] and facts["errors"] == [], (name, facts)
        assert facts["containers"] == 0
