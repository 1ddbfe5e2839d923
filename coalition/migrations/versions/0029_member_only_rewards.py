"""member-only rewards: the paid membership plan a reward needs

Revision ID: 0029_member_only_rewards
Revises: 0025_analytics_more
Create Date: 2026-12-05 05:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0029_member_only_rewards'
down_revision = '0025_analytics_more'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('reward', schema=None) as batch_op:
        batch_op.add_column(sa.Column('plan', sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('reward', schema=None) as batch_op:
        batch_op.drop_column('plan')
