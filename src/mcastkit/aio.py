"""asyncio runtime for a group Node: feeds the Session, sends what is due, re-arms its timer.

No protocol logic lives here. The group socket receives the group's datagrams (joined on one
or several interfaces); one unicast socket per interface (``node_paths``) sends everything out
of it (so peers learn a unicast address for replies) and receives unicast replies. The
kernel's link and address notices keep the interfaces in use current (``ifwatch``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from typing import Any

from .addr import GroupSpec, format_endpoint, parse_group
from .events import (
    Event,
    Failed,
    Gathered,
    IdRenewed,
    Joined,
    Left,
    Message,
    PeerEvent,
    RequestReceived,
    Unrecoverable,
    Updated,
)
from .gate import DEFAULT_MAX_PEERS, DEFAULT_MAX_SKEW
from .gather import GatherResult, Request, Want, fitted_reply
from .node_paths import NodeWays, Path, Paths, kernel_drops, open_ways
from .peers import PeerInfo, random_id, topic_matches
from .reach import ADDRESSES_KEY
from .reliable import ReliableConfig
from .security import GroupKey, KeyRing, key_from_passphrase, warn_open_group
from .session import Session
from .subscription import MessageHandler, Subscription, deliver
from .transport import GroupSocket, IfaceChoice, interface_name, is_multi
from .transport.batch import BatchReceiver
from .transport.platform import default_cipher
from .transport.unicast import resolve_seeds
from .version import __version__

__all__ = ["DEFAULT_GROUP", "GatherResult", "Node", "Request", "Subscription"]

log = logging.getLogger("mcastkit")
DEFAULT_GROUP = "239.255.77.78:5078"
READ_BATCH = 256
DEFAULT_RCVBUF = 4 << 20  # absorbs bursts; the kernel caps it at net.core.rmem_max (not root)
BACKLOG_LIMIT = 8 << 20  # reliable bytes queued before publish() waits for the sender to drain
# Publishes within one turn of the loop leave together (runs of equal size in one GSO call);
# a burst that never yields is sent every this many, so it is never held long nor piles up.
PUBLISH_BATCH = 64
MembershipEvent = Joined | Left | Failed | Updated | IdRenewed
Handler = Callable[["Request"], "bytes | str | Awaitable[bytes | str]"]


def _as_bytes(payload: bytes | str) -> bytes:
    if type(payload) is bytes:  # the common case, checked first: this is the send hot path
        return payload
    return payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)


class Node:
    """A member of a multicast group: membership, publish/subscribe, request/gather.

    Use ``async with Node("239.255.77.78:5078", name="a") as node: ...``.
    """

    def __init__(
        self,
        group: str | GroupSpec = DEFAULT_GROUP,
        *,
        iface: IfaceChoice = None,
        name: str | None = None,
        tags: dict[str, str] | None = None,
        key: GroupKey | None = None,
        passphrase: str | None = None,
        heartbeat: float = 1.0,
        failure_timeout: float | None = None,
        ttl: int = 1,
        loopback: bool = True,
        deliver_own: bool = False,
        max_datagram: int | None = None,
        rcvbuf: int = DEFAULT_RCVBUF,
        reliable: ReliableConfig | None = None,
        max_peers: int = DEFAULT_MAX_PEERS,
        max_skew: float = DEFAULT_MAX_SKEW,
        peers: Iterable[str] = (),
        multicast: bool = True,
        unicast_port: int | None = None,
    ) -> None:
        self.spec = group if isinstance(group, GroupSpec) else parse_group(group)
        # Seeds: unicast addresses (names resolved now) that hear our hello where multicast
        # is not carried; members found through them tell us the rest (docs/protocol.md).
        self._seeds = resolve_seeds(peers, self.spec, multicast=multicast)
        self._multicast = multicast
        # The first path listens here for unicast (seeds name it); None: the group's port.
        self._unicast_port = self.spec.port if unicast_port is None else unicast_port
        if max_datagram is None:
            # One datagram in a 1500-byte Ethernet frame: minus IPv4 (20) or IPv6 (40), UDP (8).
            max_datagram = 1472 if self.spec.family == 4 else 1452
        self._rcvbuf = rcvbuf
        self._iface = iface
        self._ttl = ttl
        self._loopback = loopback
        if passphrase is not None:
            key = key_from_passphrase(passphrase, group=self.spec)
        self.key = key
        self._session_args: dict[str, Any] = {
            "name": name or f"{socket.gethostname()}-{os.getpid()}",
            "meta": {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "version": __version__,
                "tags": tags or {},
            },
            "heartbeat": heartbeat,
            "failure_timeout": failure_timeout,
            "deliver_own": deliver_own,
            "max_datagram": max_datagram,
            "reliable": reliable,
            "max_peers": max_peers,
            "max_skew": max_skew,
            "multicast": multicast,
            "seeds": self._seeds,
        }
        self.session: Session | None = None
        self._group_socket: GroupSocket | None = None
        self._paths: Paths | None = None
        self._ways: NodeWays | None = None  # the sockets' readers, interfaces followed
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._pump_soon: asyncio.Handle | None = None  # a pump at the end of this loop turn
        self._unpumped = 0  # publishes queued since the last pump
        self._subscriptions: set[Subscription] = set()
        # Listeners of events(): each queue with the event types it wants.
        self._listeners: dict[asyncio.Queue[Event | None], tuple[type, ...]] = {}
        self._handlers: dict[str, Handler] = {}
        self._gathers: dict[int, asyncio.Future[Gathered]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._drained: asyncio.Event | None = None
        self._opened = memoryview(bytearray())  # where a sealed receive batch is opened

    @property
    def send_errors(self) -> int:
        """Datagrams the kernel refused to send (an unreachable peer and the like)."""
        paths = list(self._paths) if self._paths is not None else []
        counters = [path.batch.counters for path in paths]
        return sum(n for c in counters for key, n in c.items() if key.startswith("dropped:"))

    # --- life cycle ----------------------------------------------------------------------

    async def start(self) -> Node:
        """Open the sockets, announce ourselves, start heartbeats."""
        loop = self._loop = asyncio.get_running_loop()
        chosen = self._iface if self._iface is not None else self.spec.iface
        several = is_multi(chosen)
        group_socket, paths, tracker = open_ways(
            self.spec,
            chosen,
            ttl=self._ttl,
            loopback=self._loopback,
            rcvbuf=self._rcvbuf,
            multicast=self._multicast,
            port=self._unicast_port,
        )
        self._group_socket, self._paths = group_socket, paths
        own = [path.address() for path in paths]
        # The same --peer list serves every member: a seed that is this node is left out.
        self._session_args["seeds"] = tuple(s for s in self._seeds if s not in own)
        # Where we hear unicast: a peer that hears us from elsewhere knows a relay is between.
        self._session_args["meta"][ADDRESSES_KEY] = [format_endpoint(*a) for a in own[:8]]
        node_id = random_id(os.urandom)
        self.session = Session(
            node_id=node_id,
            incarnation=int.from_bytes(os.urandom(4), "big"),
            now=loop.time(),
            random_bytes=os.urandom,
            keyring=self._keyring(),
            wall_clock_us=lambda: time.time_ns() // 1000,
            **self._session_args,
        )
        self.session.multipath = several
        for topic in self._handlers:
            self.session.serve(topic, loop.time())
        self._ways = NodeWays(
            loop,
            group_socket,
            paths,
            tracker,
            session=lambda: self.session,
            on_readable=self._on_readable,
            notify=self._notify,
            pump=self._pump,
        )
        self._ways.start(several)
        self.session.start(loop.time())
        self._pump()
        return self

    def _keyring(self) -> KeyRing | None:
        if self.key is not None:
            self._opened = memoryview(bytearray(32 << 16))  # a batch: 32 slots of 64 KiB
            return KeyRing([self.key], os.urandom, cipher=default_cipher())
        warn_open_group(self.spec)
        return None

    async def stop(self) -> None:
        """Say goodbye and close."""
        if self.session is None or self._loop is None:
            return
        self.session.close(self._loop.time())
        self._pump()
        if self._pump_soon is not None:
            self._pump_soon.cancel()
            self._pump_soon = None
        if self._timer is not None:
            self._timer.cancel()
        if self._ways is not None:
            self._ways.stop()
        if self._drained is not None:
            self._drained.set()
        for task in list(self._tasks):
            task.cancel()
        for subscription in list(self._subscriptions):
            subscription._offer(None)
        self._notify(None)
        for future in self._gathers.values():
            if not future.done():
                future.cancel()
        self.session = None

    async def __aenter__(self) -> Node:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # --- API -----------------------------------------------------------------------------

    @property
    def node_id(self) -> int:
        """This node's random id."""
        return self._live().node_id

    @property
    def name(self) -> str:
        """This node's name."""
        return str(self._session_args["name"])

    @property
    def interface(self) -> str:
        """The (first) interface the node joined on (sends on, with multicast off)."""
        if self._group_socket is not None:
            return self._group_socket.interface.name
        return self._paths.first.interface.name if self._paths else ""

    @property
    def interfaces(self) -> list[str]:
        """Every interface the node is joined on and using now (not those that are down)."""
        if self._group_socket is None:
            return [path.interface.name for path in self._paths or ()]
        usable = self._ways.tracker.in_use if self._ways is not None else {}
        return [i.name for i in self._group_socket.interfaces if i.name in usable]

    @property
    def unicast_address(self) -> tuple[str, int] | None:
        """Where this node hears unicast (on its first interface): what others give as
        ``peers`` to reach it where multicast is not carried."""
        return self._paths.first.address() if self._paths else None

    def kernel_drops(self) -> int:
        """Datagrams the kernel dropped for a full receive buffer on this node's open sockets
        (the group's and each path's) since they opened: loss before any protocol saw it."""
        return kernel_drops(self._group_socket, self._paths or ())

    @property
    def peers(self) -> dict[int, PeerInfo]:
        """The members this node knows now (itself excluded)."""
        return dict(self._live().peers)

    @property
    def counters(self) -> dict[str, int]:
        """Datagrams, frames, drops by reason, sends by type; kernel-drops: the sockets'."""
        return {**self._live().counters, "kernel-drops": self.kernel_drops()}

    async def publish(self, topic: str, payload: bytes | str, *, reliable: bool = False) -> None:
        """Send a message on ``topic`` to the group. The first message of a turn of the
        event loop leaves at once; what else is published in that turn leaves at its end,
        together (runs of equal size in one GSO call); a loop that never yields sends every
        64 publishes.

        ``reliable=True``: any size up to ``ReliableConfig.max_message``; receivers get it
        whole, in order per sender, repaired on loss, or an ``Unrecoverable`` event. Waits
        while more than 8 MiB of reliable data is queued (back-pressure, not loss).
        """
        session = self._live()
        if reliable:
            while session.streaming.backlog > BACKLOG_LIMIT and self.session is session:
                await self._wait_drained()
        session.publish(topic, _as_bytes(payload), self._now(), reliable=reliable)
        if self._pump_soon is None:
            # The first message of a loop turn leaves now: nothing is queued for it to wait
            # for, and a turn of the loop costs it tens of microseconds. What follows in
            # the same turn waits for its end, to go out together.
            assert self._loop is not None
            self._pump_soon = self._loop.call_soon(self._pump_deferred)
            self._pump()
            return
        self._unpumped += 1
        if self._unpumped >= PUBLISH_BATCH:
            self._pump()

    async def flush(self, timeout: float | None = None, *, acknowledged: bool = False) -> bool:
        """Wait until every reliable message went out once and no repair in its share is due.

        ``acknowledged``: wait too until every member known now has acknowledged the whole
        stream (delivered it, or reported its loss to its application); one that leaves or
        fails meanwhile is not waited for. Returns False at the timeout; ``unacknowledged``
        then names who did not. Repairs asked for later are served while the node runs.
        """
        session = self._live()
        loop = self._loop
        assert loop is not None
        deadline = None if timeout is None else loop.time() + timeout
        waiting_for = list(session.peers) if acknowledged else []
        session.streaming.confirm(acknowledged)
        if acknowledged:
            self._pump()  # the first confirming probe is due now; the timer brings the rest
        try:
            while self.session is session and not (
                session.streaming.settled()
                and not (self._paths and self._paths.pending())
                and not session.streaming.awaited(waiting_for)
            ):
                left = None if deadline is None else deadline - loop.time()
                if left is not None and left <= 0:
                    return False
                try:
                    await asyncio.wait_for(self._wait_drained(), left)
                except asyncio.TimeoutError:
                    return False
            return True
        finally:
            session.streaming.confirm(False)

    def unacknowledged(self, among: Iterable[int] | None = None) -> list[int]:
        """Members (of ``among``, default all) that did not acknowledge all our reliable
        stream: still awaited, or failed before they did (one that said goodbye is not)."""
        session = self._live()
        return session.streaming.unacknowledged(session.peers if among is None else among)

    def run_task(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run ``coroutine`` beside the node; it is cancelled when the node stops."""
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def reliable_stats(self) -> dict[str, Any]:
        """The reliable stream's counters: ours as a sender, and each sender's we receive."""
        return self._live().reliable_stats()

    async def publish_json(self, topic: str, value: Any) -> None:
        """Send ``value`` as JSON."""
        await self.publish(topic, json.dumps(value, separators=(",", ":")).encode())

    def subscribe(self, pattern: str = "*", handler: MessageHandler | None = None) -> Subscription:
        """Messages on ``pattern`` (exact topic, or prefix ending in ``*``; ``*`` is all),
        queued for ``get`` / ``async for``.

        ``handler``: a plain function called with each message as the node takes it from
        the socket, on the event loop, instead of queuing it: the lowest latency (no turn
        of the loop between the two), but its time is the node's, so keep it short. A
        handler that raises is logged once and counted (``handler_errors``)."""
        subscription = Subscription(self._subscriptions, pattern, handler)
        self._subscriptions.add(subscription)
        return subscription

    async def events(self, *kinds: type[Event]) -> AsyncIterator[Event]:
        """Every event but messages, requests and replies (which have their own paths):
        membership, reliability (``Unrecoverable``, ``SlowReceiver``). Give ``kinds`` to
        get only those types."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self._listeners[queue] = kinds or (Event,)
        try:
            while True:
                event = await queue.get()
                if event is None:
                    return
                yield event
        finally:
            self._listeners.pop(queue, None)

    async def membership(self) -> AsyncIterator[MembershipEvent]:
        """Joined / Left / Failed / Updated / IdRenewed events as they happen."""
        async for event in self.events(PeerEvent, IdRenewed):
            assert isinstance(event, (Joined, Left, Failed, Updated, IdRenewed))
            yield event

    def _notify(self, event: Event | None) -> None:
        for queue, kinds in list(self._listeners.items()):
            if event is None or isinstance(event, kinds):
                queue.put_nowait(event)

    def serve(self, topic: str, handler: Handler) -> None:
        """Answer requests on ``topic`` (or ``prefix*``) with ``handler``'s return value."""
        self._handlers[topic] = handler
        if self.session is not None:
            self.session.serve(topic, self._now())
            self._pump()

    async def request(
        self, topic: str, payload: bytes | str = b"", *, timeout: float = 1.0, want: Want = "all"
    ) -> GatherResult:
        """Ask the group and gather replies until ``want`` is met or ``timeout`` passes."""
        session = self._live()
        loop = self._loop
        assert loop is not None
        request_id = session.request(
            topic, _as_bytes(payload), loop.time(), timeout=timeout, want=want
        )
        future: asyncio.Future[Gathered] = loop.create_future()
        self._gathers[request_id] = future
        self._pump()
        try:
            gathered = await future
        finally:
            self._gathers.pop(request_id, None)
        names = {peer_id: peer.name for peer_id, peer in session.peers.items()}
        return GatherResult(
            gathered.topic,
            gathered.replies,
            names,
            gathered.missing,
            gathered.complete,
            gathered.rtts,
        )

    # --- runtime -------------------------------------------------------------------------

    def _live(self) -> Session:
        if self.session is None:
            raise RuntimeError("the node is not running: use `async with Node(...)` or start()")
        return self.session

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _on_readable(self, reader: BatchReceiver, label: str | None, via_group: bool) -> None:
        session = self.session
        paths = self._paths
        if session is None or paths is None:
            return
        now = self._now()
        receive = session.receive_run
        several = len(paths) > 1
        keyring = session.keyring
        opened = self._opened

        def take(buffer: memoryview, spans: list[tuple[int, int]], source: Any, _: Any) -> None:
            iface = label or interface_name(reader.arrival_index)
            if several and iface is not None:
                paths.heard(source[0], iface)
            if keyring is not None:
                # Sealed: the whole run opened in one call, into one reused buffer.
                spans, refused = keyring.open_spans_into(buffer, spans, opened)
                for reason in refused:
                    session.refuse_datagram(reason)
                buffer = opened
            receive(buffer, spans, source, now, iface, via_group)

        try:
            reader.receive_runs(take, READ_BATCH)
        except OSError:
            session.counters["receive-errors"] += 1
        self._pump()

    def _on_timer(self) -> None:
        self._timer = None
        if self.session is not None:
            self.session.handle_timer(self._now())
            self._pump()

    async def _wait_drained(self) -> None:
        if self._drained is None:
            self._drained = asyncio.Event()
        self._drained.clear()
        await self._drained.wait()

    def _on_writable(self, path: Path) -> None:
        assert self._loop is not None
        self._loop.remove_writer(path.fileno())
        self._pump()

    def _pump_deferred(self) -> None:
        self._pump_soon = None
        self._pump()

    def _pump(self) -> None:
        self._unpumped = 0
        session = self.session
        paths = self._paths
        loop = self._loop
        if session is None or paths is None or loop is None:
            return
        only = paths.only
        if only is not None:  # one interface (the common case): no fan-out to build
            unsent = only.unsent
            if not unsent:
                out = session.datagrams_to_send(loop.time(), copies=False)
                unsent.extend(only.fan_out(out, session.reach))
            if unsent and only.batch.send_queue(unsent, only.socket.destination):
                # Socket buffer full: wait until it drains rather than drop what is queued.
                loop.add_writer(only.fileno(), self._on_writable, only)
            pending = bool(unsent)
        else:
            if not paths.pending():
                paths.distribute(session.datagrams_to_send(loop.time()))
            for path in paths:
                if path.unsent and path.batch.send_queue(path.unsent, path.socket.destination):
                    loop.add_writer(path.fileno(), self._on_writable, path)
            pending = paths.pending()
        # One pull per pump: a long send goes out in batches, between them the loop reads
        # (NACKs, acknowledgements) because the session's timer asks for the next batch.
        drained = self._drained
        waiting = drained is not None and not pending
        if waiting and (session.streaming.backlog <= BACKLOG_LIMIT or session.streaming.settled()):
            assert drained is not None
            drained.set()
        while events := session.take_events():
            for event in events:
                self._dispatch(event)
        deadline = session.next_timer()
        if self._timer is not None and self._timer.when() == deadline:
            return  # already armed for that moment: re-arming per datagram is costly
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            self._timer = loop.call_at(deadline, self._on_timer)

    def _dispatch(self, event: Event) -> None:
        if type(event) is Message:
            if not deliver(self._subscriptions, event) and event.reliable:
                # Delivered by the stream but not taken by a subscriber that fell 10,000
                # messages behind: that is loss too, and loss is never silent.
                lost = Unrecoverable(event.sender, event.seq, event.seq, "subscriber-overflow")
                if self.session is not None:
                    self.session.counters["reliable-subscriber-overflow"] += 1
                self._notify(lost)
        elif isinstance(event, RequestReceived):
            self._answer(event)
        elif isinstance(event, Gathered):
            future = self._gathers.get(event.request_id)
            if future is not None and not future.done():
                future.set_result(event)
        else:
            self._notify(event)

    def _answer(self, event: RequestReceived) -> None:
        handler = next(
            (h for pattern, h in self._handlers.items() if topic_matches(pattern, event.topic)),
            None,
        )
        if handler is None:
            return
        session = self._live()
        peer = session.peers.get(event.sender)
        request = Request(event.topic, event.payload, event.sender, peer.name if peer else "?")

        async def run() -> None:
            try:
                result = handler(request)
                if isinstance(result, Awaitable):
                    result = await result
                answer = _as_bytes(result)
            except Exception as exc:  # a failing handler must not take the node down
                log.warning("request handler for %r failed: %r", event.topic, exc)
                answer = f"error: the handler failed: {type(exc).__name__}: {exc}".encode()
            if self.session is None:
                return
            limit = self.session.max_reply(event.topic)
            if len(answer) > limit:
                log.warning("reply of %d bytes to %r is over %d", len(answer), event.topic, limit)
            self.session.reply(event, fitted_reply(answer, limit), self._now())
            self._pump()

        self.run_task(run())
