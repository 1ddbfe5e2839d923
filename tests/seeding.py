from tests.factories.coalition import *  # noqa: F401,F403 - moved to tests/factories/coalition.py
