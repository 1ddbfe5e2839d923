"""settlement

Revision ID: 0004_settlement
Revises: 0003_member_sign_in
Create Date: 2026-11-22 18:35:09.667200
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import coalition.db

revision = '0004_settlement'
down_revision = '0003_member_sign_in'
branch_labels = None
depends_on = None

# The database itself keeps two settlement rules, whatever code path writes:
# runs never overlap, and a closed run (with its breaks) never changes.


def _guard() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE settlement_run ADD CONSTRAINT ex_settlement_run_period "
            "EXCLUDE USING gist (tstzrange(period_start, period_end, '[)') WITH &&)"
        )
        op.execute(
            """
            CREATE FUNCTION coalition_closed_run_is_frozen() RETURNS trigger
            LANGUAGE plpgsql AS $$
            DECLARE run_status text;
            BEGIN
                IF TG_TABLE_NAME = 'settlement_run' THEN
                    run_status := OLD.status;
                ELSE
                    SELECT status INTO run_status FROM settlement_run WHERE id = OLD.run_id;
                END IF;
                IF run_status = 'closed' THEN
                    RAISE EXCEPTION 'settlement run % is closed', OLD.id
                        USING ERRCODE = 'restrict_violation';
                END IF;
                RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
            END $$
            """
        )
        for table in ("settlement_run", "settlement_break", "settlement_reconciliation"):
            op.execute(
                f"CREATE TRIGGER {table}_frozen_when_closed BEFORE UPDATE OR DELETE ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION coalition_closed_run_is_frozen()"
            )
    else:
        op.execute(
            "CREATE TRIGGER settlement_run_no_overlap BEFORE INSERT ON settlement_run "
            "WHEN EXISTS (SELECT 1 FROM settlement_run r WHERE r.period_start < NEW.period_end "
            "AND NEW.period_start < r.period_end) "
            "BEGIN SELECT RAISE(ABORT, 'settlement periods overlap'); END"
        )
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER settlement_run_frozen_{action.lower()} BEFORE {action} "
                f"ON settlement_run WHEN OLD.status = 'closed' "
                f"BEGIN SELECT RAISE(ABORT, 'settlement run is closed'); END"
            )
            for table in ("settlement_break", "settlement_reconciliation"):
                op.execute(
                    f"CREATE TRIGGER {table}_frozen_{action.lower()} BEFORE {action} ON {table} "
                    f"WHEN (SELECT status FROM settlement_run WHERE id = OLD.run_id) = 'closed' "
                    f"BEGIN SELECT RAISE(ABORT, 'settlement run is closed'); END"
                )


def _unguard() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in ("settlement_run", "settlement_break", "settlement_reconciliation"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_frozen_when_closed ON {table}")
        op.execute("DROP FUNCTION IF EXISTS coalition_closed_run_is_frozen()")
        op.execute("ALTER TABLE settlement_run DROP CONSTRAINT IF EXISTS ex_settlement_run_period")
    else:
        op.execute("DROP TRIGGER IF EXISTS settlement_run_no_overlap")
        for action in ("update", "delete"):
            for table in ("settlement_run", "settlement_break", "settlement_reconciliation"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_frozen_{action}")


def upgrade() -> None:
    op.create_table('settlement_run',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('period_start', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('period_end', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('computed_at', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('result', sa.JSON(), nullable=False),
    sa.Column('result_digest', sa.String(length=64), nullable=False),
    sa.Column('closed_at', coalition.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('closed_by', sa.String(length=64), nullable=True),
    sa.CheckConstraint("status IN ('draft', 'closed')", name=op.f('ck_settlement_run_status')),
    sa.CheckConstraint('period_start < period_end', name=op.f('ck_settlement_run_period')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_settlement_run'))
    )
    op.create_table('settlement_reconciliation',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('run_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('partner_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('uploaded_at', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('uploaded_by', sa.String(length=64), nullable=False),
    sa.Column('file_sha256', sa.String(length=64), nullable=False),
    sa.Column('rows', sa.Integer(), nullable=False),
    sa.Column('superseded', sa.Boolean(), nullable=False),
    sa.Column('summary', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['partner_id'], ['partner.id'], name=op.f('fk_settlement_reconciliation_partner_id_partner')),
    sa.ForeignKeyConstraint(['run_id'], ['settlement_run.id'], name=op.f('fk_settlement_reconciliation_run_id_settlement_run')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_settlement_reconciliation'))
    )
    with op.batch_alter_table('settlement_reconciliation', schema=None) as batch_op:
        batch_op.create_index('ix_settlement_reconciliation_run_partner', ['run_id', 'partner_id'], unique=False)

    op.create_table('settlement_break',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('run_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('reconciliation_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('partner_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('kind', sa.String(length=24), nullable=False),
    sa.Column('partner_txn_id', sa.String(length=64), nullable=True),
    sa.Column('line', sa.Integer(), nullable=True),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('resolved_at', coalition.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('resolved_by', sa.String(length=64), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('adjustment_entry_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.CheckConstraint("kind IN ('points_mismatch', 'missing_in_ledger', 'missing_in_file', 'duplicated_in_file', 'malformed')", name=op.f('ck_settlement_break_kind')),
    sa.CheckConstraint("status IN ('open', 'accepted', 'adjusted')", name=op.f('ck_settlement_break_status')),
    sa.ForeignKeyConstraint(['adjustment_entry_id'], ['entry.id'], name=op.f('fk_settlement_break_adjustment_entry_id_entry')),
    sa.ForeignKeyConstraint(['partner_id'], ['partner.id'], name=op.f('fk_settlement_break_partner_id_partner')),
    sa.ForeignKeyConstraint(['reconciliation_id'], ['settlement_reconciliation.id'], name=op.f('fk_settlement_break_reconciliation_id_settlement_reconciliation')),
    sa.ForeignKeyConstraint(['run_id'], ['settlement_run.id'], name=op.f('fk_settlement_break_run_id_settlement_run')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_settlement_break'))
    )
    with op.batch_alter_table('settlement_break', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_settlement_break_reconciliation_id'), ['reconciliation_id'], unique=False)
        batch_op.create_index('ix_settlement_break_run_id_status', ['run_id', 'status'], unique=False)
    _guard()


def downgrade() -> None:
    _unguard()
    with op.batch_alter_table('settlement_break', schema=None) as batch_op:
        batch_op.drop_index('ix_settlement_break_run_id_status')
        batch_op.drop_index(batch_op.f('ix_settlement_break_reconciliation_id'))

    op.drop_table('settlement_break')
    with op.batch_alter_table('settlement_reconciliation', schema=None) as batch_op:
        batch_op.drop_index('ix_settlement_reconciliation_run_partner')

    op.drop_table('settlement_reconciliation')
    op.drop_table('settlement_run')
