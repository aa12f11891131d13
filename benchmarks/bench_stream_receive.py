"""Microseconds a receiving Session spends per reliable fragment, with no socket and no clock
(``--side send``: the sending Session, from publish to the datagrams it hands over).

One session publishes a large reliable message; its frames are captured, then fed to a
second session as fast as Python can, in runs of ``--batch`` datagrams from one source
(``Session.receive_run``, what the Node calls per receive batch; ``--batch 1``: one at a time
through ``receive_opened``, the full path). This is the receive path's share of a reliable
publish: the kernel's own cost (about 1.5 µs a datagram through ``recvmmsg`` here) comes on
top. ``--profile`` prints where
the time goes (cProfile; it slows everything by about 2x).

    python benchmarks/bench_stream_receive.py [--size-mib 32] [--repeat 3] [--batch 32] [--profile]
    python benchmarks/bench_stream_receive.py --side send [--size-mib 32] [--repeat 3]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import random
import statistics
import time

from mcastkit.events import Message
from mcastkit.reliable import ReliableConfig
from mcastkit.session import Session

SOURCE = ("10.0.0.1", 5000)


def _session(rng: random.Random, name: str, config: ReliableConfig) -> Session:
    return Session(
        node_id=rng.getrandbits(64),
        incarnation=rng.getrandbits(32),
        name=name,
        now=0.0,
        random_bytes=rng.randbytes,
        reliable=config,
    )


def frames_of(
    payload: bytes, timing: list[float] | None = None
) -> tuple[Session, Session, list[bytes]]:
    """A sender and a receiver that know each other, and the sender's frames for
    ``payload`` published once, reliably, at no rate limit (``timing``: the seconds that
    took are appended)."""
    rng = random.Random(1)
    config = ReliableConfig(max_message=max(len(payload), 1 << 20), adaptive_rate=False)
    sender, receiver = _session(rng, "tx", config), _session(rng, "rx", config)
    sender.start(0.0)
    receiver.start(0.0)
    for data, _ in sender.datagrams_to_send(0.0):
        receiver.receive_datagram(data, SOURCE, 0.0)
    for data, _ in receiver.datagrams_to_send(0.0):
        sender.receive_datagram(data, ("10.0.0.2", 5000), 0.0)
    started = time.perf_counter()
    sender.publish("big", payload, 0.1, reliable=True)
    frames: list[bytes] = []
    now = 0.1
    while not sender.streaming.settled() or frames == []:
        out = sender.datagrams_to_send(now)
        frames.extend(data for data, _ in out)
        if not out:
            now += 0.001
            sender.handle_timer(now)
    if timing is not None:
        timing.append(time.perf_counter() - started)
    return sender, receiver, frames


def run_send(size: int, profile: bool) -> float:
    payload = os.urandom(size)
    timing: list[float] = []
    if profile:
        profiler = cProfile.Profile()
        _, _, frames = profiler.runcall(frames_of, payload, timing)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
    else:
        _, _, frames = frames_of(payload, timing)
    return timing[0] / len(frames) * 1e6


def run(size: int, profile: bool, batch: int) -> float:
    payload = os.urandom(size)
    _, receiver, frames = frames_of(payload)
    if batch > 1:
        # As the Node hands them over: runs from one source in one buffer (recvmmsg, GRO).
        runs = []
        for start in range(0, len(frames), batch):
            chunk = frames[start : start + batch]
            spans, at = [], 0
            for data in chunk:
                spans.append((at, at + len(data)))
                at += len(data)
            runs.append((memoryview(b"".join(chunk)), spans))
        receive_run = receiver.receive_run

        def feed() -> None:
            for buffer, spans in runs:
                receive_run(buffer, spans, SOURCE, 0.2)

    else:
        receive = receiver.receive_opened

        def feed() -> None:
            for data in frames:
                receive(data, SOURCE, 0.2)

    started = time.perf_counter()
    if profile:
        profiler = cProfile.Profile()
        profiler.runcall(feed)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
    else:
        feed()
    elapsed = time.perf_counter() - started
    got = [e for e in iter(receiver.next_event, None) if isinstance(e, Message) and e.reliable]
    if [m.payload == payload for m in got] != [True]:
        raise SystemExit("the message did not arrive whole")
    return elapsed / len(frames) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--side", choices=["receive", "send"], default="receive")
    parser.add_argument(
        "--batch", type=int, default=32, help="datagrams per run (1: one at a time, the full path)"
    )
    args = parser.parse_args()
    size = args.size_mib << 20
    if args.side == "send":
        if args.profile:
            run_send(size, True)
            return
        each = [run_send(size, False) for _ in range(args.repeat)]
        print(
            f"{args.size_mib} MiB reliable message, sent: "
            f"{statistics.median(each):.2f} µs a fragment "
            f"(median of {args.repeat}: {', '.join(f'{x:.2f}' for x in each)})"
        )
        return
    if args.profile:
        run(size, True, args.batch)
        return
    each = [run(size, False, args.batch) for _ in range(args.repeat)]
    print(
        f"{args.size_mib} MiB reliable message, runs of {args.batch}: "
        f"{statistics.median(each):.2f} µs a fragment "
        f"(median of {args.repeat}: {', '.join(f'{x:.2f}' for x in each)})"
    )


if __name__ == "__main__":
    main()
