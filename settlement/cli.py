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
from settlement.analytics import as_csv, program_analytics
from settlement.reconcile import reconcile
from settlement.schemas import AnalyticsSchema, LiabilitySchema, ReconciliationSchema, RunSchema
from settlement.service import close_run, create_run, get_run, run_liability

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



@settle_cli.command("liability")
@click.argument("run_id", type=int)
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def settle_liability(run_id: int, as_json: bool) -> None:
    """The points liability at the period end of run RUN_ID, with its roll-forward."""

    try:
        doc = run_liability(run_id)
    except Exception as exc:  # noqa: BLE001
        raise _fail(exc) from exc
    emit(LiabilitySchema().dump(doc), as_json, _liability_text(doc))


def _liability_text(doc: dict[str, Any]) -> str:
    estimate = doc["estimate"]
    basis = (f"the history of {plural(estimate['closed_cohorts'], 'closed cohort')}"
             if estimate["basis"] == "history" else "the configured prior")
    lines = [f"points liability of run {doc['run']} ({doc['status']}, {doc['model']} model) "
             f"at {doc['period_end']}",
             f"breakage rate at age 0 {estimate['breakage_rate']} (from {basis}); each "
             f"cohort at its age's",
             f"{'cur':<4} {'opening':>12} {'issued':>12} {'redeemed':>12} {'breakage':>12} "
             f"{'estimate':>12} {'closing':>12}"]
    for r in doc["rollforward"]:
        lines.append(f"{r['currency']:<4} {r['opening']:>12} {r['issued']:>12} "
                     f"{r['recognised_on_redemption']:>12} {r['recognised_as_breakage']:>12} "
                     f"{r['estimate_change']:>12} {r['closing']:>12}")
    lines.append(f"{'origin':<14} {'month':<8} {'cur':<4} {'points':>10} {'breakage':>10} "
                 f"{'unit cost':>12} {'expected':>12}")
    for c in doc["cohorts"]:
        lines.append(f"{c['origin']:<14} {c['earned_month']:<8} {c['currency'] or '-':<4} "
                     f"{c['outstanding_points']:>10} {c['breakage_rate']:>10} "
                     f"{c['unit_cost'] or '-':>12} {c['expected_cost'] or '-':>12}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- analytics


@click.command("analytics")
@click.option("--from", "first", help="first month, YYYY-MM (default: eleven months "
                                      "before --to)")
@click.option("--to", "last", help="last month, YYYY-MM (default: this month)")
@click.option("--partner", help="one partner's figures")
@click.option("--json", "as_json", is_flag=True)
@click.option("--csv", "as_csv_", is_flag=True, help="one CSV line per month and partner, "
                                                     "then the month totals")
@with_appcontext
def analytics_cli(first: str | None, last: str | None, partner: str | None, as_json: bool,
                  as_csv_: bool) -> None:
    """Members and points per month and partner."""

    try:
        doc = program_analytics(first, last, partner)
    except CoalitionError as exc:
        if exc.status == 422:
            errors = exc.errors or {}
            field = next(iter(errors), "")
            raise click.BadParameter(" ".join(errors.get(field, [exc.message])),
                                     param_hint=f"--{field}" if field else None) from exc
        raise _fail(exc) from exc
    if as_csv_:
        click.echo(as_csv(doc), nl=False)
        return
    emit(AnalyticsSchema().dump(doc), as_json, _analytics_text(doc))


def _analytics_text(doc: dict[str, Any]) -> str:
    head = (f"{'month':<8} {'partner':<14} {'enrolled':>8} {'active':>7} {'issued':>10} "
            f"{'redeemed':>10} {'expired':>9} {'rate':>7}")
    lines = [f"analytics {doc['from']} … {doc['to']}", head]
    for r in [*doc["months"], *doc["totals"]]:
        lines.append(f"{r['month']:<8} {r['partner']:<14} {r['enrolled']:>8} {r['active']:>7} "
                     f"{r['issued']:>10} {r['redeemed']:>10} {r['expired']:>9} "
                     f"{r['redemption_rate'] or '-':>7}")
    return "\n".join(lines)


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
