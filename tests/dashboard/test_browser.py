"""The dashboard in headless Chromium, driven by Playwright, on a live node.

Chromium is Debian's (/usr/bin/chromium) and Playwright only drives it, so
nothing is downloaded: ``scripts/browser-setup.sh`` installs both. Each
launch gets a new, empty profile directory from Playwright. The tests skip
when either is missing.
"""

from __future__ import annotations

import importlib.util
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .conftest import CID, MARKUP_BODY, Live, post, wait_for

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard.png"
TIMEOUT_S = 30.0

if not CHROMIUM.exists():
    pytest.skip(
        f"{CHROMIUM} is missing; run scripts/browser-setup.sh (apt-get install chromium)",
        allow_module_level=True,
    )
if importlib.util.find_spec("playwright") is None:
    pytest.skip(
        "the playwright package is missing; run scripts/browser-setup.sh (pip install playwright)",
        allow_module_level=True,
    )

from playwright.sync_api import sync_playwright  # noqa: E402

pytestmark = pytest.mark.slow


@dataclass
class Tab:
    """A page of the dashboard with what it logged and requested."""

    page: Page
    base: str
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def open(self, fragment: str = "#/") -> None:
        self.page.goto(f"{self.base}/{fragment}")
        self.wait_text("#live", lambda text: text.startswith("updated"))

    def text(self, selector: str) -> str:
        return (
            self.page.locator(selector).first.text_content(timeout=TIMEOUT_S * 1000)
            or ""
        )

    def wait_text(
        self, selector: str, check: Callable[[str], bool], timeout: float = TIMEOUT_S
    ) -> str:
        """Poll the text of ``selector`` until ``check`` accepts it."""

        def current() -> str | None:
            locator = self.page.locator(selector)
            if locator.count() == 0:
                return None
            text = locator.first.text_content() or ""
            return text if check(text) else None

        return wait_for(current, timeout=timeout, what=f"text of {selector}")

    def wait_hash(self, pattern: str) -> None:
        wait_for(
            lambda: (
                re.fullmatch(pattern, self.page.evaluate("location.hash")) is not None
            ),
            timeout=TIMEOUT_S,
            what=f"location.hash matching {pattern}",
        )

    def height(self) -> int:
        text = self.wait_text("#head-height", str.isdigit)
        return int(text)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def tab(browser: Browser, live: Live) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_S * 1000)
    tab = Tab(page, live.node.url)

    def on_console(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            tab.errors.append(f"{message.type}: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: tab.errors.append(f"pageerror: {error}"))
    page.on("request", lambda request: tab.requests.append(request.url))
    page.on("requestfailed", lambda request: tab.failed.append(f"failed {request.url}"))
    page.on(
        "response",
        lambda response: (
            response.status >= 400
            and tab.failed.append(f"{response.status} {response.url}")
        ),
    )
    page.on(
        "dialog", lambda dialog: (tab.dialogs.append(dialog.message), dialog.dismiss())
    )
    try:
        yield tab
    finally:
        context.close()


def _committed_height(live: Live, tx_id: str) -> int:
    view: dict[str, Any] = wait_for(
        lambda: (
            (v := live.node.get(f"/v1/tx/{tx_id}").json()).get("height") is not None
            and v
        ),
        what=f"commit of {tx_id}",
    )
    return int(view["height"])


def test_page_loads_without_console_errors(tab: Tab, live: Live) -> None:
    tab.open()
    tab.wait_text("#actors tbody", lambda text: "pinner" in text)
    assert tab.page.locator("#actors tbody tr").count() == 5
    for name in ("producer", "checkpointer", "pinner", "healer", "api"):
        row = tab.page.locator(f'#actors tr[data-actor="{name}"]')
        assert row.locator(".state").text_content() == "running", name
        assert (row.locator(".pid").text_content() or "").isdigit(), name
    assert tab.text("#chain-id") == "weall-dev"
    assert tab.height() >= 1
    assert tab.page.locator("#blocks tbody tr").count() >= 2
    assert "sha256" in tab.text("main")
    # Two polls later the page is still quiet.
    time.sleep(4.5)
    assert tab.errors == []
    assert tab.failed == []
    assert all(url.startswith(live.node.url + "/") for url in tab.requests), (
        tab.requests
    )


def test_backup_card_shows_checks_and_file(tab: Tab) -> None:
    tab.open()
    checks = tab.wait_text("#backup-verification", lambda text: "integrity" in text)
    assert checks.startswith("passed")
    assert "integrity ok" in checks
    assert "schema v" in checks
    assert tab.text("#backup-file") == "present, matches manifest"


def test_height_grows_with_commits(tab: Tab, live: Live) -> None:
    tab.open()
    heights = [tab.height()]
    for number in range(3):
        post(live.node, f"post number {number} while the page watches")
        last = heights[-1]
        text = tab.wait_text(
            "#head-height", lambda t, last=last: t.isdigit() and int(t) > last
        )
        heights.append(int(text))
    assert heights == sorted(set(heights)), heights
    assert tab.errors == []


def test_links_block_tx_account(tab: Tab, live: Live) -> None:
    body = "followed from its block"
    tx_id = post(live.node, body)
    height = _committed_height(live, tx_id)
    tab.open()
    tab.page.locator(f'#blocks tr[data-height="{height}"] a').first.click()
    tab.wait_hash(f"#/block/{height}")
    assert tab.text("#block-height") == str(height)

    tab.page.locator(f'#block-txs tr[data-tx="{tx_id}"] a').first.click()
    tab.wait_hash(f"#/tx/{tx_id}")
    assert tab.text("#tx-id") == tx_id
    assert "CONTENT_POST_CREATE" in tab.text("main")

    tab.page.locator("#tx-signer a").click()
    tab.wait_hash("#/account/%40founder")
    assert tab.text("#account-id") == "@founder"
    tab.wait_text("#account-posts", lambda text: body in text)

    tab.page.locator(
        f'#account-posts li[data-post="{tx_id}"] a', has_text="open"
    ).click()
    tab.wait_hash(f"#/content/{tx_id}")
    assert tab.text("#content-body") == body
    assert tab.errors == []
    assert tab.failed == []


def test_post_markup_shown_as_text(tab: Tab, live: Live) -> None:
    tab.open(f"#/content/{live.ids['markup_post']}")
    assert (
        tab.wait_text("#content-body", lambda text: text == MARKUP_BODY) == MARKUP_BODY
    )
    assert tab.page.locator("#injected").count() == 0
    assert tab.page.locator("#content-body img, #content-body b").count() == 0
    time.sleep(0.5)
    assert tab.dialogs == []
    assert tab.errors == []


def test_post_shows_its_comments(tab: Tab, live: Live) -> None:
    tab.open(f"#/content/{live.ids['post']}")
    tab.wait_text("main", lambda text: "a comment on the first post" in text)
    assert tab.text("#content-body") == "first post from the founder"


@pytest.mark.parametrize("route", ["pin", "cid"], ids=["by-pin-id", "by-cid"])
def test_pin_targets_and_confirmations(tab: Tab, live: Live, route: str) -> None:
    key = live.ids["pin"] if route == "pin" else CID
    tab.open(f"#/{route}/{key}")
    assert tab.wait_text("#pin-cid", lambda text: text == CID) == CID
    assert tab.page.locator('#pin-targets tr[data-operator="@node"]').count() == 1
    assert re.fullmatch(r"\d+ of 1 confirmed", tab.text("#pin-confirmations"))
    assert tab.errors == []


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("1", r"#/block/1"),
        ("@founder", r"#/account/%40founder"),
        ("founder", r"#/account/%40founder"),
        ("TX", r"#/tx/TX"),
        (CID, rf"#/cid/{CID}"),
    ],
    ids=["height", "account", "bare-account", "tx-id", "cid"],
)
def test_search_routes_by_id_shape(
    tab: Tab, live: Live, query: str, expected: str
) -> None:
    if query == "TX":
        query = live.ids["post"]
        expected = expected.replace("TX", query)
    tab.open()
    tab.page.fill("#search-input", query)
    tab.page.press("#search-input", "Enter")
    tab.wait_hash(expected)
    tab.wait_text("#live", lambda text: text.startswith("updated"))
    assert "Not found" not in tab.text("main")


def test_unknown_id_shows_not_found(tab: Tab) -> None:
    tab.open("#/block/999999999")
    tab.wait_text("main", lambda text: "No block at height 999999999" in text)
    tab.open("#/nowhere")
    tab.wait_text("main", lambda text: "There is no page" in text)


def test_restart_count_goes_up(tab: Tab, live: Live) -> None:
    tab.open()
    cell = '#actors tr[data-actor="pinner"] .restarts'
    before = int(tab.wait_text(cell, str.isdigit))
    pid_before = tab.text('#actors tr[data-actor="pinner"] .pid')
    result = live.node.cli("restart", "pinner", timeout=90.0)
    assert result.returncode == 0, result.stderr
    tab.wait_text(cell, lambda text: text.isdigit() and int(text) == before + 1)
    tab.wait_text(
        '#actors tr[data-actor="pinner"] .state', lambda text: text == "running"
    )
    assert tab.text('#actors tr[data-actor="pinner"] .pid') != pid_before
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    tab.page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 10_000
    assert tab.errors == []
