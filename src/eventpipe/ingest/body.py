"""Reading a request body within bounds: its size on the wire and after decompression."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator

from eventpipe.ingest.errors import IngestError
from eventpipe.ingest.segment import MAX_REQUEST_BYTES

TOO_LARGE = f"the request is larger than {MAX_REQUEST_BYTES // 1024} KB"


async def read_limited(stream: AsyncIterator[bytes], limit: int = MAX_REQUEST_BYTES) -> bytes:
    """The whole body, refusing it as soon as it passes `limit` (nothing more is buffered)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            # Segment answers 400, and a 413 makes Segment's Node SDK resend the same batch.
            raise IngestError(400, "request_too_large", TOO_LARGE)
        chunks.append(chunk)
    return b"".join(chunks)


def decode_content(body: bytes, encoding: str | None, limit: int = MAX_REQUEST_BYTES) -> bytes:
    """Undo Content-Encoding, never inflating past `limit` (a gzip bomb stops there)."""
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding not in ("gzip", "x-gzip"):
        raise IngestError(400, "unsupported_encoding", f"Content-Encoding {encoding!r} is not gzip")
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as error:
        raise IngestError(400, "malformed_gzip", f"the gzip body is damaged: {error}") from error
    if len(data) > limit:
        raise IngestError(400, "request_too_large", f"{TOO_LARGE} once decompressed")
    if not inflater.eof:
        raise IngestError(400, "malformed_gzip", "the gzip body is truncated")
    return data
