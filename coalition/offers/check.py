"""The ledger check promotions add (``coalition ledger check``): each promotion's issued
points are the points of its awards less what reversals of the earns gave back (each
``⌊award × reversed / earned⌋``), never past its cap, and each earn's awards are what its
funders' postings issued."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Connection, cast, func, literal, select

from coalition.ledger.check import CheckResult
from coalition.ledger.models import Entry, Posting
from coalition.offers.earning import FUNDED
from coalition.offers.models import Offer, OfferAward

_O = Offer.__table__.c
_W = OfferAward.__table__.c
_P = Posting.__table__.c
_E = Entry.__table__.c


def promotion_caps(conn: Connection, limit: int) -> CheckResult:
    # net of reversals: each reversal gave back ⌊award × reversed / earned⌋ of an award
    back = (select(_E.reference_id.label("earn"),
                   cast(func.sum(_E.points), BigInteger).label("points"))
            .where(_E.kind == "earn_reversal").group_by(_E.reference_id).subquery())
    earned = Entry.__table__.alias("earned")
    awarded = (select(_W.offer_id, func.sum(
                   _W.points - func.coalesce(_W.points * back.c.points // earned.c.points, 0))
                   .label("points"))
               .select_from(OfferAward.__table__
                            .join(earned, earned.c.id == _W.entry_id)
                            .outerjoin(back, back.c.earn == _W.entry_id))
               .group_by(_W.offer_id).subquery())
    total = func.coalesce(awarded.c.points, 0)
    offers = conn.execute(
        select(_O.id, _O.cap_points, _O.issued_points, total)
        .select_from(Offer.__table__.outerjoin(awarded, awarded.c.offer_id == _O.id))
        .where((_O.issued_points != total) | (_O.issued_points > _O.cap_points))
        .order_by(_O.id)).all()
    result = CheckResult("promotion_caps",
                         "each promotion's issued points are its awards' net of "
                         "reversals and within its cap; each earn's awards are its "
                         "promotion:funded postings",
                         {"offers": int(conn.scalar(select(func.count()).select_from(
                             Offer.__table__)) or 0),
                          "awards": int(conn.scalar(select(func.count()).select_from(
                              OfferAward.__table__)) or 0)})
    found: list[dict[str, Any]] = [
        {"problem": "issued beyond the cap" if issued > cap
         else "issued points != the points of its awards",
         "offer_id": offer_id, "cap_points": cap, "issued_points": issued,
         "awarded": int(awards)}
        for offer_id, cap, issued, awards in offers]
    by_entry = (select(_W.entry_id, func.sum(_W.points).label("awarded"))
                .group_by(_W.entry_id).subquery())
    funded = (select(_P.entry_id, (-func.sum(_P.points)).label("funded"))
              .where(_P.account == FUNDED).group_by(_P.entry_id).subquery())
    # awards are only on earns (positive funding); a reversal's postings give points back
    missing = func.coalesce(funded.c.funded, 0)
    for entry_id, awards, posted in conn.execute(
            select(by_entry.c.entry_id, by_entry.c.awarded, missing)
            .select_from(by_entry.outerjoin(funded, funded.c.entry_id == by_entry.c.entry_id))
            .where(by_entry.c.awarded != missing)
            .union_all(select(funded.c.entry_id, literal(0), funded.c.funded)
                       .select_from(funded.outerjoin(
                           by_entry, by_entry.c.entry_id == funded.c.entry_id))
                       .where(funded.c.funded > 0, by_entry.c.entry_id.is_(None)))):
        found.append({"problem": "an earn's awards != its promotion:funded postings",
                      "entry_id": entry_id, "awarded": int(awards), "funded": int(posted)})
    result.found(len(found), found[:limit])
    return result
