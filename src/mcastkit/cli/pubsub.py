"""``mcast publish`` and ``mcast subscribe``: messages on topics, reliable or not."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from ..addr import format_endpoint
from ..aio import Node
from ..events import (
    UNKNOWN_END,
    Message,
    SlowReceiver,
    Unrecoverable,
)
from ..subscription import until_members
from . import argtypes, signals
from .node_options import member, node_options, reliable_options
from .output import UsageError, drop_warning, emit_json, note, preview, say, stdin_lines

T = TypeVar("T")
TEXT_LIMIT = 64 << 10  # larger payloads are shown by size and sha256, not as text


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the commands of this module."""
    publish = commands.add_parser("publish", help="publish a message on a topic")
    node_options(publish)
    publish.add_argument("topic", type=argtypes.topic())
    publish.add_argument("message", nargs="?", help="payload; absent or '-': stdin lines")
    publish.add_argument(
        "--count",
        type=argtypes.count("messages"),
        default=1,
        help="publish MESSAGE this many times",
    )
    publish.add_argument(
        "--interval",
        type=argtypes.seconds(allow_zero=True),
        default=0.0,
        help="seconds between messages",
    )
    publish.add_argument(
        "--wait",
        type=argtypes.seconds(allow_zero=True),
        default=0.0,
        help="seconds to wait for peers before publishing",
    )
    publish.add_argument(
        "--peers",
        type=argtypes.count("peers", minimum=0),
        default=0,
        help="with --wait: start as soon as this many peers are reached (one beyond "
        "multicast once its copies flow)",
    )
    publish.add_argument(
        "--reliable",
        action="store_true",
        help="in order, repaired on loss, any size up to --max-message",
    )
    publish.add_argument("--file", help="publish this file's content as one message (--reliable)")
    publish.add_argument(
        "--linger",
        type=argtypes.seconds(allow_zero=True),
        default=1.0,
        help="seconds to stay and serve repairs after a reliable publish (default 1)",
    )
    publish.add_argument(
        "--ack-timeout",
        type=argtypes.seconds(allow_zero=True),
        default=30.0,
        help="with --reliable: wait this long at most for every peer to acknowledge the whole "
        "stream; exit 3 naming those that did not (default 30, 0: do not wait)",
    )
    argtypes.add_json(publish, "JSON summary")
    reliable_options(publish)
    publish.set_defaults(handler=cmd_publish)

    subscribe = commands.add_parser("subscribe", help="print messages on a topic (prefix*)")
    node_options(subscribe)
    subscribe.add_argument(
        "topic",
        nargs="?",
        default="*",
        type=argtypes.topic(pattern=True),
        help="topic or prefix* (default all)",
    )
    subscribe.add_argument(
        "--count", type=argtypes.count("messages"), help="exit after this many messages"
    )
    subscribe.add_argument(
        "--timeout", type=argtypes.seconds(), help="exit after this many seconds"
    )
    argtypes.add_json(subscribe, "NDJSON output")
    reliable_options(subscribe)
    subscribe.set_defaults(handler=cmd_subscribe)


async def _given(payloads: list[bytes | str]) -> AsyncIterator[bytes | str]:
    for payload in payloads:
        yield payload


async def _run_publish(args: argparse.Namespace) -> int:
    if args.file is not None and not args.reliable:
        raise UsageError("--file needs --reliable (a file is one large message)")
    async with member(args) as node:
        if args.peers:
            # A peer beyond our multicast counts once its copies flow (it proved its address).
            enough = args.peers
            await until_members(
                node, lambda peers: sum(p.reached for p in peers.values()) >= enough, args.wait
            )
        else:
            await asyncio.sleep(args.wait)  # no count to wait for: the whole --wait
        if args.file is not None:
            try:
                with open(args.file, "rb") as handle:
                    payloads: AsyncIterator[bytes | str] = _given([handle.read()])
            except OSError as error:
                raise UsageError(f"cannot read {args.file}: {error.strerror}") from None
        elif args.message is not None and args.message != "-":
            payloads = _given([args.message] * args.count)
        else:
            payloads = stdin_lines()  # each line as it comes (tail -f | mcast publish t -)
        slow: list[SlowReceiver] = []
        _watch(node, SlowReceiver, slow.append)
        started = time.monotonic()
        size = sent = 0
        unacknowledged: list[int] = []
        names_of: dict[int, str] = {}
        try:
            number = 0
            async for payload in payloads:
                number += 1
                if number > 1 and args.interval:
                    await asyncio.sleep(args.interval)
                try:
                    await node.publish(args.topic, payload, reliable=args.reliable)
                except ValueError as error:
                    raise UsageError(str(error)) from None
                size += len(payload.encode() if isinstance(payload, str) else payload)
                sent += 1
            if args.reliable:
                await node.flush()
            elapsed = time.monotonic() - started
            if args.reliable and args.ack_timeout > 0:
                members = list(node.peers)
                # Named as they were: one that fails while we wait is still named after.
                names_of = {peer: info.name for peer, info in node.peers.items()}
                await node.flush(args.ack_timeout, acknowledged=True)
                unacknowledged = node.unacknowledged(members)
            if args.reliable and args.linger > 0:
                await asyncio.sleep(args.linger)  # receivers may still ask for repairs
        except asyncio.CancelledError:
            elapsed = time.monotonic() - started  # SIGINT / SIGTERM: say what went out
        stats = node.reliable_stats().get("sender", {})
        summary = {
            "topic": args.topic,
            "group": str(node.spec),
            "messages": sent,
            "bytes": size,
            "seconds": round(elapsed, 3),
            "mb_per_s": round(size / elapsed / 1e6, 2) if elapsed > 0 else None,
            "reliable": args.reliable,
            "peers": len(node.peers),
            "repairs_sent": stats.get("repairs-sent", 0),
            "nacks_received": stats.get("nacks-received", 0),
            # Repairs asked beyond the asker's share, sent when the rate was spare.
            "repairs_deferred": stats.get("repairs-deferred", 0),
            # Seqs receivers asked for after they left our window: lost there (and reported).
            "nacked_gone": stats.get("nacked-gone", 0),
            "slow_receivers": [f"{e.peer:016x}" for e in slow],
        }
        if args.reliable and args.ack_timeout > 0:
            summary["unacknowledged"] = [f"{peer:016x}" for peer in unacknowledged]
        if args.json:
            emit_json(summary)
        else:
            rate = f" in {elapsed:.2f} s ({summary['mb_per_s']} MB/s)" if args.reliable else ""
            repairs = f", {summary['repairs_sent']} repair(s)" if args.reliable else ""
            note(
                f"published {sent} message(s), {size} bytes, on {args.topic!r} "
                f"to {node.spec}{rate}{repairs}"
            )
            for event in slow:
                note(
                    f"slow receiver {event.peer:016x} dropped (acknowledged through {event.acked})"
                )
        partial = False
        if unacknowledged:
            names = ", ".join(_peer_label(names_of, peer) for peer in unacknowledged)
            note(
                f"partial: {len(unacknowledged)} of {len(names_of)} peer(s) did not "
                f"acknowledge within {args.ack_timeout:g} s: {names}"
            )
            partial = True
        if slow or summary["nacked_gone"]:
            # A receiver dropped as slow, or one asking for what the window no longer held,
            # lost messages (it reported them): not a success, whatever else went well.
            note(
                f"partial: {len(slow)} receiver(s) dropped as slow, "
                f"{summary['nacked_gone']} seq(s) asked for after they left the window "
                "(raise --window or --linger, or slow down with --rate)"
            )
            partial = True
        if partial:
            return 3
    return 0


