"""ledger

Revision ID: 0002_ledger
Revises: 0001_foundation
Create Date: 2026-11-22 18:18:22.052691
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import coalition.db

revision = '0002_ledger'
down_revision = '0001_foundation'
branch_labels = None
depends_on = None

# The journal is append-only: the database itself refuses to change or remove an entry,
# a posting or a lot movement, whatever code path tries.
JOURNAL_TABLES = ("entry", "posting", "lot_movement")


def _guard_journal() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            CREATE FUNCTION coalition_journal_is_append_only() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'the journal is append-only: % on % refused',
                    TG_OP, TG_TABLE_NAME USING ERRCODE = 'restrict_violation';
            END $$
            """
        )
        for table in JOURNAL_TABLES:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION coalition_journal_is_append_only()"
            )
    else:
        for table in JOURNAL_TABLES:
            for action in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END"
                )


def _unguard_journal() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in JOURNAL_TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
        op.execute("DROP FUNCTION IF EXISTS coalition_journal_is_append_only()")
    else:
        for table in JOURNAL_TABLES:
            for action in ("update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{action}")


def upgrade() -> None:
    op.create_table('member',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('member_number', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('merged_into_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('tier', sa.String(length=32), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=True),
    sa.Column('name', sa.String(length=200), nullable=True),
    sa.Column('birth_date', sa.Date(), nullable=True),
    sa.Column('enrolled_by', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('created_at', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('closed_at', coalition.db.UTCDateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('active', 'closed', 'merged')", name=op.f('ck_member_status')),
    sa.ForeignKeyConstraint(['enrolled_by'], ['partner.id'], name=op.f('fk_member_enrolled_by_partner')),
    sa.ForeignKeyConstraint(['merged_into_id'], ['member.id'], name=op.f('fk_member_merged_into_id_member')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_member')),
    sa.UniqueConstraint('member_number', name=op.f('uq_member_member_number'))
    )
    op.create_table('entry',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('kind', sa.String(length=24), nullable=False),
    sa.Column('booked_at', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('occurred_at', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('partner_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('partner_txn_id', sa.String(length=64), nullable=True),
    sa.Column('request_hash', sa.String(length=64), nullable=True),
    sa.Column('points', sa.BigInteger(), nullable=False),
    sa.Column('reference_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('spend_amount', coalition.db.ExactDecimal(), nullable=True),
    sa.Column('spend_currency', sa.String(length=3), nullable=True),
    sa.Column('available_after', sa.BigInteger(), nullable=True),
    sa.Column('pending_after', sa.BigInteger(), nullable=True),
    sa.Column('held_after', sa.BigInteger(), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.CheckConstraint("kind IN ('earn', 'burn', 'earn_reversal', 'burn_reversal', 'hold', 'hold_capture', 'hold_void', 'release', 'expiry', 'transfer', 'donation', 'forfeiture', 'bonus', 'adjustment', 'merge')", name=op.f('ck_entry_kind')),
    sa.CheckConstraint('points >= 0', name=op.f('ck_entry_points')),
    sa.ForeignKeyConstraint(['member_id'], ['member.id'], name=op.f('fk_entry_member_id_member')),
    sa.ForeignKeyConstraint(['partner_id'], ['partner.id'], name=op.f('fk_entry_partner_id_partner')),
    sa.ForeignKeyConstraint(['reference_id'], ['entry.id'], name=op.f('fk_entry_reference_id_entry')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_entry')),
    sa.UniqueConstraint('partner_id', 'partner_txn_id', name=op.f('uq_entry_partner_id_partner_txn_id'))
    )
    with op.batch_alter_table('entry', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_entry_booked_at'), ['booked_at'], unique=False)
        batch_op.create_index('ix_entry_member_id_id', ['member_id', 'id'], unique=False)
        batch_op.create_index('ix_entry_partner_id_id', ['partner_id', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_entry_reference_id'), ['reference_id'], unique=False)

    op.create_table('member_link',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('partner_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('partner_member_ref', sa.String(length=64), nullable=False),
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('created_at', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['member_id'], ['member.id'], name=op.f('fk_member_link_member_id_member')),
    sa.ForeignKeyConstraint(['partner_id'], ['partner.id'], name=op.f('fk_member_link_partner_id_partner')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_member_link')),
    sa.UniqueConstraint('partner_id', 'partner_member_ref', name=op.f('uq_member_link_partner_id_partner_member_ref'))
    )
    with op.batch_alter_table('member_link', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_member_link_member_id'), ['member_id'], unique=False)

    op.create_table('wallet',
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('available', sa.BigInteger(), nullable=False),
    sa.Column('pending', sa.BigInteger(), nullable=False),
    sa.Column('held', sa.BigInteger(), nullable=False),
    sa.Column('version', sa.BigInteger(), nullable=False),
    sa.Column('last_activity_at', coalition.db.UTCDateTime(timezone=True), nullable=True),
    sa.CheckConstraint('available >= 0', name=op.f('ck_wallet_available')),
    sa.CheckConstraint('held >= 0', name=op.f('ck_wallet_held')),
    sa.CheckConstraint('pending >= 0', name=op.f('ck_wallet_pending')),
    sa.ForeignKeyConstraint(['member_id'], ['member.id'], name=op.f('fk_wallet_member_id_member')),
    sa.PrimaryKeyConstraint('member_id', name=op.f('pk_wallet'))
    )
    op.create_table('hold',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('entry_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('partner_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('points', sa.BigInteger(), nullable=False),
    sa.Column('captured', sa.BigInteger(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('expires_at', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('closed_by_entry_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.CheckConstraint("status IN ('open', 'captured', 'voided', 'expired')", name=op.f('ck_hold_status')),
    sa.CheckConstraint('captured >= 0 AND captured <= points', name=op.f('ck_hold_captured')),
    sa.ForeignKeyConstraint(['closed_by_entry_id'], ['entry.id'], name=op.f('fk_hold_closed_by_entry_id_entry')),
    sa.ForeignKeyConstraint(['entry_id'], ['entry.id'], name=op.f('fk_hold_entry_id_entry')),
    sa.ForeignKeyConstraint(['member_id'], ['member.id'], name=op.f('fk_hold_member_id_member')),
    sa.ForeignKeyConstraint(['partner_id'], ['partner.id'], name=op.f('fk_hold_partner_id_partner')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_hold')),
    sa.UniqueConstraint('entry_id', name=op.f('uq_hold_entry_id'))
    )
    with op.batch_alter_table('hold', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_hold_member_id'), ['member_id'], unique=False)
        batch_op.create_index('ix_hold_status_expires_at', ['status', 'expires_at'], unique=False)

    op.create_table('lot',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('origin_partner_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('entry_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('points', sa.BigInteger(), nullable=False),
    sa.Column('remaining', sa.BigInteger(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('earned_at', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', coalition.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('pending_until', coalition.db.UTCDateTime(timezone=True), nullable=True),
    sa.CheckConstraint("source IN ('earn', 'bonus', 'transfer', 'adjustment')", name=op.f('ck_lot_source')),
    sa.CheckConstraint("state IN ('pending', 'live', 'expired', 'forfeited')", name=op.f('ck_lot_state')),
    sa.CheckConstraint('points > 0', name=op.f('ck_lot_points')),
    sa.CheckConstraint('remaining >= 0 AND remaining <= points', name=op.f('ck_lot_remaining')),
    sa.ForeignKeyConstraint(['entry_id'], ['entry.id'], name=op.f('fk_lot_entry_id_entry')),
    sa.ForeignKeyConstraint(['member_id'], ['member.id'], name=op.f('fk_lot_member_id_member')),
    sa.ForeignKeyConstraint(['origin_partner_id'], ['partner.id'], name=op.f('fk_lot_origin_partner_id_partner')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_lot'))
    )
    with op.batch_alter_table('lot', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_lot_entry_id'), ['entry_id'], unique=False)
        batch_op.create_index('ix_lot_member_id_state', ['member_id', 'state'], unique=False)
        batch_op.create_index('ix_lot_state_expires_at', ['state', 'expires_at'], unique=False)

    op.create_table('posting',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('entry_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('account', sa.String(length=24), nullable=False),
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('partner_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('points', sa.BigInteger(), nullable=False),
    sa.CheckConstraint("account IN ('member:available', 'member:pending', 'member:held', 'partner:issued', 'partner:redeemed', 'coalition:breakage', 'coalition:forfeited', 'coalition:funded')", name=op.f('ck_posting_account')),
    sa.CheckConstraint('points <> 0', name=op.f('ck_posting_points')),
    sa.ForeignKeyConstraint(['entry_id'], ['entry.id'], name=op.f('fk_posting_entry_id_entry')),
    sa.ForeignKeyConstraint(['member_id'], ['member.id'], name=op.f('fk_posting_member_id_member')),
    sa.ForeignKeyConstraint(['partner_id'], ['partner.id'], name=op.f('fk_posting_partner_id_partner')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_posting'))
    )
    with op.batch_alter_table('posting', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_posting_entry_id'), ['entry_id'], unique=False)
        batch_op.create_index('ix_posting_member_id_account', ['member_id', 'account'], unique=False)
        batch_op.create_index('ix_posting_partner_id_account', ['partner_id', 'account'], unique=False)

    op.create_table('lot_movement',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('lot_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('entry_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('points', sa.BigInteger(), nullable=False),
    sa.CheckConstraint('points <> 0', name=op.f('ck_lot_movement_points')),
    sa.ForeignKeyConstraint(['entry_id'], ['entry.id'], name=op.f('fk_lot_movement_entry_id_entry')),
    sa.ForeignKeyConstraint(['lot_id'], ['lot.id'], name=op.f('fk_lot_movement_lot_id_lot')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_lot_movement'))
    )
    with op.batch_alter_table('lot_movement', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_lot_movement_entry_id'), ['entry_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_lot_movement_lot_id'), ['lot_id'], unique=False)

    _guard_journal()


def downgrade() -> None:
    _unguard_journal()
    with op.batch_alter_table('lot_movement', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_lot_movement_lot_id'))
        batch_op.drop_index(batch_op.f('ix_lot_movement_entry_id'))

    op.drop_table('lot_movement')
    with op.batch_alter_table('posting', schema=None) as batch_op:
        batch_op.drop_index('ix_posting_partner_id_account')
        batch_op.drop_index('ix_posting_member_id_account')
        batch_op.drop_index(batch_op.f('ix_posting_entry_id'))

    op.drop_table('posting')
    with op.batch_alter_table('lot', schema=None) as batch_op:
        batch_op.drop_index('ix_lot_state_expires_at')
        batch_op.drop_index('ix_lot_member_id_state')
        batch_op.drop_index(batch_op.f('ix_lot_entry_id'))

    op.drop_table('lot')
    with op.batch_alter_table('hold', schema=None) as batch_op:
        batch_op.drop_index('ix_hold_status_expires_at')
        batch_op.drop_index(batch_op.f('ix_hold_member_id'))

    op.drop_table('hold')
    op.drop_table('wallet')
    with op.batch_alter_table('member_link', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_member_link_member_id'))

    op.drop_table('member_link')
    with op.batch_alter_table('entry', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_entry_reference_id'))
        batch_op.drop_index('ix_entry_partner_id_id')
        batch_op.drop_index('ix_entry_member_id_id')
        batch_op.drop_index(batch_op.f('ix_entry_booked_at'))

    op.drop_table('entry')
    op.drop_table('member')
