"""lot movements carry their lot's origin partner

Revision ID: 0006_movement_origin
Revises: 0005_member_ops
Create Date: 2026-11-22 18:55:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op



revision = '0006_movement_origin'
down_revision = '0005_member_ops'
branch_labels = None
depends_on = None

_BACKFILL = ("UPDATE lot_movement SET origin_partner_id = "
             "(SELECT lot.origin_partner_id FROM lot WHERE lot.id = lot_movement.lot_id)")


def upgrade() -> None:
    # a plain column, no foreign key, so SQLite adds it in place and keeps the journal's
    # append-only triggers; the one-off backfill lifts the update guard for its duration
    op.add_column('lot_movement', sa.Column(
        'origin_partner_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
        nullable=True))
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
    if op.get_bind().dialect.name == 'postgresql':
        op.drop_column('lot_movement', 'origin_partner_id')
    else:
        # dropping a column rebuilds the table on SQLite, which drops its triggers
        with op.batch_alter_table('lot_movement', schema=None) as batch_op:
            batch_op.drop_column('origin_partner_id')
        for action in ("UPDATE", "DELETE"):
            op.execute(f"DROP TRIGGER IF EXISTS lot_movement_no_{action.lower()}")
            op.execute(f"CREATE TRIGGER lot_movement_no_{action.lower()} BEFORE {action} "
                       f"ON lot_movement BEGIN SELECT RAISE(ABORT, 'the journal is "
                       f"append-only'); END")



