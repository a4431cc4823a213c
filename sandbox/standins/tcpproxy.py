"""A TCP proxy that can play dead or slow, in front of one database server.

The network path stand-in (`sandbox.standins.netpath`) runs one per database of an environment,
so that a fault injected into that environment is seen by every client that connects through its
configured host:port (the app, the watchdog's probes, the integrity sweep, a person with a mysql
client), while the other environment (even when proxied to the same server) is unaffected.

- `set_down(True)`: stop listening (new connections are refused) and abort every open connection.
- `delay`: seconds added to every chunk travelling from the server to the client, so each
  request/response round trip gets that much slower (connection set-up included).

Runnable alone for experiments: `python -m sandbox.standins.tcpproxy --port P --upstream H:P`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import time

log = logging.getLogger("tcpproxy")

_CHUNK = 65536


class TcpProxy:
    """Forward connections from listen_host:listen_port to upstream_host:upstream_port."""

    def __init__(
        self,
        name: str,
        listen_host: str,
        listen_port: int,
        upstream_host: str,
        upstream_port: int,
    ) -> None:
        self.name = name
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.delay = 0.0
        self.connections_total = 0
        self.refused_total = 0
        self.upstream_errors_total = 0
        self._down = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def down(self) -> bool:
        return self._down

    @property
    def active_connections(self) -> int:
        return len(self._writers) // 2

    async def start(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._handle, self.listen_host, self.listen_port, reuse_address=True
            )
            # Port 0 means "any": remember the one the OS gave us.
            self.listen_port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self._abort_all()
        for task in list(self._tasks):
            task.cancel()

    async def set_down(self, down: bool) -> None:
        if down == self._down:
            return
        self._down = down
        if down:
            await self.stop()
            log.info("%s: down (listener closed, connections aborted)", self.name)
        else:
            await self._start_retrying()
            log.info("%s: up again on %s", self.name, self.listen_port)

    async def _start_retrying(self) -> None:
        # The port was ours a moment ago; give the kernel a moment if it is still settling.
        for attempt in range(50):
            try:
                await self.start()
                return
            except OSError:
                if attempt == 49:
                    raise
                await asyncio.sleep(0.1)

    def _abort_all(self) -> None:
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self._writers.clear()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self._down:
            self.refused_total += 1
            client_w.transport.abort()
            return
        try:
            up_r, up_w = await asyncio.wait_for(
                asyncio.open_connection(self.upstream_host, self.upstream_port), timeout=5
            )
        except (OSError, TimeoutError) as exc:
            log.warning(
                "%s: upstream %s:%s unreachable: %s",
                self.name,
                self.upstream_host,
                self.upstream_port,
                exc,
            )
            self.upstream_errors_total += 1
            client_w.transport.abort()
            return
        self.connections_total += 1
        self._writers.update((client_w, up_w))
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        try:
            await asyncio.gather(
                self._pipe(client_r, up_w, delayed=False),
                self._pipe(up_r, client_w, delayed=True),
            )
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)  # type: ignore[arg-type]
            for w in (client_w, up_w):
                self._writers.discard(w)
                with contextlib.suppress(Exception):
                    w.close()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, delayed: bool
    ) -> None:
        if not delayed:
            try:
                while data := await reader.read(_CHUNK):
                    writer.write(data)
                    await writer.drain()
            finally:
                with contextlib.suppress(Exception):
                    writer.write_eof()
            return
        # Server-to-client data: each chunk is released `delay` seconds after it arrived, in
        # order, without serialising the waits (latency, not bandwidth).
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def release() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    with contextlib.suppress(Exception):
                        writer.write_eof()
                    return
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()

        releaser = asyncio.create_task(release())
        try:
            while data := await reader.read(_CHUNK):
                queue.put_nowait((time.monotonic() + self.delay, data))
            queue.put_nowait((time.monotonic() + self.delay, b""))
            await releaser
        finally:
            releaser.cancel()

    def stats(self) -> dict[str, object]:
        return {
            "listen": f"{self.listen_host}:{self.listen_port}",
            "upstream": f"{self.upstream_host}:{self.upstream_port}",
            "down": self._down,
            "delay_s": self.delay,
            "active_connections": self.active_connections,
            "connections_total": self.connections_total,
            "refused_total": self.refused_total,
            "upstream_errors_total": self.upstream_errors_total,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="host:port")
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    host, _, port = args.upstream.rpartition(":")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    async def run() -> None:
        proxy = TcpProxy("tcpproxy", args.host, args.port, host or "127.0.0.1", int(port))
        proxy.delay = args.delay
        await proxy.start()
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":
    main()
