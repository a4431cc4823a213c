"""Small helpers shared by the HeavyDB sandbox tests."""

from __future__ import annotations

from typing import Any

from heavydb.thrift.Heavy import Client
from thrift.protocol import TBinaryProtocol
from thrift.transport import TSocket, TTransport


def rows(con: Any, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    cur = con.cursor()
    cur.execute(sql, params or None)
    return list(cur.fetchall())


def run(con: Any, sql: str) -> None:
    con.cursor().execute(sql)


def raw_client(host: str, port: int) -> tuple[Client, TTransport.TBufferedTransport]:
    """A bare Thrift client (binary protocol, buffered transport), as pyheavydb builds it."""
    sock = TSocket.TSocket(host, port)
    trans = TTransport.TBufferedTransport(sock)
    trans.open()
    return Client(TBinaryProtocol.TBinaryProtocolAccelerated(trans)), trans
