"""the partner portal: partner staff accounts, and their codes and tokens

Revision ID: 0016_portal
Revises: 0015_hot_path
Create Date: 2026-12-05 01:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import coalition.db

revision = '0016_portal'
down_revision = '0015_hot_path'
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('partner_user',
    sa.Column('id', BIG_ID, nullable=False),
    sa.Column('partner_id', BIG_ID, nullable=False),
    sa.Column('login', sa.String(length=254), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=True),
    sa.Column('activation_hash', sa.String(length=64), nullable=True),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('failed_sign_ins', sa.Integer(), server_default='0', nullable=False),
    sa.Column('locked_until', coalition.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('activated_at', coalition.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['partner_id'], ['partner.id'], name=op.f('fk_partner_user_partner_id_partner')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_partner_user')),
    sa.UniqueConstraint('login', name=op.f('uq_partner_user_login'))
    )
    with op.batch_alter_table('partner_user', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_partner_user_partner_id'), ['partner_id'], unique=False)

    with op.batch_alter_table('oauth_authorization_code', schema=None) as batch_op:
        batch_op.add_column(sa.Column('partner_user_id', BIG_ID, nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_oauth_authorization_code_partner_user_id_partner_user'), 'partner_user', ['partner_user_id'], ['id'])

    with op.batch_alter_table('oauth_token', schema=None) as batch_op:
        batch_op.add_column(sa.Column('partner_user_id', BIG_ID, nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_oauth_token_partner_user_id_partner_user'), 'partner_user', ['partner_user_id'], ['id'])


def downgrade() -> None:
    # partner staff members' codes and tokens go with them
    op.execute("DELETE FROM oauth_authorization_code WHERE partner_user_id IS NOT NULL")
    op.execute("DELETE FROM oauth_token WHERE partner_user_id IS NOT NULL")
    with op.batch_alter_table('oauth_token', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_oauth_token_partner_user_id_partner_user'), type_='foreignkey')
        batch_op.drop_column('partner_user_id')

    with op.batch_alter_table('oauth_authorization_code', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_oauth_authorization_code_partner_user_id_partner_user'), type_='foreignkey')
        batch_op.drop_column('partner_user_id')

    with op.batch_alter_table('partner_user', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_partner_user_partner_id'))

    op.drop_table('partner_user')
