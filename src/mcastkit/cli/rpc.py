"""``mcast request`` and ``mcast serve``: ask the group, gather replies, answer."""

from __future__ import annotations

import argparse
import asyncio

from ..aio import Request
from ..subscription import until_members
from . import argtypes, signals
from .node_options import member, node_options
from .output import UsageError, emit_json, note, say

COMMAND_TIMEOUT = 30.0  # seconds a serve --command may take per request


SETTLE_SERVERS = 0.3  # seconds without a new member before a request goes out


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the commands of this module."""
    request = commands.add_parser("request", help="ask the group and gather replies")
    node_options(request)
    request.add_argument("topic", type=argtypes.topic())
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
    argtypes.add_json(request, "JSON output")
    request.set_defaults(handler=cmd_request)

    serve = commands.add_parser("serve", help="answer requests on a topic")
    node_options(serve)
    serve.add_argument("topic", type=argtypes.topic(pattern=True))
    how = serve.add_mutually_exclusive_group(required=True)
    how.add_argument("--reply", help="answer with this fixed text")
    how.add_argument(
        "--command",
        dest="shell_command",  # not "command": that names the mcast command in messages
        help="answer with this shell command's output (the request payload on its stdin)",
    )
    serve.add_argument("--timeout", type=argtypes.seconds(), help="exit after this many seconds")
    serve.set_defaults(handler=cmd_serve)


async def _run_request(args: argparse.Namespace) -> int:
    want = args.want
    async with member(args) as node:
        # Peers announce what they serve in their hello: wait for the first, then while
        # more are heard (a seed's gossip names the rest), within --wait.
        topic = args.topic
        await until_members(
            node,
            lambda peers: any(p.serves(topic) for p in peers.values()),
            args.wait,
            settle=SETTLE_SERVERS,
        )
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
            args.shell_command,
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

    async with member(args) as node:
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
