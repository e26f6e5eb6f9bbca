"""A TCP proxy that puts a far server behind a slow link, and counts what crosses it.

    with DelayProxy(host, port, delay=0.040) as proxy:     # 40 ms each way: 80 ms a round trip
        client = MongoClient(proxy.uri_for("db"))
        proxy.reset()
        ...
        proxy.counts.requests, proxy.counts.bytes_up, proxy.counts.bytes_down

Each chunk of bytes is delivered `delay` seconds after it arrived, in order, without
holding the chunks behind it (a link's latency, not its bandwidth: a pipeline keeps
flowing). `requests` counts MongoDB wire messages sent to the server (parsed from the
messages' length headers), `bytes_down` what the server sent back. The loop runs in a
background thread; `uri_for` names the proxy with `directConnection=true`.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading
import time
from dataclasses import dataclass

LISTEN_HOST = "127.0.0.1"
_CHUNK = 256 * 1024


@dataclass
class Counts:
    requests: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    connections: int = 0


@dataclass
class Traced:
    """One wire message as it crossed the proxy (`trace=True`)."""

    at: float  # time.time() when its first bytes arrived at the proxy
    connection: int  # the proxy's number for the client's connection, from 1
    up: bool  # client -> server
    length: int
    command: str  # an OP_MSG's command name (its body's first key); "" for a reply


class _Messages:
    """Counts whole wire messages in a byte stream (a 4-byte little-endian length first);
    with `heads`, also keeps each message's first bytes (enough for an OP_MSG's command name)."""

    HEAD = 64

    def __init__(self, *, heads: bool = False) -> None:
        self.buffer = b""
        self.left = 0  # bytes of the current message still to come
        self.heads: list[tuple[int, bytearray]] | None = [] if heads else None

    def feed(self, data: bytes) -> int:
        messages = 0
        view = memoryview(data)
        while len(view):
            if self.left:
                take = min(self.left, len(view))
                if self.heads and len(head := self.heads[-1][1]) < self.HEAD:
                    head += view[: min(take, self.HEAD - len(head))]
                self.left -= take
                view = view[take:]
                continue
            need = 4 - len(self.buffer)
            self.buffer += bytes(view[:need])
            view = view[need:]
            if len(self.buffer) == 4:
                (length,) = struct.unpack("<i", self.buffer)
                self.buffer = b""
                self.left = max(0, length - 4)
                messages += 1
                if self.heads is not None:
                    self.heads.append((length, bytearray()))
        return messages


def _command(up: bool, head: bytes) -> str:
    """The command an OP_MSG names, from its bytes after the length: requestID, responseTo,
    opCode (12), flags (4), section kind 0 (1), BSON (length 4, type 1, name NUL-terminated)."""
    if not up or len(head) < 23 or struct.unpack_from("<i", head, 8)[0] != 2013:
        return ""
    name = head[22:].split(b"\0", 1)[0]
    return name.decode("ascii", "replace")


class DelayProxy:
    def __init__(self, host: str, port: int, *, delay: float = 0.040, trace: bool = False) -> None:
        self.target_host, self.target_port, self.delay = host, port, delay
        self.counts = Counts()
        self.trace = trace
        self.traced: list[Traced] = []  # with `trace`: every message, reset by `reset`
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._ready = threading.Event()
        self._transports: set[asyncio.BaseTransport] = set()
        self._connections = 0

    @property
    def port(self) -> int:
        assert self._server is not None  # noqa: S101
        return int(self._server.sockets[0].getsockname()[1])

    def uri_for(self, database: str | None = None) -> str:
        return f"mongodb://{LISTEN_HOST}:{self.port}/{database or ''}?directConnection=true"

    def reset(self) -> Counts:
        """The counts so far; counting starts again from zero."""
        with self._lock:
            counts, self.counts = self.counts, Counts()
        return counts

    def take_trace(self) -> list[Traced]:
        """The messages traced so far (`trace=True`); tracing starts again from none."""
        with self._lock:
            traced, self.traced = self.traced, []
        return traced

    def start(self) -> DelayProxy:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="delay-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("delay proxy did not start")
        return self

    def stop(self) -> None:
        """Every connection closed, then the loop stopped."""
        if self._loop is not None and self._thread is not None:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._thread = None

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for transport in list(self._transports):
            transport.abort()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def __enter__(self) -> DelayProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        assert self._loop is not None  # noqa: S101
        asyncio.set_event_loop(self._loop)

        async def listen() -> None:
            self._server = await asyncio.start_server(self._handle, LISTEN_HOST, 0)
            self._ready.set()

        self._loop.run_until_complete(listen())
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.transport.abort()
            return
        with self._lock:
            self.counts.connections += 1
            self._connections += 1
            connection = self._connections
        self._transports |= {writer.transport, up_writer.transport}
        tasks = [
            asyncio.create_task(self._pump(reader, up_writer, up=True, connection=connection)),
            asyncio.create_task(self._pump(up_reader, writer, up=False, connection=connection)),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            writer.transport.abort()
            up_writer.transport.abort()
            self._transports -= {writer.transport, up_writer.transport}

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        up: bool,
        connection: int,
    ) -> None:
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        messages = _Messages(heads=self.trace)

        async def deliver() -> None:
            while (item := await queue.get()) is not None:
                due, data = item
                if (wait := due - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(deliver())
        with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
            try:
                while data := await reader.read(_CHUNK):
                    with self._lock:
                        if up:
                            self.counts.bytes_up += len(data)
                            self.counts.requests += messages.feed(data)
                        else:
                            self.counts.bytes_down += len(data)
                            if self.trace:
                                messages.feed(data)
                        if messages.heads:
                            now = time.time()
                            self.traced += [
                                Traced(now, connection, up, length, _command(up, bytes(head)))
                                for length, head in messages.heads
                            ]
                            messages.heads.clear()
                    queue.put_nowait((time.monotonic() + self.delay, data))
                queue.put_nowait(None)
                await sender
            finally:
                sender.cancel()
