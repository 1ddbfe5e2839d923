from tests.factories.partner_api import *  # noqa: F401,F403 - moved to tests/factories/partner_api.py
