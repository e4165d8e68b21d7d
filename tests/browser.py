"""Headless Chromium for the browser tests (Debian's package, driven by playwright through
`executable_path`: playwright's own browsers are never downloaded). Without either the tests
skip, or fail when MEDIMG_REQUIRE_BROWSER=1 (CI) so a skip cannot pass unseen. Screenshots go
to the test's tmp folder, or to $MEDIMG_SCREENSHOT_DIR when set (to keep them)."""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import pytest

LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_binary() -> str | None:
    for candidate in (os.environ.get("MEDIMG_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and (path := shutil.which(candidate)):
            return path
    return None


def missing(reason: str):
    """Skip, unless MEDIMG_REQUIRE_BROWSER=1 (set it in CI so a skip cannot pass unseen)."""
    if os.environ.get("MEDIMG_REQUIRE_BROWSER", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"browser test required but {reason}")
    pytest.skip(reason)


@contextlib.contextmanager
def chromium():
    binary = chromium_binary()
    if binary is None:
        missing("no chromium binary (install it with scripts/install.sh --browser)")
    try:
        from playwright import sync_api
    except ImportError:
        missing("the playwright Python package is not installed (pip install playwright)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=binary, headless=True, args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def screenshot_dir(tmp_path: Path, sub: str = "") -> Path:
    folder = Path(os.environ.get("MEDIMG_SCREENSHOT_DIR") or tmp_path / "screenshots") / sub
    folder.mkdir(parents=True, exist_ok=True)
    return folder
