"""What every reader of an accepted event can hold: checked at ingest, where the client learns why.

An event the api acknowledges must reach the archive (PostgreSQL refuses invalid UTF-8 and numbers
past its `numeric` range; the processor would dead-letter them) and must come back out of the
event search and the event page (pydantic and orjson stop at 255 levels of nesting). The raw JSON
fields are carried unparsed on the hot path, so each check is first a scan in C (`isascii`,
`translate`, `count`, `in`; together about 1.2 us per event of a batch of 100 and 4 us for a lone
event, measured on this project's 2-core machine) and a parse only for the rare body that scan
cannot clear.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from itertools import repeat
from operator import add

import msgspec

from eventpipe.ingest.errors import IngestError, bad_event

# Levels of JSON nesting in one event, its own object counting one: far below the 255 where the
# readers stop, and past anything an analytics event holds.
MAX_DEPTH = 64
# PostgreSQL's `numeric` keeps at most 16383 digits after the point (NUMERIC_DSCALE_MAX).
MAX_DECIMALS = 16383


def _shapes() -> bytes:
    # Digits as 0, letters (and any byte of a multi-byte character) as a, the exponent mark as e,
    # both signs as +: a number past a double or PostgreSQL has a three-digit exponent, or a run
    # of 200 digits (a long integer or fraction), and either is a fixed pattern of these.
    table = bytearray(range(256))
    for byte in range(256):
        if chr(byte).isalpha() or byte >= 0x80 or byte == ord("_"):
            table[byte] = ord("a")
    for byte in b"0123456789":
        table[byte] = ord("0")
    table[ord("e")] = table[ord("E")] = ord("e")
    table[ord("-")] = ord("+")
    return bytes(table)


_SHAPES = _shapes()
_EXPONENTS = (b"0e000", b"0e+000")
_LONG_RUN = b"0" * 200
# Hex ids (`4e123f...`) look like exponents too: a quarter of uuid4s hold one, so a batch of a
# hundred events often holds dozens. Each is checked where it starts, up to one per this many
# bytes of body (then the parse decides): about what the parse itself would cost.
_BYTES_PER_LOOKALIKE = 100
_MIN_LOOKALIKES = 64
# Brackets only, and one kind: in valid JSON `{}` and `[]` nest alike.
_ONE_KIND = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))


def refuse_invalid_utf8(body: bytes) -> None:
    # JSON is UTF-8 (RFC 8259). msgspec checks the strings it decodes but not those it carries
    # raw (properties, context), and a str field with a bad byte raised UnicodeDecodeError (a 500).
    if body.isascii():
        return
    try:
        body.decode()
    except UnicodeDecodeError as error:
        message = f"malformed JSON: not UTF-8 at byte {error.start}"
        raise IngestError(400, "malformed_json", message) from error


def _starts_a_value(shapes: bytes, at: int) -> bool:
    """Whether the digits that end at `at` (an exponent's `e` follows) begin where a JSON value
    can begin (after `:`, `,`, `[` or a space), rather than in a string such as a hex id."""
    start = at
    while start > 0 and shapes[start - 1] in b"0.":
        start -= 1
    if start > 0 and shapes[start - 1] == ord("+"):
        start -= 1
    return start == 0 or shapes[start - 1] in b":,[ \t\r\n"


def _maybe_unstorable(body: bytes) -> bool:
    shapes = body.translate(_SHAPES)
    if _LONG_RUN in shapes:
        return True
    if _EXPONENTS[0] not in shapes and _EXPONENTS[1] not in shapes:
        return False
    lookalikes, most = 0, max(_MIN_LOOKALIKES, len(body) // _BYTES_PER_LOOKALIKE)
    for exponent in _EXPONENTS:
        at = shapes.find(exponent)
        while at != -1:
            lookalikes += 1
            if _starts_a_value(shapes, at) or lookalikes > most:
                return True
            at = shapes.find(exponent, at + 1)
    return False


class _OutOfRange(Exception):
    def __init__(self, literal: str) -> None:
        super().__init__(literal)
        self.literal = literal


def _checked_number(literal: str) -> int:
    mantissa, _, exponent = literal.lower().partition("e")
    try:
        decimals = len(mantissa.partition(".")[2]) - int(exponent or 0)
    except ValueError:  # an exponent of over 4300 digits (Python's int parsing limit)
        raise _OutOfRange(literal) from None
    if math.isinf(float(literal)) or decimals > MAX_DECIMALS:
        raise _OutOfRange(literal)
    return 0


def refuse_unstorable_numbers(body: bytes) -> None:
    """Refuse a number a double cannot hold (JavaScript's and orjson's range) or one with more
    decimals than PostgreSQL keeps."""
    if not _maybe_unstorable(body):
        return
    try:
        json.loads(body, parse_int=_checked_number, parse_float=_checked_number)
    except _OutOfRange as error:
        shown = error.literal if len(error.literal) <= 40 else f"{error.literal[:37]}..."
        message = f"the number {shown} is past a double's range or has over {MAX_DECIMALS} decimals"
        raise IngestError(400, "number_out_of_range", message) from None
    except (ValueError, RecursionError):
        return  # not JSON: the decoder refuses it with its own message


def depth_over(raw: bytes, limit: int) -> bool:
    """Whether JSON `raw` nests deeper than `limit` levels (a value with no brackets is level 0)."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    # Outside strings only: escaped backslashes and quotes first, then every other quote opens
    # or closes a string (the JSON is valid: msgspec has read it).
    unescaped = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = b"".join(unescaped.split(b'"')[0::2]).translate(_ONE_KIND, _NOT_BRACKETS)
    # Each pass removes every innermost pair, one level (a pair it uncovers waits for the next
    # pass): `limit` passes clear a nesting that deep.
    for _ in range(limit):
        if not brackets:
            return False
        brackets = brackets.replace(b"[]", b"")
    return bool(brackets)


def refuse_deep_events(items: Sequence[msgspec.Raw]) -> None:
    """Refuse the first event that nests deeper than MAX_DEPTH levels."""
    events = list(map(bytes, items))
    # No deeper than its number of brackets: counted for every event in C (map), one pass each.
    if len(events) == 1:
        most = events[0].count(b"[") + events[0].count(b"{")
    else:
        opens, objects = (
            map(bytes.count, events, repeat(b"[")),
            map(bytes.count, events, repeat(b"{")),
        )
        most = max(map(add, opens, objects), default=0)
    if most <= MAX_DEPTH:
        return
    for index, event in enumerate(events):
        if depth_over(event, MAX_DEPTH):
            raise bad_event(index, f"JSON nested deeper than {MAX_DEPTH} levels")
