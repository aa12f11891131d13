"""A fake link for Session tests: fake clock, seeded loss, no sockets (deterministic)."""

from __future__ import annotations

import random
from collections.abc import Callable

from mcastkit.security import GroupKey, KeyRing
from mcastkit.session import Session


class FakeNet:
    """Delivers group datagrams to every session (sender included), unicast to one address."""

    def __init__(self, loss: float = 0.0, seed: int = 1) -> None:
        self.sessions: dict[tuple[str, int], Session] = {}
        self.rng = random.Random(seed)
        self.loss = loss
        self.now = 0.0
        self.events: dict[tuple[str, int], list[object]] = {}
        self.muted: set[tuple[str, int]] = set()  # these send nothing
        self.deaf: set[tuple[str, int]] = set()  # these receive nothing
        # Multicast neither reaches these nor leaves them (a cloud host): unicast still does.
        self.beyond_multicast: set[tuple[str, int]] = set()
        self.multicast_cut: set[tuple[tuple[str, int], tuple[str, int]]] = set()  # (from, to)
        # Called with each datagram and its target; True drops it (targeted loss in tests).
        self.drop_if: Callable[[bytes, tuple[str, int]], bool] | None = None

    def add(
        self,
        name: str,
        *,
        key: GroupKey | None = None,
        heartbeat: float = 1.0,
        **options: object,
    ) -> Session:
        address = (f"10.0.0.{len(self.sessions) + 1}", 5000)
        rng = self.rng
        session = Session(
            node_id=rng.getrandbits(64),
            incarnation=rng.getrandbits(32),
            name=name,
            now=self.now,
            random_bytes=lambda n: rng.randbytes(n),
            heartbeat=heartbeat,
            keyring=KeyRing([key], lambda n: rng.randbytes(n)) if key else None,
            **options,  # type: ignore[arg-type]
        )
        self.sessions[address] = session
        self.events[address] = []
        return session

    def address_of(self, session: Session) -> tuple[str, int]:
        return next(a for a, s in self.sessions.items() if s is session)

    def flush(self) -> int:
        """Move datagrams until none are left; return how many were delivered."""
        moved = 0
        progress = True
        while progress:
            progress = False
            for source, session in list(self.sessions.items()):
                for data, destination in session.datagrams_to_send(self.now):
                    progress = True
                    if source in self.muted:
                        continue
                    group = destination is None
                    if group:
                        targets = list(self.sessions.items())
                    elif destination in self.sessions:
                        targets = [(destination, self.sessions[destination])]
                    else:
                        targets = []  # nobody there (a seed not started)
                    for address, target in targets:
                        if (
                            group
                            and address != source
                            and (
                                self.beyond_multicast & {address, source}
                                or (source, address) in self.multicast_cut
                            )
                        ):
                            continue
                        if address != source and (
                            address in self.deaf
                            or self.rng.random() < self.loss
                            or (self.drop_if is not None and self.drop_if(data, address))
                        ):
                            continue
                        target.receive_datagram(data, source, self.now, via_group=group)
                        moved += 1
            for address, session in self.sessions.items():
                while (event := session.next_event()) is not None:
                    self.events[address].append(event)
        return moved

    def run(self, seconds: float, step: float = 0.1) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now = round(self.now + step, 6)
            for session in self.sessions.values():
                timer = session.next_timer()
                if timer is not None and timer <= self.now:
                    session.handle_timer(self.now)
            self.flush()

    def group(self, receivers: int, **options: object) -> tuple[Session, list[Session]]:
        """A started sender and ``receivers`` started receivers that know each other."""
        sender = self.add("sender", **options)
        others = [self.add(f"r{i}", **options) for i in range(receivers)]
        for session in [sender, *others]:
            session.start(self.now)
        self.flush()
        return sender, others

    def of(self, session: Session, kind: type) -> list:
        return [e for e in self.events[self.address_of(session)] if isinstance(e, kind)]
