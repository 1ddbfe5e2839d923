"""How Coalition counts things in English, for the command line and the pages."""

from __future__ import annotations


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``plural(1, "break")`` → ``1 break``; ``plural(3, "break")`` → ``3 breaks``."""
    word = singular if count == 1 else (plural_form or singular + "s")
    return f"{count:,} {word}"


def verb(count: int, singular: str, plural_form: str) -> str:
    """``verb(1, "differs", "differ")`` → ``differs``: a verb agreeing with ``count``."""
    return singular if count == 1 else plural_form


#: a reconciliation's counts, as a sentence says them: (one, several)
_RECONCILIATION = {
    "matched": ("{n} matched", "{n} matched"),
    "adjusted": ("{n} already adjusted", "{n} already adjusted"),
    "points_mismatch": ("{n} record differs", "{n} records differ"),
    "missing_in_ledger": ("{n} missing in the ledger", "{n} missing in the ledger"),
    "missing_in_file": ("{n} missing in the partner's file", "{n} missing in the partner's file"),
    "duplicated_in_file": ("{n} duplicated in the file", "{n} duplicated in the file"),
    "malformed": ("{n} unreadable row", "{n} unreadable rows"),
}


def reconciliation_counts(summary: dict[str, int]) -> str:
    """``{"matched": 4, "points_mismatch": 1}`` → ``4 matched, 1 record differs``."""
    parts = []
    for kind, count in summary.items():
        if count:
            one, several = _RECONCILIATION.get(kind, ("{n} " + kind, "{n} " + kind))
            parts.append((one if count == 1 else several).format(n=f"{count:,}"))
    return ", ".join(parts) or "no rows"


def breaks_to_resolve(count: int) -> str:
    """``3 breaks to resolve``, ``1 break to resolve``, ``No breaks``."""
    return f"{plural(count, 'break')} to resolve" if count else "No breaks"
