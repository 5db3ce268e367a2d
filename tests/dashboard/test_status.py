"""``GET /``, the dashboard assets and ``GET /v1/node/status`` on a live node."""

from __future__ import annotations

import json

import pytest

from weall.api.dashboard import CONTENT_SECURITY_POLICY

from .conftest import Live, post, wait_for

pytestmark = pytest.mark.slow

ACTORS = ["producer", "checkpointer", "pinner", "healer", "api"]


def test_page_sends_strict_headers(live: Live) -> None:
    response = live.node.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert policy == CONTENT_SECURITY_POLICY
    assert "default-src 'none'" in policy
    assert "unsafe-inline" not in policy
    assert "unsafe-eval" not in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert '<script src="/dashboard/app.js" defer></script>' in response.text


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("app.js", "text/javascript"),
        ("style.css", "text/css"),
        ("favicon.svg", "image/svg+xml"),
    ],
    ids=["script", "style", "icon"],
)
def test_assets_are_served(live: Live, name: str, content_type: str) -> None:
    for prefix in ("/dashboard/", "/static/"):
        response = live.node.get(prefix + name)
        assert response.status_code == 200, prefix
        assert response.headers["content-type"].startswith(content_type), prefix
        policy = response.headers["content-security-policy"]
        assert policy == CONTENT_SECURITY_POLICY, prefix


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/missing.js",
        "/dashboard/index.html",
        "/dashboard/..%2Fapp.py",
        "/dashboard/%00",
        "/dashboard/" + "a" * 5000,
        "/static/index.html",
        "/static/../weall.db",
        "/static/sub/app.js",
    ],
    ids=[
        "unknown",
        "page-by-name",
        "traversal",
        "nul",
        "long",
        "static-page",
        "static-traversal",
        "static-subdir",
    ],
)
def test_unknown_asset_is_not_found(live: Live, path: str) -> None:
    response = live.node.get(path)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_status_reports_chain_and_actors(live: Live) -> None:
    node = live.node
    status = node.get("/v1/node/status").json()
    head = node.get("/v1/chain/head").json()
    assert status["chain_id"] == "weall-dev"
    assert status["mode"] == "dev"
    assert status["role"] == "producer"
    assert status["follower"] is None
    assert status["head"]["height"] >= head["height"] - 1
    assert [actor["name"] for actor in status["actors"]] == ACTORS
    pids = node.actor_pids()
    for actor in status["actors"]:
        assert actor["state"] == "running", actor
        assert actor["pid"] == pids[actor["name"]]
        assert actor["uptime_s"] >= 0
        assert isinstance(actor["restarts"], int)
    assert status["counts"]["posts"] >= 2
    assert status["mempool"]["pending"] >= 0


def test_status_height_follows_commits(live: Live) -> None:
    before = live.node.get("/v1/node/status").json()["head"]["height"]
    post(live.node, "a post that makes a block")
    status = wait_for(
        lambda: (
            (s := live.node.get("/v1/node/status").json())["head"]["height"] > before
            and s
        ),
        what="a higher height in /v1/node/status",
    )
    assert status["block_rate"]["blocks"] >= 1
    assert status["block_rate"]["blocks_per_min"] > 0


def test_status_reports_storage_and_backup(live: Live) -> None:
    backup = json.loads(live.node.cli("backup", "--no-prune", check=True).stdout)
    status = live.node.get("/v1/node/status").json()
    storage = status["storage"]
    assert storage["journal_mode"] == "wal"
    assert storage["synchronous"] == "NORMAL"
    # The checkpointer may already have truncated the WAL after the backup.
    assert storage["wal_bytes"] >= 0
    assert storage["db_bytes"] > 0
    assert storage["wal_max_bytes"] == 64 * 1024 * 1024
    last = status["backup"]["last"]
    assert status["backup"]["count"] >= 1
    assert last["sha256_prefix"] == backup["sha256"][:16]
    assert last["height"] == backup["height"]
    assert last["size_bytes"] == backup["size_bytes"]
    assert last["verified"] is True
    assert last["verification"]["integrity_check"] == "ok"
    assert last["verification"]["tip_hash"] == backup["tip_hash"]
    assert last["file"] == "present"
    assert last["age_s"] >= 0


def test_status_has_no_paths_or_secrets(live: Live) -> None:
    text = live.node.get("/v1/node/status").text
    document = json.loads(text)
    assert str(live.node.workdir) not in text
    assert str(live.node.run_dir) not in text
    assert "secret" not in text
    assert ".db" not in text
    assert ".key" not in text
    assert set(document) == {
        "version",
        "chain_id",
        "mode",
        "role",
        "follower",
        "now_ms",
        "head",
        "block_rate",
        "mempool",
        "counts",
        "actors",
        "storage",
        "backup",
    }
