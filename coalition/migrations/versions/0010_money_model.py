"""money model of a run; adjustments linked to the partner transactions they correct

Revision ID: 0010_money_model
Revises: 0009_fence
Create Date: 2026-12-04 21:45:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import coalition.db

revision = '0010_money_model'
down_revision = '0009_fence'
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
_MODEL_CHECK = "model IN ('operator', 'clearing')"


def upgrade() -> None:
    # Runs made before money models were named were paid by the operator model. The column
    # is added in place (never by copying the table, which would drop the triggers that
    # freeze a closed run).
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE settlement_run ADD COLUMN model VARCHAR(16) NOT NULL "
                   "DEFAULT 'operator' CONSTRAINT ck_settlement_run_model "
                   f"CHECK ({_MODEL_CHECK})")
    else:
        op.add_column('settlement_run', sa.Column('model', sa.String(length=16),
                                                  server_default='operator', nullable=False))
        op.create_check_constraint(op.f('ck_settlement_run_model'), 'settlement_run',
                                   _MODEL_CHECK)
    op.create_table('settlement_adjustment',
    sa.Column('entry_id', _ID, nullable=False),
    sa.Column('partner_id', _ID, nullable=False),
    sa.Column('partner_txn_id', sa.String(length=64), nullable=False),
    sa.Column('break_id', _ID, nullable=True),
    sa.Column('points', sa.Integer(), nullable=False),
    sa.Column('created_at', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['break_id'], ['settlement_break.id'], name=op.f('fk_settlement_adjustment_break_id_settlement_break'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['entry_id'], ['entry.id'], name=op.f('fk_settlement_adjustment_entry_id_entry')),
    sa.ForeignKeyConstraint(['partner_id'], ['partner.id'], name=op.f('fk_settlement_adjustment_partner_id_partner')),
    sa.PrimaryKeyConstraint('entry_id', name=op.f('pk_settlement_adjustment')),
    sa.UniqueConstraint('break_id', name=op.f('uq_settlement_adjustment_break_id')),
    sa.UniqueConstraint('partner_id', 'partner_txn_id', name=op.f('uq_settlement_adjustment_partner_id_partner_txn_id'))
    )


def downgrade() -> None:
    op.drop_table('settlement_adjustment')
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint(op.f('ck_settlement_run_model'), 'settlement_run', type_='check')
    op.drop_column('settlement_run', 'model')
