"""``mcast send-file`` and ``mcast recv-file``: verified file distribution."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..addr import GroupSpec, format_endpoint, parse_group
from ..events import (
    ReceiverFinished,
    ReceiverRegistered,
    ReceiveState,
    TransferAnnounced,
    TransferEvent,
    TransferRefused,
)
from ..transfer import ReceiveOptions, SendOptions, receive_files, send_files
from ..transfer.engine import DEFAULT_MAX_SIZE, ReceiveSession, SendSession
from ..transfer.partial import PARTIALS_MAX_BYTES
from ..transport.interfaces import router_hint
from ..transport.unicast import resolve_peers
from ..units import parse_rate
from . import argtypes
from .output import (
    ProgressBar,
    UsageError,
    add_key_options,
    drop_warning,
    emit_json,
    group_key,
    note,
    say,
)
from .signals import CtrlC

DEFAULT_FILE_GROUP = "239.255.77.83:5083"


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the commands of this module."""
    send = commands.add_parser(
        "send-file",
        help="send files to every receiver on the group, verified by sha256",
        description="Announce the files, wait for receivers to register, send every block, "
        "repair what each receiver reports missing. Exit 1 when a receiver failed or an "
        "expected one never completed.",
    )
    send.add_argument(
        "paths",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="files, and directories (sent as trees under their own names; links are not followed)",
    )
    send.add_argument("--group", default=DEFAULT_FILE_GROUP, metavar="GROUP:PORT")
    argtypes.add_iface(send, several=False)
    argtypes.add_ttl(send)
    send.add_argument(
        "--rate",
        type=argtypes.rate(allow_auto=True),
        default="auto",
        help="auto (default): start at 2 Gbit/s, ease off while a receiver's socket buffer "
        "fills and back off when it overflows (never for random loss on the path); or a fixed "
        "rate in bits/s (500M) or packets/s (50kpps); or max: no pacing at all",
    )
    send.add_argument(
        "--receivers",
        type=argtypes.count("receivers"),
        help="expected receiver count: start when all registered; fail unless all complete",
    )
    send.add_argument("--names", help="comma-separated receiver names to accept and expect")
    send.add_argument(
        "--wait",
        type=argtypes.seconds(),
        default=3.0,
        help="seconds to wait for receivers to register (default 3)",
    )
    send.add_argument(
        "--receiver-timeout",
        type=argtypes.seconds(),
        default=10.0,
        help="seconds of silence before a receiver is failed (default 10)",
    )
    send.add_argument("--deadline", type=argtypes.seconds(), help="give up after this many seconds")
    send.add_argument(
        "--no-gso",
        action="store_true",
        help="one system call per datagram instead of UDP GSO batches (to compare, or for a "
        "path that mishandles them; a kernel that refuses GSO gets this by itself)",
    )
    send.add_argument(
        "--sync",
        action="store_true",
        help="receivers keep the files they already hold with the same sha256 (reported as "
        "up to date; the first pass skips them); a file that differs is replaced only by a "
        "receiver with --sync or --overwrite (the receiver decides)",
    )
    add_key_options(send)
    send.add_argument(
        "--sign-key",
        metavar="FILE",
        help="sign every announce with this Ed25519 key (`mcast keygen --sign FILE`), for "
        "receivers that --trust its public key",
    )
    argtypes.add_peer_option(
        send,
        "peers",
        "a receiver multicast does not reach (cloud, VPN): sent a unicast copy of every "
        "datagram; repeatable; PORT defaults to the group's (receivers can also ask, with "
        "recv-file --peer)",
    )
    send.add_argument(
        "--no-multicast",
        dest="multicast",
        action="store_false",
        help="send only the unicast copies (to --peer receivers and those that ask)",
    )
    argtypes.add_json(send, "a JSON summary")
    send.set_defaults(handler=cmd_send_file)

    recv = commands.add_parser(
        "recv-file",
        help="receive files sent with send-file into a directory",
        description="Wait for a transfer, write each file under a temporary name, check its "
        "sha256, and only then give it its final name. Exit 1 when the transfer failed.",
    )
    recv.add_argument("--group", default=DEFAULT_FILE_GROUP, metavar="GROUP:PORT")
    recv.add_argument("--dir", type=Path, default=Path("."), help="target directory")
    argtypes.add_iface(recv)
    recv.add_argument("--name", help="this receiver's name (default host-pid)")
    recv.add_argument(
        "--wait", type=argtypes.seconds(), help="give up if no transfer starts in this time"
    )
    recv.add_argument(
        "--rcvbuf",
        type=argtypes.size(1024),
        default=16 << 20,
        help="receive buffer bytes (default 16 MiB)",
    )
    recv.add_argument(
        "--no-gro",
        action="store_true",
        help="do not ask the kernel for coalesced receives (UDP GRO); recvmmsg batches stay",
    )
    recv.add_argument(
        "--max-size",
        type=argtypes.size(),
        default=DEFAULT_MAX_SIZE,
        help="refuse a transfer announcing more than this (default 16G; e.g. 500M, 2T)",
    )
    recv.add_argument(
        "--max-partials",
        type=argtypes.size(),
        default=PARTIALS_MAX_BYTES,
        help="disk that partial files kept for resume may hold in a directory; the oldest "
        "are removed first (default 16G)",
    )
    recv.add_argument(
        "--overwrite", action="store_true", help="replace files of the same name in --dir"
    )
    recv.add_argument(
        "--parents", action="store_true", help="create --dir (and its parents) when missing"
    )
    recv.add_argument(
        "--sync",
        action="store_true",
        help="keep files already in --dir with the announced sha256, replace those that "
        "differ (a sender's --sync only keeps; what is replaced is the receiver's choice)",
    )
    recv.add_argument(
        "--preserve",
        action="store_true",
        help="give files and directories the mode and modification time the sender has",
    )
    recv.add_argument(
        "--no-resume",
        action="store_true",
        help="leave nothing of a transfer cut short (by default its partial files are kept, "
        "hidden, with a record of their blocks, and a later transfer of the same content "
        "sends only what is missing)",
    )
    add_key_options(recv)
    recv.add_argument(
        "--trust",
        action="append",
        metavar="PUBKEY",
        help="accept only transfers whose announce this sender key signed: ed25519:... as "
        "`mcast keygen --sign` printed it, or its .pub file (repeat for several senders)",
    )
    recv.add_argument(
        "--max-skew",
        type=argtypes.seconds(),
        default=30.0,
        help="sealed or trusted transfers: refuse an announce stamped further than this from "
        "our clock (default 30 s; a replay, or clocks that disagree)",
    )
    argtypes.add_peer_option(
        recv,
        "peers",
        "a sender whose multicast may not reach this host: asked every second for unicast "
        "copies; repeatable; PORT defaults to the group's",
    )
    recv.add_argument(
        "--no-multicast",
        dest="multicast",
        action="store_false",
        help="join nothing: hear only the copies --peer senders send (a tunnel, a cloud)",
    )
    argtypes.add_json(recv, "a JSON summary")
    recv.set_defaults(handler=cmd_recv_file)


