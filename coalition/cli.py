"""The ``coalition`` command: a Flask CLI group with the project's commands."""

from __future__ import annotations

import json
import sys
from datetime import date, datetime
from pathlib import Path
from typing import Any

import click
from flask.cli import FlaskGroup, with_appcontext

from coalition.audit.service import ACTIONS as AUDIT_ACTIONS
from coalition.schemas import rfc3339
from coalition.wording import plural
from config import ConfigError


def _create_app() -> Any:
    from coalition.app import create_app

    try:
        return create_app()
    except ConfigError as exc:
        click.echo(f"coalition: {exc}", err=True)
        sys.exit(2)


main = FlaskGroup(create_app=_create_app, add_version_option=False, load_dotenv=False,
                 help="Coalition loyalty platform. Settings come from COALITION_* "
                      "environment variables (see the README); every command has --help.")
# Flask's --app, --env-file and --debug do not apply: the application is always Coalition,
# and its settings come from the environment only (never from a stray .env file)
main.params = [param for param in main.params if param.name not in ("app", "env_file", "debug")]


def _json_value(value: Any) -> Any:
    """Timestamps as the API writes them (RFC 3339, UTC); amounts as decimal strings."""
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def to_json(data: Any) -> str:
    return json.dumps(data, default=_json_value, indent=2, ensure_ascii=False)


def emit(data: Any, as_json: bool, text: str) -> None:
    click.echo(to_json(data) if as_json else text)


# --------------------------------------------------------------------------- db


@click.group("db", help="Database migrations.")
def db_cli() -> None:
    pass


@db_cli.command("upgrade")
@click.argument("revision", default="head")
@with_appcontext
def db_upgrade(revision: str) -> None:
    """Migrate the database up to REVISION (default: head)."""
    from coalition.migrations import runner

    runner.upgrade(revision)


@db_cli.command("downgrade")
@click.argument("revision")
@with_appcontext
def db_downgrade(revision: str) -> None:
    """Migrate the database down to REVISION ('base' for an empty schema)."""
    from coalition.migrations import runner

    runner.downgrade(revision)


@db_cli.command("check")
@with_appcontext
def db_check() -> None:
    """Fail if the models and the migrated schema differ."""
    from coalition.migrations import runner

    runner.check()
    click.echo("schema matches the models")


@db_cli.command("current")
@with_appcontext
def db_current() -> None:
    """Show the database's revision."""
    from coalition.migrations import runner

    runner.current()


@db_cli.command("revision")
@click.option("-m", "--message", required=True)
@with_appcontext
def db_revision(message: str) -> None:
    """Write a new migration from the difference between models and schema."""
    from coalition.migrations import runner

    runner.revision(message)


# --------------------------------------------------------------------------- clients


@click.group("client", help="OAuth clients.")
def client_cli() -> None:
    pass


@client_cli.command("create")
@click.option("--operator", "kind", flag_value="operator",
              help="An operator client (partner clients: `coalition partner client`).")
@click.option("--public", "kind", flag_value="public",
              help="A public client (a member app): no secret; members sign in through it "
                   "with the authorization code grant and PKCE; scope `member` (or, for "
                   "the finance page, where finance users sign in: `settlement:run`).")
@click.option("--scope", "scope", help='Operator clients: space-separated, e.g. '
                                       '"admin settlement:run". Public clients: `member` '
                                       '(default) or `settlement:run` (the finance page).')
@click.option("--redirect-uri", "redirect_uris", multiple=True, metavar="URI",
              help="Public clients: where sign-in may return (exact match); repeatable.")
