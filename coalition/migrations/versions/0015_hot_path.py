"""hot path: a partial index on each member's live lots

Revision ID: 0015_hot_path
Revises: 0014_partner_ops
Create Date: 2026-12-05 00:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0015_hot_path'
down_revision = '0014_partner_ops'
branch_labels = None
depends_on = None

_LIVE = sa.text("state = 'live' AND remaining > 0")


def upgrade() -> None:
    # a burn and a balance read find a member's live lots in consumption order without
    # reading the lots that history has emptied or expired
    op.create_index('ix_lot_live', 'lot', ['member_id', 'expires_at', 'id'], unique=False,
                    postgresql_where=_LIVE, sqlite_where=_LIVE)


def downgrade() -> None:
    op.drop_index('ix_lot_live', table_name='lot')
