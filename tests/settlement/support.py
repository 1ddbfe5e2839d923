from tests.factories.settlement import *  # noqa: F401,F403 - moved to tests/factories/settlement.py
