"""finance users

Revision ID: 0007_finance_users
Revises: 0006_movement_origin
Create Date: 2026-11-22 19:35:06.214192
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import coalition.db

revision = '0007_finance_users'
down_revision = '0006_movement_origin'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('finance_user',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('failed_sign_ins', sa.Integer(), server_default='0', nullable=False),
    sa.Column('locked_until', coalition.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_finance_user')),
    sa.UniqueConstraint('username', name=op.f('uq_finance_user_username'))
    )
    with op.batch_alter_table('oauth_authorization_code', schema=None) as batch_op:
        batch_op.add_column(sa.Column('finance_user_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True))
        batch_op.alter_column('member_id',
               existing_type=sa.INTEGER(),
               nullable=True)
        batch_op.create_foreign_key(batch_op.f('fk_oauth_authorization_code_finance_user_id_finance_user'), 'finance_user', ['finance_user_id'], ['id'])

    with op.batch_alter_table('oauth_token', schema=None) as batch_op:
        batch_op.add_column(sa.Column('finance_user_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_oauth_token_finance_user_id_finance_user'), 'finance_user', ['finance_user_id'], ['id'])


def downgrade() -> None:
    # finance users' codes and tokens go with them
    op.execute("DELETE FROM oauth_authorization_code WHERE finance_user_id IS NOT NULL")
    op.execute("DELETE FROM oauth_token WHERE finance_user_id IS NOT NULL")
    with op.batch_alter_table('oauth_token', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_oauth_token_finance_user_id_finance_user'), type_='foreignkey')
        batch_op.drop_column('finance_user_id')

    with op.batch_alter_table('oauth_authorization_code', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_oauth_authorization_code_finance_user_id_finance_user'), type_='foreignkey')
        batch_op.alter_column('member_id',
               existing_type=sa.INTEGER(),
               nullable=False)
        batch_op.drop_column('finance_user_id')

    op.drop_table('finance_user')
