"""A TCP proxy that breaks the connection to a server on command (loopback only).

    with FaultProxy(server.host, server.port) as proxy:
        client = MongoClient(proxy.uri_for("db", socketTimeoutMS="500"))
        proxy.drop_connections()   # every open connection closed now
        proxy.stall(); proxy.resume()
        proxy.set_delay(0.2)       # every chunk of bytes waits 0.2 s
        proxy.refuse(True)         # new connections are closed at once
        proxy.cut_next_reply()     # the next large reply is cut mid-way, its connection closed
        proxy.answer(handler)      # handler(command) -> a reply sent instead, or None

`answer` reads the client's requests as MongoDB wire messages (OP_MSG): a command the
handler answers never reaches the server, and the client gets the handler's reply (say,
an error the server would give), as if the server had sent it.

The proxy runs an asyncio loop in a background thread. Every control waits until the
loop has applied it, so the fault is in force when the call returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import bson

from tests.support.servers import uri_with_database

T = TypeVar("T")
LISTEN_HOST = "127.0.0.1"
_CHUNK = 64 * 1024
# A chunk of a reply at least this large is a batch of documents, never a heartbeat's `hello`
# (under 1 KB) on the driver's monitoring connection.
LARGE_REPLY = 16 * 1024
_CONTROL_TIMEOUT = 5.0
_HEADER = 16  # messageLength, requestID, responseTo, opCode (int32 each, little-endian)
OP_MSG = 2013
_MORE_TO_COME = 1 << 1
Answer = Callable[[dict[str, Any]], dict[str, Any] | None]


@dataclass(eq=False)
class _Pair:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def abort(self) -> None:
        for task in self.tasks:
            task.cancel()
        self.client.transport.abort()
        self.upstream.transport.abort()


class FaultProxy:
    def __init__(self, target_host: str, target_port: int, *, listen_port: int = 0) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self._listen_port = listen_port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._pairs: set[_Pair] = set()
        self._flowing: asyncio.Event | None = None
        self._delay = 0.0
        self._refusing = False
        self._answer: Answer | None = None
        self._cut_reply = False
        self.total_connections = 0

    # -- public --------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("proxy not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def host(self) -> str:
        return LISTEN_HOST

    @property
    def active_connections(self) -> int:
        return self._call(self._count)

    def uri_for(self, database: str | None = None, **options: str) -> str:
        """A URI through the proxy; `options` go to the query (socketTimeoutMS="500")."""
        base = f"mongodb://{LISTEN_HOST}:{self.port}/"
        return uri_with_database(base, database, directConnection="true", **options)

    def start(self) -> FaultProxy:
        if self._thread is not None:
            raise RuntimeError("proxy already started")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._thread.start()
        self._server = self._call(self._listen)
        return self

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        with contextlib.suppress(RuntimeError):  # loop already gone
            self._call(self._shutdown)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(_CONTROL_TIMEOUT)
        self._thread = None

    def drop_connections(self) -> int:
        """Close every open client/server pair now; returns how many were open."""
        return self._call(self._drop_all)

    def stall(self) -> None:
        """Hold every byte in both directions; connections stay open."""
        self._call(self._set_flowing(False))

    def resume(self) -> None:
        self._call(self._set_flowing(True))

    def set_delay(self, seconds: float) -> None:
        """Delay every chunk forwarded (0 for none)."""
        self._call(self._apply(lambda: setattr(self, "_delay", float(seconds))))

    def refuse(self, on: bool = True) -> None:
        """While on, new connections are accepted and closed at once (open ones stay)."""
        self._call(self._apply(lambda: setattr(self, "_refusing", bool(on))))

    def answer(self, handler: Answer | None) -> None:
        """From now on each command goes to `handler(command)` first: a reply it returns is
        sent to the client instead of the server's (None: the command goes on)."""
        self._call(self._apply(lambda: setattr(self, "_answer", handler)))

    def cut_next_reply(self) -> None:
        """The next large reply (a batch of documents) stops mid-way: its connection is
        closed instead of the chunk forwarded, as a link that dies during a read."""
        self._call(self._apply(lambda: setattr(self, "_cut_reply", True)))

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"FaultProxy(-> {self.target_host}:{self.target_port})"

    # -- loop side -----------------------------------------------------------------
    def _run(self) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        finally:
            self._loop.close()

    def _call(self, fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
        if self._loop is None or self._loop.is_closed():
            raise RuntimeError("proxy not running")
        return asyncio.run_coroutine_threadsafe(fn(), self._loop).result(_CONTROL_TIMEOUT)

    @staticmethod
    def _apply(change: Callable[[], None]) -> Callable[[], Coroutine[Any, Any, None]]:
        async def run() -> None:
            change()

        return run

    def _set_flowing(self, flowing: bool) -> Callable[[], Coroutine[Any, Any, None]]:
        async def run() -> None:
            assert self._flowing is not None
            if flowing:
                self._flowing.set()
            else:
                self._flowing.clear()

        return run

    async def _count(self) -> int:
        return len(self._pairs)

    async def _listen(self) -> asyncio.Server:
        self._flowing = asyncio.Event()
        self._flowing.set()
        return await asyncio.start_server(self._handle, LISTEN_HOST, self._listen_port)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._drop_all()

    async def _drop_all(self) -> int:
        pairs = list(self._pairs)
        for pair in pairs:
            pair.abort()
        self._pairs.clear()
        return len(pairs)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self.total_connections += 1
        pair = _Pair(writer, up_writer)
        pair.tasks = [
            asyncio.create_task(self._pump_requests(reader, up_writer, writer)),
            asyncio.create_task(self._pump(up_reader, writer, replies=True)),
        ]
        self._pairs.add(pair)
        try:
            await asyncio.wait(pair.tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # One side ended: end the other too, as a real middlebox would.
            self._pairs.discard(pair)
            pair.abort()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, replies: bool = False
    ) -> None:
        assert self._flowing is not None
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(_CHUNK):
                if replies and self._cut_reply and len(data) >= LARGE_REPLY:
                    self._cut_reply = False
                    return  # the pair is closed by `_handle`
                await self._flowing.wait()
                if self._delay:
                    await asyncio.sleep(self._delay)
                await self._flowing.wait()  # a stall during the delay holds the chunk too
                writer.write(data)
                await writer.drain()

    async def _pump_requests(
        self,
        reader: asyncio.StreamReader,
        upstream: asyncio.StreamWriter,
        client: asyncio.StreamWriter,
    ) -> None:
        """Client to server, one wire message at a time (each may be answered here)."""
        assert self._flowing is not None
        with contextlib.suppress(ConnectionError, OSError, asyncio.IncompleteReadError):
            while True:
                header = await reader.readexactly(_HEADER)
                body = await reader.readexactly(int.from_bytes(header[:4], "little") - _HEADER)
                await self._flowing.wait()
                if self._delay:
                    await asyncio.sleep(self._delay)
                await self._flowing.wait()
                reply = self._answered(header, body)
                if reply is not None:
                    client.write(reply)
                    await client.drain()
                    continue
                upstream.write(header + body)
                await upstream.drain()

    def _answered(self, header: bytes, body: bytes) -> bytes | None:
        """The wire reply to send for this request instead of forwarding it, if any."""
        handler = self._answer
        if handler is None or int.from_bytes(header[12:16], "little") != OP_MSG:
            return None
        flags = int.from_bytes(body[:4], "little")
        if flags & _MORE_TO_COME or body[4] != 0:  # no reply expected / no command first
            return None
        size = int.from_bytes(body[5:9], "little")
        reply = handler(bson.decode(body[5 : 5 + size]))
        if reply is None:
            return None
        payload = (0).to_bytes(4, "little") + b"\x00" + bson.encode(reply)
        request_id = header[4:8]
        length = (_HEADER + len(payload)).to_bytes(4, "little")
        return (
            length + (0).to_bytes(4, "little") + request_id + OP_MSG.to_bytes(4, "little") + payload
        )
