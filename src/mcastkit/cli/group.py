"""``mcast chat``, ``mcast peers`` and ``mcast keygen``: the members of a group."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from ..addr import format_endpoint
from ..aio import Node
from ..events import (
    Event,
    Failed,
    IdRenewed,
    InterfaceEvent,
    Joined,
    Left,
    PeerEvent,
    Updated,
)
from ..keyfiles import write_key_file
from ..transport.interfaces import router_hint
from . import argtypes, signals
from .node_options import member, node_options
from .output import emit_json, note, say, stdin_lines


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the commands of this module."""
    chat = commands.add_parser("chat", help="chat with the group: lines typed go to everyone")
    node_options(chat)
    chat.add_argument("--topic", default="chat", help="topic for chat lines (default chat)")
    chat.set_defaults(handler=cmd_chat)

    peers = commands.add_parser("peers", help="who is in the group (live, or --once)")
    node_options(peers)
    peers.add_argument("--once", action="store_true", help="listen --wait seconds, print, exit")
    peers.add_argument(
        "--wait", type=argtypes.seconds(), default=2.0, help="seconds to discover (--once)"
    )
    argtypes.add_json(peers, "JSON output")
    peers.set_defaults(handler=cmd_peers)

    keygen = commands.add_parser(
        "keygen",
        help="write a new random group key file (or, with --sign, a sender's signing key)",
    )
    keygen.add_argument("path", help="file to create (mode 0600; never overwritten)")
    keygen.add_argument(
        "--sign",
        action="store_true",
        help="an Ed25519 signing key for send-file --sign-key instead; its public half goes "
        "to PATH.pub and to stdout, for recv-file --trust",
    )
    argtypes.add_json(keygen, "key id (and public key) as JSON")
    keygen.set_defaults(handler=cmd_keygen)


def cmd_keygen(args: argparse.Namespace) -> int:
    """Write a key file."""
    if args.sign:
        from ..keyfiles import write_signing_key
        from ..transfer.trust import fingerprint, public_text

        public = write_signing_key(args.path)
        text = public_text(public)
        if args.json:
            emit_json({"path": args.path, "public": text, "fingerprint": fingerprint(public).hex()})
        else:
            note(
                f"wrote {args.path} (keep it private) and {args.path}.pub; receivers trust "
                f"this sender with --trust {text}"
            )
            say(text)
        return 0
    key = write_key_file(args.path)
    if args.json:
        emit_json({"path": args.path, "key_id": f"{key.key_id:08x}"})
    else:
        note(f"wrote {args.path} (key id {key.key_id:08x}); copy it to every member")
    return 0


WATCHED = (PeerEvent, IdRenewed, InterfaceEvent)  # what peers and chat show as it happens


def _where(node: Node) -> str:
    return ", ".join(node.interfaces) or node.interface


def _address(peer: Any) -> str:
    """Where a peer is: its address, or each interface's when heard on several."""
    if len(peer.paths) > 1:
        return " ".join(f"{iface}:{format_endpoint(*at)}" for iface, at in peer.paths.items())
    return format_endpoint(*peer.address) if peer.address else "?"


def _describe(event: Event) -> tuple[str, dict[str, Any]]:
    if isinstance(event, InterfaceEvent):
        return event.describe(), event.to_dict()
    if isinstance(event, IdRenewed):
        return (
            f"our id clashed with another node: now {event.new_id:016x}",
            {"event": "id-renewed", "old": f"{event.old_id:016x}", "new": f"{event.new_id:016x}"},
        )
    assert isinstance(event, Joined | Left | Failed | Updated)
    kind = type(event).__name__.lower()
    peer = event.peer
    text = f"{peer.name} [{peer.node_id:016x}] {kind} ({_address(peer)})"
    return text, {"event": kind, **_with_wall_clock(peer.to_dict())}


