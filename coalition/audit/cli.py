"""``coalition audit list``: the audit log from the command line."""

from __future__ import annotations

import json
from typing import Any

import click
from flask.cli import with_appcontext
from marshmallow import ValidationError

from coalition.audit.service import ACTIONS as AUDIT_ACTIONS
from coalition.audit.service import list_events
from coalition.audit.views import AuditPageSchema
from coalition.commands import emit
from coalition.errors import CoalitionError
from coalition.schemas import UTCTimestamp


@click.group("audit", help="The audit log of operator and finance actions.")
def audit_cli() -> None:
    pass


def _timestamp(value: str | None, hint: str) -> Any:
    if value is None:
        return None
    try:
        return UTCTimestamp().deserialize(value)
    except ValidationError as exc:
        raise click.BadParameter(" ".join(exc.messages), param_hint=hint) from exc


@audit_cli.command("list")
@click.option("--action", type=click.Choice(AUDIT_ACTIONS), help="only this action")
@click.option("--actor", help="only this client id (`cli` for the command line) or person")
@click.option("--from", "occurred_from", metavar="TIME", help="inclusive (date or RFC 3339)")
@click.option("--to", "occurred_to", metavar="TIME", help="exclusive (date or RFC 3339)")
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@click.option("--cursor", help="`next_cursor` of the previous page")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def audit_list(action: str | None, actor: str | None, occurred_from: str | None,
               occurred_to: str | None, limit: int, cursor: str | None,
               as_json: bool) -> None:
    """Audit events, newest first."""
    try:
        page = list_events(action=action, actor=actor,
                           occurred_from=_timestamp(occurred_from, "--from"),
                           occurred_to=_timestamp(occurred_to, "--to"),
                           cursor=cursor, limit=limit)
    except CoalitionError as exc:
        raise click.BadParameter(exc.message, param_hint="--cursor") from exc
    data = AuditPageSchema().dump(page)
    lines = []
    for event in data["items"]:
        who = event["actor"] + (f" ({event['actor_user']})" if event["actor_user"] else "")
        lines.append(f"{event['occurred_at']}  {event['action']:<34} {who:<28} "
                     f"{event['target']:<24} {json.dumps(event['details'], sort_keys=True)}")
    if data["next_cursor"]:
        lines.append(f"more: --cursor {data['next_cursor']}")
    emit(data, as_json, "\n".join(lines) or "no audit events")
