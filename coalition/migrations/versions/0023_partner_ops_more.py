"""partner staff roles, and the partner a portal action's audit event belongs to

Revision ID: 0023_partner_ops_more
Revises: 0022_claims
Create Date: 2026-12-05 03:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0023_partner_ops_more'
down_revision = '0022_claims'
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    with op.batch_alter_table('partner_user', schema=None) as batch_op:
        batch_op.add_column(sa.Column('role', sa.String(length=16), server_default='viewer', nullable=False))
        batch_op.create_check_constraint(batch_op.f('ck_partner_user_role'), "role IN ('viewer', 'operator', 'admin')")
    # the accounts made before roles existed could do everything the portal offered
    op.execute("UPDATE partner_user SET role = 'admin'")

    # added in place (no copy of the table, which would lose its append-only triggers)
    with op.batch_alter_table('audit_event', schema=None) as batch_op:
        batch_op.add_column(sa.Column('partner_id', BIG_ID, nullable=True))
        batch_op.create_index('ix_audit_event_partner_id_id', ['partner_id', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('audit_event', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_event_partner_id_id')
        batch_op.drop_column('partner_id')

    with op.batch_alter_table('partner_user', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('ck_partner_user_role'), type_='check')
        batch_op.drop_column('role')
