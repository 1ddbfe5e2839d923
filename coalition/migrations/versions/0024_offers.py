"""offers and promotions: the promotions, their partners, funders and cap, members'
activations, and the points each earn got from them

Revision ID: 0024_offers
Revises: 0023_partner_ops_more
Create Date: 2026-12-05 03:40:00
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

import coalition.db

revision = '0024_offers'
down_revision = '0023_partner_ops_more'
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')

#: a promotion's funder issues its share of an earn's points from this account
_PROMOTION = 'promotion:funded'
_CLAUSE = re.compile(r"CONSTRAINT ck_posting_account CHECK \((account IN \([^)]*\))\)")


def _allowed(bind: sa.Connection) -> tuple[str, list[str]]:
    """The posting account check as it stands (another migration may have widened it
    before this one): its clause as stored, and the accounts it allows."""
    if bind.dialect.name == 'postgresql':
        clause = bind.exec_driver_sql(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conname = 'ck_posting_account'").scalar_one()
    else:
        table = bind.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'posting'"
        ).scalar_one()
        match = _CLAUSE.search(table)
        if match is None:
            raise RuntimeError("posting: no account check to widen")
        clause = match.group(1)
    return clause, re.findall(r"'([^']+)'", clause)


def _set_accounts(add: bool) -> None:
    """Allow (or no longer allow) the promotion account, keeping every other account the
    check allows. PostgreSQL replaces the constraint; SQLite's text is changed in the
    schema itself, as 0020_membership does (a rebuild of the journal's table would drop
    its append-only triggers), which leaves every stored row valid."""
    bind = op.get_bind()
    clause, accounts = _allowed(bind)
    accounts = [a for a in accounts if a != _PROMOTION] + ([_PROMOTION] if add else [])
    new = f"account IN ({', '.join(repr(a) for a in accounts)})"
    if bind.dialect.name == 'postgresql':
        op.drop_constraint(op.f('ck_posting_account'), 'posting', type_='check')
        op.create_check_constraint(op.f('ck_posting_account'), 'posting', new)
        return
    table = bind.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'posting'").scalar_one()
    version = bind.exec_driver_sql("PRAGMA schema_version").scalar_one()
    bind.exec_driver_sql("PRAGMA writable_schema = ON")
    bind.exec_driver_sql("UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = ?",
                         (table.replace(clause, new, 1), 'posting'))
    bind.exec_driver_sql(f"PRAGMA schema_version = {int(version) + 1}")
    bind.exec_driver_sql("PRAGMA writable_schema = OFF")


def upgrade() -> None:
    op.create_table('offer',
    sa.Column('id', BIG_ID, nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('rule', sa.String(length=16), nullable=False),
    sa.Column('multiplier', coalition.db.ExactDecimal(), nullable=True),
    sa.Column('bonus_points', sa.BigInteger(), nullable=True),
    sa.Column('valid_from', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('valid_to', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('tiers', sa.JSON(), nullable=True),
    sa.Column('new_member_days', sa.Integer(), nullable=True),
    sa.Column('opt_in', sa.Boolean(), nullable=False),
    sa.Column('cap_points', sa.BigInteger(), nullable=False),
    sa.Column('issued_points', sa.BigInteger(), nullable=False),
    sa.Column('published_by', BIG_ID, nullable=True),
    sa.Column('created_at', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("(rule = 'multiplier' AND multiplier > 1 AND bonus_points IS NULL) OR (rule = 'bonus' AND bonus_points > 0 AND multiplier IS NULL)", name=op.f('ck_offer_rule_value')),
    sa.CheckConstraint("rule IN ('multiplier', 'bonus')", name=op.f('ck_offer_rule')),
    sa.CheckConstraint('cap_points > 0', name=op.f('ck_offer_cap_points')),
    sa.CheckConstraint('issued_points >= 0 AND issued_points <= cap_points', name=op.f('ck_offer_issued_points')),
    sa.CheckConstraint('new_member_days IS NULL OR new_member_days > 0', name=op.f('ck_offer_new_member_days')),
    sa.CheckConstraint('valid_from < valid_to', name=op.f('ck_offer_period')),
    sa.ForeignKeyConstraint(['published_by'], ['partner.id'], name=op.f('fk_offer_published_by_partner')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_offer'))
    )
    op.create_table('offer_activation',
    sa.Column('offer_id', BIG_ID, nullable=False),
    sa.Column('member_id', BIG_ID, nullable=False),
    sa.Column('activated_at', coalition.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['member_id'], ['member.id'], name=op.f('fk_offer_activation_member_id_member')),
    sa.ForeignKeyConstraint(['offer_id'], ['offer.id'], name=op.f('fk_offer_activation_offer_id_offer')),
    sa.PrimaryKeyConstraint('offer_id', 'member_id', name=op.f('pk_offer_activation'))
    )
    op.create_table('offer_funder',
    sa.Column('offer_id', BIG_ID, nullable=False),
    sa.Column('position', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('partner_id', BIG_ID, nullable=True),
    sa.Column('share', coalition.db.ExactDecimal(), nullable=False),
    sa.CheckConstraint('share > 0 AND share <= 1', name=op.f('ck_offer_funder_share')),
    sa.ForeignKeyConstraint(['offer_id'], ['offer.id'], name=op.f('fk_offer_funder_offer_id_offer')),
    sa.ForeignKeyConstraint(['partner_id'], ['partner.id'], name=op.f('fk_offer_funder_partner_id_partner')),
    sa.PrimaryKeyConstraint('offer_id', 'position', name=op.f('pk_offer_funder'))
    )
    op.create_table('offer_partner',
    sa.Column('offer_id', BIG_ID, nullable=False),
    sa.Column('partner_id', BIG_ID, nullable=False),
    sa.ForeignKeyConstraint(['offer_id'], ['offer.id'], name=op.f('fk_offer_partner_offer_id_offer')),
    sa.ForeignKeyConstraint(['partner_id'], ['partner.id'], name=op.f('fk_offer_partner_partner_id_partner')),
    sa.PrimaryKeyConstraint('offer_id', 'partner_id', name=op.f('pk_offer_partner'))
    )
    op.create_table('offer_award',
    sa.Column('entry_id', BIG_ID, nullable=False),
    sa.Column('offer_id', BIG_ID, nullable=False),
    sa.Column('points', sa.BigInteger(), nullable=False),
    sa.CheckConstraint('points > 0', name=op.f('ck_offer_award_points')),
    sa.ForeignKeyConstraint(['entry_id'], ['entry.id'], name=op.f('fk_offer_award_entry_id_entry')),
    sa.ForeignKeyConstraint(['offer_id'], ['offer.id'], name=op.f('fk_offer_award_offer_id_offer')),
    sa.PrimaryKeyConstraint('entry_id', 'offer_id', name=op.f('pk_offer_award'))
    )
    with op.batch_alter_table('offer_award', schema=None) as batch_op:
        batch_op.create_index('ix_offer_award_offer_id', ['offer_id'], unique=False)
    _set_accounts(add=True)


def downgrade() -> None:
    if op.get_bind().exec_driver_sql(
            f"SELECT 1 FROM posting WHERE account = '{_PROMOTION}' LIMIT 1").first():
        raise RuntimeError("promotion postings exist: the journal keeps them")
    _set_accounts(add=False)
    with op.batch_alter_table('offer_award', schema=None) as batch_op:
        batch_op.drop_index('ix_offer_award_offer_id')
    op.drop_table('offer_award')
    op.drop_table('offer_partner')
    op.drop_table('offer_funder')
    op.drop_table('offer_activation')
    op.drop_table('offer')
