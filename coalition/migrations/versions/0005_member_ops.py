"""member operations: an index for the members merged into a member

Revision ID: 0005_member_ops
Revises: 0004_settlement
Create Date: 2026-11-22 19:10:00.000000
"""

from __future__ import annotations

from alembic import op

revision = '0005_member_ops'
down_revision = '0004_settlement'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a member's history (and its qualifying points) includes the members merged into it:
    # found by member.merged_into_id on every history read
    with op.batch_alter_table('member', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_member_merged_into_id'), ['merged_into_id'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('member', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_member_merged_into_id'))
