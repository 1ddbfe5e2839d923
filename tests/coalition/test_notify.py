"""A member is told of one event once, however often it is reported."""

from __future__ import annotations

from flask import Flask
from sqlalchemy import func, select

from coalition.db import UnitOfWork
from coalition.notifications.models import Notification
from coalition.notifications.service import notify
from tests.factories.member_records import member_id
from tests.factories.partner_api import enrol, publish


def test_one_notification_per_member_and_event(app: Flask, client, make_partner,
                                               operator_headers) -> None:
    publish(client, operator_headers)
    _, headers = make_partner("acme")
    first = member_id(enrol(client, headers, "c1"))
    second = member_id(enrol(client, headers, "c2"))
    written = []
    for member in (first, first, second):
        with UnitOfWork() as uow:
            written.append(notify(uow.session, member, "redemption", "voucher:7",
                                  {"points": 500}))
            uow.commit()
    assert written == [True, False, True]
    with UnitOfWork(readonly=True) as uow:
        rows = uow.session.execute(select(Notification.member_id, func.count())
                                   .group_by(Notification.member_id)).all()
    assert sorted(rows) == sorted([(first, 1), (second, 1)])
