"""``coalition partner …``: onboarding from the command line."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

import click
from flask.cli import with_appcontext

from coalition.audit.service import cli_actor
from coalition.cli import emit


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
    from marshmallow import ValidationError

    from coalition.errors import CoalitionError
    from partners.schemas import PartnerCreateSchema, PartnerSchema
    from partners.service import create_partner

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
    from partners.schemas import PartnerSchema
    from partners.service import list_partners

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
    from coalition.errors import CoalitionError
    from partners.service import issue_partner_client

    try:
        issued = issue_partner_client(code, scope.split(), actor=cli_actor())
    except CoalitionError as exc:
        raise click.ClickException(exc.message) from exc
    emit({"client_id": issued.client_id, "client_secret": issued.client_secret,
          "scopes": issued.scopes}, as_json,
         f"client_id:     {issued.client_id}\nclient_secret: {issued.client_secret}  (shown once)")
