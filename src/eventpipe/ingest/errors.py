"""Why an ingest request is refused."""

from __future__ import annotations


class IngestError(Exception):
    """Why a request is refused: an HTTP status, a stable code, a message, maybe an event index."""

    def __init__(self, status: int, code: str, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.index = index


def bad_event(index: int, message: str) -> IngestError:
    return IngestError(400, "invalid_event", f"event {index}: {message}", index)