@click.option("--name", default="")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def client_create(kind: str | None, scope: str | None, redirect_uris: tuple[str, ...],
                  name: str, as_json: bool) -> None:
    """Create an operator client and print its secret (shown once), or a public client."""
    from coalition.audit.service import cli_actor
    from coalition.errors import CoalitionError
    from coalition.oauth.clients import create_operator_client, create_public_client

    if kind is None:
        raise click.UsageError("Missing option '--operator' or '--public': the kind of "
                               "client to create.")
    try:
        if kind == "public":
            if scope not in (None, "member", "settlement:run"):
                raise click.UsageError("A public client has the scope `member` (members sign "
                                       "in) or `settlement:run` (the finance page).")
            view = create_public_client(name, list(redirect_uris),
                                        scopes=((scope,) if scope else ("member",)),
                                        actor=cli_actor())
            data = {"client_id": view.client_id, "kind": view.kind, "name": view.name,
                    "scopes": view.scopes, "redirect_uris": view.redirect_uris,
                    "token_endpoint_auth_method": "none"}
            emit(data, as_json, f"client_id:     {view.client_id}  (public: no secret, PKCE)\n"
                                f"scopes:        {' '.join(view.scopes)}\n"
                                f"redirect_uris: {' '.join(view.redirect_uris)}")
            return
        if redirect_uris:
            raise click.UsageError("--redirect-uri is for public clients.")
        issued = create_operator_client((scope or "").split(), name=name, actor=cli_actor())
    except CoalitionError as exc:
        detail = exc.message
        if exc.errors and "redirect_uris" in exc.errors:
            problems = exc.errors["redirect_uris"]
            if isinstance(problems, dict):
                detail += " " + "; ".join(f"{redirect_uris[i]}: {' '.join(m)}"
                                          for i, m in problems.items())
        raise click.UsageError(detail) from exc
    data = {"client_id": issued.client_id, "client_secret": issued.client_secret,
            "scopes": issued.scopes}
    emit(data, as_json, f"client_id:     {issued.client_id}\n"
                        f"client_secret: {issued.client_secret}  (shown once)\n"
                        f"scopes:        {' '.join(issued.scopes)}")


@client_cli.command("list")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def client_list(as_json: bool) -> None:
    """List OAuth clients (never their secrets)."""
    from coalition.oauth.clients import list_clients

    rows = [{"client_id": c.client_id, "kind": c.kind, "scopes": c.scopes,
             "revoked": c.revoked_at is not None} for c in list_clients()]
    emit(rows, as_json, "\n".join(
        f"{r['client_id']:<24} {r['kind']:<9} {' '.join(r['scopes'])}"
        f"{'  (revoked)' if r['revoked'] else ''}" for r in rows) or "no clients")


@client_cli.command("revoke")
@click.argument("client_id")
@with_appcontext
def client_revoke(client_id: str) -> None:
    """Revoke a client and its tokens."""
    from coalition.audit.service import cli_actor
    from coalition.errors import CoalitionError
    from coalition.oauth.clients import revoke_client

    try:
        revoke_client(client_id, actor=cli_actor())
    except CoalitionError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"revoked {client_id}")


# --------------------------------------------------------------------------- demo


@click.group("demo", help="The demo coalition.")
def demo_cli() -> None:
    pass


@demo_cli.command("load")
@click.option("--with-history", is_flag=True,
              help="Also book a history of demo transactions (docs/samples/"
                   "demo-transactions.csv in a source checkout), for the pages to show.")
@click.option("--history-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The demo history to book (implies --with-history).")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def demo_load(with_history: bool, history_file: Path | None, as_json: bool) -> None:
    """Load a demo coalition unless the database already has partners."""
    from coalition.audit.service import cli_actor
    from coalition.demo import history_file as shipped_history
    from coalition.demo import load_demo, load_history
    from coalition.errors import CoalitionError

    if with_history and history_file is None:
        history_file = shipped_history()
        if history_file is None or not history_file.is_file():
            raise click.UsageError("No demo history here (it comes with a source checkout): "
                                   "give one with --history-file.")
    result = load_demo(cli_actor())
    if result is None:
        emit({"loaded": False}, as_json, "demo coalition already loaded")
        return
    if history_file is not None:
        try:
            result["history"] = load_history(history_file.read_text(encoding="utf-8"))
        except CoalitionError as exc:
            raise click.ClickException(exc.message) from exc
    if as_json:
        emit(result, True, "")
        return
    click.echo("Demo coalition loaded. These secrets are shown once:")
    for row in result["clients"]:
        click.echo(f"  {row['for']:<10} client_id={row['client_id']}  "
                   f"client_secret={row['client_secret']}  scope=\"{' '.join(row['scopes'])}\"")
    if "history" in result:
        history = result["history"]
        click.echo(f"Booked {plural(history['transactions'], 'demo transaction')} for "
                   f"{plural(len(history['members']), 'member')} from {history_file}:")
        for handle, number in history["members"].items():
            click.echo(f"  {handle:<10} member_number={number}")


