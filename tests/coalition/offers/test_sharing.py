"""How promotion points are shared: among funders at publication's shares, and back among
an earn's parts by its reversals. Properties over many examples: the parts add up exactly,
none is negative or above what it issued, and reversing an earn whole gives back exactly
what each part issued, however the reversals are cut."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

from hypothesis import given
from hypothesis import strategies as st

from coalition.offers import earning
from coalition.offers.earning import split

shares = st.lists(st.integers(min_value=1, max_value=999), min_size=1, max_size=4).map(
    lambda weights: _exact(weights))


def _exact(weights: list[int]) -> list[tuple[int | None, Decimal]]:
    """Shares in thousandths adding up to exactly 1."""
    total = sum(weights)
    parts = [Decimal(w * 1000 // total) / 1000 for w in weights]
    parts[-1] += 1 - sum(parts)
    return [(i, p) for i, p in enumerate(parts) if p > 0] or [(0, Decimal(1))]


@given(points=st.integers(min_value=0, max_value=10**12), funders=shares)
def test_a_split_adds_up_and_follows_the_shares(points, funders):
    parts = split(points, funders)
    assert sum(n for _, n in parts) == points
    for (_, n), (_, share) in zip(parts, funders, strict=True):
        assert n >= 0
        assert abs(n - points * share) < len(funders)


def test_a_split_in_thousandths():
    funders = [(1, Decimal("0.4")), (2, Decimal("0.6"))]
    assert split(333, funders) == [(1, 133), (2, 200)]
    assert split(17, funders) == [(1, 6), (2, 11)]


class _Postings:
    """A session that answers the earn's issuing postings."""

    def __init__(self, parts: list[int]) -> None:
        self.parts = parts

    def execute(self, statement, params):
        return SimpleNamespace(all=lambda: [("part", i, n) for i, n in enumerate(self.parts)])


@given(parts=st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=5)
       .filter(lambda p: sum(p) > 0),
       cuts=st.lists(st.floats(min_value=0, max_value=1, allow_nan=False), max_size=6))
def test_reversals_give_back_each_part_and_never_more(parts, cuts):
    earned = sum(parts)
    session = _Postings(parts)
    steps = sorted({int(earned * c) for c in cuts} | {earned})
    given_back = [0] * len(parts)
    done = 0
    for upto in steps:
        if upto == done:
            continue
        postings = earning.reversal_postings(session, 1, earned, done, upto - done)
        assert sum(p[3] for p in postings) == upto - done
        for i, posting in enumerate(postings):
            given_back[i] += posting[3]
            assert 0 <= given_back[i] <= parts[i]
        done = upto
    assert given_back == parts
