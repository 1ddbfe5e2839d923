"""Batch files: a day's transactions as one CSV upload (API.md "Partner operations")."""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, request, stream_with_context
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from coalition.audit.views import current_actor
from coalition.errors import CoalitionError
from coalition.http.errors import accepts
from coalition.http.guard import protected
from coalition.oauth.server import current_principal
from coalition.schemas import UTCTimestamp
from partners import batches
from partners.models import BATCH_STATUSES

blp = Blueprint("partner_batches", __name__, url_prefix="/v1/batches",
                description="Batch files: transactions uploaded as CSV, booked row by row")

_PARTNER = ("partner",)
_ID = "int(max=9223372036854775807)"
_CSV = {"text/csv": {"schema": {"type": "string"}}}
_HEADERS = [
    {"in": "header", "name": "Coalition-Batch-Rows", "required": False,
     "schema": {"type": "integer"},
     "description": "the rows the file holds (header excluded): a file with another count "
                    "is refused whole"},
    {"in": "header", "name": "Content-Digest", "required": False,
     "schema": {"type": "string"},
     "description": "RFC 9530 sha-256=:<base64>: of the body: a file that does not match is "
                    "refused whole"},
]


class UnsupportedMediaType(CoalitionError):
    status, code = 415, "unsupported_media_type"


class BatchSchema(Schema):
    id = fields.Integer()
    status = fields.String(metadata={"enum": list(BATCH_STATUSES)})
    rows = fields.Integer()
    booked = fields.Integer()
    replayed = fields.Integer()
    refused = fields.Integer()
    pending = fields.Integer(metadata={"description": "rows not booked yet"})
    created_at = UTCTimestamp()
    finished_at = UTCTimestamp(allow_none=True)
    sha256 = fields.String(metadata={"description": "hex SHA-256 of the file as received"})


def _partner_id() -> int:
    partner_id = current_principal().partner_id
    assert partner_id is not None, "partner tokens always carry their partner"
    return partner_id


@blp.route("")
class Batches(MethodView):
    @protected("points:earn", "points:burn", kinds=_PARTNER, any_of=True)
    @accepts("text/csv")
    @blp.doc(requestBody={"required": True, "content": _CSV}, parameters=_HEADERS)
    @blp.response(202, BatchSchema)
    @blp.alt_response(413, description="payload_too_large: over COALITION_BATCH_MAX_BYTES")
    @blp.alt_response(415, description="Send the file as text/csv")
    @blp.alt_response(422, description="The file is refused whole (encoding, header, a "
                      "malformed row, the declared row count or digest); nothing is booked")
    def post(self) -> Any:
        """Upload a CSV of transactions; its rows are booked after the answer.

        Columns: ``partner_txn_id,type,member_number,partner_member_ref,points,
        spend_amount,spend_currency,occurred_at`` and, for reversals, ``reference`` (the
        ``partner_txn_id`` reversed). Earn rows need ``points:earn``, burn rows
        ``points:burn``; each row is refused or booked as its API call would be.
        """
        if request.mimetype != "text/csv":
            raise UnsupportedMediaType("Send the file as text/csv.")
        request.max_content_length = current_app.config["BATCH_MAX_BYTES"]
        content = request.get_data(cache=False)
        return batches.upload(_partner_id(), set(current_principal().scopes), content,
                              request.headers.get("Coalition-Batch-Rows"),
                              request.headers.get("Content-Digest"), actor=current_actor())

    @protected("points:earn", "points:burn", "transactions:read", kinds=_PARTNER,
               any_of=True)
    @blp.response(200, BatchSchema(many=True))
    def get(self) -> Any:
        """Your latest batches, newest first."""
        return batches.list_batches(_partner_id())


@blp.route(f"/<{_ID}:batch_id>")
class BatchResource(MethodView):
    @protected("points:earn", "points:burn", "transactions:read", kinds=_PARTNER,
               any_of=True)
    @blp.response(200, BatchSchema)
    @blp.alt_response(404, description="No such batch of yours")
    def get(self, batch_id: int) -> Any:
        """A batch with its counts so far."""
        return batches.get_batch(_partner_id(), batch_id)


@blp.route(f"/<{_ID}:batch_id>/results")
class BatchResults(MethodView):
    @protected("points:earn", "points:burn", "transactions:read", kinds=_PARTNER,
               any_of=True)
    @blp.response(200, content_type="text/csv",
                  description="line,partner_txn_id,outcome,transaction_id,error,message; "
                              "outcome is booked, replayed, refused, or pending")
    @blp.alt_response(404, description="No such batch of yours")
    def get(self, batch_id: int) -> Any:
        """Per-row results of a batch, as CSV."""
        lines = batches.results(_partner_id(), batch_id)
        response = Response(stream_with_context(lines), mimetype="text/csv")
        response.headers["Content-Disposition"] = (
            f'attachment; filename="batch-{batch_id}-results.csv"')
        return response
