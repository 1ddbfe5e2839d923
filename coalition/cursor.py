"""The opaque cursor of a paged list, newest first: the last id shown, tagged with the
list's letter so that one list's cursor is refused by another."""

from __future__ import annotations

import base64
import binascii

from coalition.errors import InvalidRequest


def encode(tag: str, row_id: int) -> str:
    return base64.urlsafe_b64encode(f"{tag}{row_id}".encode()).decode().rstrip("=")


def decode(tag: str, cursor: str) -> int:
    """The id a cursor of the ``tag`` list stands for; anything else is refused."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not text.startswith(tag) or not (text[1:].isascii() and text[1:].isdigit()):
            raise ValueError(text)
        row_id = int(text[1:])
        if row_id >= 2**63:  # beyond any 64-bit id: the driver would overflow (500)
            raise ValueError(text)
        return row_id
    except (ValueError, UnicodeDecodeError, binascii.Error) as exc:
        raise InvalidRequest("Not a cursor from this API.",
                             errors={"cursor": ["Not a valid cursor."]}) from exc
