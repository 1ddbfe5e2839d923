"""oauth edges: client generations, rotated refresh tokens

Revision ID: 0011_oauth_edges
Revises: 0010_money_model
Create Date: 2026-12-04 21:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import coalition.db

revision = '0011_oauth_edges'
down_revision = '0010_money_model'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A token is valid only while its client_generation equals its client's generation,
    # which a rotation or revocation bumps; tokens issued before this migration are of
    # generation 0, like their clients.
    op.add_column('oauth_client', sa.Column('generation', sa.Integer(), server_default='0',
                                            nullable=False))
    op.add_column('oauth_token', sa.Column('client_generation', sa.Integer(),
                                           server_default='0', nullable=False))
    op.add_column('oauth_token', sa.Column('rotated_at',
                                           coalition.db.UTCDateTime(timezone=True),
                                           nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('oauth_token') as batch:
        batch.drop_column('rotated_at')
        batch.drop_column('client_generation')
    with op.batch_alter_table('oauth_client') as batch:
        batch.drop_column('generation')
