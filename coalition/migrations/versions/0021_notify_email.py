"""members' e-mails: the outbox of notification e-mails, their attempts, and every choice
a member made about e-mails

Revision ID: 0021_notify_email
Revises: 0020_membership
Create Date: 2026-12-05 03:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import coalition.db

revision = '0021_notify_email'
down_revision = '0020_membership'
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')

# A member's choices about e-mails are a record of consent: the database itself refuses to
# change or remove one (a new choice is a new row).
CONSENT_TABLE = 'notification_consent'


def _guard_consents() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(
            """
            CREATE FUNCTION coalition_consent_is_append_only() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'the record of consents is append-only: % on % refused',
                    TG_OP, TG_TABLE_NAME USING ERRCODE = 'restrict_violation';
            END $$
            """
        )
        op.execute(
            f"CREATE TRIGGER {CONSENT_TABLE}_append_only BEFORE UPDATE OR DELETE ON "
            f"{CONSENT_TABLE} FOR EACH ROW EXECUTE FUNCTION coalition_consent_is_append_only()"
        )
    else:
        for action in ('UPDATE', 'DELETE'):
            op.execute(
                f"CREATE TRIGGER {CONSENT_TABLE}_no_{action.lower()} BEFORE {action} ON "
                f"{CONSENT_TABLE} BEGIN SELECT RAISE(ABORT, 'the record of consents is "
                f"append-only'); END"
            )


def _unguard_consents() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(f"DROP TRIGGER IF EXISTS {CONSENT_TABLE}_append_only ON {CONSENT_TABLE}")
        op.execute("DROP FUNCTION IF EXISTS coalition_consent_is_append_only()")
    else:
        for action in ('update', 'delete'):
            op.execute(f"DROP TRIGGER IF EXISTS {CONSENT_TABLE}_no_{action}")


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
    _guard_consents()

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
    _unguard_consents()
    with op.batch_alter_table('notification_consent', schema=None) as batch_op:
        batch_op.drop_index('ix_notification_consent_member_id_choice_id')
    op.drop_table('notification_consent')
