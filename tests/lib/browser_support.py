"""A headless system Chromium for page tests (Debian's ``chromium``; Playwright never
downloads a browser here). Without Chromium or the playwright package, tests skip."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


def chromium_executable() -> str | None:
    """The system Chromium: on PATH, else Debian's standard location."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    fallback = "/usr/bin/chromium"
    return fallback if os.access(fallback, os.X_OK) else None


@asynccontextmanager
async def headless_chromium() -> AsyncIterator[Any]:
    """A launched browser, closed afterwards; skips the test without one."""
    executable = chromium_executable()
    if executable is None:
        pytest.skip("no Chromium found (install Debian's 'chromium' package) - page not tested")
    try:
        from playwright.async_api import async_playwright
    except ImportError as error:
        pytest.skip(f"the playwright Python package is not installed ({error})")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()
