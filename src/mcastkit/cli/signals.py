"""SIGINT and SIGTERM for every command: end with the summary, say goodbye, exit 130 or 143.

Three ways a command meets a signal, one outcome:
- a blocking loop that installs ``CtrlC`` sees a flag and ends its loop with its summary;
- any other blocking code gets ``KeyboardInterrupt`` (for SIGTERM too);
- an asyncio command run by ``run_async`` has its task cancelled, so ``async with Node``
  leaves through ``stop()`` and says GOODBYE (peers report "left", not "failed").
The entry point then exits 128 + the signal number. A signal the shell set to be ignored (a
background job without job control) stays ignored.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import Any, TypeVar

HANDLED = (signal.SIGINT, signal.SIGTERM)
T = TypeVar("T")


class _State:
    received: int | None = None


STATE = _State()


def _note(signum: int) -> None:
    if STATE.received is None:
        STATE.received = signum


def _raise(signum: int, _frame: FrameType | None) -> None:
    _note(signum)
    raise KeyboardInterrupt


def install() -> None:
    """Make SIGTERM interrupt like SIGINT (both remembered for the exit code)."""
    STATE.received = None
    for signum in HANDLED:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _raise)


def exit_code(default: int) -> int:
    """128 + the signal that interrupted the command, else ``default``."""
    return default if STATE.received is None else 128 + STATE.received


class CtrlC:
    """While installed, SIGINT and SIGTERM set a flag instead of raising: a long command ends
    its loop and prints its summary. Call the object to ask (it fits ``stop=`` callbacks)."""

    def __init__(self) -> None:
        self.pressed = False
        self._previous: dict[int, Any] = {}

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        _note(signum)
        self.pressed = True

    def install(self) -> CtrlC:
        """Take over SIGINT and SIGTERM (unless ignored)."""
        for signum in HANDLED:
            if signal.getsignal(signum) is not signal.SIG_IGN:
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def restore(self) -> None:
        """Give the signals back."""
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def __call__(self) -> bool:
        return self.pressed

    def __enter__(self) -> CtrlC:
        return self.install()

    def __exit__(self, *exc_info: object) -> None:
        self.restore()


def run_async(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """``asyncio.run`` where SIGINT / SIGTERM cancel the command. It may catch the
    cancellation to finish with its summary; if it does not, KeyboardInterrupt is raised
    (the entry point exits 128 + the signal)."""
    import asyncio  # here: commands that never use it do not pay for loading it

    async def runner() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def on_signal(signum: int) -> None:
            _note(signum)
            task.cancel()

        installed = [s for s in HANDLED if signal.getsignal(s) is not signal.SIG_IGN]
        for signum in installed:
            loop.add_signal_handler(signum, on_signal, signum)
        try:
            return await make()
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)
                signal.signal(signum, _raise)  # interrupts during shutdown still count

    try:
        return asyncio.run(runner())
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None
