"""Socket server for the ``Heavy`` service: binary protocol, buffered transport.

One thread per connection, as HeavyDB's threaded Thrift server does.  The transport reads
large messages (Arrow loads of hundreds of MB) with one preallocated buffer instead of
thrift's ``readAll`` concatenation, and the protocol has no string-length limit.  A columnar
``sql_execute`` result is written as pre-encoded bytes (see :mod:`results`).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
from io import BytesIO
from typing import Any

from heavydb.thrift import Heavy
from heavydb.thrift.ttypes import TDBException
from thrift.protocol.TBinaryProtocol import TBinaryProtocolAccelerated
from thrift.Thrift import TApplicationException, TMessageType, TType
from thrift.transport.TTransport import CReadableTransport, TTransportBase, TTransportException

from .handler import Handler
from .results import EncodedResult

log = logging.getLogger("sandbox.heavydb")

READ_BUFFER = 1 << 16
SOCKET_BUFFER = 4 << 20


class ConnectionTransport(TTransportBase, CReadableTransport):
    """A buffered transport over an accepted socket (what ``TBufferedTransport`` does, fast)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._rbuf = BytesIO(b"")
        self._wbuf: list[bytes] = []

    def isOpen(self) -> bool:
        return self.sock is not None

    def open(self) -> None:
        pass

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def _recv(self, n: int) -> bytes:
        try:
            data = self.sock.recv(n)
        except OSError as e:
            raise TTransportException(TTransportException.END_OF_FILE, str(e)) from e
        if not data:
            raise TTransportException(TTransportException.END_OF_FILE, "peer closed")
        return data

    def _recv_exact(self, n: int) -> bytes:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            try:
                k = self.sock.recv_into(view[got:], n - got)
            except OSError as e:
                raise TTransportException(TTransportException.END_OF_FILE, str(e)) from e
            if k == 0:
                raise TTransportException(TTransportException.END_OF_FILE, "peer closed")
            got += k
        return bytes(buf)

    def read(self, sz: int) -> bytes:
        ret = self._rbuf.read(sz)
        if ret:
            return ret
        self._rbuf = BytesIO(self._recv(max(sz, READ_BUFFER)))
        return self._rbuf.read(sz)

    def readAll(self, sz: int) -> bytes:
        head = self._rbuf.read(sz)
        if len(head) == sz:
            return head
        return head + self._recv_exact(sz - len(head))

    def write(self, buf: bytes) -> None:
        self._wbuf.append(bytes(buf))

    def write_parts(self, parts: list[bytes | memoryview]) -> None:
        """Send pending bytes then each piece, without concatenating them first."""
        self.flush()
        for part in parts:
            self.sock.sendall(part)

    def flush(self) -> None:
        if self._wbuf:
            out = b"".join(self._wbuf)
            self._wbuf = []
            self.sock.sendall(out)

    # CReadableTransport (used by thrift's C decoder)
    @property
    def cstringio_buf(self) -> BytesIO:
        return self._rbuf

    def cstringio_refill(self, partialread: bytes, reqlen: int) -> BytesIO:
        if reqlen - len(partialread) <= READ_BUFFER:
            data = partialread
            while len(data) < reqlen:
                data += self._recv(READ_BUFFER)
            self._rbuf = BytesIO(data)
            return self._rbuf
        # a large value (an Arrow stream, a big load): receive it in place
        buf = bytearray(reqlen)
        buf[: len(partialread)] = partialread
        view = memoryview(buf)
        got = len(partialread)
        while got < reqlen:
            try:
                k = self.sock.recv_into(view[got:], reqlen - got)
            except OSError as e:
                raise TTransportException(TTransportException.END_OF_FILE, str(e)) from e
            if k == 0:
                raise TTransportException(TTransportException.END_OF_FILE, "peer closed")
            got += k
        self._rbuf = BytesIO(buf)
        return self._rbuf


# methods whose IDL declares no TDBException: errors go back as TApplicationException text
_UNDECLARED = ("get_table_epoch", "get_table_epoch_by_name", "get_table_epochs", "set_table_epochs")