def _peer_label(names: dict[int, str], peer: int) -> str:
    name = names.get(peer)
    return f"{peer:016x} ({name})" if name else f"{peer:016x}"


def _watch(node: Node, kind: type[T], handle: Callable[[T], None]) -> None:
    """Call ``handle`` with each ``kind`` event the node reports, while it runs."""

    async def watch() -> None:
        async for event in node.events(kind):  # type: ignore[arg-type]
            handle(event)  # type: ignore[arg-type]

    node.run_task(watch())


def cmd_publish(args: argparse.Namespace) -> int:
    """Publish messages."""
    return signals.run_async(lambda: _run_publish(args))


async def _run_subscribe(args: argparse.Namespace) -> int:
    received = 0
    losses: list[Unrecoverable] = []
    async with member(args) as node:
        inbox = node.subscribe(args.topic)
        note(f"subscribed to {args.topic!r} on {node.spec} via {node.interface}")

        def report_loss(event: Unrecoverable) -> None:
            losses.append(event)
            _print_loss(node, event, args.json)

        _watch(node, Unrecoverable, report_loss)
        deadline = None if args.timeout is None else time.monotonic() + args.timeout
        try:
            while args.count is None or received < args.count:
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    break
                message = await inbox.get(wait)
                if message is None:
                    break
                received += 1
                _print_message(message, args.json)
        except asyncio.CancelledError:
            pass  # SIGINT / SIGTERM: the summary below, then goodbye as the node stops
        kernel_drops = node.kernel_drops()
    note(f"{received} message(s) received, {len(losses)} loss report(s)")
    if kernel_drops:
        if args.json:  # one more object in the stream, as an unrecoverable is
            emit_json({"event": "kernel-drops", "count": kernel_drops})
        note(drop_warning(kernel_drops, meaning="repaired if reliable, lost if not"))
    if losses:
        return 3
    return 0 if received else 1


def _print_loss(node: Node, event: Unrecoverable, as_json: bool) -> None:
    peer = node.peers.get(event.sender)
    name = peer.name if peer else "?"
    if as_json:
        emit_json(
            {
                "event": "unrecoverable",
                "sender": f"{event.sender:016x}",
                "name": name,
                "first_seq": event.first_seq,
                "last_seq": None if event.last_seq == UNKNOWN_END else event.last_seq,
                "reason": event.reason,
                "partial_message": event.partial,
            }
        )
    else:
        end = "end" if event.last_seq == UNKNOWN_END else str(event.last_seq)
        note(
            f"LOST from {name} [{event.sender:016x}]: stream seq {event.first_seq}-{end} "
            f"cannot be repaired ({event.reason})"
        )


def _print_message(message: Message, as_json: bool) -> None:
    size = len(message.payload)
    if as_json:
        record: dict[str, Any] = {
            "topic": message.topic,
            "sender": f"{message.sender:016x}",
            "name": message.sender_name,
            "source": format_endpoint(*message.source),
            "iface": message.iface,
            "seq": message.seq,
            "reliable": message.reliable,
            "size": size,
        }
        if size <= TEXT_LIMIT:
            record["text"] = message.text()
        else:
            record["sha256"] = hashlib.sha256(message.payload).hexdigest()
        emit_json(record)
    elif size > TEXT_LIMIT:
        digest = hashlib.sha256(message.payload).hexdigest()
        say(f"[{message.topic}] <{message.sender_name}> {size} bytes, sha256 {digest}")
    else:
        say(f"[{message.topic}] <{message.sender_name}> {preview(message.payload, 200)}")


def cmd_subscribe(args: argparse.Namespace) -> int:
    """Print messages."""
    return signals.run_async(lambda: _run_subscribe(args))
