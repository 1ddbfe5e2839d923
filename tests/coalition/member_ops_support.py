from tests.factories.member_records import *  # noqa: F401,F403 - moved to tests/factories/member_records.py
