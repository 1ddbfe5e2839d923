"""foundation: partners, rate cards, program rules, oauth clients and tokens

Revision ID: 0001_foundation
Revises: 
Create Date: 2026-11-22 18:15:23.279561
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import coalition.db

revision = '0001_foundation'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('partner',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('code', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("kind IN ('merchant', 'charity')", name=op.f('ck_partner_kind')),
    sa.CheckConstraint("status IN ('active', 'suspended')", name=op.f('ck_partner_status')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_partner')),
    sa.UniqueConstraint('code', name=op.f('uq_partner_code'))
    )
    op.create_table('program_rules',
    sa.Column('version', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('rules', sa.JSON(), nullable=False),
    sa.Column('published_at', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('published_by', sa.String(length=64), nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('version', name=op.f('pk_program_rules'))
    )
    op.create_table('oauth_client',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('secret_hash', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('partner_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('scope', sa.Text(), nullable=False),
    sa.Column('created_at', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('secret_rotated_at', coalition.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', coalition.db.UTCDateTime(timezone=True), nullable=True),
    sa.CheckConstraint("kind IN ('operator', 'partner')", name=op.f('ck_oauth_client_kind')),
    sa.ForeignKeyConstraint(['partner_id'], ['partner.id'], name=op.f('fk_oauth_client_partner_id_partner')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_oauth_client')),
    sa.UniqueConstraint('client_id', name=op.f('uq_oauth_client_client_id'))
    )
    with op.batch_alter_table('oauth_client', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_oauth_client_partner_id'), ['partner_id'], unique=False)

    op.create_table('rate_card',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('partner_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('valid_from', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('earn_rate', coalition.db.ExactDecimal(), nullable=False),
    sa.Column('issue_price', coalition.db.ExactDecimal(), nullable=False),
    sa.Column('redeem_rate', coalition.db.ExactDecimal(), nullable=False),
    sa.Column('created_at', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('earn_rate >= 0', name=op.f('ck_rate_card_earn_rate')),
    sa.CheckConstraint('issue_price >= 0', name=op.f('ck_rate_card_issue_price')),
    sa.CheckConstraint('redeem_rate >= 0', name=op.f('ck_rate_card_redeem_rate')),
    sa.ForeignKeyConstraint(['partner_id'], ['partner.id'], name=op.f('fk_rate_card_partner_id_partner')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_rate_card')),
    sa.UniqueConstraint('partner_id', 'valid_from', name=op.f('uq_rate_card_partner_id_valid_from'))
    )
    with op.batch_alter_table('rate_card', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rate_card_partner_id'), ['partner_id'], unique=False)

    op.create_table('oauth_token',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('client_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('access_token_hash', sa.String(length=64), nullable=False),
    sa.Column('refresh_token_hash', sa.String(length=64), nullable=True),
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('partner_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('scope', sa.Text(), nullable=False),
    sa.Column('issued_at', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_in', sa.Integer(), nullable=False),
    sa.Column('revoked_at', coalition.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['client_pk'], ['oauth_client.id'], name=op.f('fk_oauth_token_client_pk_oauth_client')),
    sa.ForeignKeyConstraint(['partner_id'], ['partner.id'], name=op.f('fk_oauth_token_partner_id_partner')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_oauth_token')),
    sa.UniqueConstraint('access_token_hash', name=op.f('uq_oauth_token_access_token_hash')),
    sa.UniqueConstraint('refresh_token_hash', name=op.f('uq_oauth_token_refresh_token_hash'))
    )
    with op.batch_alter_table('oauth_token', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_oauth_token_client_pk'), ['client_pk'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('oauth_token', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_oauth_token_client_pk'))

    op.drop_table('oauth_token')
    with op.batch_alter_table('rate_card', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rate_card_partner_id'))

    op.drop_table('rate_card')
    with op.batch_alter_table('oauth_client', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_oauth_client_partner_id'))

    op.drop_table('oauth_client')
    op.drop_table('program_rules')
    op.drop_table('partner')
