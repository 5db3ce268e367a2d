"""Submissions: the coalescer over a real socket, and the endpoint on a live node."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

from weall import ipc
from weall.api.submit import MAX_BATCH, ProducerRejected, SubmitCoalescer
from weall.errors import IpcError
from weall.protocol.envelope import build_envelope

from ._live import World


class FakeProducer:
    """A socket handler that responds to ``submit`` like the producer, and records calls.

    Each envelope here is an int; its result echoes it, so a test can check
    that every request gets its own results back, in order.
    """

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.release = trio.Event()
        self.release.set()
        self.reject_with: dict[str, Any] | None = None

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(request)
        await self.release.wait()
        if self.reject_with is not None:
            return {"ok": False, "error": self.reject_with}
        return {
            "ok": True,
            "results": [
                {"echo": envelope, "tx_id": tx_id}
                for envelope, tx_id in zip(
                    request["envelopes"], request["tx_ids"], strict=True
                )
            ],
        }


@pytest.fixture
async def served(nursery: trio.Nursery) -> tuple[FakeProducer, Path]:
    # Unix socket paths must stay short, so the socket lives in /tmp.
    path = Path(tempfile.mkdtemp(prefix="weall-submit-", dir="/tmp")) / "p.sock"
    producer = FakeProducer()
    await nursery.start(ipc.serve, path, producer.handle)
    return producer, path


async def test_concurrent_requests_share_calls(
    served: tuple[FakeProducer, Path],
) -> None:
    producer, path = served
    results: dict[int, list[dict[str, Any]]] = {}
    async with ipc.open_client(path) as client:
        coalescer = SubmitCoalescer(client)
        # Hold the first call so that the other requests queue behind it.
        producer.release = trio.Event()

        async def one(index: int) -> None:
            envelopes = [index * 10, index * 10 + 1]
            tx_ids = [f"id{index}a", f"id{index}b"]
            results[index] = await coalescer.submit(envelopes, tx_ids)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(one, 0)
            await trio.testing.wait_all_tasks_blocked()
            for index in range(1, 20):
                nursery.start_soon(one, index)
            await trio.testing.wait_all_tasks_blocked()
            producer.release.set()
    assert len(producer.calls) == 2
    assert len(producer.calls[0]["envelopes"]) == 2
    assert len(producer.calls[1]["envelopes"]) == 38
    assert all(call["verified"] is True for call in producer.calls)
    for index in range(20):
        assert [r["echo"] for r in results[index]] == [index * 10, index * 10 + 1]
        assert [r["tx_id"] for r in results[index]] == [f"id{index}a", f"id{index}b"]


async def test_call_holds_at_most_max_batch(
    served: tuple[FakeProducer, Path],
) -> None:
    producer, path = served
    async with ipc.open_client(path) as client:
        coalescer = SubmitCoalescer(client)
        producer.release = trio.Event()
        sizes = [MAX_BATCH, 600, 600, 1]
        answers: list[list[dict[str, Any]]] = [[] for _ in sizes]

        async def one(index: int, size: int) -> None:
            envelopes = list(range(size))
            answers[index] = await coalescer.submit(
                envelopes, [f"t{index}-{n}" for n in range(size)]
            )

        async with trio.open_nursery() as nursery:
            for index, size in enumerate(sizes):
                nursery.start_soon(one, index, size)
                await trio.testing.wait_all_tasks_blocked()
            producer.release.set()
    assert [len(call["envelopes"]) for call in producer.calls] == [MAX_BATCH, 600, 601]
    assert [len(answer) for answer in answers] == sizes


async def test_rejection_reaches_every_request(
    served: tuple[FakeProducer, Path],
) -> None:
    producer, path = served
    producer.reject_with = {"code": "invalid_request", "message": "bad call"}
    failures: list[BaseException] = []
    async with ipc.open_client(path) as client:
        coalescer = SubmitCoalescer(client)

        async def one(index: int) -> None:
            try:
                await coalescer.submit([index], [f"id{index}"])
            except ProducerRejected as exc:
                failures.append(exc)

        async with trio.open_nursery() as nursery:
            for index in range(5):
                nursery.start_soon(one, index)
    assert len(failures) == 5
    assert all(
        isinstance(f, ProducerRejected) and f.error["code"] == "invalid_request"
        for f in failures
    )


async def test_cancelled_requester_keeps_others_results(
    served: tuple[FakeProducer, Path],
) -> None:
    producer, path = served
    async with ipc.open_client(path) as client:
        coalescer = SubmitCoalescer(client)
        producer.release = trio.Event()
        kept: list[list[dict[str, Any]]] = []

        async def cancelled_leader() -> None:
            with trio.move_on_after(0.05):
                await coalescer.submit([1], ["leader"])

        async def follower() -> None:
            kept.append(await coalescer.submit([2], ["follower"]))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancelled_leader)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(follower)
            await trio.sleep(0.2)
            producer.release.set()
    assert kept == [[{"echo": 2, "tx_id": "follower"}]]
    assert [call["tx_ids"] for call in producer.calls] == [["leader"], ["follower"]]


async def test_unreachable_producer_raises_ipc_error() -> None:
    path = Path(tempfile.mkdtemp(prefix="weall-submit-", dir="/tmp")) / "none.sock"
    async with ipc.open_client(path) as client:
        coalescer = SubmitCoalescer(client)
        with pytest.raises(IpcError):
            await coalescer.submit([1], ["x"])


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"verified": False, "tx_ids": ["b" * 53]}, "tx ids without verified"),
        ({"verified": True, "tx_ids": []}, "fewer tx ids than envelopes"),
        ({"verified": True, "tx_ids": [7]}, "a tx id that is not text"),
    ],
    ids=["unverified", "short", "not-text"],
)
async def test_producer_rejects_bad_tx_ids(
    world: World, fields: dict[str, Any], why: str
) -> None:
    envelope = build_envelope(
        world.founder,
        chain_id=world.chain_id,
        tx_type="PROFILE_UPDATE",
        signer="@founder",
        nonce=10**9,
        payload={"bio": why},
    )
    async with ipc.open_client(world.node.run_dir / "producer.sock") as client:
        response = await client.call("submit", envelopes=[envelope], **fields)
    assert response["ok"] is False
    assert response["error"]["code"] == "invalid_request"


def _sample(text: str, name: str, labels: dict[str, str]) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(
                sample.labels.get(key) == value for key, value in labels.items()
            ):
                return float(sample.value)
    return 0.0


@pytest.mark.slow
def test_endpoint_counts_submissions_in_metrics(world: World) -> None:
    labels = {"method": "POST", "route": "/v1/tx/submit", "status": "400"}
    before = world.node.get("/metrics").text
    response = world.node.post(
        "/v1/tx/submit",
        content=b'{"chain_id": 1.5}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"
    after = world.node.get("/metrics").text
    requests = "weall_http_requests_total"
    rejections = "weall_admission_rejections_total"
    assert _sample(after, requests, labels) == _sample(before, requests, labels) + 1
    code = {"code": "invalid_json"}
    assert _sample(after, rejections, code) == _sample(before, rejections, code) + 1
