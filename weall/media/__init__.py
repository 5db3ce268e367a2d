"""Media on IPFS beyond the backends: upload records and the pinner's view of the chain.

- ``records``: the media type and size of each verified upload, kept beside
  the IPFS store for ``GET /v1/media/{cid}``;
- ``chain``: ``PinSource``, what a pinner reads and submits, with the
  in-node implementation over the database and the producer socket, and the
  page of ``GET /v1/operators/{id}/pins``;
- ``remote``: the same over a node's HTTP API, for a pinner with its own key;
- ``backoff``: capped exponential retry delays.
"""

from __future__ import annotations

from weall.media.backoff import Backoff
from weall.media.chain import (
    Assignments,
    DbPinSource,
    PinSource,
    SourceError,
    operator_pins_view,
)
from weall.media.records import MediaRecord, MediaRecords, parse_media_type
from weall.media.remote import HttpPinSource, NodeClient

__all__ = [
    "Assignments",
    "Backoff",
    "DbPinSource",
    "HttpPinSource",
    "MediaRecord",
    "MediaRecords",
    "NodeClient",
    "PinSource",
    "SourceError",
    "operator_pins_view",
    "parse_media_type",
]
