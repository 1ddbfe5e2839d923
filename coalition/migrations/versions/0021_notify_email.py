"""members' e-mails: the outbox of notification e-mails, their attempts, and every choice
a member made about e-mails

Revision ID: 0021_notify_email
Revises: 0017_notifications
Create Date: 2026-12-05 03:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import coalition.db

revision = '0021_notify_email'
down_revision = '0017_notifications'
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table('notification_consent',
    sa.Column('id', BIG_ID, nullable=False),
    sa.Column('member_id', BIG_ID, nullable=False),
    sa.Column('choice', sa.String(length=32), nullable=False),
    sa.Column('granted', sa.Boolean(), nullable=False),
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.Column('at', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("choice IN ('email_offers', 'email_expiry', 'email_tier', 'email_account')", name=op.f('ck_notification_consent_choice')),
    sa.CheckConstraint("source IN ('api', 'page', 'unsubscribe_link', 'one_click')", name=op.f('ck_notification_consent_source')),
    sa.ForeignKeyConstraint(['member_id'], ['member.id'], name=op.f('fk_notification_consent_member_id_member')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notification_consent'))
    )
    with op.batch_alter_table('notification_consent', schema=None) as batch_op:
        batch_op.create_index('ix_notification_consent_member_id_choice_id', ['member_id', 'choice', 'id'], unique=False)

    op.create_table('notification_email',
    sa.Column('id', BIG_ID, nullable=False),
    sa.Column('notification_id', BIG_ID, nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('created_at', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('next_attempt_at', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('give_up_at', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('sent_at', coalition.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('reason', sa.String(length=32), nullable=True),
    sa.CheckConstraint("status IN ('pending', 'sent', 'skipped', 'failed')", name=op.f('ck_notification_email_status')),
    sa.ForeignKeyConstraint(['notification_id'], ['notification.id'], name=op.f('fk_notification_email_notification_id_notification')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notification_email')),
    sa.UniqueConstraint('notification_id', name=op.f('uq_notification_email_notification_id'))
    )
    with op.batch_alter_table('notification_email', schema=None) as batch_op:
        batch_op.create_index('ix_notification_email_due', ['status', 'next_attempt_at'], unique=False)

    op.create_table('notification_email_attempt',
    sa.Column('id', BIG_ID, nullable=False),
    sa.Column('email_id', BIG_ID, nullable=False),
    sa.Column('started_at', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('duration_ms', sa.Integer(), nullable=False),
    sa.Column('error', sa.String(length=500), nullable=True),
    sa.ForeignKeyConstraint(['email_id'], ['notification_email.id'], name=op.f('fk_notification_email_attempt_email_id_notification_email')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notification_email_attempt'))
    )
    with op.batch_alter_table('notification_email_attempt', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_notification_email_attempt_email_id'), ['email_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('notification_email_attempt', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_notification_email_attempt_email_id'))
    op.drop_table('notification_email_attempt')
    with op.batch_alter_table('notification_email', schema=None) as batch_op:
        batch_op.drop_index('ix_notification_email_due')
    op.drop_table('notification_email')
    with op.batch_alter_table('notification_consent', schema=None) as batch_op:
        batch_op.drop_index('ix_notification_consent_member_id_choice_id')
    op.drop_table('notification_consent')
