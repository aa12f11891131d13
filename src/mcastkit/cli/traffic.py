"""``mcast send`` and ``mcast listen``: datagrams to and from a group (or broadcast)."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..addr import GroupSpec, classify, format_endpoint, parse_group
from ..errors import MulticastError
from ..events import InterfaceEvent
from ..ifwatch import POLL_INTERFACES, SETTLE, InterfaceTracker
from ..transport import (
    GroupSocket,
    Packet,
    is_multi,
    list_interfaces,
    open_receiver,
    open_sender,
    open_senders,
)
from ..transport.driver import STOP, Driver
from ..transport.interfaces import router_hint
from ..transport.netlink import LinkWatch, follow
from . import argtypes
from .output import UsageError, drop_warning, emit_json, note, preview, say

SILENCE_HINT_AFTER = 5.0
LISTEN_RCVBUF = 4 << 20  # a burst of thousands of datagrams while the terminal scrolls


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the commands of this module."""
    send = commands.add_parser(
        "send",
        help="send datagrams to a group",
        description="Send TEXT (or stdin lines with '-' or no TEXT) to GROUP:PORT.",
    )
    argtypes.add_group(send, help_text="e.g. 239.255.0.1:5000 or [ff15::1]:5000")
    send.add_argument("text", nargs="?", help="payload; '-' or absent: one datagram per stdin line")
    argtypes.add_iface(
        send,
        help_text="interface name, index or address (default: kernel's route); all, or eth0,eth1: "
        "send on each",
    )
    argtypes.add_ttl(send, default=1, help_text="TTL / hop limit (default 1: this subnet)")
    send.add_argument(
        "--count", type=argtypes.count("datagrams"), default=1, help="send TEXT this many times"
    )
    send.add_argument(
        "--interval",
        type=argtypes.seconds(allow_zero=True),
        default=0.0,
        help="seconds between datagrams",
    )
    send.add_argument("--source", help="bind this local ADDRESS[:PORT] (for SSM receivers)")
    send.add_argument("--no-loop", action="store_true", help="do not loop back to this host")
    send.add_argument("--broadcast", action="store_true", help="allow an IPv4 broadcast address")
    argtypes.add_json(send, "print a JSON summary")
    send.set_defaults(handler=cmd_send)

    listen = commands.add_parser(
        "listen",
        help="receive and show datagrams sent to a group",
        description=(
            "Join GROUP:PORT and show each datagram. Exit 0 when something (or --count) "
            "arrived, 1 when nothing did before --timeout, 3 when fewer than --count did."
        ),
    )
    argtypes.add_group(listen)
    argtypes.add_iface(
        listen,
        help_text="interface name, index or address (default: kernel's route); all, or eth0,eth1: "
        "join on each (all follows interfaces that come and go)",
    )
    listen.add_argument(
        "--source", action="append", default=[], help="SSM: accept only this sender (repeatable)"
    )
    listen.add_argument(
        "--exclude", action="append", default=[], help="block this sender (repeatable)"
    )
    listen.add_argument(
        "--count", type=argtypes.count("datagrams"), help="stop after this many datagrams"
    )
    listen.add_argument("--timeout", type=argtypes.seconds(), help="stop after this many seconds")
    listen.add_argument("--broadcast", action="store_true", help="receive IPv4 broadcast instead")
    listen.add_argument(
        "--rcvbuf",
        type=argtypes.size(1024),
        help=f"receive buffer bytes (default {LISTEN_RCVBUF >> 20} MiB; without root at most "
        "net.core.rmem_max)",
    )
    listen.add_argument("--quiet", action="store_true", help="only the summary")
    argtypes.add_json(listen, "NDJSON: one object per datagram")
    listen.set_defaults(handler=cmd_listen)


def _payloads(args: argparse.Namespace) -> Iterator[bytes]:
    if args.text is not None and args.text != "-":
        for _ in range(args.count):
            yield args.text.encode()
        return
    for line in sys.stdin.buffer:
        yield line.rstrip(b"\r\n")


