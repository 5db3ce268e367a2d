"""A follower returns what its producer returns on every read route, at one height.

The producer's chain holds an object of every kind (``rich_chain``), made
through its api. The follower syncs it, and every GET route of the api's
OpenAPI document is compared: each page of the paged routes, every block,
every transaction, not-found and invalid requests. The routes that differ on
purpose (docs/followers.md) are checked to differ as documented.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.node import Node

from .chain_builder import BuiltChain
from .rich_chain import ACCOUNTS, Objects, populate, read_routes, write_rich_chain_files
from .support import follower_node, same_reads, start, wait_synced

pytestmark = pytest.mark.slow

# GET routes whose responses differ between a producer and its follower on
# purpose. docs/followers.md gives the reasons.
DIFFERING: Final = frozenset(
    {"/health", "/v1/readyz", "/metrics", "/v1/node/status", "/v1/media/{cid}"}
)
# The dashboard's files, the same bytes on every node of one version.
ASSETS: Final = ("/", "/static/app.js", "/dashboard/app.js", "/dashboard/style.css")
ASSET_TEMPLATES: Final = frozenset({"/static/{filename}"})
BOGUS_ID: Final = "b" + "a" * 52


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> BuiltChain:
    return write_rich_chain_files(tmp_path_factory.mktemp("producer"))


@pytest.fixture(scope="module")
def producer(chain: BuiltChain) -> Iterator[Node]:
    node = start(
        Node(
            chain.workdir,
            env={"WEALL_BLOCK_INTERVAL_MS": "200", "WEALL_PINNER_POLL_S": "0.2"},
            args=["--actors", "producer,pinner,api"],
        )
    )
    try:
        yield node
    finally:
        node.stop()


def _template_pattern(template: str) -> re.Pattern[str]:
    """Match a route with any value in place of each ``{name}`` of ``template``."""
    parts = re.split(r"\{[^}]+\}", template)
    return re.compile("[^/?]+".join(re.escape(part) for part in parts) + r"(\?.*)?")


def _get_templates(node: Node) -> set[str]:
    document = node.get("/openapi.json").json()
    return {path for path, item in document["paths"].items() if "get" in item}


def _error_routes(objects: Objects) -> dict[str, int]:
    """Reads of what does not exist, and invalid reads, with their status."""
    return {
        "/v1/blocks/999999": 404,
        "/v1/blocks/-1": 400,
        "/v1/blocks?from=0&limit=0": 400,
        f"/v1/tx/{BOGUS_ID}": 404,
        "/v1/accounts/@nobody": 404,
        "/v1/accounts/@nobody/posts": 404,
        "/v1/feed?limit=1000": 400,
        "/v1/feed?cursor=not%20one": 400,
        f"/v1/content/{BOGUS_ID}": 404,
        "/v1/groups/nogroup": 404,
        f"/v1/groups/{objects.group}?limit=0": 400,
        f"/v1/gov/proposals/{BOGUS_ID}": 404,
        f"/v1/disputes/{BOGUS_ID}": 404,
        f"/v1/poh/requests/{BOGUS_ID}": 404,
        f"/v1/pins/{BOGUS_ID}": 404,
        "/v1/media/bafkreidgvpkjawlxz6sffxzwgooowe5yt7i6wsyg236mfoks77nywkptdq/status": 404,
        "/v1/operators/@nobody/pins": 404,
    }


def _metric_roles(node: Node) -> set[str]:
    text = node.get("/metrics").text
    return {
        sample.labels["role"]
        for family in text_string_to_metric_families(text)
        if family.name == "weall_node_info"
        for sample in family.samples
    }


def _differing_reads(producer: Node, follower: Node, cid: str) -> dict[str, Any]:
    return {
        "health": (producer.get("/health").json(), follower.get("/health").json()),
        "ready": (producer.get("/v1/readyz").json(), follower.get("/v1/readyz").json()),
        "status": (
            producer.get("/v1/node/status").json(),
            follower.get("/v1/node/status").json(),
        ),
        "media": (producer.get(f"/v1/media/{cid}"), follower.get(f"/v1/media/{cid}")),
        "roles": (_metric_roles(producer), _metric_roles(follower)),
    }


def test_every_read_route_matches(
    tmp_path: Path, chain: BuiltChain, producer: Node
) -> None:
    objects = populate(producer, chain)
    follower = start(follower_node(tmp_path / "follower", producer, chain.genesis_path))
    try:
        wait_synced(follower, producer)
        accounts = ["@founder", "@node", *ACCOUNTS, "@dave"]
        routes = read_routes(producer, objects, accounts)
        errors = _error_routes(objects)
        documents = same_reads(producer, follower, [*routes, *errors], statuses=errors)
        templates = _get_templates(producer)
        differing = _differing_reads(producer, follower, objects.cid)
        assets = {
            path: (producer.get(path).content, follower.get(path).content)
            for path in ASSETS
        }
    finally:
        follower.stop()

    # Every GET route of the api was compared, or differs on purpose.
    compared = [*routes, *errors]
    for template in sorted(templates - DIFFERING - ASSET_TEMPLATES):
        pattern = _template_pattern(template)
        assert any(pattern.fullmatch(route) for route in compared), template
    assert templates >= DIFFERING
    for path, (on_producer, on_follower) in assets.items():
        assert on_producer, path
        assert on_follower == on_producer, path

    # The objects are in the states the chain drove them to.
    proposal = documents[f"/v1/gov/proposals/{objects.proposal}"]
    assert proposal["status"] == "passed"
    assert proposal["tally"] == {"yes": 2, "no": 1, "abstain": 0}
    params = documents["/v1/state/snapshot"]["params"]
    assert params["max_post_chars"] == 6000
    group = documents[f"/v1/groups/{objects.group}"]
    assert group["members"] == ["@alice", "@founder"]
    assert group["pending_requests"] == ["@carol", "@dave"]
    group_post = documents[f"/v1/content/{objects.group_post}"]
    assert group_post["group_id"] == objects.group
    assert documents[f"/v1/disputes/{objects.dispute}"]["status"] == "upheld"
    poh = documents[f"/v1/poh/requests/{objects.poh_request}"]
    assert poh["status"] == "approved"
    assert documents["/v1/accounts/@dave"]["poh_tier"] == 1
    pin = documents[f"/v1/pins/{objects.pin}"]
    assert pin["targets"][0]["confirmation"]["ok"] is True
    assert pin["durable"] is True
    assert documents[f"/v1/media/{objects.cid}/status"] == pin
    feed_pages = [route for route in routes if route.startswith("/v1/feed?")]
    assert len(feed_pages) > 3
    comment_pages = [
        r for r in routes if r.startswith(f"/v1/content/{objects.posts[0]}?")
    ]
    assert len(comment_pages) >= 2

    # The routes that differ do so as documented.
    health_producer, health_follower = differing["health"]
    assert "follower" not in health_producer
    assert health_follower["follower"]["state"] == "caught_up"
    assert health_follower["follower"]["upstream"] == producer.url
    ready_producer, ready_follower = differing["ready"]
    assert set(ready_producer["actors"]) == {"producer", "pinner", "api"}
    assert set(ready_follower["actors"]) == {"follower", "api"}
    status_producer, status_follower = differing["status"]
    assert status_producer["role"] == "producer"
    assert status_producer["follower"] is None
    assert status_follower["role"] == "follower"
    assert status_follower["follower"]["upstream"] == producer.url
    media_producer, media_follower = differing["media"]
    assert media_producer.status_code == 200
    assert (
        media_producer.content
        == b"bytes of an upload that the producer's pinner confirms"
    )
    assert media_follower.status_code == 404
    assert media_follower.json()["error"]["code"] == "not_found"
    assert differing["roles"] == ({"producer"}, {"follower"})
