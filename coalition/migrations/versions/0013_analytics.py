"""the points liability of a closed run, kept as it was closed

Revision ID: 0013_analytics
Revises: 0012_personal_data
Create Date: 2026-12-05 01:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0013_analytics'
down_revision = '0012_personal_data'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Added in place (never by copying the table, which would drop the triggers that freeze
    # a closed run). Runs closed before have none: their liability is measured when asked.
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE settlement_run ADD COLUMN liability JSON")
    else:
        op.add_column('settlement_run', sa.Column('liability', sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column('settlement_run', 'liability')
