"""The ledger benchmark's scenarios: which members each one needs, and its requests.

* ``earn``: earn over many members;
* ``burn``: burn 10 points over many pre-loaded members;
* ``mixed``: earn and burn at random over the pre-loaded members;
* ``hot``: earn 10 and burn 10 at random on a few members, contending for their wallet
  rows (a 409 ``insufficient_points`` is an expected business answer there);
* ``balance``: ``GET /v1/members/{n}/balance`` over the pre-loaded members;
* ``history``: burn 10 and read the balance, at random, on a member with a deep history of
  live lots (``--history-lots``) and on one with 10: the cost of history, as a ratio;
* ``hot64``: earn 10 and burn 10 at random on ONE member from ``--hot-concurrency``
  clients (64): the hottest wallet row.

A request whose body is ``None`` is a GET.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
from collections.abc import Callable
from typing import Any

from harness.load import RequestFactory

SCENARIOS = ("earn", "burn", "mixed", "hot", "balance", "history", "hot64", "authorise",
             "capture", "void", "earn_reversal", "burn_reversal", "paced")

#: the scenarios whose clients alternate a first call and the call measured on its answer:
#: scenario -> (first operation, second operation)
CHAINS = {"capture": ("authorise", "capture"), "void": ("authorise", "void"),
          "earn_reversal": ("earn", "earn_reversal"), "burn_reversal": ("burn", "burn_reversal")}


class Chained:
    """A scenario whose every second request acts on the answer to the one before: a hold
    authorised then captured or voided, an earn or a burn then reversed. ``answered`` is
    told each answer; what is pending is kept per client thread."""

    def __init__(self, first: Callable[[random.Random, str], tuple[str, str, bytes]],
                 second: Callable[[int, str], tuple[str, str, bytes]]) -> None:
        self.first, self.second = first, second
        self.pending = threading.local()

    def __call__(self, rng: random.Random, txn: str) -> tuple[str, str, bytes | None]:
        made = getattr(self.pending, "id", None)
        self.pending.id = None
        return self.second(made, txn) if made is not None else self.first(rng, txn)

    def answered(self, op: str, status: int, data: bytes) -> None:
        """After a first call that succeeded, the next request acts on what it made."""
        if 200 <= status < 300 and op in FIRST_OPS:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                self.pending.id = int(json.loads(data)["id"])


#: the floors (:mod:`harness.floor`): served by a gunicorn of their own, after the others
FLOORS = ("floor_json", "floor_read")
FLOOR_PATHS = {"floor_json": lambda rng: "/floor/json",
               "floor_read": lambda rng: f"/floor/read/{rng.randrange(1_000_000)}"}

FIRST_OPS = {first for first, _ in CHAINS.values()}


def pool_sizes(scenarios: list[str], members: int, hot_members: int) -> dict[str, int]:
    """Members to enrol per pool. The burn pool is always loaded: besides feeding burn and
    mixed, its entries are the history the planner statistics are taken from."""
    earning = "earn" in scenarios or "paced" in scenarios
    wanted = {"earn": members if earning else 0, "burn": members,
              "hot": hot_members if "hot" in scenarios else 0,
              "history": 2 if "history" in scenarios else 0,
              "hot64": 1 if "hot64" in scenarios else 0}
    return {k: v for k, v in wanted.items() if v}


def request_factory(scenario: str, pools: dict[str, list[str]],
                    earn_body: str) -> RequestFactory:  # noqa: C901 - one branch a scenario
    """``factory(rng, partner_txn_id) -> (op, path, body)`` for one scenario."""

    def earn(rng: random.Random, member: str, txn: str) -> tuple[str, str, bytes]:
        body: dict[str, Any] = {"member_number": member, "partner_txn_id": txn}
        if earn_body == "spend":
            body["spend"] = {"amount": f"{rng.randint(100, 20000) / 100:.2f}", "currency": "GBP"}
        else:
            body["points"] = rng.randint(1, 50)
        return "earn", "/v1/earn", json.dumps(body).encode()

    def book(op: str, member: str, txn: str, points: int) -> tuple[str, str, bytes]:
        body = {"member_number": member, "partner_txn_id": txn, "points": points}
        return op, f"/v1/{op}", json.dumps(body).encode()

    if scenario in CHAINS:
        first_op, second_op = CHAINS[scenario]
        members = pools["burn"]

        def first(rng: random.Random, txn: str) -> tuple[str, str, bytes]:
            path_op = {"authorise": "holds"}.get(first_op, first_op)
            op, _, body = book(first_op, rng.choice(members), txn, 10)
            return op, f"/v1/{path_op}", body

        def second(made: int, txn: str) -> tuple[str, str, bytes]:
            body = json.dumps({"partner_txn_id": txn}).encode()
            if second_op in ("capture", "void"):
                return second_op, f"/v1/holds/{made}/{second_op}", body
            return second_op, f"/v1/transactions/{made}/reversals", body

        return Chained(first, second)
    if scenario == "authorise":
        members = pools["burn"]

        def authorise(rng: random.Random, txn: str) -> tuple[str, str, bytes]:
            op, _, body = book("authorise", rng.choice(members), txn, 10)
            return op, "/v1/holds", body

        return authorise
    if scenario in ("earn", "paced"):
        members = pools["earn"]
        return lambda rng, txn: earn(rng, rng.choice(members), txn)
    if scenario == "burn":
        members = pools["burn"]
        return lambda rng, txn: book("burn", rng.choice(members), txn, 10)
    if scenario == "mixed":
        members = pools["burn"]

        def mixed(rng: random.Random, txn: str) -> tuple[str, str, bytes]:
            member = rng.choice(members)
            return earn(rng, member, txn) if rng.random() < 0.5 else book("burn", member, txn, 10)

        return mixed
    if scenario in ("hot", "hot64"):
        members = pools[scenario]

        def hot(rng: random.Random, txn: str) -> tuple[str, str, bytes]:
            member = rng.choice(members)
            return book("earn" if rng.random() < 0.5 else "burn", member, txn, 10)

        return hot
    if scenario == "balance":
        members = pools["burn"]
        return lambda rng, txn: ("balance", f"/v1/members/{rng.choice(members)}/balance", None)
    if scenario in FLOOR_PATHS:
        path = FLOOR_PATHS[scenario]
        return lambda rng, txn: (scenario, path(rng), None)
    if scenario == "history":
        deep, shallow = pools["history"]

        def history(rng: random.Random, txn: str) -> tuple[str, str, bytes | None]:
            depth, member = rng.choice((("deep", deep), ("shallow", shallow)))
            if rng.random() < 0.5:
                op, path, body = book("burn", member, txn, 10)
                return f"burn-{depth}", path, body
            return f"balance-{depth}", f"/v1/members/{member}/balance", None

        return history
    raise ValueError(scenario)
