"""lot movements describe themselves: the lot's origin and the moving entry

Revision ID: 0006_movement_origin
Revises: 0005_member_ops
Create Date: 2026-11-22 18:55:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import coalition.db

revision = '0006_movement_origin'
down_revision = '0005_member_ops'
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
_BACKFILL = (
    "UPDATE lot_movement SET "
    "origin_partner_id = (SELECT lot.origin_partner_id FROM lot "
    "WHERE lot.id = lot_movement.lot_id), "
    "entry_kind = (SELECT entry.kind FROM entry WHERE entry.id = lot_movement.entry_id), "
    "entry_partner_id = (SELECT entry.partner_id FROM entry "
    "WHERE entry.id = lot_movement.entry_id), "
    "entry_booked_at = (SELECT entry.booked_at FROM entry WHERE entry.id = lot_movement.entry_id)"
)


def upgrade() -> None:
    # plain columns, no foreign keys, so SQLite adds them in place and keeps the journal's
    # append-only triggers; the one-off backfill lifts the update guard for its duration
    op.add_column('lot_movement', sa.Column('origin_partner_id', _ID, nullable=True))
    op.add_column('lot_movement', sa.Column('entry_kind', sa.String(length=24), nullable=True))
    op.add_column('lot_movement', sa.Column('entry_partner_id', _ID, nullable=True))
    op.add_column('lot_movement', sa.Column(
        'entry_booked_at', coalition.db.UTCDateTime(timezone=True), nullable=True))
    op.create_index(op.f('ix_lot_movement_entry_booked_at'), 'lot_movement',
                    ['entry_booked_at'], unique=False)
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("ALTER TABLE lot_movement DISABLE TRIGGER lot_movement_append_only")
        op.execute(_BACKFILL)
        op.execute("ALTER TABLE lot_movement ENABLE TRIGGER lot_movement_append_only")
    else:
        op.execute("DROP TRIGGER lot_movement_no_update")
        op.execute(_BACKFILL)
        op.execute("CREATE TRIGGER lot_movement_no_update BEFORE UPDATE ON lot_movement "
                   "BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END")


def downgrade() -> None:
    op.drop_index(op.f('ix_lot_movement_entry_booked_at'), table_name='lot_movement')
    columns = ('entry_booked_at', 'entry_partner_id', 'entry_kind', 'origin_partner_id')
    if op.get_bind().dialect.name == 'postgresql':
        for column in columns:
            op.drop_column('lot_movement', column)
        return
    # dropping columns rebuilds the table on SQLite, which drops its triggers
    with op.batch_alter_table('lot_movement', schema=None) as batch_op:
        for column in columns:
            batch_op.drop_column(column)
    for action in ("UPDATE", "DELETE"):
        op.execute(f"DROP TRIGGER IF EXISTS lot_movement_no_{action.lower()}")
        op.execute(f"CREATE TRIGGER lot_movement_no_{action.lower()} BEFORE {action} "
                   f"ON lot_movement BEGIN SELECT RAISE(ABORT, 'the journal is "
                   f"append-only'); END")