# --------------------------------------------------------------------------- ledger jobs

#: above this many members, ``coalition expire`` shows a progress bar
PROGRESS_THRESHOLD = 200


def _as_of(value: str | None) -> Any:
    from marshmallow import ValidationError

    from coalition.db import utcnow
    from coalition.schemas import UTCTimestamp

    if value is None:
        return utcnow()
    try:
        return UTCTimestamp().deserialize(value)
    except ValidationError as exc:
        raise click.BadParameter(" ".join(exc.messages), param_hint="--as-of") from exc


class _ProgressBar:
    """A click progress bar on stderr, shown only once the run is big enough."""

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            if total <= self.threshold:
                return
            self.bar = click.progressbar(length=total, label="expiring", file=sys.stderr)
            self.bar.__enter__()
        self.bar.update(done - self.bar.pos)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


@click.command("expire")
@click.option("--as-of", "as_of", metavar="DATE",
              help="YYYY-MM-DD (midnight UTC) or an RFC 3339 timestamp; default now.")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def expire_command(as_of: str | None, as_json: bool) -> None:
    """Void expired holds, release pending points and expire points (safe to rerun)."""
    from datetime import timedelta

    from coalition.db import utcnow
    from coalition.ledger.jobs import expire

    moment = _as_of(as_of)
    if moment > utcnow() + timedelta(minutes=1):
        # expiring ahead of time would take points that members still own
        raise click.BadParameter("must not be in the future", param_hint="--as-of")
    bar = _ProgressBar(PROGRESS_THRESHOLD)
    try:
        summary = expire(moment, progress=bar)
    finally:
        bar.close()
    data = summary.to_dict()
    emit(data, as_json,
         f"expiry as of {rfc3339(moment)} (policy {summary.policy}): "
         f"{plural(summary.members, 'member')}\n"
         f"  holds voided:    {summary.holds_voided} "
         f"({plural(summary.points_unheld, 'point')})\n"
         f"  released:        {plural(summary.points_released, 'point')}, "
         f"{plural(summary.lots_released, 'lot')}, "
         f"{plural(summary.members_released, 'member')}\n"
         f"  expired:         {plural(summary.points_expired, 'point')}, "
         f"{plural(summary.lots_expired, 'lot')}, {plural(summary.members_expired, 'member')}"
         + "".join(f"\n  FAILED member {f['member_id']}: {f['error']}"
                   for f in summary.failures))
    if summary.failures:
        sys.exit(1)


@click.group("ledger", help="The points ledger.")
def ledger_cli() -> None:
    pass


@ledger_cli.command("check")
@click.option("--limit", default=50, show_default=True,
              help="Violations listed per check (the count is always exact).")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def ledger_check(limit: int, as_json: bool) -> None:
    """Prove the ledger's invariants; exit 1 on any violation."""
    from coalition.ledger.check import check_ledger

    report = check_ledger(limit=limit)
    if as_json:
        emit(report.to_dict(), True, "")
    else:
        lines = [f"ledger check at {rfc3339(report.checked_at)}: "
                 + ("OK" if report.ok else plural(report.violation_count, "violation"))]
        for check in report.checks:
            covered = ", ".join(f"{k}={v}" for k, v in check.covered.items())
            lines.append(f"  {'ok  ' if check.ok else 'FAIL'}  {check.name:<20} {covered}")
            if not check.ok:
                lines.append(f"        {plural(check.violation_count, 'violation')}: "
                             f"{check.title}")
                lines += [f"        - {json.dumps(v, default=str, ensure_ascii=False)}"
                          for v in check.violations]
        click.echo("\n".join(lines))
    if not report.ok:
        sys.exit(1)


