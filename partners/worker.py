"""``coalition worker``: the process that works outside requests, so that no receiver and
no file ever slows the booking path. It sends webhook deliveries (a pool of threads, so a
slow receiver holds up only its own delivery), books uploaded batch files and sends
members' e-mails (when an SMTP relay is configured).

Every step leaves the database consistent when the process is killed at any moment
(SIGKILL included): deliveries are taken with a lease and sent at least once
(:mod:`partners.delivery`), and so are e-mails (:mod:`coalition.notifications.sender`);
a batch row's outcome is written with its booking (:mod:`partners.batches`). SIGTERM and
SIGINT stop it after the step in hand.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import with_appcontext

from coalition.notifications import sender as mail
from partners import batches, delivery

log = logging.getLogger("coalition.worker")


class Deliveries:
    """Keeps up to ``WEBHOOK_CONCURRENCY`` deliveries in flight."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.size = app.config["WEBHOOK_CONCURRENCY"]
        self.timeout = app.config["WEBHOOK_TIMEOUT"]
        self.pool = ThreadPoolExecutor(self.size, thread_name_prefix="webhook")
        self.inflight: dict[Future[delivery.Result], delivery.Due] = {}

    def step(self, wait_for: float) -> bool:
        """Record what finished and start what is due; whether anything happened."""
        worked = False
        free = self.size - len(self.inflight)
        if free:
            for due in delivery.claim(free):
                self.inflight[self.pool.submit(delivery.send, due, self.timeout)] = due
                worked = True
        if self.inflight:
            done, _ = wait(list(self.inflight), timeout=0 if worked else wait_for,
                           return_when=FIRST_COMPLETED)
            for future in done:
                due = self.inflight.pop(future)
                status = delivery.record(due, future.result())
                log.info("webhook delivery %s: %s", due.delivery_id, status)
                worked = True
        return worked

    def drain(self) -> None:
        """Record the deliveries in flight (a stop waits for them)."""
        for future, due in list(self.inflight.items()):
            delivery.record(due, future.result())
        self.inflight.clear()
        self.pool.shutdown()


def _loop(app: Flask, stop: threading.Event, step: Callable[[float], bool],
          idle: Callable[[], bool] | None = None) -> None:
    poll = app.config["WORKER_POLL"]
    with app.app_context():
        while not stop.is_set():
            try:
                worked = step(poll)
            except Exception:  # noqa: BLE001 - a database outage must not end the worker
                log.exception("worker step failed; trying again")
                worked = False
            if not worked:
                if idle is not None and idle():
                    return
                stop.wait(poll)


def run(app: Flask, stop: threading.Event, until_idle: bool = False) -> None:
    """Send deliveries, book batches and send e-mails until ``stop`` is set (or,
    ``until_idle``, until none has anything left to do)."""
    sender = Deliveries(app)
    threads = [
        threading.Thread(target=_loop, name="deliveries", daemon=True, args=(
            app, stop, sender.step,
            (lambda: not sender.inflight) if until_idle else None)),
        threading.Thread(target=_loop, name="batches", daemon=True, args=(
            app, stop, lambda _wait: batches.book_some(),
            (lambda: True) if until_idle else None)),
        threading.Thread(target=_loop, name="e-mails", daemon=True, args=(
            app, stop, lambda _wait: mail.send_some(),
            (lambda: True) if until_idle else None)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with app.app_context():
        sender.drain()


@click.command("worker")
@click.option("--until-idle", is_flag=True,
              help="Stop once nothing is due (for a cron job or a test), instead of "
                   "running until SIGTERM.")
@with_appcontext
def worker_command(until_idle: bool) -> None:
    """Deliver webhooks, book batch files and send members' e-mails (a process of its own
    in production)."""
    app: Any = current_app._get_current_object()  # type: ignore[attr-defined]
    stop = threading.Event()

    def stopping(signum: int, _frame: Any) -> None:
        log.info("worker stopping (signal %s)", signum)
        stop.set()

    signal.signal(signal.SIGTERM, stopping)
    signal.signal(signal.SIGINT, stopping)
    click.echo("coalition worker: delivering webhooks, booking batch files and sending "
               "e-mails", err=True)
    run(app, stop, until_idle=until_idle)
