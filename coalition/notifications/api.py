"""``/v1/me/notifications`` and ``/v1/me/preferences``: a member's inbox and which
e-mails they want (member tokens only)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from coalition.http.guard import protected
from coalition.member.api import MEMBER_KINDS, member_id
from coalition.notifications import inbox, preferences
from coalition.notifications.schemas import (
    MarkedSchema,
    MarkReadSchema,
    NotificationPageSchema,
    NotificationQueryArgsSchema,
    PreferencesRequestSchema,
    PreferencesSchema,
)

blp = Blueprint("notifications", __name__, url_prefix="/v1",
                description="Members: their inbox and e-mail choices")


@blp.route("/me/notifications")
class MeNotifications(MethodView):
    @protected("member", kinds=MEMBER_KINDS)
    @blp.arguments(NotificationQueryArgsSchema(), location="query")
    @blp.response(200, NotificationPageSchema)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """Your notifications, newest first, and how many are unread."""
        return inbox.listing(member_id(), args)


@blp.route("/me/notifications/read")
class MeNotificationsRead(MethodView):
    @protected("member", kinds=MEMBER_KINDS)
    @blp.arguments(MarkReadSchema())
    @blp.response(200, MarkedSchema)
    def post(self, data: dict[str, Any]) -> dict[str, Any]:
        """Mark notifications read: up to one (and every older one), or those named."""
        return inbox.mark_read(member_id(), up_to_id=data.get("up_to_id"),
                               ids=data.get("ids"))


@blp.route("/me/preferences")
class MePreferences(MethodView):
    @protected("member", kinds=MEMBER_KINDS)
    @blp.response(200, PreferencesSchema)
    def get(self) -> dict[str, Any]:
        """Which e-mails you get, and when you chose."""
        return preferences.preferences(member_id())

    @protected("member", kinds=MEMBER_KINDS)
    @blp.arguments(PreferencesRequestSchema())
    @blp.response(200, PreferencesSchema)
    @blp.alt_response(409, description="member_closed: the account is closed or merged")
    def put(self, data: dict[str, Any]) -> dict[str, Any]:
        """Choose which e-mails you get; the choices not given stay as they are.

        `email_offers` is marketing: off until you turn it on. The others are about your
        own account (points expiring, tier changes, redemptions, memberships, claims): on
        until you turn them off. Every choice is recorded with when and how it was made."""
        return preferences.set_preferences(member_id(), data)
