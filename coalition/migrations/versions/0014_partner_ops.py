"""partner operations: webhooks, batch files, funding

Revision ID: 0014_partner_ops
Revises: 0013_analytics
Create Date: 2026-12-05 00:19:31.027881
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import coalition.db

revision = '0014_partner_ops'
down_revision = '0013_analytics'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('batch',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('partner_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('rows', sa.Integer(), nullable=False),
    sa.Column('scopes', sa.String(length=500), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('created_at', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('finished_at', coalition.db.UTCDateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('queued', 'booking', 'done')", name=op.f('ck_batch_status')),
    sa.ForeignKeyConstraint(['partner_id'], ['partner.id'], name=op.f('fk_batch_partner_id_partner')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_batch'))
    )
    with op.batch_alter_table('batch', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_batch_partner_id'), ['partner_id'], unique=False)

    op.create_table('funding_block',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('partner_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('points', sa.BigInteger(), nullable=False),
    sa.Column('price', coalition.db.ExactDecimal(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('bought_at', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('activated_at', coalition.db.UTCDateTime(timezone=True), nullable=True),
    sa.CheckConstraint("kind IN ('block', 'reserve', 'topup')", name=op.f('ck_funding_block_kind')),
    sa.CheckConstraint('points > 0', name=op.f('ck_funding_block_points')),
    sa.CheckConstraint('price >= 0', name=op.f('ck_funding_block_price')),
    sa.ForeignKeyConstraint(['partner_id'], ['partner.id'], name=op.f('fk_funding_block_partner_id_partner')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_funding_block'))
    )
    with op.batch_alter_table('funding_block', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_funding_block_partner_id'), ['partner_id'], unique=False)

    op.create_table('funding_slot',
    sa.Column('partner_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('slot', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('remaining', sa.BigInteger(), nullable=False),
    sa.CheckConstraint('remaining >= 0', name=op.f('ck_funding_slot_remaining')),
    sa.ForeignKeyConstraint(['partner_id'], ['partner.id'], name=op.f('fk_funding_slot_partner_id_partner')),
    sa.PrimaryKeyConstraint('partner_id', 'slot', name=op.f('pk_funding_slot'))
    )
    op.create_table('partner_funding',
    sa.Column('partner_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('model', sa.String(length=16), nullable=False),
    sa.Column('since', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('credit_limit_points', sa.BigInteger(), nullable=True),
    sa.Column('low_threshold_points', sa.BigInteger(), nullable=True),
    sa.Column('low_raised', sa.Boolean(), nullable=False),
    sa.Column('topup_points', sa.BigInteger(), nullable=True),
    sa.Column('topup_price', coalition.db.ExactDecimal(), nullable=True),
    sa.Column('topup_currency', sa.String(length=3), nullable=True),
    sa.Column('updated_at', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("model IN ('prepaid', 'postpaid')", name=op.f('ck_partner_funding_model')),
    sa.CheckConstraint('credit_limit_points IS NULL OR credit_limit_points >= 0', name=op.f('ck_partner_funding_credit_limit')),
    sa.ForeignKeyConstraint(['partner_id'], ['partner.id'], name=op.f('fk_partner_funding_partner_id_partner')),
    sa.PrimaryKeyConstraint('partner_id', name=op.f('pk_partner_funding'))
    )
    op.create_table('webhook_endpoint',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('partner_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('url', sa.String(length=2000), nullable=False),
    sa.Column('events', sa.JSON(), nullable=False),
    sa.Column('secret', sa.String(length=100), nullable=False),
    sa.Column('created_at', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('deleted_at', coalition.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['partner_id'], ['partner.id'], name=op.f('fk_webhook_endpoint_partner_id_partner')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_endpoint'))
    )
    with op.batch_alter_table('webhook_endpoint', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_webhook_endpoint_partner_id'), ['partner_id'], unique=False)

    op.create_table('webhook_event',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('partner_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('type', sa.String(length=64), nullable=False),
    sa.Column('created_at', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['partner_id'], ['partner.id'], name=op.f('fk_webhook_event_partner_id_partner')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_event'))
    )
    with op.batch_alter_table('webhook_event', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_webhook_event_partner_id'), ['partner_id'], unique=False)

    op.create_table('batch_row',
    sa.Column('batch_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('line', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('partner_txn_id', sa.String(length=200), nullable=False),
    sa.Column('fields', sa.JSON(), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=True),
    sa.Column('transaction_id', sa.BigInteger(), nullable=True),
    sa.Column('error', sa.String(length=64), nullable=True),
    sa.Column('message', sa.String(length=500), nullable=True),
    sa.CheckConstraint("outcome IN ('booked', 'replayed', 'refused')", name=op.f('ck_batch_row_outcome')),
    sa.ForeignKeyConstraint(['batch_id'], ['batch.id'], name=op.f('fk_batch_row_batch_id_batch')),
    sa.PrimaryKeyConstraint('batch_id', 'line', name=op.f('pk_batch_row'))
    )
    op.create_table('webhook_delivery',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('event_id', sa.String(length=36), nullable=False),
    sa.Column('endpoint_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('created_at', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('next_attempt_at', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('give_up_at', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('delivered_at', coalition.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('replay_of', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.CheckConstraint("status IN ('pending', 'delivered', 'failed')", name=op.f('ck_webhook_delivery_status')),
    sa.ForeignKeyConstraint(['endpoint_id'], ['webhook_endpoint.id'], name=op.f('fk_webhook_delivery_endpoint_id_webhook_endpoint')),
    sa.ForeignKeyConstraint(['event_id'], ['webhook_event.id'], name=op.f('fk_webhook_delivery_event_id_webhook_event')),
    sa.ForeignKeyConstraint(['replay_of'], ['webhook_delivery.id'], name=op.f('fk_webhook_delivery_replay_of_webhook_delivery')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_delivery'))
    )
    with op.batch_alter_table('webhook_delivery', schema=None) as batch_op:
        batch_op.create_index('ix_webhook_delivery_due', ['status', 'next_attempt_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_webhook_delivery_endpoint_id'), ['endpoint_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_webhook_delivery_event_id'), ['event_id'], unique=False)

    op.create_table('webhook_attempt',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('delivery_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('started_at', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('duration_ms', sa.Integer(), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('error', sa.String(length=500), nullable=True),
    sa.Column('response', sa.String(length=500), nullable=True),
    sa.ForeignKeyConstraint(['delivery_id'], ['webhook_delivery.id'], name=op.f('fk_webhook_attempt_delivery_id_webhook_delivery')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_attempt'))
    )
    with op.batch_alter_table('webhook_attempt', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_webhook_attempt_delivery_id'), ['delivery_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('webhook_attempt', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_webhook_attempt_delivery_id'))

    op.drop_table('webhook_attempt')
    with op.batch_alter_table('webhook_delivery', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_webhook_delivery_event_id'))
        batch_op.drop_index(batch_op.f('ix_webhook_delivery_endpoint_id'))
        batch_op.drop_index('ix_webhook_delivery_due')

    op.drop_table('webhook_delivery')
    op.drop_table('batch_row')
    with op.batch_alter_table('webhook_event', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_webhook_event_partner_id'))

    op.drop_table('webhook_event')
    with op.batch_alter_table('webhook_endpoint', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_webhook_endpoint_partner_id'))

    op.drop_table('webhook_endpoint')
    op.drop_table('partner_funding')
    op.drop_table('funding_slot')
    with op.batch_alter_table('funding_block', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_funding_block_partner_id'))

    op.drop_table('funding_block')
    with op.batch_alter_table('batch', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_batch_partner_id'))

    op.drop_table('batch')
