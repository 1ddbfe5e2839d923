"""Partners, installed on the app: the operator's and the partners' APIs, the partner
portal, and the ``partner``, ``demo`` and ``worker`` commands."""

from __future__ import annotations

from flask import Flask

from coalition import events
from coalition.http.errors import api_of
from coalition.ledger.check import add_check
from partners import (
    admin,
    api,
    batches_api,
    claims_api,
    funding,
    funding_api,
    portal,
    portal_audit,
    portal_claims,
    portal_offers,
    portal_rewards,
    portal_staff,
    webhooks,
    webhooks_api,
)
from partners.cli import batch_cli, demo_cli, partner_cli
from partners.worker import worker_command


def init_app(app: Flask) -> None:
    rest = api_of(app)
    rest.register_blueprint(admin.blp)
    rest.register_blueprint(api.blp)
    rest.register_blueprint(batches_api.blp)
    rest.register_blueprint(claims_api.blp)
    rest.register_blueprint(webhooks_api.blp)
    rest.register_blueprint(funding_api.blp)
    app.register_blueprint(portal.bp)
    app.register_blueprint(portal_claims.bp)
    app.register_blueprint(portal_staff.bp)
    app.register_blueprint(portal_audit.bp)
    app.register_blueprint(portal_offers.bp)
    app.register_blueprint(portal_rewards.bp)
    app.cli.add_command(partner_cli)
    app.cli.add_command(demo_cli)
    app.cli.add_command(batch_cli)
    app.cli.add_command(worker_command)
    add_check(app, funding.funded_points)
    events.subscribe(app, webhooks.emit)
