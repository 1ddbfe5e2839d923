"""rewards and vouchers: the catalog members redeem points for

Revision ID: 0018_catalog
Revises: 0017_notifications
Create Date: 2026-12-05 03:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import coalition.db

revision = '0018_catalog'
down_revision = '0017_notifications'
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('reward',
    sa.Column('id', BIG_ID, nullable=False),
    sa.Column('partner_id', BIG_ID, nullable=False),
    sa.Column('coalition', sa.Boolean(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('terms', sa.Text(), nullable=False),
    sa.Column('points', sa.BigInteger(), nullable=False),
    sa.Column('stock', sa.BigInteger(), nullable=True),
    sa.Column('sold', sa.BigInteger(), nullable=False),
    sa.Column('per_member_limit', sa.BigInteger(), nullable=True),
    sa.Column('valid_from', coalition.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('valid_to', coalition.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("kind IN ('voucher', 'product', 'service', 'charity')", name=op.f('ck_reward_kind')),
    sa.CheckConstraint('per_member_limit IS NULL OR per_member_limit > 0', name=op.f('ck_reward_per_member_limit')),
    sa.CheckConstraint('points > 0', name=op.f('ck_reward_points')),
    sa.CheckConstraint('sold >= 0 AND (stock IS NULL OR sold <= stock)', name=op.f('ck_reward_sold')),
    sa.ForeignKeyConstraint(['partner_id'], ['partner.id'], name=op.f('fk_reward_partner_id_partner')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reward'))
    )
    with op.batch_alter_table('reward', schema=None) as batch_op:
        batch_op.create_index('ix_reward_partner_id_id', ['partner_id', 'id'], unique=False)

    op.create_table('voucher',
    sa.Column('id', BIG_ID, nullable=False),
    sa.Column('code', sa.String(length=32), nullable=False),
    sa.Column('reward_id', BIG_ID, nullable=False),
    sa.Column('member_id', BIG_ID, nullable=False),
    sa.Column('partner_id', BIG_ID, nullable=False),
    sa.Column('points', sa.BigInteger(), nullable=False),
    sa.Column('entry_id', BIG_ID, nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('issued_at', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('used_at', coalition.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('used_key', sa.String(length=64), nullable=True),
    sa.Column('closed_at', coalition.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('refund_entry_id', BIG_ID, nullable=True),
    sa.CheckConstraint("status IN ('issued', 'used', 'refunded', 'forfeited')", name=op.f('ck_voucher_status')),
    sa.CheckConstraint('points > 0', name=op.f('ck_voucher_points')),
    sa.ForeignKeyConstraint(['entry_id'], ['entry.id'], name=op.f('fk_voucher_entry_id_entry')),
    sa.ForeignKeyConstraint(['member_id'], ['member.id'], name=op.f('fk_voucher_member_id_member')),
    sa.ForeignKeyConstraint(['partner_id'], ['partner.id'], name=op.f('fk_voucher_partner_id_partner')),
    sa.ForeignKeyConstraint(['refund_entry_id'], ['entry.id'], name=op.f('fk_voucher_refund_entry_id_entry')),
    sa.ForeignKeyConstraint(['reward_id'], ['reward.id'], name=op.f('fk_voucher_reward_id_reward')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_voucher')),
    sa.UniqueConstraint('code', name=op.f('uq_voucher_code')),
    sa.UniqueConstraint('entry_id', name=op.f('uq_voucher_entry_id'))
    )
    with op.batch_alter_table('voucher', schema=None) as batch_op:
        batch_op.create_index('ix_voucher_member_id_id', ['member_id', 'id'], unique=False)
        batch_op.create_index('ix_voucher_reward_id_member_id', ['reward_id', 'member_id'], unique=False)
        batch_op.create_index('ix_voucher_status_expires_at', ['status', 'expires_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('voucher', schema=None) as batch_op:
        batch_op.drop_index('ix_voucher_status_expires_at')
        batch_op.drop_index('ix_voucher_reward_id_member_id')
        batch_op.drop_index('ix_voucher_member_id_id')

    op.drop_table('voucher')
    with op.batch_alter_table('reward', schema=None) as batch_op:
        batch_op.drop_index('ix_reward_partner_id_id')

    op.drop_table('reward')
