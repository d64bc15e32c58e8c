"""The gateway's end of the pipe to its writer process: whole messages in one call when they
fit, a full pipe waited on in steps its caller can end."""

from __future__ import annotations

import os
import threading
from multiprocessing import Pipe

import pytest

from router.outcomes import handoff_pipe
from router.outcomes.handoff_pipe import PipeSender

DEADLINE_S = 60.0


def test_a_message_larger_than_the_pipe_arrives_whole() -> None:
    """Past what the pipe holds, the rest follows as the reader makes room, and the reader
    reads each message as ``Connection.send_bytes`` would have framed it."""
    ours, theirs = Pipe()
    sender = PipeSender(ours)
    body = os.urandom(3_000_000)  # the socket pair holds about 200 KiB
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.extend([theirs.recv_bytes(),
                                                         theirs.recv_bytes()]))
    reader.start()
    assert sender.send(body, keep_waiting=lambda: True)
    assert sender.send(b"short", keep_waiting=lambda: True)
    reader.join(DEADLINE_S)
    assert got == [body, b"short"]
    sender.close()


def test_a_full_pipe_is_given_up_on_when_the_caller_says_so() -> None:
    """Nobody reads: the sender asks its caller every step and stops when told to; once it
    hangs up, the reader finds the end of the pipe after the messages written whole, and the
    one cut short is never read as a message."""
    ours, theirs = Pipe()
    sender = PipeSender(ours)
    asked: list[int] = []

    def keep_waiting() -> bool:
        asked.append(1)
        return len(asked) < 3

    assert sender.send(b"whole", keep_waiting)
    assert not sender.send(os.urandom(3_000_000), keep_waiting)
    assert len(asked) == 3
    sender.hang_up()
    assert theirs.recv_bytes() == b"whole"
    with pytest.raises(OSError, match="end of file during message"):
        theirs.recv_bytes()  # the writer process stops there (writer_child.serve)
    sender.close()


def test_a_message_past_the_short_frame_takes_the_long_header(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Over 2 GiB, the length goes in the 8-byte header that ``recv_bytes`` reads."""
    monkeypatch.setattr(handoff_pipe, "_LONGEST_SHORT_FRAME", 10)
    ours, theirs = Pipe()
    sender = PipeSender(ours)
    body = b"x" * 100
    assert sender.send(body, keep_waiting=lambda: True)
    assert theirs.recv_bytes() == body
    sender.close()


def test_a_gone_reader_is_an_error_not_a_wait() -> None:
    """The writer process ended: the send raises, so that another can be started."""
    ours, theirs = Pipe()
    sender = PipeSender(ours)
    theirs.close()
    with pytest.raises(OSError):
        sender.send(b"to nobody", keep_waiting=lambda: True)
    sender.close()
