"""``coalition expire`` killed with SIGKILL in the middle of a run, on PostgreSQL: the
batches committed stay whole, the batch in hand is rolled back whole, ``coalition ledger
check`` stays green, and running again finishes the job with every point expired once.

The members are filled with the benchmark's own set-based fill (``bench/harness/jobs.py``:
a lot due for expiry on each member, holds to void and pending points to release on every
tenth). Everything is bounded, and the process started is killed whatever happens.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from bench.harness.jobs import AS_OF, fill
from bench.harness.postgres import drop_database, parse_server
from tests.coalition.test_serving import BIN
from tests.conftest import PG_URL, worker_suffix

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

MEMBERS = 3000
#: for the run to be killed: the time it may take to commit its first batch
FIRST_BATCH_DEADLINE = 60.0


@pytest.fixture
def job_database(database_url: str) -> Iterator[tuple[dict, str]]:
    """A database of its own, dropped at the end."""
    server = parse_server(make_url(PG_URL).set(database="postgres")  # type: ignore[arg-type]
                          .render_as_string(hide_password=False))
    name = f"coalition_job_crash_{worker_suffix()}"
    try:
        yield server, name
    finally:
        drop_database(server, name)


def job_env(tmp_path: Path, server: dict, name: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("COALITION_", "FLASK_", "GUNICORN_"))}
    url = server["url"].set(database=name).render_as_string(hide_password=False)
    env.update(COALITION_ENV="production", COALITION_DATABASE_URL=url,
               COALITION_SECRET_KEY=secrets.token_urlsafe(32),
               COALITION_INSTANCE_PATH=str(tmp_path), COALITION_LOG_LEVEL="warning")
    return env


def expire(env: dict[str, str], cwd: Path) -> dict:
    result = subprocess.run([str(BIN / "coalition"), "expire", "--as-of", AS_OF,
                             "--batch", "100", "--json"], env=env, cwd=cwd,
                            capture_output=True, text=True, timeout=300,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def scalar(server: dict, name: str, sql: str) -> int:
    with psycopg.connect(host=server["host"], port=server["port"], user=server["user"],
                         dbname=name, autocommit=True) as conn:
        return conn.execute(sql).fetchone()[0]  # type: ignore[index]


def test_a_killed_expiry_run_loses_nothing_and_a_rerun_finishes(tmp_path, job_database):
    server, name = job_database
    env = job_env(tmp_path, server, name)
    fill(server, name, MEMBERS, env)
    process = subprocess.Popen([str(BIN / "coalition"), "expire", "--as-of", AS_OF,
                                "--batch", "100"], env=env, cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + FIRST_BATCH_DEADLINE
        while scalar(server, name, "SELECT count(*) FROM entry WHERE kind = 'expiry'") == 0:
            assert process.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no batch committed in time"
            time.sleep(0.02)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=15)
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    expired = scalar(server, name, "SELECT count(*) FROM entry WHERE kind = 'expiry'")
    assert 0 < expired < MEMBERS, "the kill did not land in the middle of the run"
    # whole batches only: every member with an expiry entry has lot A expired (its hold
    # voided first, its pending points released): 50 left, 70 with the released 20; and no
    # member without one has a void or a release
    assert scalar(server, name, """
        SELECT count(*) FROM wallet w
        WHERE EXISTS (SELECT 1 FROM entry e WHERE e.member_id = w.member_id
                      AND e.kind = 'expiry')
          AND NOT (w.available = 50 + CASE WHEN w.member_id % 10 = 0 THEN 20 ELSE 0 END
                   AND w.pending = 0 AND w.held = 0)""") == 0
    assert scalar(server, name, """
        SELECT count(*) FROM entry e WHERE e.kind IN ('hold_void', 'release')
          AND NOT EXISTS (SELECT 1 FROM entry x WHERE x.member_id = e.member_id
                          AND x.kind = 'expiry')""") == 0
    check = subprocess.run([str(BIN / "coalition"), "ledger", "check"], env=env,
                           cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr

    rest = expire(env, tmp_path)
    assert rest["failures"] == []
    assert rest["members_expired"] == MEMBERS - expired
    assert scalar(server, name, "SELECT count(*) FROM entry WHERE kind = 'expiry'") == MEMBERS
    assert scalar(server, name, "SELECT sum(points) FROM entry WHERE kind = 'expiry'") \
        == 100 * MEMBERS
    assert scalar(server, name, "SELECT count(*) FROM hold WHERE status = 'open'") == 0
    assert scalar(server, name, """
        SELECT count(*) FROM wallet
        WHERE available <> 50 + CASE WHEN member_id % 10 = 0 THEN 20 ELSE 0 END
           OR pending <> 0 OR held <> 0""") == 0
    again = expire(env, tmp_path)
    assert again["members"] == 0 and again["points_expired"] == 0
    check = subprocess.run([str(BIN / "coalition"), "ledger", "check"], env=env,
                           cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr
