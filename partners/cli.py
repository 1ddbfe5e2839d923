"""``coalition partner …``: onboarding from the command line; ``coalition demo load``."""

from __future__ import annotations

import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import click
from flask.cli import with_appcontext
from marshmallow import ValidationError

from coalition.audit.service import cli_actor
from coalition.commands import emit
from coalition.errors import CoalitionError
from coalition.oauth import partner_users
from coalition.oauth.models import PARTNER_ROLES, PARTNER_SCOPES
from coalition.wording import plural
from partners import batches
from partners.demo import history_file as shipped_history
from partners.demo import load_demo, load_history
from partners.funding import configure
from partners.funding import partner_funding as partner_funding_of
from partners.funding_api import FundingChangeSchema, FundingSchema
from partners.schemas import PartnerCreateSchema, PartnerSchema
from partners.service import (
    create_partner,
    get_partner,
    issue_partner_client,
    list_partners,
    partner_id,
    set_status,
)


def _decimal(value: str) -> Decimal:
    try:
        number = Decimal(value)
    except InvalidOperation as exc:
        raise click.BadParameter(f"not a decimal: {value}") from exc
    if not number.is_finite() or number < 0:
        raise click.BadParameter(f"must be a finite decimal of 0 or more: {value}")
    return number


def _partner_text(p: dict[str, Any]) -> str:
    rate = p["current_rate"] or {}
    return (f"{p['code']:<16} {p['kind']:<9} {p['currency']}  earn {rate.get('earn_rate')}  "
            f"issue {rate.get('issue_price')}  redeem {rate.get('redeem_rate')}  {p['name']}")


@click.group("partner", help="Partners.")
def partner_cli() -> None:
    pass


@partner_cli.command("create")
@click.option("--code", required=True)
@click.option("--name", required=True)
@click.option("--kind", type=click.Choice(["merchant", "charity"]), default="merchant")
@click.option("--currency", required=True)
@click.option("--earn-rate", required=True, help="points per currency unit")
@click.option("--issue-price", required=True, help="money per point issued")
@click.option("--redeem-rate", required=True, help="money per point redeemed")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def partner_create(code: str, name: str, kind: str, currency: str, earn_rate: str,
                   issue_price: str, redeem_rate: str, as_json: bool) -> None:
    """Onboard a partner with its first rate card."""


    try:
        data = PartnerCreateSchema().load({
            "code": code, "name": name, "kind": kind, "currency": currency,
            "earn_rate": earn_rate, "issue_price": issue_price, "redeem_rate": redeem_rate})
        partner = create_partner(**data, actor=cli_actor())
    except ValidationError as exc:
        raise click.UsageError(str(exc.messages)) from exc
    except CoalitionError as exc:
        raise click.ClickException(exc.message) from exc
    emit(PartnerSchema().dump(partner), as_json, _partner_text(partner))


@partner_cli.command("list")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def partner_list(as_json: bool) -> None:
    """List partners with the rates in force."""

    partners = list_partners()
    emit(PartnerSchema(many=True).dump(partners), as_json,
         "\n".join(_partner_text(p) for p in partners) or "no partners")


@partner_cli.command("client")
@click.argument("code")
@click.option("--scope", required=True, help='Space-separated partner scopes.')
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def partner_client(code: str, scope: str, as_json: bool) -> None:
    """Issue an OAuth client to partner CODE (secret shown once)."""

    try:
        issued = issue_partner_client(code, scope.split(), actor=cli_actor())
    except CoalitionError as exc:
        raise click.ClickException(exc.message) from exc
    emit({"client_id": issued.client_id, "client_secret": issued.client_secret,
          "scopes": issued.scopes}, as_json,
         f"client_id:     {issued.client_id}\nclient_secret: {issued.client_secret}  (shown once)")
@partner_cli.group("user", help="Partner portal accounts.")
def partner_user_cli() -> None:
    pass


@partner_user_cli.command("create")
@click.argument("code")
@click.argument("login")
@click.option("--name", required=True)
@click.option("--role", type=click.Choice(PARTNER_ROLES), default="viewer", show_default=True,
              help="viewer reads; operator also uploads batches, replays deliveries and "
                   "manages webhook endpoints; admin also manages the other staff accounts")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def partner_user_create(code: str, login: str, name: str, role: str, as_json: bool) -> None:
    """A portal account for partner CODE; prints its one-time activation code."""
    try:
        user = partner_users.create_user(code, login, name, role, actor=cli_actor())
    except CoalitionError as exc:
        raise click.ClickException(exc.message) from exc
    emit({"login": user["login"], "partner": user["partner"], "role": user["role"],
          "activation_code": user["activation_code"]}, as_json,
         f"login:           {user['login']} ({user['partner']}, {user['role']})\n"
         f"activation code: {user['activation_code']}  (shown once; the person chooses a "
         f"password with it at /partner/activate)")


@partner_user_cli.command("disable")
@click.argument("code")
@click.argument("login")
@with_appcontext
def partner_user_disable(code: str, login: str) -> None:
    """Disable a portal account of partner CODE and revoke its tokens."""
    try:
        done = partner_users.disable_user(code, login, actor=cli_actor())
    except CoalitionError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"{done['login']} is disabled ({plural(done['tokens_revoked'], 'token')} "
               f"revoked).")


@partner_user_cli.command("role")
@click.argument("code")
@click.argument("login")
@click.argument("role", type=click.Choice(PARTNER_ROLES))
@with_appcontext
def partner_user_role(code: str, login: str, role: str) -> None:
    """Give a portal account of partner CODE another role."""
    try:
        done = partner_users.change_role(code, login, role, actor=cli_actor())
    except CoalitionError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"{done['login']} is {done['role']}.")


