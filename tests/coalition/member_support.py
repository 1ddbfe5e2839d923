from tests.factories.members import *  # noqa: F401,F403 - moved to tests/factories/members.py
