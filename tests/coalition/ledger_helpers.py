from tests.factories.ledger import *  # noqa: F401,F403 - moved to tests/factories/ledger.py