def cmd_send_file(args: argparse.Namespace) -> int:
    """Send files."""
    spec = parse_group(args.group)
    adaptive = args.rate == "auto"
    rate = None if adaptive else parse_rate(args.rate)
    names = {n.strip() for n in args.names.split(",") if n.strip()} if args.names else None
    expected = args.receivers if args.receivers is not None else (len(names) if names else None)
    key = group_key(args, spec)
    sign_key = None
    if args.sign_key:
        from ..keyfiles import load_signing_key

        sign_key = load_signing_key(args.sign_key)

    bars: list[ProgressBar] = []

    def progress(session: SendSession) -> None:
        if args.json:
            return
        if not bars:
            total = sum(f.size for f in session.files)
            bars.append(ProgressBar("sending", total))
        done = min(session.blocks_sent, session.total_blocks)
        complete = sum(r.complete for r in session.receivers.values())
        bars[0].update(
            done / session.total_blocks if session.total_blocks else 1.0,
            f"{session.phase.value} pass {session.pass_number}: "
            f"{complete}/{len(session.receivers)} receiver(s) complete",
        )

    def news(event: TransferEvent) -> None:
        if args.json:
            return
        line = None
        if isinstance(event, ReceiverRegistered):
            line = f"  {event.name} registered from {format_endpoint(*event.address)}"
        elif isinstance(event, ReceiverFinished):
            outcome = "complete" if event.complete else f"FAILED: {event.reason}"
            line = f"  {event.name} {outcome}"
        if line is not None:
            bars[0].log(line) if bars else note(line)

    note(f"send-file to {spec}: announcing {', '.join(str(p) for p in args.paths[:3])}")
    try:
        summary = send_files(
            spec,
            args.paths,
            SendOptions(
                iface=args.iface,
                ttl=args.ttl,
                rate=rate,
                adaptive=adaptive,
                expected=expected,
                names=None if names is None else frozenset(names),
                register_wait=args.wait,
                receiver_timeout=args.receiver_timeout,
                deadline=args.deadline,
                gso=not args.no_gso,
                key=key,
                sign_key=sign_key,
                sync=args.sync,
                peers=resolve_peers(args.peers, spec.family, spec.port),
                multicast=args.multicast,
            ),
            on_progress=progress,
            on_event=news,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot read {exc.filename}: {exc.strerror}") from None
    finally:
        for bar in bars:
            bar.close()
    receivers = summary["receivers"]
    complete = [r for r in receivers if r["complete"]]
    failed = [r for r in receivers if not r["complete"]]
    missing_names = sorted((names or set()) - {r["name"] for r in receivers})
    short = expected is not None and len(complete) < expected
    ok = bool(receivers) and not failed and not short
    summary.update({"ok": ok, "never_registered": missing_names})
    megabytes = summary["bytes"] / 1e6
    moved = receivers and summary["blocks_sent"]  # a rate only for data that went somewhere
    rate_text = megabytes / summary["seconds"] if summary["seconds"] and moved else 0.0
    summary["mb_per_s"] = round(rate_text, 2)
    hint = "" if receivers else _no_receiver_hint(spec, summary, args)
    if hint:
        summary["hint"] = hint
    if args.json:
        emit_json(summary)
        return 0 if ok else 1
    if not receivers:
        say(
            f"\nnothing delivered: no receiver registered within {args.wait:g}s "
            f"({summary['blocks_sent']} blocks went out to no one)"
        )
    elif not summary["blocks_sent"]:
        say("\nnothing to send: every receiver had the files already (same sha256)")
    else:
        say(
            f"\nsent {megabytes:.1f} MB in {summary['seconds']:.2f}s ({rate_text:.1f} MB/s), "
            f"{summary['passes']} pass(es), {summary['blocks_sent']} blocks for "
            f"{summary['blocks']}"
        )
    for r in receivers:
        state = "complete" if r["complete"] else f"FAILED: {r['failed'] or 'incomplete'}"
        say(f"  {r['name']:<24} {r['address']:<22} {state}")
    for name in missing_names:
        say(f"  {name:<24} {'-':<22} FAILED: never registered")
    for refused in summary["refused"]:
        reasons = ", ".join(f"{why} x{count}" for why, count in refused["dropped"].items())
        say(f"  {'(refused)':<24} {refused['host']:<22} not admitted: {reasons}")
    if hint:
        note(hint)
    return 0 if ok else 1


def _no_receiver_hint(spec: GroupSpec, summary: dict[str, Any], args: argparse.Namespace) -> str:
    """What to try when nobody registered: start one, wait longer, and where a router is on
    the link, the TTL (1, the default, stops at it)."""
    text = "no receiver registered: start `mcast recv-file` first, or raise --wait"
    if args.ttl <= 1:
        beyond = router_hint(spec, [summary["interface"]], "send-file --ttl 4 (or more)")
        if beyond is not None:
            text += f". {beyond}"
    return text


def cmd_recv_file(args: argparse.Namespace) -> int:
    """Receive files."""
    spec = parse_group(args.group)
    key = group_key(args, spec)
    trust = None
    if args.trust:
        from ..keyfiles import load_public_key

        trust = [load_public_key(text) for text in args.trust]

    bars: list[ProgressBar] = []

    def news(event: TransferEvent) -> None:
        if isinstance(event, TransferRefused):
            note(f"warning: {event.reason}")  # also under --json: a wait that says why
        if not args.json and isinstance(event, TransferAnnounced):
            names = ", ".join(event.files[:3]) + (", ..." if len(event.files) > 3 else "")
            note(
                f"transfer from {format_endpoint(*event.sender)}: {names} "
                f"({event.size / 1e6:.1f} MB)"
            )

    def progress(session: ReceiveSession) -> None:
        if args.json or session.state != ReceiveState.RECEIVING:
            return
        if not bars:
            bars.append(ProgressBar("receiving", sum(f.size for f in session.files)))
        bars[0].update(
            session.received / session.total_blocks if session.total_blocks else 1.0,
            f"{session.received}/{session.total_blocks} blocks",
        )

    interrupted = CtrlC().install()
    note(f"recv-file on {spec} into {args.dir}: waiting for a transfer")
    try:
        summary: dict[str, Any] = receive_files(
            spec,
            args.dir,
            ReceiveOptions(
                iface=args.iface,
                name=args.name,
                wait=args.wait,
                rcvbuf=args.rcvbuf,
                gro=not args.no_gro,
                max_size=args.max_size,
                max_partials=args.max_partials,
                overwrite=args.overwrite,
                parents=args.parents,
                key=key,
                trust=None if trust is None else tuple(trust),
                max_skew=args.max_skew,
                resume=not args.no_resume,
                sync=args.sync,
                preserve=args.preserve,
                peers=resolve_peers(args.peers, spec.family, spec.port),
                multicast=args.multicast,
            ),
            on_progress=progress,
            on_event=news,
            stop=interrupted,
        )
    finally:
        interrupted.restore()
        for bar in bars:
            bar.close()
    ok = summary["state"] == "complete"
    if args.json:
        emit_json(summary)
    elif ok:
        resumed = summary["resumed_blocks"] if not summary["up_to_date"] else 0
        if summary["up_to_date"]:
            say(f"\nup to date already: {len(summary['up_to_date'])} file(s)")
        names = [name for name in summary["files"] if name not in summary["up_to_date"]]
        listed = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        if names:  # not "received" for files that were here already
            say(
                f"\nreceived and verified {listed} "
                f"({summary['bytes'] / 1e6:.1f} MB) in {summary['seconds']:.2f}s"
                + (
                    f", {resumed} of {summary['blocks']} blocks from an earlier try"
                    if resumed
                    else ""
                )
            )
    else:
        say(f"\ntransfer {summary['state']}: {summary['reason'] or 'interrupted'}")
        if summary["kept_blocks"]:
            say(
                f"kept {summary['kept_blocks']} of {summary['blocks']} blocks in {args.dir}: "
                "receive the same files again there and only the rest is sent"
            )
    if summary["kernel_drops"] and not args.json:
        note(drop_warning(summary["kernel_drops"], meaning="repaired, at the cost of repairs"))
    return 0 if ok else 1