def _with_wall_clock(data: dict[str, Any]) -> dict[str, Any]:
    """``last_seen`` is the event loop's clock (for intervals); scripts also want the time of
    day: ``last_seen_unix``, seconds since the epoch (issue 25, item 10)."""
    if data.get("last_seen") is not None:
        age = asyncio.get_running_loop().time() - data["last_seen"]
        data["last_seen_unix"] = round(time.time() - age, 3)
    return data


async def _run_chat(args: argparse.Namespace) -> int:
    async with member(args) as node:
        inbox = node.subscribe(args.topic)
        note(f"chat on {node.spec} via {_where(node)} as {node.name}; /peers, /quit")

        async def show_messages() -> None:
            async for message in inbox:
                say(f"<{message.sender_name}> {message.text()}")

        async def show_membership() -> None:
            async for event in node.events(*WATCHED):
                note(f"* {_describe(event)[0]}")

        tasks = [asyncio.ensure_future(show_messages()), asyncio.ensure_future(show_membership())]
        try:
            async for line in stdin_lines():
                if line == "/quit":
                    break
                if line == "/peers":
                    for peer in node.peers.values():
                        say(f"  {peer.name} [{peer.node_id:016x}] {peer.path} loss {peer.loss:.1%}")
                    continue
                if line:
                    # Every line on the reliable stream: any length, repaired, and in order (a
                    # long line there was overtaken by the short ones sent plainly after it).
                    await node.publish(args.topic, line, reliable=True)
            await asyncio.sleep(0.2)  # let replies to the last line arrive when piped
        finally:
            for task in tasks:
                task.cancel()
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    """Interactive (or piped) chat."""
    return signals.run_async(lambda: _run_chat(args))


async def _run_peers(args: argparse.Namespace) -> int:
    async with member(args) as node:
        if args.once:
            await asyncio.sleep(args.wait)
            peers = sorted(node.peers.values(), key=lambda p: p.name)
            if args.json:
                emit_json(
                    {
                        "self": {"id": f"{node.node_id:016x}", "name": node.name},
                        "peers": [_with_wall_clock(p.to_dict()) for p in peers],
                    }
                )
            else:
                for peer in peers:
                    say(
                        f"{peer.name:<20} {peer.node_id:016x}  {_address(peer):<22} "
                        f"{peer.path:<9} loss {peer.loss:5.1%}  host {peer.meta.get('host', '?')}"
                    )
                note(f"{len(peers)} peer(s) besides this node")
            if not peers:
                fix = (
                    f"every member needs --ttl 4 or more (mcast peers --group {node.spec} --ttl 4)"
                )
                hint = router_hint(node.spec, node.interfaces, fix)
                if hint:
                    note(hint)
            return 0
        note(f"watching {node.spec} via {_where(node)}; Ctrl-C to stop")
        if not args.json and sys.stdout.isatty():
            await _live_table(node)
            return 0
        async for event in node.events(*WATCHED):
            text, data = _describe(event)
            if args.json:
                emit_json(data)
            else:
                say(f"{time.strftime('%H:%M:%S')} {text}  ({len(node.peers)} peer(s))")
    return 0


def _peer_table(node: Node) -> Any:
    from rich.table import Table

    table = Table(
        title=f"{node.spec} via {_where(node)}: {len(node.peers)} peer(s)", title_justify="left"
    )
    columns = ("name", "id", "address", "path", "host", "last seen", "received", "loss", "rtt")
    for column in columns:
        table.add_column(column, justify="right" if column in ("received", "loss") else "left")
    loop_now = asyncio.get_running_loop().time()
    for peer in sorted(node.peers.values(), key=lambda p: p.name):
        where = _address(peer)
        rtt = "" if peer.rtt is None else f"{peer.rtt * 1000:.2f} ms"
        table.add_row(
            peer.name,
            f"{peer.node_id:016x}",
            where,
            peer.path,
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
        events = node.events(*WATCHED)

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
