"""Test data, one place for each kind of thing a test makes (not test modules).

- ``tokens``: OAuth clients and tokens (basic auth, bearer headers, operator and partner
  clients through the real token endpoint)
- ``partners``: a partner with its rate card and client (the ``make_partner`` fixture)
- ``partner_api``: the program rules most tests publish, and the partner API's calls
  (enrol, earn, burn, holds) with the one error shape asserted
- ``members``: members enrolled, activated and signed in through the real OAuth flows
- ``member_records``: member rows, tokens written straight to the database, and a
  member's journal, lots and links as stored
- ``ledger``: history booked with the journal primitives at any moment, and read back
- ``settlement``: runs, reconciliation files and the settlement tests' hand-moved clock
- ``finance``: finance users, their sign-in, and a small period worked out by hand
- ``coalition``: a small coalition with something of everything (fuzzer, isolation)
- ``clock``: a clock a test moves by hand, handed to the app through its own seam
"""