def cmd_send(args: argparse.Namespace) -> int:
    """Send datagrams."""
    spec = _group(args)
    senders = _open_senders(spec, args)
    names = ", ".join(sender.interface.name for sender in senders)
    sent = sent_bytes = 0
    try:
        if senders[0].fallback:
            note(f"warning: {senders[0].fallback}")
        if not args.json:
            note(f"sending to {spec} via {names} (ttl {args.ttl})")
        try:
            for number, payload in enumerate(_payloads(args)):
                if number and args.interval > 0:
                    time.sleep(args.interval)
                for sender in senders:  # one copy out of each interface
                    sent_bytes += sender.send(payload)
                sent += 1
        except KeyboardInterrupt:
            pass  # SIGINT / SIGTERM: the summary of what went out (the exit code says why)
    finally:
        for sender in senders:
            sender.close()
    if args.json:
        emit_json(
            {
                "group": str(spec),
                "interface": senders[0].interface.name,
                "interfaces": [sender.interface.name for sender in senders],
                "ttl": args.ttl,
                "datagrams": sent,
                "bytes": sent_bytes,
            }
        )
    else:
        note(
            f"sent {sent} datagram(s), {sent_bytes} bytes"
            + (f" via {names}" if len(senders) > 1 else "")
        )
    return 0


def _open_senders(spec: GroupSpec, args: argparse.Namespace) -> list[GroupSocket]:
    """One sending socket per interface ``--iface`` names (one: the route's by default)."""
    if not is_multi(args.iface):
        return [
            open_sender(
                spec, iface=args.iface, ttl=args.ttl, loopback=not args.no_loop, source=args.source
            )
        ]
    if args.source:
        raise MulticastError("--source binds one address: give one --iface with it")
    return open_senders(spec, iface=args.iface, ttl=args.ttl, loopback=not args.no_loop)


@dataclass
class _SourceCount:
    datagrams: int = 0
    bytes: int = 0
    first: float = 0.0
    last: float = 0.0


def _group(args: argparse.Namespace) -> GroupSpec:
    """The group of send and listen; --broadcast only where broadcast exists (IPv4)."""
    spec = parse_group(args.group, allow_broadcast=args.broadcast)
    if args.broadcast and spec.family == 6:
        raise UsageError("IPv6 has no broadcast: drop --broadcast (ff02::1 is the all-nodes group)")
    return spec


def cmd_listen(args: argparse.Namespace) -> int:
    """Receive datagrams until --count, --timeout or Ctrl-C."""
    spec = _group(args)
    receiver = open_receiver(
        spec, iface=args.iface, sources=args.source, exclude=args.exclude, rcvbuf=args.rcvbuf
    )
    if args.rcvbuf is None:
        receiver.grow_rcvbuf(LISTEN_RCVBUF)  # what the kernel grants: drops will say if short
    kernel_drops = 0
    per_source: dict[str, _SourceCount] = defaultdict(_SourceCount)
    start = time.monotonic()
    follower = None if spec.broadcast else _Follower(receiver, args.iface)
    mode = "SSM from " + ", ".join(args.source) if args.source else "any source"
    if args.exclude:
        mode = "any source but " + ", ".join(args.exclude)
    names = ", ".join(i.name for i in receiver.interfaces)
    note(f"listening on {spec} via {names} ({mode}); Ctrl-C to stop")
    warnings = [
        receiver.fallback,
        *receiver.warnings,
        *_ssm_warning(spec, args.source),
        *_forced_version_warning(spec, receiver.interface.name, args.source),
    ]
    for warning in warnings:
        if warning:
            note(f"warning: {warning}")
    try:
        with receiver:
            try:
                _listen_loop(args, spec, receiver, follower, per_source)
            finally:
                load = receiver.load()
                kernel_drops = load.drops if load is not None else 0
    except KeyboardInterrupt:
        pass
    finally:
        if follower is not None:
            follower.close()
    total = sum(c.datagrams for c in per_source.values())
    hint = "" if total or spec.broadcast else _silence_hint(spec, receiver)
    _summary(
        args,
        spec_text=str(spec),
        per_source=per_source,
        elapsed=time.monotonic() - start,
        hint=hint,
        kernel_drops=kernel_drops,
        rcvbuf=receiver.rcvbuf,
    )
    if total == 0:
        return 1
    if args.count is not None and total < args.count:
        return 3
    return 0


