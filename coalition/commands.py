"""The core's commands (db, ledger, expire, member, daily) and what every command shares:
JSON output, dates and times given on the command line."""

from __future__ import annotations

import getpass
import json
import sys
from datetime import date, datetime, timedelta
from typing import Any

import click
from flask import Flask
from flask.cli import with_appcontext
from marshmallow import ValidationError

from coalition.audit.service import cli_actor
from coalition.db import utcnow
from coalition.errors import CoalitionError
from coalition.ledger import numbers
from coalition.ledger.batch import BATCH, WORKERS
from coalition.ledger.check import check_ledger
from coalition.ledger.daily import daily
from coalition.ledger.jobs import expire
from coalition.ledger.merge import merge
from coalition.migrations import runner
from coalition.schemas import UTCTimestamp, rfc3339
from coalition.wording import plural


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
    runner.upgrade(revision)


@db_cli.command("downgrade")
@click.argument("revision")
@with_appcontext
def db_downgrade(revision: str) -> None:
    """Migrate the database down to REVISION ('base' for an empty schema)."""
    runner.downgrade(revision)


@db_cli.command("check")
@with_appcontext
def db_check() -> None:
    """Fail if the models and the migrated schema differ."""
    runner.check()
    click.echo("schema matches the models")


@db_cli.command("current")
@with_appcontext
def db_current() -> None:
    """Show the database's revision."""
    runner.current()


@db_cli.command("revision")
@click.option("-m", "--message", required=True)
@with_appcontext
def db_revision(message: str) -> None:
    """Write a new migration from the difference between models and schema."""
    runner.revision(message)


# --------------------------------------------------------------------------- ledger jobs

#: above this many members, ``coalition expire`` and ``coalition daily`` show a progress bar
PROGRESS_THRESHOLD = 200


def _as_of(value: str | None) -> Any:
    if value is None:
        return utcnow()
    try:
        return UTCTimestamp().deserialize(value)
    except ValidationError as exc:
        raise click.BadParameter(" ".join(exc.messages), param_hint="--as-of") from exc


class _ProgressBar:
    """A click progress bar on stderr, shown only once the run is big enough."""
    def __init__(self, threshold: int, label: str = "expiring") -> None:
        self.threshold = threshold
        self.label = label
        self.bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            if total <= self.threshold:
                return
            self.bar = click.progressbar(length=total, label=self.label, file=sys.stderr)
            self.bar.__enter__()
        self.bar.update(done - self.bar.pos)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


class _StepBars:
    """A :class:`_ProgressBar` per step of a job (``progress(step, done, total)``)."""
    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.bars: dict[str, _ProgressBar] = {}

    def __call__(self, step: str, done: int, total: int) -> None:
        if step not in self.bars:
            self.close()  # the previous step's bar ends where the next one starts
            self.bars[step] = _ProgressBar(self.threshold, label=step)
        self.bars[step](done, total)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars = {}


def _batch_options(command: Any) -> Any:
    command = click.option(
        "--workers", type=click.IntRange(min=1), default=WORKERS, show_default=True,
        help="Transactions at once (each on its own connection).")(command)
    return click.option(
        "--batch", type=click.IntRange(min=1), default=BATCH, show_default=True,
        help="Members per transaction (their wallets are locked until it commits)."
    )(command)


@click.command("expire")
@click.option("--as-of", "as_of", metavar="DATE",
              help="YYYY-MM-DD (midnight UTC) or an RFC 3339 timestamp; default now.")
@_batch_options
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def expire_command(as_of: str | None, batch: int, workers: int, as_json: bool) -> None:
    """Void expired holds, release pending points and expire points (safe to rerun)."""


    moment = _as_of(as_of)
    if moment > utcnow() + timedelta(minutes=1):
        # expiring ahead of time would take points that members still own
        raise click.BadParameter("must not be in the future", param_hint="--as-of")
    bar = _ProgressBar(PROGRESS_THRESHOLD)
    try:
        summary = expire(moment, progress=bar, batch=batch, workers=workers)
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
@_batch_options
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def daily_command(as_of: str | None, batch: int, workers: int, as_json: bool) -> None:
    """Birthday bonuses, tier downgrades, notices of points about to expire, memberships
    renewed or lapsed, unused expired vouchers, for a day (safe to rerun)."""


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
    bars = _StepBars(PROGRESS_THRESHOLD)
    try:
        summary = daily(day, progress=bars, batch=batch, workers=workers)
    finally:
        bars.close()
    data = summary.to_dict()
    emit(data, as_json,
         f"daily job for {day.isoformat()}\n"
         f"  birthday bonuses: {plural(summary.birthday_members, 'member')}, "
         f"{plural(summary.birthday_points, 'point')}\n"
         f"  tier downgrades:  {summary.tier_downgrades} of "
         f"{plural(summary.tier_members_checked, 'member')} above the first tier"
         + "".join(f"\n    {step}: {n}" for step, n in sorted(summary.downgrades.items()))
         + f"\n  expiry notices:   {summary.expiry_notices}"
         + f"\n  memberships:      {summary.memberships_renewed} renewed "
         f"({plural(summary.membership_points, 'point')}), {summary.memberships_lapsed} lapsed"
         + f"\n  vouchers expired unused: {summary.vouchers_refunded} refunded "
           f"({plural(summary.voucher_points_refunded, 'point')}), "
           f"{summary.vouchers_forfeited} forfeited"
         + "".join(f"\n  FAILED member {f['member_id']} ({f['step']}): {f['error']}"
                   for f in summary.failures))
    if summary.failures:
        sys.exit(1)


def add_core_commands(app: Flask) -> None:
    for command in (db_cli, ledger_cli, expire_command, member_cli, daily_command):
        app.cli.add_command(command)
