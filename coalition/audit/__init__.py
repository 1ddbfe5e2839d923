"""The audit log: who did what, when, to operator and finance data."""
