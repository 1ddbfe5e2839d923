"""``coalition settle …``: settlement runs from the command line."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from flask.cli import with_appcontext
from marshmallow import ValidationError

from coalition.audit.service import cli_actor
from coalition.commands import emit
from coalition.errors import CoalitionError
from coalition.oauth import finance_users
from coalition.schemas import UTCTimestamp, rfc3339
from coalition.wording import breaks_to_resolve, plural, reconciliation_counts
from settlement.reconcile import reconcile
from settlement.schemas import ReconciliationSchema, RunSchema
from settlement.service import close_run, create_run, get_run

CLI_USER = "cli"


def _moment(value: str, name: str) -> datetime:
    try:
        return UTCTimestamp().deserialize(value)
    except ValidationError as exc:
        raise click.BadParameter(" ".join(exc.messages), param_hint=name) from exc




def _run_text(run: dict[str, Any]) -> str:
    lines = [f"run {run['id']} ({run['status']}) {rfc3339(run['period_start'])} → "
             f"{rfc3339(run['period_end'])}",
             f"{'partner':<14} {'cur':<4} {'issued':>10} {'redeemed':>10} {'payable':>12} "
             f"{'receivable':>12} {'net':>12}"]
    for s in run["statements"]:
        lines.append(f"{s['partner']:<14} {s['currency']:<4} {s['issued_points']:>10} "
                     f"{s['redeemed_points']:>10} {s['payable']:>12} {s['receivable']:>12} "
                     f"{s['net']:>12}")
    lines.append(f"payments ({run['model']} model: pay exactly these; each partner's add up "
                 f"to its net):")
    lines += [f"  {p['from']} → {p['to']}: {p['amount']} {p['currency']}"
              for p in run["payments"]] or ["  none"]
    if run.get("open_breaks"):
        lines.append(f"{breaks_to_resolve(run['open_breaks'])}.")
    return "\n".join(lines)


def _fail(exc: Exception) -> click.ClickException:

    if isinstance(exc, CoalitionError):
        return click.ClickException(f"{exc.code}: {exc.message}")
    raise exc


@click.group("settle", help="Settlement runs between partners.")
def settle_cli() -> None:
    pass


@settle_cli.command("run")
@click.option("--from", "start", required=True, help="period start (date or RFC 3339), inclusive")
@click.option("--to", "end", required=True, help="period end (date or RFC 3339), exclusive")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def settle_run(start: str, end: str, as_json: bool) -> None:
    """Compute a draft run over [FROM, TO) in booking time."""

    # sys.stderr, read at call time (the CLI runner swaps it); click.get_text_stream is
    # deprecated (a DeprecationWarning each run, gone in Click 9)
    with click.progressbar(length=2, label="settling", file=sys.stderr,
                           show_eta=False) as bar:
        bar.update(1)
        try:
            run = create_run(_moment(start, "--from"), _moment(end, "--to"), CLI_USER,
                             actor=cli_actor())
        except Exception as exc:  # noqa: BLE001 - domain errors become a clean message
            raise _fail(exc) from exc
        bar.update(1)
    emit(RunSchema().dump(run), as_json, _run_text(run))


@settle_cli.command("reconcile")
@click.argument("run_id", type=int)
@click.argument("partner")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def settle_reconcile(run_id: int, partner: str, file: Path, as_json: bool) -> None:
    """Reconcile PARTNER's CSV FILE against run RUN_ID."""

    try:
        report = reconcile(run_id, partner, file.read_bytes(), CLI_USER, actor=cli_actor())
    except Exception as exc:  # noqa: BLE001
        raise _fail(exc) from exc
    emit(ReconciliationSchema().dump(report), as_json,
          f"reconciliation {report['id']} of {partner} for run {run_id}: "
          f"{reconciliation_counts(report['summary'])}. "
          f"{breaks_to_resolve(len(report['breaks']))}.")


@settle_cli.command("close")
@click.argument("run_id", type=int)
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def settle_close(run_id: int, as_json: bool) -> None:
    """Close run RUN_ID (every break must be resolved)."""

    try:
        run = close_run(run_id, CLI_USER, actor=cli_actor())
    except Exception as exc:  # noqa: BLE001
        raise _fail(exc) from exc
    emit(RunSchema().dump(run), as_json, _run_text(run))


@settle_cli.command("show")
@click.argument("run_id", type=int)
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def settle_show(run_id: int, as_json: bool) -> None:
    """Show run RUN_ID."""

    try:
        run = get_run(run_id)
    except Exception as exc:  # noqa: BLE001
        raise _fail(exc) from exc
    emit(RunSchema().dump(run), as_json, _run_text(run))





# --------------------------------------------------------------------------- finance users


@click.group("finance", help="The finance team: their accounts for the finance page.")
def finance_cli() -> None:
    pass


@finance_cli.group("user", help="Finance users (they sign in to /finance).")
def finance_user_cli() -> None:
    pass


def _user_text(user: dict[str, Any]) -> str:
    state = "active" if user["active"] else "disabled"
    return f"{user['username']:<20} {state:<9} {user['name']}"


@finance_user_cli.command("create")
@click.argument("username")
@click.option("--name", required=True, help="the person's full name")
@click.option("--password-stdin", is_flag=True,
              help="read the password from the first line of standard input "
                   "(otherwise it is asked for, twice)")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def finance_user_create(username: str, name: str, password_stdin: bool,
                        as_json: bool) -> None:
    """Create finance user USERNAME, who signs in to the finance page with a password of
    at least 12 characters."""

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        user = finance_users.create_user(username, name, password, actor=cli_actor())
    except CoalitionError as exc:
        field = next(iter(exc.errors or {}), "")
        hint = {"username": "USERNAME", "name": "--name", "password": "password"}.get(field)
        if exc.status == 422 and hint:
            raise click.BadParameter(exc.message, param_hint=hint) from exc
        raise click.ClickException(f"{exc.code}: {exc.message}") from exc
    emit({k: user[k] for k in ("username", "name", "active", "created_at")}, as_json,
          f"created finance user {user['username']} ({user['name']})")


@finance_user_cli.command("list")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def finance_user_list(as_json: bool) -> None:
    """List finance users."""

    users = finance_users.list_users()
    rows = [{k: u[k] for k in ("username", "name", "active", "created_at")} for u in users]
    emit(rows, as_json, "\n".join(_user_text(u) for u in users) or "no finance users")


@finance_user_cli.command("disable")
@click.argument("username")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def finance_user_disable(username: str, as_json: bool) -> None:
    """Disable USERNAME: no more sign-in, and their tokens are revoked at once."""

    try:
        user = finance_users.disable_user(username, actor=cli_actor())
    except Exception as exc:  # noqa: BLE001
        raise _fail(exc) from exc
    emit({k: user[k] for k in ("username", "active", "tokens_revoked")}, as_json,
          f"disabled finance user {username} "
          f"({plural(user['tokens_revoked'], 'token')} revoked)")
