"""Group commands over Node: chat, peers, publish, subscribe, request, serve, keygen."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ..addr import format_endpoint
from ..aio import DEFAULT_GROUP, Node, Request
from ..reliable import UNKNOWN_END, ReliableConfig, SlowReceiver, Unrecoverable
from ..security import write_key_file
from ..session import Failed, IdRenewed, Joined, Left, Message, Updated
from ..units import parse_rate
from . import argtypes, signals
from .output import UsageError, add_key_options, emit_json, group_key, note, preview, say

COMMAND_TIMEOUT = 30.0  # seconds a serve --command may take per request
T = TypeVar("T")
TEXT_LIMIT = 64 << 10  # larger payloads are shown by size and sha256, not as text


def _node_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--group",
        default=DEFAULT_GROUP,
        metavar="GROUP:PORT",
        help=f"group to join (default {DEFAULT_GROUP})",
    )
    parser.add_argument("--iface", help="interface name, index or address (default: route)")
    parser.add_argument("--name", help="this node's name (default host-pid)")
    parser.add_argument("--ttl", type=argtypes.TTL, default=1, help="TTL / hop limit (default 1)")
    add_key_options(parser)
    parser.add_argument(
        "--heartbeat", type=argtypes.seconds(), default=1.0, help="seconds between heartbeats"
    )
    parser.add_argument(
        "--failure-timeout",
        type=argtypes.seconds(),
        help="seconds of silence before a peer is failed (default 3 heartbeats)",
    )
    parser.add_argument(
        "--max-skew",
        type=argtypes.seconds(),
        default=30.0,
        help="sealed groups: refuse frames stamped further than this from our clock "
        "(default 30 s; the hosts' clocks must agree this well)",
    )


def _reliable_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("reliable streams")
    group.add_argument(
        "--max-message",
        type=argtypes.size(),
        default="64M",
        metavar="SIZE",
        help="largest reliable message accepted or sent (default 64M)",
    )
    group.add_argument(
        "--window",
        type=argtypes.size(64 << 10),
        default="32M",
        metavar="SIZE",
        help="retransmit window the sender keeps for repairs (default 32M)",
    )
    group.add_argument(
        "--rate",
        type=argtypes.rate(allow_auto=True),
        default="auto",
        help="reliable sending rate: auto (default: from 1 Gbit/s, backing off when receivers "
        "are overrun, not for random loss), a fixed 200M (bits/s) or 50kpps, or max (no cap)",
    )
    group.add_argument(
        "--slow-receiver",
        choices=("drop", "wait"),
        default="drop",
        help="drop: never wait, laggards get an unrecoverable event (default); wait: hold "
        "new data until receivers acknowledge, dropping one stalled for --slow-timeout",
    )
    group.add_argument(
        "--slow-timeout",
        type=argtypes.seconds(),
        default=5.0,
        help="seconds a stalled receiver is waited for",
    )


def _reliable_config(args: argparse.Namespace) -> ReliableConfig | None:
    if not hasattr(args, "max_message"):
        return None
    try:
        adaptive = args.rate == "auto"
        rate = None if adaptive else parse_rate(args.rate)
        return ReliableConfig(
            adaptive_rate=adaptive,
            max_message=args.max_message,
            window_bytes=args.window,
            rate_pps=rate.value if rate and rate.per_packet else None,
            rate_bps=rate.value if rate and not rate.per_packet else None,
            slow_receiver=args.slow_receiver,
            slow_timeout=args.slow_timeout,
        )
    except ValueError as error:
        raise UsageError(str(error)) from None


def _make_node(args: argparse.Namespace) -> Node:
    return Node(
        args.group,
        iface=args.iface,
        name=args.name,
        ttl=args.ttl,
        key=group_key(args, args.group),
        heartbeat=args.heartbeat,
        failure_timeout=args.failure_timeout,
        reliable=_reliable_config(args),
        max_skew=args.max_skew,
    )


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the commands of this module."""
    chat = commands.add_parser("chat", help="chat with the group: lines typed go to everyone")
    _node_options(chat)
    chat.add_argument("--topic", default="chat", help="topic for chat lines (default chat)")
    chat.set_defaults(handler=cmd_chat)

    peers = commands.add_parser("peers", help="who is in the group (live, or --once)")
    _node_options(peers)
    peers.add_argument("--once", action="store_true", help="listen --wait seconds, print, exit")
    peers.add_argument(
        "--wait", type=argtypes.seconds(), default=2.0, help="seconds to discover (--once)"
    )
    peers.add_argument("--json", action="store_true", help="JSON output")
    peers.set_defaults(handler=cmd_peers)

    publish = commands.add_parser("publish", help="publish a message on a topic")
    _node_options(publish)
    publish.add_argument("topic")
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
        help="with --wait: start as soon as this many peers are seen",
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
    publish.add_argument("--json", action="store_true", help="JSON summary")
    _reliable_options(publish)
    publish.set_defaults(handler=cmd_publish)

    subscribe = commands.add_parser("subscribe", help="print messages on a topic (prefix*)")
    _node_options(subscribe)
    subscribe.add_argument("topic", nargs="?", default="*", help="topic or prefix* (default all)")
    subscribe.add_argument(
        "--count", type=argtypes.count("messages"), help="exit after this many messages"
    )
    subscribe.add_argument(
        "--timeout", type=argtypes.seconds(), help="exit after this many seconds"
    )
    subscribe.add_argument("--json", action="store_true", help="NDJSON output")
    _reliable_options(subscribe)
    subscribe.set_defaults(handler=cmd_subscribe)

    request = commands.add_parser("request", help="ask the group and gather replies")
    _node_options(request)
    request.add_argument("topic")
    request.add_argument("message", nargs="?", default="")
    request.add_argument(
        "--timeout", type=argtypes.seconds(), default=1.0, help="seconds to gather"
    )
    request.add_argument(
        "--want", type=argtypes.want(), default="all", help="all, first, or a number of replies"
    )
    request.add_argument(
        "--wait",
        type=argtypes.seconds(allow_zero=True),
        default=1.5,
        help="seconds to discover serving peers first",
    )
    request.add_argument("--json", action="store_true", help="JSON output")
    request.set_defaults(handler=cmd_request)

    serve = commands.add_parser("serve", help="answer requests on a topic")
    _node_options(serve)
    serve.add_argument("topic")
    how = serve.add_mutually_exclusive_group(required=True)
    how.add_argument("--reply", help="answer with this fixed text")
    how.add_argument(
        "--command",
        help="answer with this shell command's output (the request payload on its stdin)",
    )
    serve.add_argument("--timeout", type=argtypes.seconds(), help="exit after this many seconds")
    serve.set_defaults(handler=cmd_serve)

    keygen = commands.add_parser("keygen", help="write a new random group key file")
    keygen.add_argument("path", help="file to create (mode 0600; never overwritten)")
    keygen.set_defaults(handler=cmd_keygen)


