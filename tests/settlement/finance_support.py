from tests.factories.finance import *  # noqa: F401,F403 - moved to tests/factories/finance.py
