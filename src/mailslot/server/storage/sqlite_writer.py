"""Group commit for SQLite: one thread owns the write connection and commits jobs in groups.

With ``synchronous=FULL`` every COMMIT waits for the disk, and that wait, not the CPU, bounded
how many sends per second one node accepted. The writer takes every write job that is queued
when it becomes free, runs each inside its own SAVEPOINT within one transaction, and commits
once. A job that fails rolls back to its savepoint and fails alone; if the COMMIT fails, every
job of the group fails. No job's caller hears "done" before the COMMIT that made its change
durable, so "accepted means committed" holds exactly as with one transaction per job.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mailslot.errors import MailslotError, ServerError

log = logging.getLogger("mailslot.server.storage")

MAX_GROUP = 128


@dataclass
class _Job:
    body: Callable[[sqlite3.Connection], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


@dataclass
class _Outcome:
    value: Any = None
    error: BaseException | None = None


def _settle(future: asyncio.Future[Any], outcome: _Outcome) -> None:
    if future.cancelled():
        return
    if outcome.error is not None:
        future.set_exception(outcome.error)
    else:
        future.set_result(outcome.value)


class GroupCommitWriter:
    """Runs write jobs on one connection, committing whatever is queued together."""

    def __init__(self, conn: sqlite3.Connection, translate: Callable[[sqlite3.Error], MailslotError]) -> None:
        self._conn = conn
        self._translate = translate
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="mailslot-sqlite-writer", daemon=True)
        self._stopped = False
        self.groups_committed = 0  # observable, so tests and operators can see grouping work

    @property
    def connection(self) -> sqlite3.Connection:
        return self._conn

    def start(self) -> None:
        self._thread.start()

    async def run(self, body: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``body(conn)`` in the next group; returns once its group has committed."""
        if self._stopped:
            raise ServerError("the storage is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._jobs.put(_Job(body, loop, future))
        return await future

    def stop(self) -> None:
        """Finish the queued jobs, then end the thread (blocks until it has)."""
        self._stopped = True
        self._jobs.put(None)
        self._thread.join()

    def _serve(self) -> None:
        while True:
            first = self._jobs.get()
            if first is None:
                return
            group, stop = self._gather(first)
            self._commit_group(group)
            if stop:
                return

    def _gather(self, first: _Job) -> tuple[list[_Job], bool]:
        group = [first]
        while len(group) < MAX_GROUP:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return group, True
            group.append(job)
        return group, False

    def _commit_group(self, group: list[_Job]) -> None:
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            outcomes = [self._run_one(job) for job in group]
            conn.execute("COMMIT")
            self.groups_committed += 1
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            failure = self._translate(exc)
            failure.__cause__ = exc
            log.error("SQLite group commit failed: %s", exc)
            outcomes = [_Outcome(error=failure) for _ in group]
        for job, outcome in zip(group, outcomes, strict=True):
            job.loop.call_soon_threadsafe(_settle, job.future, outcome)

    def _run_one(self, job: _Job) -> _Outcome:
        conn = self._conn
        conn.execute("SAVEPOINT job")
        try:
            value = job.body(conn)
        except Exception as exc:
            conn.execute("ROLLBACK TO job")
            conn.execute("RELEASE job")
            if isinstance(exc, sqlite3.Error):
                error = self._translate(exc)
                error.__cause__ = exc
                return _Outcome(error=error)
            return _Outcome(error=exc)
        conn.execute("RELEASE job")
        return _Outcome(value=value)