def cmd_keygen(args: argparse.Namespace) -> int:
    """Write a key file."""
    key = write_key_file(args.path)
    note(f"wrote {args.path} (key id {key.key_id:08x}); copy it to every member")
    return 0


def _describe(event: object) -> tuple[str, dict[str, Any]]:
    if isinstance(event, IdRenewed):
        return (
            f"our id clashed with another node: now {event.new_id:016x}",
            {"event": "id-renewed", "old": f"{event.old_id:016x}", "new": f"{event.new_id:016x}"},
        )
    assert isinstance(event, Joined | Left | Failed | Updated)
    kind = type(event).__name__.lower()
    peer = event.peer
    where = format_endpoint(*peer.address) if peer.address else "?"
    return f"{peer.name} [{peer.node_id:016x}] {kind} ({where})", {"event": kind, **peer.to_dict()}


async def _run_chat(args: argparse.Namespace) -> int:
    async with _make_node(args) as node:
        inbox = node.subscribe(args.topic)
        note(f"chat on {node.spec} via {node.interface} as {node.name}; /peers, /quit")
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[str | None] = asyncio.Queue()

        def read_stdin() -> None:
            for line in sys.stdin:
                loop.call_soon_threadsafe(lines.put_nowait, line.rstrip("\n"))
            loop.call_soon_threadsafe(lines.put_nowait, None)

        loop.run_in_executor(None, read_stdin)

        async def show_messages() -> None:
            async for message in inbox:
                say(f"<{message.sender_name}> {message.text()}")

        async def show_membership() -> None:
            async for event in node.membership():
                note(f"* {_describe(event)[0]}")

        tasks = [asyncio.ensure_future(show_messages()), asyncio.ensure_future(show_membership())]
        try:
            while (line := await lines.get()) is not None:
                if line == "/quit":
                    break
                if line == "/peers":
                    for peer in node.peers.values():
                        say(f"  {peer.name} [{peer.node_id:016x}] loss {peer.loss:.1%}")
                    continue
                if line:
                    # A line longer than one datagram goes on the reliable stream (any size).
                    assert node.session is not None
                    big = len(line.encode()) > node.session.max_unreliable(args.topic)
                    await node.publish(args.topic, line, reliable=big)
            await asyncio.sleep(0.2)  # let replies to the last line arrive when piped
        finally:
            for task in tasks:
                task.cancel()
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    """Interactive (or piped) chat."""
    return signals.run_async(lambda: _run_chat(args))


