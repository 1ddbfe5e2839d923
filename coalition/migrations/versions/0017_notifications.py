"""member notifications: the inbox, one row per member and event

Revision ID: 0017_notifications
Revises: 0016_portal
Create Date: 2026-12-05 03:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import coalition.db

revision = '0017_notifications'
down_revision = '0016_portal'
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('notification',
    sa.Column('id', BIG_ID, nullable=False),
    sa.Column('member_id', BIG_ID, nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.Column('created_at', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('read_at', coalition.db.UTCDateTime(timezone=True), nullable=True),
    sa.CheckConstraint("kind IN ('points_expiring', 'tier_changed', 'redemption', 'offer', 'membership', 'claim_answered')", name=op.f('ck_notification_kind')),
    sa.ForeignKeyConstraint(['member_id'], ['member.id'], name=op.f('fk_notification_member_id_member')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notification')),
    sa.UniqueConstraint('member_id', 'key', name=op.f('uq_notification_member_id_key'))
    )
    with op.batch_alter_table('notification', schema=None) as batch_op:
        batch_op.create_index('ix_notification_member_id_id', ['member_id', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('notification', schema=None) as batch_op:
        batch_op.drop_index('ix_notification_member_id_id')
    op.drop_table('notification')
