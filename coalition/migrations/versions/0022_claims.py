"""missing-points claims: one per partner and receipt, answered once

Revision ID: 0022_claims
Revises: 0021_notify_email
Create Date: 2026-12-05 04:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import coalition.db

revision = '0022_claims'
down_revision = '0021_notify_email'
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('claim',
    sa.Column('id', BIG_ID, nullable=False),
    sa.Column('member_id', BIG_ID, nullable=False),
    sa.Column('partner_id', BIG_ID, nullable=False),
    sa.Column('receipt', sa.String(length=64), nullable=False),
    sa.Column('partner_txn_id', sa.String(length=64), nullable=True),
    sa.Column('spend_amount', coalition.db.ExactDecimal(precision=24, scale=8), nullable=False),
    sa.Column('spend_currency', sa.String(length=3), nullable=False),
    sa.Column('occurred_at', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('opened_at', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('answered_at', coalition.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('answered_by', sa.String(length=200), nullable=True),
    sa.Column('reason', sa.String(length=500), nullable=True),
    sa.Column('entry_id', BIG_ID, nullable=True),
    sa.Column('points', sa.BigInteger(), nullable=True),
    sa.CheckConstraint("(status = 'confirmed') = (entry_id IS NOT NULL AND points IS NOT NULL)", name=op.f('ck_claim_confirmed_booking')),
    sa.CheckConstraint("(status = 'open') = (answered_at IS NULL)", name=op.f('ck_claim_answered')),
    sa.CheckConstraint("spend_amount > 0", name=op.f('ck_claim_spend_positive')),
    sa.CheckConstraint("status IN ('open', 'confirmed', 'refused')", name=op.f('ck_claim_status')),
    sa.ForeignKeyConstraint(['entry_id'], ['entry.id'], name=op.f('fk_claim_entry_id_entry')),
    sa.ForeignKeyConstraint(['member_id'], ['member.id'], name=op.f('fk_claim_member_id_member')),
    sa.ForeignKeyConstraint(['partner_id'], ['partner.id'], name=op.f('fk_claim_partner_id_partner')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_claim')),
    sa.UniqueConstraint('entry_id', name=op.f('uq_claim_entry_id')),
    sa.UniqueConstraint('partner_id', 'receipt', name=op.f('uq_claim_partner_id_receipt'))
    )
    with op.batch_alter_table('claim', schema=None) as batch_op:
        batch_op.create_index('ix_claim_member_id_id', ['member_id', 'id'], unique=False)
        batch_op.create_index('ix_claim_partner_id_status_id', ['partner_id', 'status', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('claim', schema=None) as batch_op:
        batch_op.drop_index('ix_claim_partner_id_status_id')
        batch_op.drop_index('ix_claim_member_id_id')
    op.drop_table('claim')