async def _run_peers(args: argparse.Namespace) -> int:
    async with _make_node(args) as node:
        if args.once:
            await asyncio.sleep(args.wait)
            peers = sorted(node.peers.values(), key=lambda p: p.name)
            if args.json:
                emit_json(
                    {
                        "self": {"id": f"{node.node_id:016x}", "name": node.name},
                        "peers": [p.to_dict() for p in peers],
                    }
                )
            else:
                for peer in peers:
                    where = format_endpoint(*peer.address) if peer.address else "?"
                    say(
                        f"{peer.name:<20} {peer.node_id:016x}  {where:<22} "
                        f"loss {peer.loss:5.1%}  host {peer.meta.get('host', '?')}"
                    )
                note(f"{len(peers)} peer(s) besides this node")
            return 0
        note(f"watching {node.spec} via {node.interface}; Ctrl-C to stop")
        if not args.json and sys.stdout.isatty():
            await _live_table(node)
            return 0
        async for event in node.membership():
            text, data = _describe(event)
            if args.json:
                emit_json(data)
            else:
                say(f"{time.strftime('%H:%M:%S')} {text}  ({len(node.peers)} peer(s))")
    return 0


def _peer_table(node: Node) -> Any:
    from rich.table import Table

    table = Table(
        title=f"{node.spec} via {node.interface}: {len(node.peers)} peer(s)", title_justify="left"
    )
    for column in ("name", "id", "address", "host", "last seen", "received", "loss", "rtt"):
        table.add_column(column, justify="right" if column in ("received", "loss") else "left")
    loop_now = asyncio.get_running_loop().time()
    for peer in sorted(node.peers.values(), key=lambda p: p.name):
        where = format_endpoint(*peer.address) if peer.address else "?"
        rtt = "" if peer.rtt is None else f"{peer.rtt * 1000:.2f} ms"
        table.add_row(
            peer.name,
            f"{peer.node_id:016x}",
            where,
            str(peer.meta.get("host", "?")),
            f"{loop_now - peer.last_seen:.1f}s ago",
            str(peer.received),
            f"{peer.loss:.1%}",
            rtt,
        )
    return table


async def _live_table(node: Node) -> None:
    from rich.console import Console
    from rich.live import Live

    console = Console(log_path=False)
    with Live(_peer_table(node), console=console, refresh_per_second=4) as live:
        events = node.membership()

        async def log_events() -> None:
            async for event in events:
                console.log(_describe(event)[0], markup=False, log_locals=False)

        logger = asyncio.ensure_future(log_events())
        try:
            while True:
                await asyncio.sleep(0.5)
                live.update(_peer_table(node))
        finally:
            logger.cancel()