# --------------------------------------------------------------------------- members


@click.group("member", help="Members.")
def member_cli() -> None:
    pass


@member_cli.command("merge")
@click.argument("absorbed")
@click.argument("survivor")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def member_merge(absorbed: str, survivor: str, as_json: bool) -> None:
    """Merge member ABSORBED (found twice) into SURVIVOR: points, lots, partner links and
    history move; ABSORBED answers with a pointer to SURVIVOR from then on."""
    import getpass

    from coalition.audit.service import cli_actor
    from coalition.errors import CoalitionError
    from coalition.ledger import numbers
    from coalition.ledger.merge import merge

    for name, value in (("ABSORBED", absorbed), ("SURVIVOR", survivor)):
        if not numbers.is_valid(value):
            raise click.BadParameter("not a valid member number (check the digits)",
                                     param_hint=name)
    try:
        result = merge(absorbed, survivor, operator=f"cli:{getpass.getuser()}",
                       actor=cli_actor())
    except CoalitionError as exc:
        raise click.ClickException(f"{exc.code}: {exc.message}") from exc
    moved = result["moved"]
    emit(result, as_json,
         (f"{absorbed} was already merged into {survivor}" if result["already_merged"] else
          f"merged {absorbed} into {survivor}: {moved['available']} available and "
          f"{plural(moved['pending'], 'pending point')}, {plural(moved['lots'], 'lot')}, "
          f"{plural(moved['links'], 'link')}, {plural(moved['holds_voided'], 'hold')} voided")
         + f"\n{survivor}: tier {result['survivor']['tier']}, balance "
         + ", ".join(f"{k} {v}" for k, v in result["survivor"]["balance"].items()))


@click.command("daily")
@click.option("--as-of", "as_of", metavar="DATE", help="YYYY-MM-DD (UTC); default today.")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def daily_command(as_of: str | None, as_json: bool) -> None:
    """Birthday bonuses and tier downgrades for a day (safe to rerun)."""
    from datetime import date

    from coalition.db import utcnow
    from coalition.ledger.daily import daily

    today = utcnow().date()
    if as_of is None:
        day = today
    else:
        try:
            day = date.fromisoformat(as_of)
        except ValueError as exc:
            raise click.BadParameter("not a date (YYYY-MM-DD)", param_hint="--as-of") from exc
    if day > today:
        # a downgrade ahead of time would judge points not yet out of the window
        raise click.BadParameter("must not be in the future", param_hint="--as-of")
    summary = daily(day)
    data = summary.to_dict()
    emit(data, as_json,
         f"daily job for {day.isoformat()}\n"
         f"  birthday bonuses: {plural(summary.birthday_members, 'member')}, "
         f"{plural(summary.birthday_points, 'point')}\n"
         f"  tier downgrades:  {summary.tier_downgrades} of "
         f"{plural(summary.tier_members_checked, 'member')} above the first tier"
         + "".join(f"\n    {step}: {n}" for step, n in sorted(summary.downgrades.items()))
         + "".join(f"\n  FAILED member {f['member_id']} ({f['step']}): {f['error']}"
                   for f in summary.failures))
    if summary.failures:
        sys.exit(1)


# --------------------------------------------------------------------------- audit


@click.group("audit", help="The audit log of operator and finance actions.")
def audit_cli() -> None:
    pass


def _timestamp(value: str | None, hint: str) -> Any:
    from marshmallow import ValidationError

    from coalition.schemas import UTCTimestamp

    if value is None:
        return None
    try:
        return UTCTimestamp().deserialize(value)
    except ValidationError as exc:
        raise click.BadParameter(" ".join(exc.messages), param_hint=hint) from exc  # type: ignore[arg-type]


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
    from coalition.audit.service import list_events
    from coalition.audit.views import AuditPageSchema
    from coalition.errors import CoalitionError

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