@partner_cli.command("suspend")
@click.argument("code")
@with_appcontext
def partner_suspend(code: str) -> None:
    """Suspend partner CODE: its portal staff are signed out and kept out."""
    try:
        set_status(code, "suspended", actor=cli_actor())
    except CoalitionError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"{code} is suspended.")


@partner_cli.command("reactivate")
@click.argument("code")
@with_appcontext
def partner_reactivate(code: str) -> None:
    """Let suspended partner CODE back in."""
    try:
        set_status(code, "active", actor=cli_actor())
    except CoalitionError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"{code} is active.")


@partner_cli.command("funding")
@click.argument("code")
@click.option("--block", "points", type=int, help="A block of POINTS bought (prepaid).")
@click.option("--price", help="What the block cost, in the partner's currency.")
@click.option("--reserve", is_flag=True, help="The block waits until the others run out.")
@click.option("--credit-limit", help="Post-paid with this limit in points ('none': no limit).")
@click.option("--low-threshold", type=int, help="Raise funding.low below this many points.")
@click.option("--topup", metavar="POINTS:PRICE",
              help="Buy a block of POINTS for PRICE automatically when the others run out "
                   "('none': stop).")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def partner_funding(code: str, points: int | None, price: str | None, reserve: bool,
                    credit_limit: str | None, low_threshold: int | None, topup: str | None,
                    as_json: bool) -> None:
    """Show or change partner CODE's funding: prepaid blocks or a post-paid credit limit."""
    body: dict[str, Any] = {}
    try:
        currency = get_partner(code)["currency"]
        if points is not None or price is not None:
            body.update({name: value for name, value in (("points", points), ("price", price))
                         if value is not None}, currency=currency)
        if reserve:
            body["reserve"] = True
        if credit_limit is not None:
            body["credit_limit_points"] = (None if credit_limit == "none"
                                           else int(credit_limit))
        if low_threshold is not None:
            body["low_threshold_points"] = low_threshold
        if topup is not None:
            top_points, _, top_price = topup.partition(":")
            body["auto_topup"] = None if topup == "none" else {
                "points": int(top_points), "price": top_price, "currency": currency}
        result = (configure(code, FundingChangeSchema().load(body), actor=cli_actor())
                  if body else partner_funding_of(code))
    except ValueError as exc:
        raise click.UsageError(f"not a whole number: {exc}") from exc
    except ValidationError as exc:
        raise click.UsageError(str(exc.messages)) from exc
    except CoalitionError as exc:
        raise click.ClickException(exc.message) from exc
    emit(FundingSchema().dump(result), as_json,
         f"{code}: {result['model']}, available {result['available_points']}, "
         f"reserve {result['reserve_points']}, credit limit {result['credit_limit_points']}, "
         f"{plural(len(result['blocks']), 'block')}")


# --------------------------------------------------------------------------- batch files


def _batch_text(batch: dict[str, Any]) -> str:
    return (f"batch {batch['id']}: {batch['status']}, {plural(batch['rows'], 'row')}: "
            f"{batch['booked']} booked, {batch['replayed']} replayed, "
            f"{batch['refused']} refused, {batch['pending']} pending")


@click.group("batch", help="Batch files of partner transactions.")
def batch_cli() -> None:
    pass


@batch_cli.command("upload")
@click.argument("code")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--rows", "declared", help="The rows the file should hold (checked).")
@click.option("--no-book", is_flag=True,
              help="Only queue the file: the worker (coalition worker) books it.")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def batch_upload(code: str, file: Path, declared: str | None, no_book: bool,
                 as_json: bool) -> None:
    """Check FILE whole and book it for partner CODE, showing progress."""
    try:
        batch = batches.upload(partner_id(code), set(PARTNER_SCOPES), file.read_bytes(),
                               declared)
    except CoalitionError as exc:
        raise click.ClickException(exc.message) from exc
    if not no_book:
        with click.progressbar(length=batch["rows"], label=f"booking batch {batch['id']}",
                               file=sys.stderr) as bar:
            while batches.book_some(progress=bar.update, batch_id=batch["id"]):
                pass
        batch = batches.get_batch(None, batch["id"])
    emit(batch, as_json, _batch_text(batch))


@batch_cli.command("status")
@click.argument("batch_id", type=int)
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def batch_status(batch_id: int, as_json: bool) -> None:
    """A batch and its counts so far."""
    try:
        batch = batches.get_batch(None, batch_id)
    except CoalitionError as exc:
        raise click.ClickException(exc.message) from exc
    emit(batch, as_json, _batch_text(batch))


@batch_cli.command("results")
@click.argument("batch_id", type=int)
@click.option("-o", "--output", type=click.File("w", encoding="utf-8"), default="-",
              help="Where to write the CSV (default: standard output).")
@with_appcontext
def batch_results(batch_id: int, output: Any) -> None:
    """The per-row results of a batch as CSV."""
    try:
        for chunk in batches.results(None, batch_id):
            output.write(chunk)
    except CoalitionError as exc:
        raise click.ClickException(exc.message) from exc


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
        if "membership" in history:
            held = history["membership"]
            click.echo(f"  {held['member']} holds the {held['plan']} membership until "
                       f"{held['ends_at']}")
        if history["claims"]:
            click.echo(f"{plural(history['claims'], 'missing-points claim')} open at "
                       f"{result['portal']['partner']}, to answer in its portal.")


