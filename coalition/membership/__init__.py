"""Paid membership: a club or VIP plan bought for a period with points or money."""