class SandboxProcessor(Heavy.Processor):
    def __init__(self, handler: Handler) -> None:
        super().__init__(handler)
        self._processMap["sql_execute"] = SandboxProcessor.process_sql_execute
        for name in _UNDECLARED:
            self._processMap[name] = _undeclared_processor(name)

    def process_sql_execute(self, seqid: int, iprot: Any, oprot: Any) -> None:
        args = Heavy.sql_execute_args()
        args.read(iprot)
        iprot.readMessageEnd()
        result = Heavy.sql_execute_result()
        try:
            res = self._handler.sql_execute_raw(
                args.session,
                args.query,
                args.column_format,
                args.nonce,
                args.first_n,
                args.at_most_n,
            )
        except TDBException as e:
            result.e = e
            res = None
        except Exception:
            log.exception("sql_execute failed")
            err = TApplicationException(TApplicationException.INTERNAL_ERROR, "Internal error")
            oprot.writeMessageBegin("sql_execute", TMessageType.EXCEPTION, seqid)
            err.write(oprot)
            oprot.writeMessageEnd()
            oprot.trans.flush()
            return
        oprot.writeMessageBegin("sql_execute", TMessageType.REPLY, seqid)
        if isinstance(res, EncodedResult):
            # sql_execute_result { 0: success (TQueryResult) } followed by STOP
            parts = [struct.pack(">bh", TType.STRUCT, 0), *res.parts, b"\x00"]
            if isinstance(oprot.trans, ConnectionTransport):
                oprot.trans.write_parts(parts)
                return
            for part in parts:
                oprot.trans.write(bytes(part))
        else:
            if res is not None:
                result.success = res
            result.write(oprot)
        oprot.writeMessageEnd()
        oprot.trans.flush()


def _undeclared_processor(name: str) -> Any:
    args_cls = getattr(Heavy, f"{name}_args")
    result_cls = getattr(Heavy, f"{name}_result")

    def process(self: SandboxProcessor, seqid: int, iprot: Any, oprot: Any) -> None:
        args = args_cls()
        args.read(iprot)
        iprot.readMessageEnd()
        values = [getattr(args, spec[2]) for spec in args_cls.thrift_spec if spec is not None]
        try:
            result = result_cls()
            result.success = getattr(self._handler, name)(*values)
            msg_type = TMessageType.REPLY
            out: Any = result
        except TDBException as e:
            msg_type = TMessageType.EXCEPTION
            out = TApplicationException(TApplicationException.INTERNAL_ERROR, e.error_msg)
        except Exception:
            log.exception("%s failed", name)
            msg_type = TMessageType.EXCEPTION
            out = TApplicationException(TApplicationException.INTERNAL_ERROR, "Internal error")
        oprot.writeMessageBegin(name, msg_type, seqid)
        out.write(oprot)
        oprot.writeMessageEnd()
        oprot.trans.flush()

    return process


class SandboxServer:
    """Accepts connections and serves each on its own thread until :meth:`shutdown`."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1", port: int = 6274) -> None:
        self.handler = handler
        self.processor = SandboxProcessor(handler)
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Large fixed socket buffers (inherited by accepted sockets): thrift's Python TSocket
        # re-slices its send buffer after every partial send(), so the more each send() can
        # hand to the kernel the fewer copies a big Arrow load costs the client.
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
        self.sock.bind((host, port))
        self.sock.listen(128)
        self.sock.settimeout(0.2)
        self.host, self.port = self.sock.getsockname()[:2]
        self._stop = threading.Event()
        self._clients: set[socket.socket] = set()
        self._lock = threading.Lock()

    def serve_forever(self) -> None:
        while not self._stop.is_set():
            try:
                conn, addr = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    break
                raise
            conn.settimeout(None)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._clients.add(conn)
            threading.Thread(
                target=self._serve_client, args=(conn, addr), daemon=True, name=f"heavy-{addr[1]}"
            ).start()

    def _serve_client(self, conn: socket.socket, addr: Any) -> None:
        trans = ConnectionTransport(conn)
        proto = TBinaryProtocolAccelerated(
            trans, string_length_limit=None, container_length_limit=None
        )
        self.handler.set_client_address(f"tcp:{addr[0]}:{addr[1]}")
        try:
            while not self._stop.is_set():
                self.processor.process(proto, proto)
        except TTransportException:
            pass
        except (ConnectionError, OSError):
            pass
        except Exception:
            log.exception("connection %s failed", addr)
        finally:
            trans.close()
            with self._lock:
                self._clients.discard(conn)

    def shutdown(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.sock.close()
        with self._lock:
            clients = list(self._clients)
        for c in clients:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
