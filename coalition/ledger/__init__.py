"""The points ledger: members, wallets, the journal of entries and postings, and lots."""
