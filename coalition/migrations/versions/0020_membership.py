"""paid membership: plans bought for a period, the entry kind and account that pay for them

Revision ID: 0020_membership
Revises: 0018_catalog
Create Date: 2026-12-05 04:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import coalition.db

revision = '0020_membership'
down_revision = '0018_catalog'
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')

# (table, constraint, the values it allows before, the value added)
_WIDENED = (
    ('entry', 'ck_entry_kind', "kind", ("earn", "burn", "earn_reversal", "burn_reversal",
     "hold", "hold_capture", "hold_void", "release", "expiry", "transfer", "donation",
     "forfeiture", "bonus", "adjustment", "merge"), "membership"),
    ('posting', 'ck_posting_account', "account", ("member:available", "member:pending",
     "member:held", "partner:issued", "partner:redeemed", "coalition:breakage",
     "coalition:forfeited", "coalition:funded"), "coalition:membership"),
)


def _check(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _set_checks(widen: bool) -> None:
    """Allow (or no longer allow) the new entry kind and account.

    PostgreSQL replaces the constraints. SQLite cannot alter a CHECK, and rebuilding the
    journal's tables would drop their append-only triggers and trip the foreign keys that
    point at them, so the constraint's text is changed in the schema itself, as SQLite
    documents for a change that leaves every stored row valid (the rows a narrowing would
    refuse are removed first by the downgrade).
    """
    bind = op.get_bind()
    for table, name, column, before, added in _WIDENED:
        old, new = _check(column, before), _check(column, (*before, added))
        if not widen:
            old, new = new, old
        if bind.dialect.name == 'postgresql':
            op.drop_constraint(op.f(name), table, type_='check')
            op.create_check_constraint(op.f(name), table, new)
            continue
        sql = bind.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).scalar_one()
        if old not in sql:
            raise RuntimeError(f"{table}: constraint {name} is not {old!r}")
        version = bind.exec_driver_sql("PRAGMA schema_version").scalar_one()
        bind.exec_driver_sql("PRAGMA writable_schema = ON")
        bind.exec_driver_sql(
            "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = ?",
            (sql.replace(old, new, 1), table))
        bind.exec_driver_sql(f"PRAGMA schema_version = {int(version) + 1}")
        bind.exec_driver_sql("PRAGMA writable_schema = OFF")


def upgrade() -> None:
    _set_checks(widen=True)
    op.create_table('membership',
    sa.Column('id', BIG_ID, nullable=False),
    sa.Column('member_id', BIG_ID, nullable=False),
    sa.Column('plan', sa.String(length=32), nullable=False),
    sa.Column('plan_name', sa.String(length=64), nullable=False),
    sa.Column('multiplier', coalition.db.ExactDecimal(precision=8, scale=4), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('auto_renew', sa.Boolean(), nullable=False),
    sa.Column('starts_at', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('ends_at', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('period_months', sa.Integer(), nullable=False),
    sa.Column('paid_with', sa.String(length=8), nullable=False),
    sa.Column('points', sa.BigInteger(), nullable=False),
    sa.Column('price_amount', coalition.db.ExactDecimal(precision=24, scale=8), nullable=True),
    sa.Column('price_currency', sa.String(length=3), nullable=True),
    sa.Column('partner_id', BIG_ID, nullable=True),
    sa.Column('entry_id', BIG_ID, nullable=False),
    sa.Column('renews_id', BIG_ID, nullable=True),
    sa.Column('created_at', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('cancelled_at', coalition.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('ended_at', coalition.db.UTCDateTime(timezone=True), nullable=True),
    sa.CheckConstraint("(paid_with = 'points' AND points > 0) OR (paid_with = 'money' AND points = 0 AND price_amount > 0 AND price_currency IS NOT NULL AND partner_id IS NOT NULL)", name=op.f('ck_membership_price')),
    sa.CheckConstraint("ends_at > starts_at", name=op.f('ck_membership_period')),
    sa.CheckConstraint("paid_with IN ('points', 'money')", name=op.f('ck_membership_paid_with')),
    sa.CheckConstraint("status IN ('active', 'cancelled', 'renewed', 'lapsed', 'ended')", name=op.f('ck_membership_status')),
    sa.ForeignKeyConstraint(['entry_id'], ['entry.id'], name=op.f('fk_membership_entry_id_entry')),
    sa.ForeignKeyConstraint(['member_id'], ['member.id'], name=op.f('fk_membership_member_id_member')),
    sa.ForeignKeyConstraint(['partner_id'], ['partner.id'], name=op.f('fk_membership_partner_id_partner')),
    sa.ForeignKeyConstraint(['renews_id'], ['membership.id'], name=op.f('fk_membership_renews_id_membership')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_membership')),
    sa.UniqueConstraint('entry_id', name=op.f('uq_membership_entry_id')),
    sa.UniqueConstraint('renews_id', name=op.f('uq_membership_renews_id'))
    )
    with op.batch_alter_table('membership', schema=None) as batch_op:
        batch_op.create_index('ix_membership_member_id_starts_at', ['member_id', 'starts_at'], unique=False)
        batch_op.create_index('ix_membership_status_ends_at', ['status', 'ends_at'], unique=False)
        batch_op.create_index('uq_membership_current', ['member_id'], unique=True, postgresql_where=sa.text("status IN ('active', 'cancelled')"), sqlite_where=sa.text("status IN ('active', 'cancelled')"))


def downgrade() -> None:
    with op.batch_alter_table('membership', schema=None) as batch_op:
        batch_op.drop_index('uq_membership_current', postgresql_where=sa.text("status IN ('active', 'cancelled')"), sqlite_where=sa.text("status IN ('active', 'cancelled')"))
        batch_op.drop_index('ix_membership_status_ends_at')
        batch_op.drop_index('ix_membership_member_id_starts_at')
    op.drop_table('membership')
    # the journal keeps what it booked: a database with membership entries cannot go back
    bind = op.get_bind()
    booked = bind.exec_driver_sql(
        "SELECT count(*) FROM entry WHERE kind = 'membership'").scalar_one()
    if booked:
        raise RuntimeError(f"{booked} membership entries in the journal: the journal is "
                           "append-only, so this database cannot be downgraded")
    _set_checks(widen=False)
