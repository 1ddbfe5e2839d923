"""personal data: what each partner supplied, the member's consents, a transfer's sender

Revision ID: 0012_personal_data
Revises: 0011_oauth_edges
Create Date: 2026-12-04 21:50:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import coalition.db

revision = '0012_personal_data'
down_revision = '0011_oauth_edges'
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    with op.batch_alter_table('member_link', schema=None) as batch_op:
        batch_op.add_column(sa.Column('email', sa.String(length=320), nullable=True))
        batch_op.add_column(sa.Column('name', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('birth_date', sa.Date(), nullable=True))
    op.create_table('member_consent',
    sa.Column('member_id', _ID, nullable=False),
    sa.Column('partner_id', _ID, nullable=False),
    sa.Column('granted_at', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['member_id'], ['member.id'],
                            name=op.f('fk_member_consent_member_id_member')),
    sa.ForeignKeyConstraint(['partner_id'], ['partner.id'],
                            name=op.f('fk_member_consent_partner_id_partner')),
    sa.PrimaryKeyConstraint('member_id', 'partner_id', name=op.f('pk_member_consent'))
    )
    with op.batch_alter_table('entry', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sender_named', sa.Boolean(), nullable=True))
    # the partner that enrolled a member supplied the data on the member's row: it keeps
    # seeing it through its own links; other linked partners see only what they supply
    op.execute("""
        UPDATE member_link SET
            email = (SELECT m.email FROM member m WHERE m.id = member_link.member_id),
            name = (SELECT m.name FROM member m WHERE m.id = member_link.member_id),
            birth_date = (SELECT m.birth_date FROM member m WHERE m.id = member_link.member_id)
        WHERE partner_id = (SELECT m.enrolled_by FROM member m
                            WHERE m.id = member_link.member_id)
    """)
    # a merged row keeps no personal data (the survivor took what it lacked), a closed
    # one none either
    op.execute("UPDATE member SET email = NULL, name = NULL, birth_date = NULL "
               "WHERE status IN ('merged', 'closed')")


def downgrade() -> None:
    with op.batch_alter_table('entry', schema=None) as batch_op:
        batch_op.drop_column('sender_named')
    op.drop_table('member_consent')
    with op.batch_alter_table('member_link', schema=None) as batch_op:
        batch_op.drop_column('birth_date')
        batch_op.drop_column('name')
        batch_op.drop_column('email')
