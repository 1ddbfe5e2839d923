"""``coalition ledger check``: the catalog's invariants, in the ledger check's snapshot.

* every voucher was paid by its own burn: a ``burn`` entry at the voucher's partner, of the
  voucher's points, for its member;
* a reward's units sold are its vouchers, and never more than its stock;
* a refunded voucher's refund is a burn reversal of that burn, of at most its points; a
  voucher not refunded has no refund;
* a used voucher says when it was used.
"""

from __future__ import annotations

from sqlalchemy import Connection, and_, func, or_, select
from sqlalchemy.orm import aliased

from coalition.catalog.models import Reward, Voucher
from coalition.ledger.check import CheckResult, _violations
from coalition.ledger.models import Entry

_v = Voucher.__table__.c
_r = Reward.__table__.c


def vouchers_paid(conn: Connection, limit: int) -> CheckResult:
    burn = aliased(Entry.__table__)
    refund = aliased(Entry.__table__)
    result = CheckResult(
        "vouchers_paid", "every voucher was paid by its own burn at the fulfilling partner "
        "(refunded by a reversal of it), and no reward sold more than its stock",
        {"vouchers": conn.scalar(select(func.count()).select_from(Voucher.__table__)) or 0,
         "rewards": conn.scalar(select(func.count()).select_from(Reward.__table__)) or 0})
    unpaid = (
        select(_v.id.label("voucher_id"), _v.points, burn.c.kind, burn.c.points.label("paid"),
               burn.c.partner_id, burn.c.member_id)
        .select_from(Voucher.__table__.outerjoin(burn, burn.c.id == _v.entry_id))
        .where(or_(burn.c.id.is_(None), burn.c.kind != "burn", burn.c.points != _v.points,
                   burn.c.partner_id != _v.partner_id, burn.c.member_id != _v.member_id)))
    count, rows = _violations(conn, unpaid, [_v.id], limit)
    result.found(count, [{"problem": "voucher not paid by its own burn", **r} for r in rows])
    refunds = (
        select(_v.id.label("voucher_id"), _v.status, _v.points, _v.refund_entry_id,
               refund.c.kind, refund.c.points.label("refunded"))
        .select_from(Voucher.__table__.outerjoin(refund, refund.c.id == _v.refund_entry_id))
        .where(or_(
            and_(_v.refund_entry_id.is_not(None),
                 or_(_v.status != "refunded", refund.c.kind != "burn_reversal",
                     refund.c.reference_id != _v.entry_id, refund.c.points > _v.points)),
            and_(_v.status == "used", _v.used_at.is_(None)))))
    count, rows = _violations(conn, refunds, [_v.id], limit)
    result.found(count, [{"problem": "refund or use of a voucher out of order", **r}
                         for r in rows])
    issued = (select(_v.reward_id, func.count().label("vouchers"))
              .group_by(_v.reward_id).subquery())
    oversold = (
        select(_r.id.label("reward_id"), _r.sold, _r.stock,
               func.coalesce(issued.c.vouchers, 0).label("vouchers"))
        .select_from(Reward.__table__.outerjoin(issued, issued.c.reward_id == _r.id))
        .where(or_(_r.sold != func.coalesce(issued.c.vouchers, 0),
                   and_(_r.stock.is_not(None), _r.sold > _r.stock))))
    count, rows = _violations(conn, oversold, [_r.id], limit)
    result.found(count, [{"problem": "units sold disagree with vouchers or stock", **r}
                         for r in rows])
    return result
