"""A network between the service and PostgreSQL that fails on demand."""

import asyncio
import contextlib
from types import TracebackType

from sqlalchemy.engine import make_url


class TcpProxy:
    """Relays each connection to the database server ``database_url`` names, until told to fail
    as a network does; ``url`` is the same database, reached through the proxy.

    ``silence()`` stops the connections open now from passing anything either way, without
    closing them: no FIN, no RST, as when a host dies or its address moves. New connections
    pass. ``resume()`` lets the silenced ones pass again, with what they held back.
    ``refuse()`` cuts every connection and turns new ones away, as a restarting server does,
    until ``accept()``. Use it as an async context manager; ``port`` is where it listens.
    """

    def __init__(self, database_url: str) -> None:
        self.database_url = make_url(database_url)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._gates: list[asyncio.Event] = []
        self._transports: list[asyncio.WriteTransport] = []
        self._relays: set[asyncio.Task[None]] = set()
        self._refusing = False

    @property
    def url(self) -> str:
        url = self.database_url.set(host="127.0.0.1", port=self.port)
        return url.render_as_string(hide_password=False)

    async def __aenter__(self) -> "TcpProxy":
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.refuse()
        if self._relays:
            await asyncio.wait(self._relays)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def silence(self) -> None:
        """Hold back everything the connections open now send, either way."""
        for gate in self._gates:
            gate.clear()

    def resume(self) -> None:
        """Let the silenced connections pass again, what they held back first."""
        for gate in self._gates:
            gate.set()

    def refuse(self) -> None:
        """Cut every connection, and cut new ones as soon as they are made."""
        self._refusing = True
        for transport in self._transports:
            transport.abort()
        self._transports.clear()
        self.resume()
        self._gates.clear()

    def accept(self) -> None:
        """Relay new connections again."""
        self._refusing = False

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            writer.transport.abort()
            return
        try:
            target_reader, target_writer = await asyncio.open_connection(
                self.database_url.host or "127.0.0.1", self.database_url.port or 5432
            )
        except OSError:
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self._relays.add(task)
        gate = asyncio.Event()
        gate.set()
        self._gates.append(gate)
        self._transports += [writer.transport, target_writer.transport]
        try:
            await asyncio.gather(
                _pump(reader, target_writer, gate), _pump(target_reader, writer, gate)
            )
        finally:
            self._relays.discard(task)


async def _pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, gate: asyncio.Event
) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            await gate.wait()
            writer.write(data)
            await writer.drain()
        # A silent network passes no end of stream either.
        await gate.wait()
    writer.close()
