"""The dashboard in headless Chromium, driven by Playwright, on a live node.

Chromium is Debian's (/usr/bin/chromium, or ``WEALL_TEST_CHROMIUM``) and
Playwright only drives it, so nothing is downloaded:
``scripts/browser-setup.sh`` installs both. Each launch gets a new, empty
profile directory from Playwright. When either is missing the tests skip on
a developer's machine, but fail under CI (``CI=true``), so that a broken
install cannot pass unnoticed there.

Every test checks, when its tab closes, that the page sent only GET
requests, all to the node that served it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pytest

from tests.follower.support import follower_node, start, wait_synced
from tests.follower.tamper_proxy import TamperProxy
from weall.protocol import keys
from weall.protocol.keys import KeyPair

from .conftest import CID, MARKUP_BODY, Live, post, wait_for

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, FloatRect, Page

CHROMIUM = Path(os.environ.get("WEALL_TEST_CHROMIUM", "/usr/bin/chromium"))
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
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
SCREENSHOT = ARTIFACTS / "dashboard.png"
FOLLOWER_SCREENSHOT = ARTIFACTS / "dashboard-follower.png"
TIMEOUT_S = 30.0
# The body of the post whose block the follower's proxy breaks.
REJECTED_POST: Final = (
    "the block of this post reaches the follower with a bad signature"
)


def _missing_parts() -> list[str]:
    missing = []
    if not CHROMIUM.exists():
        missing.append(
            f"{CHROMIUM} is missing; run scripts/browser-setup.sh (apt-get install chromium)"
        )
    if importlib.util.find_spec("playwright") is None:
        missing.append(
            "the playwright package is missing; run scripts/browser-setup.sh "
            "(pip install playwright)"
        )
    return missing


MISSING = _missing_parts()
UNDER_CI = os.environ.get("CI") == "true"

if MISSING and not UNDER_CI:
    pytest.skip("; ".join(MISSING), allow_module_level=True)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="package", autouse=True)
def _browser_installed() -> None:
    """Fail every test of this module under CI when the browser cannot run.

    It is package-scoped and autouse, so it runs before the live node starts.
    """
    if MISSING:
        pytest.fail(
            "CI=true, so the browser tests must run, but: " + "; ".join(MISSING),
            pytrace=False,
        )


@dataclass
class Tab:
    """A page of the dashboard with what it logged and requested."""

    page: Page
    base: str
    errors: list[str] = field(default_factory=list)
    # (method, URL) of every request the page made.
    requests: list[tuple[str, str]] = field(default_factory=list)
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
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


def _only_gets(tab: Tab) -> list[str]:
    """Return the requests that were not a GET to the node the page came from."""
    return [
        f"{method} {url}"
        for method, url in tab.requests
        if method != "GET" or not url.startswith(tab.base + "/")
    ]


@contextmanager
def open_tab(browser: Browser, base: str) -> Iterator[Tab]:
    """Open a tab on the dashboard at ``base`` that records what the page does."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_S * 1000)
    tab = Tab(page, base)

    def on_console(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            tab.errors.append(f"{message.type}: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: tab.errors.append(f"pageerror: {error}"))
    page.on(
        "request", lambda request: tab.requests.append((request.method, request.url))
    )
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
    assert tab.requests, "the page made no request"
    assert _only_gets(tab) == []


@pytest.fixture
def tab(browser: Browser, live: Live) -> Iterator[Tab]:
    with open_tab(browser, live.node.url) as tab:
        yield tab


def _committed_height(live: Live, tx_id: str) -> int:
    view: dict[str, Any] = wait_for(
        lambda: (
            (v := live.node.get(f"/v1/tx/{tx_id}").json()).get("height") is not None
            and v
        ),
        what=f"commit of {tx_id}",
    )
    return int(view["height"])


def _too_close(first: FloatRect, second: FloatRect, gap: float) -> bool:
    """Return whether two boxes of the page come closer than ``gap`` pixels."""
    return (
        first["x"] < second["x"] + second["width"] + gap
        and second["x"] < first["x"] + first["width"] + gap
        and first["y"] < second["y"] + second["height"] + gap
        and second["y"] < first["y"] + first["height"] + gap
    )


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
    # The WAL size and its meter sit side by side or one above the other,
    # with a clear gap between them.
    size_box = tab.page.locator("#status-wal .wal-size").bounding_box()
    meter_box = tab.page.locator("#status-wal meter").bounding_box()
    assert size_box is not None
    assert meter_box is not None
    assert not _too_close(size_box, meter_box, gap=3), (size_box, meter_box)
    # Two polls later the page is still quiet.
    time.sleep(4.5)
    assert tab.errors == []
    assert tab.failed == []
    assert {method for method, _ in tab.requests} == {"GET"}
    assert all(url.startswith(live.node.url + "/") for _, url in tab.requests), (
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
    pin_id, cid = live.ids["confirmed_pin"], live.ids["confirmed_cid"]
    pin = live.node.get(f"/v1/pins/{pin_id}").json()
    (target,) = pin["targets"]
    confirmation = target["confirmation"]
    assert confirmation["ok"] is True
    tab.open(f"#/{route}/{pin_id if route == 'pin' else cid}")
    assert tab.wait_text("#pin-cid", lambda text: text == cid) == cid
    row = tab.page.locator('#pin-targets tr[data-operator="@node"]')
    assert row.count() == 1
    cells = row.locator("td")
    assert cells.nth(0).text_content() == "@node"
    assert cells.nth(2).text_content() == "ok"
    assert cells.nth(3).text_content() == f"ok at {confirmation['height']}"
    assert cells.nth(3).locator("a").get_attribute("href") == (
        f"#/block/{confirmation['height']}"
    )
    assert tab.text("#pin-confirmations") == "1 of 1 confirmed"
    assert "durable" in tab.text("main")
    assert tab.errors == []


def test_unconfirmed_pin_shows_pending_target(tab: Tab, live: Live) -> None:
    tab.open(f"#/pin/{live.ids['pin']}")
    assert tab.wait_text("#pin-cid", lambda text: text == CID) == CID
    row = tab.page.locator('#pin-targets tr[data-operator="@node"]')
    assert row.count() == 1
    assert row.locator("td").nth(3).text_content() == "–"
    assert tab.text("#pin-confirmations") == "0 of 1 confirmed"
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


def _break_marked_block(node_key: KeyPair) -> Callable[[dict[str, Any]], None]:
    """Sign other bytes in place of the header of the block that holds ``REJECTED_POST``."""

    def alter(block: dict[str, Any]) -> None:
        bodies = [tx["envelope"]["payload"].get("body") for tx in block["txs"]]
        if REJECTED_POST in bodies:
            block["sig"] = node_key.sign(b"bytes other than the header")

    return alter


def test_follower_page_shows_sync_state(
    browser: Browser, live: Live, tmp_path: Path
) -> None:
    data = live.node.workdir / "data"
    alter = _break_marked_block(keys.load_key_file(data / "keys" / "node.key"))
    with TamperProxy(live.node.url, alter=alter) as proxy:
        follower = start(
            follower_node(
                tmp_path / "follower",
                proxy,
                data / "genesis.json",
                env={"WEALL_RATE_LIMIT_PER_S": "0"},
            )
        )
        try:
            wait_synced(follower, live.node)
            with open_tab(browser, follower.url) as tab:
                tab.open()
                state = "#follower-state"
                tab.wait_text(state, lambda text: text.startswith("caught up"))
                caught_up = {
                    "data-state": tab.page.locator(state).get_attribute("data-state"),
                    "upstream": tab.text("#follower-upstream"),
                    "heights": tab.text("#follower-heights"),
                    "role": tab.text("#status-role"),
                    "chip": tab.text("#role"),
                    "rejection": tab.text("#follower"),
                }

                post(live.node, REJECTED_POST)
                tab.wait_text(state, lambda text: text.startswith("upstream rejected"))
                rejected = {
                    "data-state": tab.page.locator(state).get_attribute("data-state"),
                    "reason": tab.text("#follower-rejected"),
                    "chip": tab.text("#role"),
                    "chip-class": tab.page.locator("#role").get_attribute("class"),
                }
                # Two polls later the page is still quiet.
                time.sleep(4.5)
                FOLLOWER_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
                tab.page.screenshot(path=str(FOLLOWER_SCREENSHOT), full_page=True)
                errors, failed = list(tab.errors), list(tab.failed)
        finally:
            follower.stop()

    assert caught_up["data-state"] == "caught_up"
    assert caught_up["upstream"] == proxy.url
    assert re.fullmatch(r"(\d+) of \1", caught_up["heights"])
    assert caught_up["role"] == "follower"
    assert caught_up["chip"] == "follower · caught up"
    assert "rejection" in caught_up["rejection"]
    assert rejected["data-state"] == "rejected"
    assert "producer signature does not verify" in rejected["reason"]
    assert re.search(r"at height \d+", rejected["reason"])
    assert rejected["chip"] == "follower · upstream rejected"
    assert "bad" in (rejected["chip-class"] or "")
    assert errors == []
    assert failed == []
