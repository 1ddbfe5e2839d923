"""Settlement at scale: a run over N journal entries against a bare GROUP BY.

Builds a fresh PostgreSQL database with the real migrations, fills it with set-based
SQL (members, earns with their lots, burns that consume half of every second lot, with
the postings and lot movements the services would write, and two rate cards per partner
so pricing splits mid-period), then times, in the same run and on the same data:

* the bare aggregate: postings of the period joined to their entries, grouped by
  account and partner — the least any settlement must read;
* a settlement run: ``settlement.compute.compute`` over the same period (statements per
  rate card, the cross-partner matrix from lot movements, coalition figures), once under
  each money model (``operator`` and ``clearing``);
* the program analytics of the months the period covers (``settlement.analytics``), and
  the points liability at the period end with its roll-forward (``settlement.liability``,
  operator model), each against the same bare aggregate (target: at most 2 ×).

Each is run ``--repeat`` times after a warm-up; the medians and their ratios are printed.

    .venv/bin/python bench/settlement.py --entries 1000000 --entries 10000000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
START = datetime(2026, 1, 1, tzinfo=UTC)
PARTNERS = 6
TARGET = 1.5
REPORT_TARGET = 2.0
MODELS = ("operator", "clearing")


def recreate(server: str, name: str) -> str:
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(server).set(database=name).render_as_string(hide_password=False)


def migrate(url: str) -> None:
    env = {**os.environ, "COALITION_DATABASE_URL": url, "COALITION_ENV": "development",
           "COALITION_SECRET_KEY": "bench-secret-key-0123456789", "COALITION_LOG_LEVEL": "warning"}
    subprocess.run([str(Path(sys.executable).parent / "coalition"), "db", "upgrade"],
                   check=True, env=env, cwd=ROOT)


def fill(url: str, entries: int) -> float:
    """Half the entries are earns (one lot each), half burns of half of every second
    lot... precisely: earns 1..E, burns consume half of the lot of every earn with an even
    id; E + E/2 = entries."""
    earns = entries * 2 // 3
    members = max(1000, earns // 10)
    span = 30 * 86400  # the journal covers 30 days; the run settles all of it
    engine = create_engine(url)
    began = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(text("SET synchronous_commit = off"))
        conn.execute(text("SET maintenance_work_mem = '256MB'"))
        # bulk load: secondary indexes (not those behind a key or constraint) are built
        # once at the end rather than maintained row by row
        indexes = conn.execute(text("""
            SELECT c.relname, pg_get_indexdef(i.indexrelid)
            FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
            JOIN pg_class t ON t.oid = i.indrelid
            WHERE t.relname IN ('entry', 'posting', 'lot', 'lot_movement', 'member')
              AND NOT i.indisprimary
              AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)
        """)).all()
        for name, _ in indexes:
            conn.execute(text(f'DROP INDEX "{name}"'))
        # the rows are consistent by construction: neither the journal's guard triggers
        # nor a foreign-key check per row (20 M at 10 M entries) run while loading
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(text("""
            INSERT INTO partner (id, code, name, kind, currency, status, created_at)
            SELECT i, 'p' || i, 'Partner ' || i,
                   CASE WHEN i = :n THEN 'charity' ELSE 'merchant' END,
                   CASE WHEN i % 3 = 0 THEN 'EUR' ELSE 'GBP' END, 'active', :start
            FROM generate_series(1, :n) i"""), {"n": PARTNERS, "start": START})
        # two cards per partner: prices change half-way through the period
        conn.execute(text("""
            INSERT INTO rate_card (partner_id, valid_from, earn_rate, issue_price, redeem_rate,
                                   created_at)
            SELECT i, :start + (c * interval '15 days'), 1,
                   0.0100 + c * 0.0010 + i * 0.0001, 0.0080 + c * 0.0005 + i * 0.0001, :start
            FROM generate_series(1, :n) i, generate_series(0, 1) c"""),
                     {"n": PARTNERS, "start": START})
        conn.execute(text("""
            INSERT INTO member (id, member_number, status, tier, failed_sign_ins, created_at)
            SELECT i, lpad(i::text, 12, '0'), 'active', 'member', 0, :start
            FROM generate_series(1, :m) i"""), {"m": members, "start": START})
        conn.execute(text("""
            INSERT INTO entry (id, kind, booked_at, occurred_at, partner_id, member_id,
                               partner_txn_id, points)
            SELECT i, 'earn', t, t, 1 + i % :p, 1 + (i::bigint * 7919) % :m, 'e' || i, 10 + i % 90
            FROM generate_series(1, :e) i,
                 LATERAL (SELECT :start + (i::float8 / :e * :span) * interval '1 second') x(t)
        """), {"p": PARTNERS, "m": members, "e": earns, "start": START, "span": span})
        conn.execute(text("""
            INSERT INTO posting (entry_id, account, partner_id, member_id, points)
            SELECT id, 'partner:issued', partner_id, NULL, -points FROM entry
            UNION ALL
            SELECT id, 'member:available', NULL, member_id, points FROM entry"""))
        conn.execute(text("""
            INSERT INTO lot (id, member_id, origin_partner_id, source, entry_id, points,
                             remaining, state, earned_at, expires_at)
            SELECT id, member_id, partner_id, 'earn', id, points,
                   points - CASE WHEN id % 2 = 0 AND booked_at + interval '1 hour' < :end
                                 THEN points / 2 ELSE 0 END,
                   'live', booked_at, booked_at + interval '2 years'
            FROM entry"""), {"end": START + timedelta(seconds=span)})
        # burns: the lot of every even earn loses half its points at another partner
        conn.execute(text("""
            INSERT INTO entry (id, kind, booked_at, occurred_at, partner_id, member_id,
                               partner_txn_id, points)
            SELECT :e + l.id / 2, 'burn', t, t, 1 + (l.id / 2) % :p, l.member_id,
                   'b' || l.id, l.points / 2
            FROM lot l,
                 LATERAL (SELECT l.earned_at + interval '1 hour') x(t)
            WHERE l.id % 2 = 0 AND l.earned_at + interval '1 hour' < :end
        """), {"e": earns, "p": PARTNERS, "end": START + timedelta(seconds=span)})
        conn.execute(text("""
            INSERT INTO posting (entry_id, account, partner_id, member_id, points)
            SELECT id, 'member:available', NULL, member_id, -points FROM entry
            WHERE kind = 'burn'
            UNION ALL
            SELECT id, 'partner:redeemed', partner_id, NULL, points FROM entry
            WHERE kind = 'burn'"""))
        conn.execute(text("""
            INSERT INTO lot_movement (lot_id, entry_id, points, origin_partner_id, entry_kind,
                                      entry_partner_id, entry_booked_at)
            SELECT l.id, e.id, -e.points, l.origin_partner_id, e.kind, e.partner_id,
                   e.booked_at
            FROM entry e JOIN lot l ON l.id = (e.id - :e) * 2 WHERE e.kind = 'burn'
        """), {"e": earns})
        conn.execute(text("""
            INSERT INTO wallet (member_id, available, pending, held, version)
            SELECT m.id, coalesce(s.total, 0), 0, 0, 0
            FROM member m LEFT JOIN (
                SELECT member_id, sum(points) AS total FROM posting
                WHERE account = 'member:available' GROUP BY member_id) s
              ON s.member_id = m.id"""))
        conn.execute(text("SET LOCAL session_replication_role = DEFAULT"))
        for _, definition in indexes:
            conn.execute(text(definition))
        for table, column in (("entry", "id"), ("posting", "id"), ("lot", "id"),
                              ("lot_movement", "id"), ("member", "id"), ("partner", "id"),
                              ("rate_card", "id")):
            conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "
                              f"(SELECT coalesce(max({column}), 1) FROM {table}))"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()
    return time.perf_counter() - began


BARE = text("""
    SELECT p.account, p.partner_id, sum(p.points)
    FROM posting p JOIN entry e ON e.id = p.entry_id
    WHERE e.booked_at >= :start AND e.booked_at < :end
    GROUP BY p.account, p.partner_id""")


def timed(fn, repeat: int) -> tuple[float, list[float]]:
    fn()  # warm the cache: both sides read the same pages
    runs = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - began)
    return statistics.median(runs), runs


def measure(url: str, repeat: int) -> dict[str, float]:
    os.environ.update(COALITION_DATABASE_URL=url, COALITION_ENV="development",
                      COALITION_SECRET_KEY="bench-secret-key-0123456789",
                      COALITION_LOG_LEVEL="warning")
    sys.path.insert(0, str(ROOT))
    from coalition.app import create_app
    from coalition.db import db, read
    from settlement.analytics import analytics
    from settlement.compute import WORK_MEM, compute
    from settlement.liability import Prior, liability

    app = create_app()
    end = START + timedelta(days=31)
    with app.app_context():
        def bare() -> None:
            with db.engine.connect() as conn:
                # the same memory settlement gives itself, so both are measured alike
                conn.execute(text(f"SET LOCAL work_mem = '{WORK_MEM}'"))
                conn.execute(BARE, {"start": START, "end": end}).all()

        def settle(model: str) -> None:
            with read() as session:
                result = compute(session, START, end, model)
            assert result["statements"] and result["payments"], "the run priced nothing"

        def monthly() -> None:
            with read(snapshot=True) as session:
                doc = analytics(session, f"{START:%Y-%m}", f"{end:%Y-%m}")
            assert doc["months"], "no analytics"

        def owed() -> None:
            with read() as session:
                doc = liability(session, START, end, "operator", Prior(Decimal("0.2"), 6))
            assert doc["cohorts"], "no liability"

        # tiers, so that the analytics count the members in each at every month end
        from coalition.program.schemas import ProgramRulesSchema
        from coalition.program.service import publish_rules

        with read() as session:
            published = session.execute(text("SELECT count(*) FROM program_rules")).scalar()
        if not published:
            publish_rules(ProgramRulesSchema().load({"tiers": [
                {"code": "blue", "name": "Blue", "threshold": 0, "multiplier": "1"},
                {"code": "silver", "name": "Silver", "threshold": 200, "multiplier": "1"},
                {"code": "gold", "name": "Gold", "threshold": 1000, "multiplier": "1"}]}),
                "bench")

        counts = {}
        with db.engine.connect() as conn:
            for table in ("entry", "posting", "lot", "lot_movement"):
                counts[table] = conn.execute(text(f"SELECT count(*) FROM {table}")).scalar()
        figures: dict = {**counts}
        figures["bare_s"], figures["bare_runs"] = timed(bare, repeat)
        for model in MODELS:
            settle_s, settle_runs = timed(lambda m=model: settle(m), repeat)
            figures[model] = {"settle_s": settle_s, "settle_runs": settle_runs,
                              "ratio": settle_s / figures["bare_s"]}
        for name, fn in (("analytics", monthly), ("liability", owed)):
            seconds, runs = timed(fn, repeat)
            figures[name] = {"s": seconds, "runs": runs, "ratio": seconds / figures["bare_s"]}
        db.engine.dispose()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, action="append",
                        help="journal size (repeatable); default 1000000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--server", default=SERVER)
    parser.add_argument("--database", default="coalition_bench_settlement",
                        help="the database to drop, fill and measure")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    results = []
    for entries in args.entries or [1_000_000]:
        url = recreate(args.server, args.database)
        migrate(url)
        filled = fill(url, entries)
        # each size is measured in its own process so no state carries over
        out = subprocess.run([sys.executable, __file__, "--measure", url,
                              "--repeat", str(args.repeat)],
                             check=True, capture_output=True, text=True, cwd=ROOT)
        figures = json.loads(out.stdout.strip().splitlines()[-1])
        figures.update(requested=entries, fill_s=filled)
        results.append(figures)
        print(f"{entries:>11,} entries  ({figures['entry']:,} entries, {figures['posting']:,} "
              f"postings, {figures['lot_movement']:,} lot movements; filled in {filled:.0f} s)")
        print(f"    bare GROUP BY over postings: {figures['bare_s'] * 1000:9.0f} ms (median)")
        for model in MODELS:
            run = figures[model]
            label = f"settlement run ({model}):"
            print(f"    {label:<29}{run['settle_s'] * 1000:9.0f} ms (median), "
                  f"ratio {run['ratio']:.2f} (target ≤ {TARGET})")
        for name in ("analytics", "liability"):
            label = f"{name}:"
            print(f"    {label:<29}{figures[name]['s'] * 1000:9.0f} ms (median), "
                  f"ratio {figures[name]['ratio']:.2f} (target ≤ {REPORT_TARGET})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--measure":
        repeat = int(sys.argv[sys.argv.index("--repeat") + 1]) if "--repeat" in sys.argv else 3
        print(json.dumps(measure(sys.argv[2], repeat)))
    else:
        main()
