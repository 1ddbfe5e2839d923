"""member sign-in

Revision ID: 0003_member_sign_in
Revises: 0002_ledger
Create Date: 2026-11-22 18:30:16.174614
"""

from __future__ import annotations

from typing import Literal

import sqlalchemy as sa
from alembic import op

import coalition.db

revision = '0003_member_sign_in'
down_revision = '0002_ledger'
branch_labels = None
depends_on = None


def _recreate() -> Literal['always', 'auto']:
    return 'always' if op.get_bind().dialect.name == 'sqlite' else 'auto'


def upgrade() -> None:
    op.create_table('oauth_authorization_code',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('code_hash', sa.String(length=64), nullable=False),
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('redirect_uri', sa.Text(), nullable=False),
    sa.Column('scope', sa.Text(), nullable=False),
    sa.Column('code_challenge', sa.String(length=128), nullable=False),
    sa.Column('code_challenge_method', sa.String(length=8), nullable=False),
    sa.Column('issued_at', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('used_at', coalition.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['member_id'], ['member.id'], name=op.f('fk_oauth_authorization_code_member_id_member')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_oauth_authorization_code')),
    sa.UniqueConstraint('code_hash', name=op.f('uq_oauth_authorization_code_code_hash'))
    )
    with op.batch_alter_table('oauth_authorization_code', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_oauth_authorization_code_member_id'), ['member_id'], unique=False)

    with op.batch_alter_table('member', schema=None) as batch_op:
        batch_op.add_column(sa.Column('activation_code_hash', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('activated_at', coalition.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('password_hash', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('failed_sign_ins', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('locked_until', coalition.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('birthday_bonus_year', sa.Integer(), nullable=True))

    # public clients (member apps) have no secret; SQLite rebuilds the table for this, so
    # the kind constraint is dropped and recreated explicitly on both databases
    with op.batch_alter_table('oauth_client', schema=None, recreate=_recreate()) as batch_op:
        batch_op.add_column(sa.Column('redirect_uris', sa.Text(), nullable=True))
        batch_op.alter_column('secret_hash',
               existing_type=sa.VARCHAR(length=64),
               nullable=True)
        batch_op.drop_constraint(op.f('ck_oauth_client_kind'), type_='check')
        batch_op.create_check_constraint(
            op.f('ck_oauth_client_kind'), "kind IN ('operator', 'partner', 'public')")
        batch_op.create_check_constraint(
            op.f('ck_oauth_client_secret'), "kind = 'public' OR secret_hash IS NOT NULL")

    with op.batch_alter_table('oauth_token', schema=None) as batch_op:
        batch_op.add_column(sa.Column('member_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True))
        batch_op.create_index(batch_op.f('ix_oauth_token_member_id'), ['member_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_oauth_token_member_id_member'), 'member', ['member_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('oauth_token', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_oauth_token_member_id_member'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_oauth_token_member_id'))
        batch_op.drop_column('member_id')

    op.execute("DELETE FROM oauth_token WHERE client_pk IN "
               "(SELECT id FROM oauth_client WHERE kind = 'public')")
    op.execute("DELETE FROM oauth_client WHERE kind = 'public'")
    with op.batch_alter_table('oauth_client', schema=None, recreate=_recreate()) as batch_op:
        batch_op.drop_constraint(op.f('ck_oauth_client_secret'), type_='check')
        batch_op.drop_constraint(op.f('ck_oauth_client_kind'), type_='check')
        batch_op.alter_column('secret_hash',
               existing_type=sa.VARCHAR(length=64),
               nullable=False)
        batch_op.drop_column('redirect_uris')
        batch_op.create_check_constraint(
            op.f('ck_oauth_client_kind'), "kind IN ('operator', 'partner')")

    with op.batch_alter_table('member', schema=None) as batch_op:
        batch_op.drop_column('birthday_bonus_year')
        batch_op.drop_column('locked_until')
        batch_op.drop_column('failed_sign_ins')
        batch_op.drop_column('password_hash')
        batch_op.drop_column('activated_at')
        batch_op.drop_column('activation_code_hash')

    with op.batch_alter_table('oauth_authorization_code', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_oauth_authorization_code_member_id'))

    op.drop_table('oauth_authorization_code')
