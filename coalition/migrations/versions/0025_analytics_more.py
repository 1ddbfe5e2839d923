"""analytics: the moment a member was merged

Revision ID: 0025_analytics_more
Revises: 0024_offers
Create Date: 2026-12-05 04:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import coalition.db

revision = '0025_analytics_more'
down_revision = '0024_offers'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # the members merged before this revision keep no moment (NULL: unknown)
    with op.batch_alter_table('member', schema=None) as batch_op:
        batch_op.add_column(sa.Column('merged_at', coalition.db.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('member', schema=None) as batch_op:
        batch_op.drop_column('merged_at')