def _listen_loop(
    args: argparse.Namespace,
    spec: GroupSpec,
    receiver: GroupSocket,
    follower: _Follower | None,
    per_source: dict[str, _SourceCount],
) -> None:
    """Receive, count and show datagrams until --count or --timeout (Ctrl-C raises), on the
    one driver: datagrams as they come, the interfaces and the silence hint every 0.5 s."""
    start = time.monotonic()
    last_activity = start
    total = 0
    hinted = warned_drops = False
    several = is_multi(args.iface)

    def take(packet: Packet) -> bool:
        nonlocal total, warned_drops, last_activity
        if packet.drops and not warned_drops:  # the counter rides on the next datagram
            warned_drops = True
            note(drop_warning(packet.drops, receiver.rcvbuf, "so far, more may follow"))
        wall = time.time()
        last_activity = time.monotonic()
        total += 1
        key = format_endpoint(packet.source, packet.source_port)
        counter = per_source[key]
        counter.datagrams += 1
        counter.bytes += len(packet.data)
        counter.first = counter.first or wall
        counter.last = wall
        if args.json and not args.quiet:
            emit_json(_packet_record(packet, wall))
        elif not args.quiet:
            stamp = time.strftime("%H:%M:%S", time.localtime(wall))
            ttl = f" ttl={packet.ttl}" if packet.ttl is not None else ""
            via = f" via {packet.iface}" if several and packet.iface else ""
            say(
                f"{stamp}.{int(wall * 1000) % 1000:03d}  {key:<22} "
                f"{len(packet.data):>5} B{ttl}{via}  {preview(packet.data)}"
            )
        return args.count is not None and total >= args.count

    def turn(now: float) -> float | None:
        nonlocal hinted
        if args.count is not None and total >= args.count:
            return STOP
        if args.timeout is not None and now - start >= args.timeout:
            return STOP
        if follower is not None:
            for event in follower.poll():
                _show_interface_event(args, event)
        if not hinted and now - last_activity > SILENCE_HINT_AFTER:
            hinted = True
            note(
                f"nothing received for {SILENCE_HINT_AFTER:.0f}s. " + _silence_hint(spec, receiver)
            )
        return 0.5 if args.timeout is None else min(0.5, args.timeout - (now - start))

    with Driver() as driver:
        driver.read_each(receiver, take)
        driver.run(turn)


def _ssm_warning(spec: GroupSpec, sources: list[str]) -> list[str]:
    """A join in the SSM range without a source: the network delivers nothing to it."""
    if sources or spec.broadcast or not classify(spec.group).ssm:
        return []
    return [
        f"{spec.group} is in the source-specific range (232/8, ff3x::): routers and IGMPv3 "
        "snooping switches forward it only to joins that name a source; add --source ADDRESS"
    ]


def _forced_version_warning(spec: GroupSpec, iface: str, sources: list[str]) -> list[str]:
    """A source-specific join where IGMP is forced to v1/v2 (MLD to v1): it cannot work."""
    if not sources:
        return []
    from ..diag.doctor.checks import forced_old_version

    def read(key: str) -> int | None:
        try:
            with open("/proc/sys/" + key.replace(".", "/")) as handle:
                return int(handle.read().strip() or 0)
        except (OSError, ValueError):
            return None

    forced = forced_old_version(spec.family, iface, read)
    if forced is None:
        return []
    return [
        f"{forced.protocol} is forced to version {forced.version} on {iface}: source-specific "
        f"joins (SSM) need {forced.protocol}{forced.needed} and will not reach the network; "
        f"fix: {shlex.join(forced.fix)}"
    ]


