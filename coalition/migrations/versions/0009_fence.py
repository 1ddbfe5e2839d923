"""fence

Revision ID: 0009_fence
Revises: 0008_audit
Create Date: 2026-12-04 21:40:00.000000
"""

from __future__ import annotations

from alembic import op

revision = '0009_fence'
down_revision = '0008_audit'
branch_labels = None
depends_on = None


# The settlement fence (coalition/ledger/fence.py) on PostgreSQL: a booking takes the
# advisory lock shared and then reads the end of the latest closed period, in one round
# trip. The function is VOLATILE so that its second statement takes a fresh snapshot: a
# close that committed while the lock was waited for is seen.
def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE FUNCTION coalition_fence(fence_key bigint) RETURNS timestamptz
        LANGUAGE sql VOLATILE AS $$
            SELECT pg_advisory_xact_lock_shared(fence_key);
            SELECT max(period_end) FROM settlement_run WHERE status = 'closed';
        $$
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP FUNCTION IF EXISTS coalition_fence(bigint)")
