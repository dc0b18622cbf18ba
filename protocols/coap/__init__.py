"""CoAP bodies of NB-IoT meters: meterline's reading schema in JSON or CBOR, single or batch.

``POST /r/{meter}`` carries one reading or a batch (see :mod:`meterline.protocols.meterjson`);
the path's meter is the default for readings that do not name one. The body is read by its
Content-Format option (50 ``application/json``, 60 ``application/cbor``); without one, a body
starting with ``{`` or ``[`` is taken as JSON and anything else as CBOR. In CBOR, ``ts`` may
also be a tagged date/time (tags 0 and 1). Pure: bytes in, readings or
:class:`~meterline.protocols.meterjson.SchemaError` out.
"""

from __future__ import annotations

from typing import Any

import cbor2

from meterline.ingest.model import Source
from meterline.protocols import meterjson
from meterline.protocols.meterjson import Decoded, SchemaError

JSON = 50
CBOR = 60
FORMATS = {JSON: "application/json", CBOR: "application/cbor"}
MAX_BODY = 64 * 1024


def decode_body(body: bytes, content_format: int | None = None, *, meter: str | None = None,
                source: Source = Source.COAP) -> Decoded:
    """Readings of one request body."""
    if not body:
        raise SchemaError("empty body", body, "empty_body")
    if len(body) > MAX_BODY:
        raise SchemaError(f"body of {len(body)} bytes is larger than {MAX_BODY}", body[:256], "too_large")
    if content_format is None:
        content_format = JSON if body[:1] in (b"{", b"[") else CBOR
    if content_format == JSON:
        return meterjson.decode(body, source=source, meter=meter)
    if content_format != CBOR:
        raise SchemaError(f"unsupported content format {content_format} (use 50 JSON or 60 CBOR)", body,
                          "unsupported_format")
    obj = loads_cbor(body)
    try:
        return meterjson.decode_object(obj, source=source, meter=meter)
    except SchemaError as exc:
        exc.raw = body
        raise


def loads_cbor(body: bytes) -> Any:
    """``cbor2.loads``, every failure translated into :class:`SchemaError` (reason ``bad_cbor``)."""
    try:
        return cbor2.loads(body)
    except Exception as exc:  # a foreign decoder fed hostile bytes: anything it raises is a bad body
        raise SchemaError(f"not valid CBOR: {exc.__class__.__name__}: {exc}", body, "bad_cbor") from exc


def encode_cbor(obj: Any) -> bytes:
    """CBOR bytes of a message (for simulators and tests)."""
    return cbor2.dumps(obj)