def _packet_record(packet: Any, wall: float) -> dict[str, Any]:
    record: dict[str, Any] = {
        "time": round(wall, 6),
        "source": packet.source,
        "source_port": packet.source_port,
        "destination": packet.destination,
        "ifindex": packet.ifindex,
        "iface": packet.iface,
        "ttl": packet.ttl,
        "size": len(packet.data),
    }
    try:
        record["text"] = packet.data.decode("utf-8")
    except UnicodeDecodeError:
        record["hex"] = packet.data.hex()
    return record


def _summary(
    args: argparse.Namespace,
    *,
    spec_text: str,
    per_source: dict[str, _SourceCount],
    elapsed: float,
    hint: str = "",
    kernel_drops: int = 0,
    rcvbuf: int | None = None,
) -> None:
    total = sum(c.datagrams for c in per_source.values())
    if args.json:
        emit_json(
            {
                "summary": {
                    "group": spec_text,
                    "datagrams": total,
                    "kernel_drops": kernel_drops,
                    "rcvbuf": rcvbuf,
                    "elapsed": round(elapsed, 3),
                    "sources": {
                        key: {"datagrams": c.datagrams, "bytes": c.bytes}
                        for key, c in per_source.items()
                    },
                }
            }
        )
        return
    note(f"{total} datagram(s) from {len(per_source)} source(s) in {elapsed:.1f}s")
    for key, c in sorted(per_source.items(), key=lambda kv: -kv[1].datagrams):
        note(f"  {key:<22} {c.datagrams:>7} datagrams {c.bytes:>10} bytes")
    if kernel_drops:
        note(drop_warning(kernel_drops, rcvbuf, "not shown"))
    if total == 0:
        note(f"nothing arrived. {hint or 'Is a sender running on this interface?'}")


class _Follower:
    """Keeps a listening socket joined on the interfaces it should be: the kernel's link and
    address notices (debounced) make it read the interfaces again, join on one that came up
    and leave one that went down."""

    def __init__(self, receiver: GroupSocket, iface: str | None) -> None:
        self.receiver = receiver
        family = receiver.spec.family
        self.tracker = InterfaceTracker.for_choice(family, iface, receiver.interfaces)
        self.watch = LinkWatch()
        self.due: float | None = (
            None if self.watch.available else time.monotonic() + POLL_INTERFACES
        )

    def poll(self) -> list[InterfaceEvent]:
        """What changed since the last call (never waits: the receive loop comes back here
        at least every half second)."""
        now = time.monotonic()
        if self.watch.available and self.watch.drain() and self.due is None:
            self.due = now + SETTLE
        if self.due is None or now < self.due:
            return []
        self.due = None if self.watch.available else now + POLL_INTERFACES
        events = self.tracker.update(list_interfaces())
        for event in events:
            try:
                follow(self.receiver, event, self.tracker.in_use.get(event.name))
            except MulticastError as exc:
                note(f"warning: cannot join on {event.name}: {exc}")
        return events

    def close(self) -> None:
        """Stop watching."""
        self.watch.close()


def _show_interface_event(args: argparse.Namespace, event: InterfaceEvent) -> None:
    if args.json:
        emit_json(event.to_dict())
    else:
        note(event.describe())


def _silence_hint(spec: GroupSpec, receiver: GroupSocket) -> str:
    """Why a listener may hear nothing: a router on the link makes a sender's TTL the first
    suspect (TTL 1, the default, stops at the router); then interface, firewall, doctor."""
    fix = f"mcast send {spec} TEXT --ttl 4"
    hint = router_hint(spec, [i.name for i in receiver.interfaces], fix)
    if hint is None:
        return "Is a sender on this link? Check its TTL and interface, firewalls, `mcast doctor`."
    return f"{hint} Check the sender's interface, firewalls, and `mcast doctor`."
