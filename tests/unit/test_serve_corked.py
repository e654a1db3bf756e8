"""The server's response writes: uvicorn's bytes, with the head and the first body message in one write."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.flow_control import FlowControl

from imgcls.serve.protocol import CorkedCycle

LOG = logging.getLogger("test")


class Transport:
    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes]] = []

    def write(self, data: bytes) -> None:
        self.calls.append(("write", data))

    def close(self) -> None:
        self.calls.append(("close", b""))

    def is_closing(self) -> bool:
        return False


def _answer(messages: list[dict[str, Any]], *, method: str = "POST", keep_alive: bool = True) -> Transport:
    async def go() -> Transport:
        transport = Transport()
        scope: Any = {"method": method, "http_version": "1.1", "path": "/", "query_string": b""}
        cycle = CorkedCycle(scope, transport, FlowControl(transport), LOG, LOG, False, [], asyncio.Event(),  # type: ignore[arg-type]
                            False, keep_alive, lambda: None)  # fmt: skip
        for message in messages:
            await cycle.send(message)
        assert cycle.response_complete
        return transport

    return asyncio.run(go())


def _start(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {"type": "http.response.start", "status": 200, "headers": headers}


def test_a_one_message_answer_is_one_write_of_head_and_body() -> None:
    t = _answer([_start([(b"content-length", b"5")]), {"type": "http.response.body", "body": b"hello"}])
    assert [kind for kind, _ in t.calls] == ["write"]
    assert t.calls[0][1] == b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"


def test_streamed_chunked_close_and_head_answers_keep_uvicorns_bytes_and_order() -> None:
    chunked = _answer([_start([]), {"type": "http.response.body", "body": b"ab", "more_body": True},
                       {"type": "http.response.body", "body": b"c"}])  # fmt: skip
    assert [data for _, data in chunked.calls] == [
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nab\r\n",  # the head rides with the first chunk
        b"1\r\nc\r\n0\r\n\r\n",
    ]
    closing = _answer([_start([(b"content-length", b"2")]), {"type": "http.response.body", "body": b"ok"}],
                      keep_alive=False)  # fmt: skip
    assert [kind for kind, _ in closing.calls] == ["write", "close"]  # written before the connection closes
    assert closing.calls[0][1].endswith(b"connection: close\r\n\r\nok")
    head = _answer([_start([(b"content-length", b"9")]), {"type": "http.response.body", "body": b""}], method="HEAD")
    assert [data for _, data in head.calls] == [b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n"]


def test_a_buffered_body_is_read_without_waiting_and_a_partial_one_is_not_taken_for_complete() -> None:
    """The gateway skips its read deadline only when the cycle has the whole body; otherwise it waits under it."""
    from imgcls.serve.gateway import _buffered

    async def go() -> tuple[bool, bool, bool, bytes]:
        transport = Transport()
        scope: Any = {"method": "POST", "http_version": "1.1", "path": "/", "query_string": b""}
        event = asyncio.Event()
        cycle = CorkedCycle(scope, transport, FlowControl(transport), LOG, LOG, False, [], event,  # type: ignore[arg-type]
                            False, True, lambda: None)  # fmt: skip
        before = _buffered(cycle.receive)  # nothing arrived yet
        cycle.body += b"part"  # what on_body does
        event.set()
        partial = _buffered(cycle.receive)  # some arrived, the message is not complete
        cycle.more_body = False  # what on_message_complete does
        complete = _buffered(cycle.receive)
        message = await asyncio.wait_for(cycle.receive(), 1)
        return before, partial, complete, message["body"]

    before, partial, complete, body = asyncio.run(go())
    assert (before, partial, complete, body) == (False, False, True, b"part")

    async def other_receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    assert _buffered(other_receive) is False  # any other server or test client: read under the deadline
