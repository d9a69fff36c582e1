"""Parallel writers: many clients creating items with tags at once, then the table checked.

Each client loops ``POST /items`` (with tags) then ``GET /items/{id}``; afterwards the table
must hold exactly the rows whose creation was acknowledged, each with its tags, once. Rows
of creates that got no answer (a timeout, a broken connection) may or may not be there.
"""

import asyncio
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any

import tokens
import uvloop
from dataset import SEED, new_item
from loadclient import BROKEN, CLIENT_TIMEOUT, TIMEOUT, Connection, Response, run_workers
from postgres import connected
from servers import HOST, Server

WRITERS = 128  # clients writing at once


@dataclass
class WriterCheck:
    """The parallel writers' outcome, and what the table holds afterwards."""

    acknowledged: int = 0
    read_back: int = 0
    shed: int = 0
    timeouts: int = 0
    failures: list[str] = field(default_factory=list)
    rows: int = 0
    missing: int = 0
    duplicated: int = 0
    unacknowledged_rows: int = 0
    unknown_outcomes: int = 0


def parallel_writers(server: Server, dsn: str, clients: int, seconds: float) -> WriterCheck:
    """``clients`` workers each looping create-with-tags then get; then count the rows."""
    writers = _Writers(server.port, f"writer-{os.getpid()}-{int(time.time())}")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run_workers(clients, seconds, writers.write))
        rows = runner.run(_rows_named(dsn, writers.prefix))
    writers.compare(rows)
    refused = writers.refused
    tokens.check_not_refused(refused, refused + writers.check.acknowledged, "parallel writers")
    return writers.check


# name -> (copies of the row, its tag ids)
Rows = dict[str, tuple[int, list[int]]]


class _Writers:
    """What the writers were told: the names acknowledged (with their tags), and not."""

    def __init__(self, port: int, prefix: str) -> None:
        self.port, self.prefix = port, prefix
        self.check = WriterCheck()
        self.acknowledged: dict[str, list[int]] = {}
        self.unknown: set[str] = set()
        self.refused = 0  # creates answered 401 or 403

    async def write(self, number: int, deadline: float) -> None:
        """One writer: create then read back, until ``deadline``."""
        rng = random.Random(SEED + number)
        connection = Connection(HOST, self.port, CLIENT_TIMEOUT)
        try:
            sequence = 0
            while time.perf_counter() < deadline:
                sequence += 1
                await self._create_and_read(connection, f"{self.prefix}-{number}-{sequence}", rng)
        finally:
            connection.close()

    async def _create_and_read(self, connection: Connection, name: str, rng: random.Random) -> None:
        body = new_item(rng, name)
        created = await connection.request("POST", "/items", body)
        if created.status != 201:
            self._tally(created, "POST /items")
            if created.status in (TIMEOUT, BROKEN):
                self.unknown.add(name)
            return
        item: Any = created.json()
        self.acknowledged[name] = sorted(set(body["tag_ids"]))
        self.check.acknowledged += 1
        fetched = await connection.request("GET", f"/items/{item['id']}")
        if fetched.status != 200:
            self._tally(fetched, "GET /items/{id}")
            return
        got: Any = fetched.json()
        tags = sorted(tag["id"] for tag in got["tags"])
        if got["name"] != name or tags != self.acknowledged[name]:
            self.check.failures.append(f"GET /items/{item['id']} returned {got}")
        else:
            self.check.read_back += 1

    def _tally(self, response: Response, what: str) -> None:
        if what == "POST /items" and response.status in (401, 403):
            self.refused += 1
        if response.status == 503:
            self.check.shed += 1
        elif response.status == TIMEOUT:
            self.check.timeouts += 1
        else:
            detail = response.body[:200].decode(errors="replace")
            self.check.failures.append(f"{what}: status {response.status} {detail}")

    def compare(self, rows: Rows) -> None:
        """Hold the table's rows against what the writers were told."""
        check, acknowledged = self.check, self.acknowledged
        check.rows = sum(count for count, _ in rows.values())
        check.duplicated = sum(1 for count, _ in rows.values() if count > 1)
        check.missing = sum(1 for name in acknowledged if name not in rows)
        check.missing += sum(
            1
            for name, (_, tags) in rows.items()
            if name in acknowledged and tags != acknowledged[name]
        )
        extra = set(rows) - set(acknowledged)
        check.unacknowledged_rows = len(extra)
        check.unknown_outcomes = len(self.unknown)
        if extra - self.unknown:
            check.failures.append(f"{len(extra - self.unknown)} rows no client was told about")


async def _rows_named(dsn: str, prefix: str) -> Rows:
    async with connected(dsn) as connection:
        records = await connection.fetch(
            """
            SELECT item.name, count(DISTINCT item.id) AS copies,
                   coalesce(array_agg(DISTINCT itemtaglink.tag_id)
                            FILTER (WHERE itemtaglink.tag_id IS NOT NULL), '{}') AS tags
            FROM item LEFT JOIN itemtaglink ON itemtaglink.item_id = item.id
            WHERE item.name LIKE $1 GROUP BY item.name
            """,
            prefix + "-%",
        )
    return {record["name"]: (record["copies"], sorted(record["tags"])) for record in records}
