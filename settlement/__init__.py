"""Settlement between partners: periods, runs, statements, clearing, reconciliation."""
