"""The transfer engines' state machines as tables, in the manner of h11: every phase a
sender or receiver may move to from where it is. A move the table does not allow is a bug
in the engine, and raises rather than corrupting a transfer."""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import TypeVar

from ..events import ReceiveState, SendPhase

__all__ = ["RECEIVE_TRANSITIONS", "SEND_TRANSITIONS", "StateError", "advance"]

SEND_TRANSITIONS: Mapping[SendPhase, frozenset[SendPhase]] = {
    # The deadline can end any phase.
    SendPhase.REGISTER: frozenset({SendPhase.DATA, SendPhase.DONE}),
    SendPhase.DATA: frozenset({SendPhase.STATUS, SendPhase.DONE}),
    # A status round starts the next pass, or finds everyone finished.
    SendPhase.STATUS: frozenset({SendPhase.DATA, SendPhase.DONE}),
    SendPhase.DONE: frozenset(),
}

RECEIVE_TRANSITIONS: Mapping[ReceiveState, frozenset[ReceiveState]] = {
    # An announce is taken, or refused before a byte is written.
    ReceiveState.WAITING: frozenset({ReceiveState.RECEIVING, ReceiveState.FAILED}),
    ReceiveState.RECEIVING: frozenset({ReceiveState.COMPLETE, ReceiveState.FAILED}),
    ReceiveState.COMPLETE: frozenset(),
    ReceiveState.FAILED: frozenset(),
}

State = TypeVar("State", bound=Enum)


class StateError(RuntimeError):
    """An engine tried a move its table does not allow."""


def advance(table: Mapping[State, frozenset[State]], current: State, new: State) -> State:
    """``new`` if the table allows the move from ``current``; staying put is always allowed."""
    if new != current and new not in table[current]:
        raise StateError(f"{type(current).__name__}: {current.value} -> {new.value} not allowed")
    return new
