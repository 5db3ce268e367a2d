"""The baseline: a bare quart-trio app that answers the submit POST without work.

Run by the benchmark with ``hypercorn --worker-class trio``, so the only
difference from the node is what the node does per request.
"""

from __future__ import annotations

import hashlib

from quart import request
from quart_trio import QuartTrio

app = QuartTrio("bare")


@app.post("/v1/tx/submit")
async def submit() -> tuple[dict[str, object], int]:
    body = await request.get_data()
    return {
        "ok": True,
        "tx_id": "b" + hashlib.sha256(body).hexdigest()[:52],
        "status": "pending",
    }, 202
