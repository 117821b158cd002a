"""Event times: parsing, Segment's clock-skew correction, and the stored ISO-8601 form.

The stored form is "2026-11-25T14:03:59.123Z", which is also what every SDK sends. Every event of
a batch carries its own `timestamp`, and datetime's parsing and `isoformat` cost about 4 us per
event on a 2-core machine (measured, against about 1 us for the rest of an event's fields): for
a time already in that form the work is done in integer milliseconds, with each second's text
memoised. Any other form goes through datetime, which is the reference the fast path is tested
against.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from eventpipe.ingest.errors import bad_event

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Seconds ("YYYY-MM-DDTHH:MM:SS") seen lately, both ways; a batch's events lie within a few.
_MEMO_SIZE = 4096
_second_of: dict[str, int] = {}
_text_of: dict[int, str] = {}
_MILLIS = {f"{millis:03d}": millis for millis in range(1000)}
_MILLIS_TEXT = [f".{millis:03d}Z" for millis in range(1000)]

# timestamp (corrected), day ("YYYY-MM-DD" of the client's own time, else of the arrival),
# originalTimestamp, sentAt: each in the stored form.
EventTimes = tuple[str, str, str | None, str | None]


def parse_time(value: str | None, field: str, index: int) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
        # A time without a zone is taken as UTC, as Segment does.
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except ValueError as error:
        raise bad_event(index, f"{field} is not an ISO-8601 time: {value[:40]!r}") from error
    except OverflowError as error:
        raise bad_event(index, f"{field} is out of range: {value[:40]!r}") from error


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def corrected_time(
    received_at: datetime, sent_at: datetime | None, original: datetime | None
) -> datetime:
    """Segment's skew correction: the client's clock error is (sentAt - receivedAt)."""
    if sent_at is not None and original is not None:
        return received_at - (sent_at - original)
    return original or received_at


def _epoch_second(second: str) -> int | None:
    """Seconds since the epoch of "YYYY-MM-DDTHH:MM:SS", else None."""
    if second[4:17:3] != "--T::" or not second.isascii():
        return None
    try:
        moment = datetime.fromisoformat(second).replace(tzinfo=UTC)
    except ValueError:
        return None
    return (moment - _EPOCH) // timedelta(seconds=1)


def canonical_ms(value: str) -> int | None:
    """Milliseconds since the epoch of a time in the stored form, else None (or not a time)."""
    # Every separator is checked: "2026-W48-3T14:03:59.123Z" (a week date) is not this form.
    if len(value) != 24 or value[19] != "." or value[23] != "Z":
        return None
    millis = _MILLIS.get(value[20:23])
    second = value[:19]
    at = _second_of.get(second)
    if at is None:
        # Only a checked second is memoised: a hit needs no other check.
        at = _epoch_second(second)
        if at is None:
            return None
        if len(_second_of) >= _MEMO_SIZE:
            _second_of.clear()
        _second_of[second] = at
    return None if millis is None else at * 1000 + millis


def text_ms(epoch_ms: int) -> str:
    """The stored form of a time in milliseconds since the epoch (OverflowError past year 9999)."""
    second, millis = divmod(epoch_ms, 1000)
    text = _text_of.get(second)
    if text is None:
        text = (_EPOCH + timedelta(seconds=second)).isoformat()[:19]
        if len(_text_of) >= _MEMO_SIZE:
            _text_of.clear()
        _text_of[second] = text
    return text + _MILLIS_TEXT[millis]


class RequestClock:
    """A request's arrival time, and the times of its events in the stored form."""

    def __init__(self, received_at: datetime) -> None:
        self.received_at = received_at
        self.received_ms = (received_at.astimezone(UTC) - _EPOCH) // timedelta(milliseconds=1)
        self.received_iso = text_ms(self.received_ms)
        # The batch's `sentAt` is one string for every item: parsed once.
        self._seen: dict[str, tuple[datetime, str]] = {}
        self._sent_ms: tuple[str, int | None] = ("", None)

    def parse(self, value: str, field: str, index: int) -> tuple[datetime, str]:
        """A time the client sent, parsed, with its stored form."""
        found = self._seen.get(value)
        if found is None:
            moment = parse_time(value, field, index)
            assert moment is not None  # noqa: S101 - value is not None
            stored = value if canonical_ms(value) is not None else iso(moment)
            found = self._seen[value] = (moment, stored)
        return found

    def times(self, original: str | None, sent_at: str | None, index: int) -> EventTimes:
        """An event's times from the client's `timestamp` and `sentAt` (either may be absent)."""
        if original is not None and sent_at is not None:
            if self._sent_ms[0] != sent_at:
                self._sent_ms = (sent_at, canonical_ms(sent_at))
            original_ms, sent_ms = canonical_ms(original), self._sent_ms[1]
            if original_ms is not None and sent_ms is not None:
                try:
                    corrected = text_ms(self.received_ms - (sent_ms - original_ms))
                    return corrected, original[:10], original, sent_at
                except OverflowError:
                    pass  # the reference path below says why
        if sent_at is None and original is not None and canonical_ms(original) is not None:
            return original, original[:10], original, None
        moment = None if original is None else self.parse(original, "timestamp", index)
        sent = None if sent_at is None else self.parse(sent_at, "sentAt", index)
        sent_stored = None if sent is None else sent[1]
        if moment is None:
            return self.received_iso, self.received_iso[:10], None, sent_stored
        if sent is None:
            return moment[1], moment[1][:10], moment[1], None
        try:
            corrected = iso(corrected_time(self.received_at, sent[0], moment[0]))
        except OverflowError as error:
            raise bad_event(index, "timestamp and sentAt are too far apart") from error
        return corrected, moment[1][:10], moment[1], sent_stored