def cmd_peers(args: argparse.Namespace) -> int:
    """List or watch members."""
    return signals.run_async(lambda: _run_peers(args))


async def _run_publish(args: argparse.Namespace) -> int:
    if args.file is not None and not args.reliable:
        raise UsageError("--file needs --reliable (a file is one large message)")
    async with _make_node(args) as node:
        deadline = time.monotonic() + args.wait
        while time.monotonic() < deadline and not (args.peers and len(node.peers) >= args.peers):
            await asyncio.sleep(0.02)
        if args.file is not None:
            try:
                with open(args.file, "rb") as handle:
                    payloads: list[bytes | str] = [handle.read()]
            except OSError as error:
                raise UsageError(f"cannot read {args.file}: {error.strerror}") from None
        elif args.message is not None and args.message != "-":
            payloads = [args.message] * args.count
        else:
            payloads = [line.rstrip("\n") for line in sys.stdin]
        slow: list[SlowReceiver] = []
        _watch(node, SlowReceiver, slow.append)
        started = time.monotonic()
        size = sent = 0
        try:
            for number, payload in enumerate(payloads):
                if number and args.interval:
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
            "slow_receivers": [f"{e.peer:016x}" for e in slow],
        }
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
    return 0


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
    async with _make_node(args) as node:
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
    note(f"{received} message(s) received, {len(losses)} loss report(s)")
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


async def _run_request(args: argparse.Namespace) -> int:
    want = args.want
    async with _make_node(args) as node:
        # Peers announce what they serve in their hello; give them time to be heard.
        deadline = time.monotonic() + args.wait
        while time.monotonic() < deadline and not any(
            p.serves(args.topic) for p in node.peers.values()
        ):
            await asyncio.sleep(0.05)
        result = await node.request(args.topic, args.message, timeout=args.timeout, want=want)
    if args.json:
        emit_json(result.to_dict())
    else:
        for reply in result.to_dict()["replies"]:
            say(f"{reply['name']:<20} {reply['rtt_ms']:>8.3f} ms  {reply['payload']}")
        for missing in result.to_dict()["missing"]:
            say(f"{missing['name']:<20} no reply")
    if not result.replies:
        note("no replies: is any node serving this topic (`mcast serve`)?")
        return 1
    return 0 if result.complete or want != "all" else 3


def cmd_request(args: argparse.Namespace) -> int:
    """Request and gather."""
    return signals.run_async(lambda: _run_request(args))


async def _run_serve(args: argparse.Namespace) -> int:
    async def answer(request: Request) -> bytes:
        if args.reply is not None:
            return str(args.reply).encode()
        # Not subprocess.run: the node keeps its heartbeats (and other requests) going.
        proc = await asyncio.create_subprocess_shell(
            args.command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(request.payload), COMMAND_TIMEOUT)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            return f"error: the command ran longer than {COMMAND_TIMEOUT:.0f}s".encode()
        if proc.returncode != 0:
            detail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
            note(f"--command exited {proc.returncode} for a request from {request.sender_name}")
            return f"error: the command exited {proc.returncode}: {detail[0]}".encode()
        return out

    async with _make_node(args) as node:
        assert node.session is not None
        limit = node.session.max_reply(args.topic)
        if args.reply is not None and len(args.reply.encode()) > limit:
            raise UsageError(
                f"--reply is {len(args.reply.encode())} bytes; one reply holds {limit} "
                f"on topic {args.topic!r}"
            )
        node.serve(args.topic, answer)
        note(f"serving {args.topic!r} on {node.spec} via {node.interface} as {node.name}")
        if args.timeout is None:
            await asyncio.Event().wait()
        await asyncio.sleep(args.timeout)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Answer requests."""
    return signals.run_async(lambda: _run_serve(args))
