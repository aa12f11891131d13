"""Group nodes on real sockets: loopback in the suite's namespace, and namespace hosts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from netlab import Lab, loopback_listener, wait_for_line

import mcastkit
from mcastkit import Failed, GroupKey, Joined, Left, Node

LO = "lo"


def _mcast(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mcastkit", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_fifty_nodes_in_one_process_converge_to_the_same_member_list() -> None:
    async def scenario() -> None:
        nodes = [
            Node("239.255.90.1:5901", iface=LO, name=f"n{i:02d}", heartbeat=0.5) for i in range(50)
        ]
        for node in nodes:
            await node.start()
        try:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                if all(len(n.peers) == 49 for n in nodes):
                    break
                await asyncio.sleep(0.1)
            everyone = {n.node_id for n in nodes}
            for node in nodes:
                assert set(node.peers) == everyone - {node.node_id}
                assert {p.name for p in node.peers.values()} == (
                    {f"n{i:02d}" for i in range(50)} - {node.name}
                )
        finally:
            for node in nodes:
                await node.stop()

    asyncio.run(scenario())


async def _wait_for(node: Node, kind: type, name: str, timeout: float) -> tuple[object, float]:
    async def watch() -> tuple[object, float]:
        async for event in node.membership():
            if isinstance(event, kind) and event.peer.name == name:  # type: ignore[attr-defined]
                return event, time.monotonic()
        raise AssertionError("membership ended")

    return await asyncio.wait_for(watch(), timeout)


def test_killed_node_is_reported_failed_within_the_timeout() -> None:
    async def scenario() -> None:
        async with Node(
            "239.255.90.2:5902", iface=LO, name="observer", heartbeat=0.2, failure_timeout=1.0
        ) as observer:
            joined = asyncio.ensure_future(_wait_for(observer, Joined, "victim", 10))
            victim = _mcast(
                "serve",
                "t",
                "--reply",
                "x",
                "--group",
                "239.255.90.2:5902",
                "--iface",
                LO,
                "--name",
                "victim",
                "--heartbeat",
                "0.2",
            )
            try:
                await joined
                failed = asyncio.ensure_future(_wait_for(observer, Failed, "victim", 10))
                await asyncio.sleep(0.3)
                os.kill(victim.pid, signal.SIGKILL)
                killed_at = time.monotonic()
                _, seen_at = await failed
            finally:
                victim.kill()
                victim.wait()
            # Failure timeout 1.0 s after the last heartbeat (at most 0.2 s before the kill).
            assert 0.7 <= seen_at - killed_at <= 1.5, seen_at - killed_at

    asyncio.run(scenario())


def test_clean_leave_is_seen_at_once() -> None:
    async def scenario() -> None:
        async with Node(
            "239.255.90.3:5903", iface=LO, name="observer", heartbeat=0.2, failure_timeout=5.0
        ) as observer:
            joined = asyncio.ensure_future(_wait_for(observer, Joined, "leaver", 10))
            leaver = _mcast(
                "serve",
                "t",
                "--reply",
                "x",
                "--group",
                "239.255.90.3:5903",
                "--iface",
                LO,
                "--name",
                "leaver",
                "--timeout",
                "1.5",
            )
            await joined
            left = asyncio.ensure_future(_wait_for(observer, Left, "leaver", 10))
            await asyncio.get_running_loop().run_in_executor(None, leaver.wait)
            exited_at = time.monotonic()
            _, seen_at = await left
            assert seen_at - exited_at < 0.5  # long before the 5 s failure timeout

    asyncio.run(scenario())


def test_wrong_key_and_no_key_nodes_see_nothing_and_inject_nothing() -> None:
    async def scenario() -> None:
        group = "239.255.90.4:5904"
        key = GroupKey(os.urandom(32))
        async with (
            Node(group, iface=LO, name="a", key=key, heartbeat=0.2) as a,
            Node(group, iface=LO, name="b", key=key, heartbeat=0.2) as b,
            Node(
                group, iface=LO, name="wrong", key=GroupKey(os.urandom(32)), heartbeat=0.2
            ) as wrong,
            Node(group, iface=LO, name="open", heartbeat=0.2) as open_node,
        ):
            inboxes = {n.name: n.subscribe("*") for n in (a, b, wrong, open_node)}
            await asyncio.sleep(0.8)
            await a.publish("secret", "for members")
            await wrong.publish("inject", "from wrong key")
            await open_node.publish("inject", "from open node")
            await asyncio.sleep(0.3)
            assert [p.name for p in a.peers.values()] == ["b"]
            assert wrong.peers == {} and open_node.peers == {}
            got = await inboxes["b"].get(1)
            assert got is not None and got.text() == "for members"
            assert await inboxes["b"].get(0.2) is None
            assert await inboxes["a"].get(0.2) is None
            assert await inboxes["wrong"].get(0.2) is None
            assert await inboxes["open"].get(0.2) is None
            assert b.counters["dropped:unknown-key"] > 0
            assert b.counters["dropped:unsealed"] > 0

    asyncio.run(scenario())


def test_blocking_api_publish_recv_request() -> None:
    group = "239.255.90.5:5905"
    with (
        mcastkit.connect(group, iface=LO, name="srv", heartbeat=0.2) as server,
        mcastkit.connect(group, iface=LO, name="cli", heartbeat=0.2) as client,
    ):
        server.serve("double", lambda request: str(2 * int(request.text())))
        time.sleep(0.6)
        client.publish("hello", "from cli")
        message = server.recv(timeout=2)
        assert message is not None and message.text() == "from cli"
        assert message.sender_name == "cli"
        result = client.request("double", "21", timeout=1)
        assert result.complete
        assert list(result.replies.values()) == [b"42"]
        assert [p.name for p in client.peers().values()] == ["srv"]


def test_chat_piped_lines_reach_a_subscriber_with_the_name() -> None:
    subscriber = _mcast(
        "subscribe",
        "chat",
        "--group",
        "239.255.90.6:5906",
        "--iface",
        LO,
        "--count",
        "2",
        "--timeout",
        "10",
        "--json",
    )
    wait_for_line(subscriber.stderr, "subscribed")
    chat = subprocess.run(
        [
            sys.executable,
            "-m",
            "mcastkit",
            "chat",
            "--group",
            "239.255.90.6:5906",
            "--iface",
            LO,
            "--name",
            "alice",
        ],
        input="hello there\n/peers\nsecond line\n/quit\n",
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert chat.returncode == 0, chat.stderr
    out, _ = subscriber.communicate(timeout=20)
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(m["name"], m["text"]) for m in lines] == [
        ("alice", "hello there"),
        ("alice", "second line"),
    ]


def test_request_gathers_replies_from_serving_hosts_across_the_lan(lab: Lab) -> None:
    h1, h2, h3 = lab.lan(3)
    options = ["--passphrase", "lan secret", "--heartbeat", "0.3"]
    servers = []
    for host in (h2, h3):
        proc = host.start_mcast(
            "serve", "whoami", "--command", "hostname; cat", "--name", host.name, *options
        )
        wait_for_line(proc.stderr, "serving")
        servers.append(proc)
    try:
        result = h1.mcast(
            "request", "whoami", "ping", "--json", "--wait", "3", "--timeout", "2", *options
        )
        assert result.returncode == 0, result.stderr
        gathered = json.loads(result.stdout)
        assert gathered["complete"] and gathered["missing"] == []
        assert sorted(r["name"] for r in gathered["replies"]) == sorted([h2.name, h3.name])
        assert all(r["payload"].endswith("ping") for r in gathered["replies"])
        peers = h1.mcast("peers", "--once", "--json", "--wait", "1.5", *options)
        listed = json.loads(peers.stdout)["peers"]
        assert sorted(p["address"].split(":")[0] for p in listed) == [h2.ipv4, h3.ipv4]
        # Without the passphrase the same request finds nobody.
        outsider = h1.mcast("request", "whoami", "--json", "--wait", "1", "--timeout", "0.5")
        assert outsider.returncode == 1
        assert json.loads(outsider.stdout)["replies"] == []
    finally:
        for proc in servers:
            proc.kill()
            proc.wait()


def test_peers_live_table_in_a_terminal() -> None:
    import pty
    import select as select_module

    group = "239.255.90.7:5907"
    server = _mcast(
        "serve",
        "t",
        "--reply",
        "x",
        "--group",
        group,
        "--iface",
        LO,
        "--name",
        "alpha",
        "--heartbeat",
        "0.3",
    )
    wait_for_line(server.stderr, "serving")
    controller, terminal = pty.openpty()
    watcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mcastkit",
            "peers",
            "--group",
            group,
            "--iface",
            LO,
            "--heartbeat",
            "0.3",
        ],
        stdout=terminal,
        stderr=terminal,
        stdin=terminal,
        env={**os.environ, "COLUMNS": "160"},
    )
    os.close(terminal)
    screen = b""
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and b"1 peer(s)" not in screen:
            ready, _, _ = select_module.select([controller], [], [], 0.5)
            if ready:
                screen += os.read(controller, 65536)
    finally:
        watcher.send_signal(signal.SIGINT)
        watcher.wait(10)
        server.kill()
        server.wait()
        os.close(controller)
    text = screen.decode(errors="replace")
    assert "1 peer(s)" in text
    assert "alpha" in text and "joined" in text
    assert "last seen" in text and "loss" in text


def test_ipv6_nodes_request_across_hosts_site_and_link_scope(lab: Lab) -> None:
    h1, h2 = lab.lan(2)
    for group in ("[ff15::7777]:5908", "[ff12::7777]:5909%eth0"):
        server = h2.start_mcast(
            "serve",
            "v6",
            "--reply",
            f"over {group}",
            "--group",
            group,
            "--iface",
            "eth0",
            "--name",
            "six",
            "--heartbeat",
            "0.3",
        )
        wait_for_line(server.stderr, "serving")
        try:
            result = h1.mcast(
                "request",
                "v6",
                "--group",
                group,
                "--iface",
                "eth0",
                "--json",
                "--wait",
                "3",
                "--timeout",
                "1",
            )
            assert result.returncode == 0, result.stderr
            replies = json.loads(result.stdout)["replies"]
            assert [(r["name"], r["payload"]) for r in replies] == [("six", f"over {group}")]
        finally:
            server.kill()
            server.wait()


def test_blocking_api_reliable_messages_large_and_small_in_order() -> None:
    group = "239.255.90.6:5906"
    payloads = [os.urandom(size) for size in (10, 5000, 3 << 20, 0, 70_000)]
    with (
        mcastkit.connect(group, iface=LO, name="rx", subscribe="bulk") as receiver,
        mcastkit.connect(group, iface=LO, name="tx", subscribe=None) as sender,
    ):
        time.sleep(0.4)  # hellos cross: the receiver expects the stream from its start
        for payload in payloads:
            sender.publish("bulk", payload, reliable=True)
        assert sender.flush(timeout=10)
        assert sender.flush(timeout=10, acknowledged=True)  # the receiver has them all
        assert sender.unacknowledged() == []
        got = [receiver.recv(timeout=10) for _ in payloads]
    assert [m.payload if m else None for m in got] == payloads
    assert all(m is not None and m.reliable and m.sender_name == "tx" for m in got)


def test_reliable_message_above_max_message_is_refused_at_publish() -> None:
    async def scenario() -> None:
        config = mcastkit.ReliableConfig(max_message=1000)
        async with mcastkit.Node("239.255.90.7:5907", iface=LO, reliable=config) as node:
            with pytest.raises(ValueError, match="max_message"):
                await node.publish("t", b"x" * 1001, reliable=True)
            with pytest.raises(mcastkit.MessageTooLarge):
                await node.publish("t", b"x" * 5000)  # unreliable: one datagram at most

    asyncio.run(scenario())


@pytest.mark.parametrize("sealed", [False, True])
def test_a_burst_of_publishes_leaves_in_batches_and_arrives_whole_in_order(sealed: bool) -> None:
    """Publishes that never yield leave in GSO batches (the receiver takes them as GRO runs
    on the short path); a lone publish still leaves within the loop turn."""

    async def scenario() -> None:
        key = GroupKey(bytes(range(32))) if sealed else None
        group = "239.255.90.8:5908"
        async with (
            Node(group, iface=LO, name="rx", key=key) as receiver,
            Node(group, iface=LO, name="tx", key=key) as sender,
        ):
            inbox = receiver.subscribe("burst")
            deadline = time.monotonic() + 5
            while sender.node_id not in receiver.peers and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            payloads = [n.to_bytes(4, "big") * 25 for n in range(3000)]
            for payload in payloads:
                await sender.publish("burst", payload)
            got = [await inbox.get(5) for _ in payloads]
            assert [m.payload if m else None for m in got] == payloads
            assert all(m is not None and m.sender_name == "tx" for m in got)
            assert sender._paths is not None
            batch = sender._paths.first.batch
            if batch.gso:
                # 3,000 equal datagrams in runs of 64: about 47 calls, not 3,000.
                assert 40 <= batch.counters["gso-calls"] <= 300
            assert receiver.counters["frames"] >= 3000
            assert receiver.counters.get("dropped", 0) == 0

            await sender.publish("burst", b"alone")
            message = await inbox.get(2)
            assert message is not None and message.payload == b"alone"

    asyncio.run(scenario())


def test_the_first_publish_of_a_loop_turn_leaves_at_once_the_rest_at_its_end() -> None:
    """Latency: a lone message does not wait for the loop to turn; throughput: what follows
    it in the same turn is held and leaves together at the turn's end."""
    group, port = "239.255.90.9", 5909
    listener = loopback_listener(group, port)
    listener.setblocking(False)

    def queued() -> list[bytes]:
        """What the listener holds now, without waiting (loopback delivers within the send)."""
        out = []
        with contextlib.suppress(BlockingIOError):
            while True:
                out.append(listener.recv(65536))
        return out

    def carrying(datagrams: list[bytes], marker: bytes) -> int:
        return sum(marker in d for d in datagrams)

    async def scenario() -> None:
        async with Node(f"{group}:{port}", iface=LO, name="tx", heartbeat=5) as sender:
            await asyncio.sleep(0.1)
            queued()  # the hello
            for turn in range(3):  # and again in later turns: each has its own first
                await sender.publish("t", b"first-%d" % turn)
                assert carrying(queued(), b"first-%d" % turn) == 1
                for n in range(5):
                    await sender.publish("t", b"held-%d-%d" % (turn, n))
                assert carrying(queued(), b"held-%d" % turn) == 0, "sent before the turn ended"
                await asyncio.sleep(0)
                await asyncio.sleep(0)
                assert carrying(queued(), b"held-%d" % turn) == 5

    try:
        asyncio.run(scenario())
    finally:
        listener.close()


def test_a_handler_gets_each_message_in_the_receive_path_and_survives_its_own_bugs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Subscribing with a handler: every message on the pattern, in order, called by the node
    before the loop turns; one that raises is logged once and counted, the rest still come;
    a handler may close its own subscription as it runs; ``get`` on it is refused."""

    async def scenario() -> None:
        group = "239.255.90.10:5910"
        async with (
            Node(group, iface=LO, name="rx") as receiver,
            Node(group, iface=LO, name="tx") as sender,
        ):
            seen: list[bytes] = []
            in_task: list[bool] = []

            def handler(message: mcastkit.Message) -> None:
                in_task.append(asyncio.current_task() is not None)
                seen.append(message.payload)
                if message.payload.endswith(b"7"):
                    raise ValueError("the application's bug")

            subscription = receiver.subscribe("t/*", handler)
            queued = receiver.subscribe("t/*")  # a queue beside it gets the same messages
            closing: list[bytes] = []

            def once(message: mcastkit.Message) -> None:
                closing.append(message.payload)
                closer.close()

            closer = receiver.subscribe("t/*", once)
            deadline = time.monotonic() + 5
            while sender.node_id not in receiver.peers and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            payloads = [b"m%03d" % n for n in range(200)]
            with caplog.at_level(logging.WARNING, logger="mcastkit"):
                for payload in payloads:
                    await sender.publish("t/a", payload)
                    if payload.endswith(b"9"):
                        await asyncio.sleep(0)  # some alone, some in runs
                await sender.publish("other", b"not on the pattern")
                got = [await queued.get(5) for _ in payloads]
            assert [m.payload if m else None for m in got] == payloads
            assert seen == payloads
            assert not any(in_task), "a handler runs in the receive path, not in a task"
            assert subscription.handler_errors == 20
            warnings = [r for r in caplog.records if "message handler" in r.getMessage()]
            assert len(warnings) == 1 and "t/*" in warnings[0].getMessage()
            assert closing == [b"m000"]
            with pytest.raises(RuntimeError, match="handler"):
                await subscription.get(0.1)

    asyncio.run(scenario())


def test_a_coroutine_is_refused_as_a_message_handler() -> None:
    async def scenario() -> None:
        async with Node("239.255.90.11:5911", iface=LO, name="n", deliver_own=True) as node:

            async def handler(message: mcastkit.Message) -> None: ...

            with pytest.raises(TypeError, match="async for"):
                node.subscribe("*", handler)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="plain function"):
                node.subscribe("*", "not callable")  # type: ignore[arg-type]
            # A plain function that returns a coroutine: caught per message, not awaited.
            sneaky = node.subscribe("t", lambda message: handler(message))
            await node.publish("t", b"x")
            await node.publish("t", b"y")
            deadline = time.monotonic() + 2
            while sneaky.handler_errors < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert sneaky.handler_errors == 2

    asyncio.run(scenario())


def test_blocking_api_handler_runs_until_unsubscribed() -> None:
    group = "239.255.90.12:5912"
    with (
        mcastkit.connect(group, iface=LO, name="rx", heartbeat=0.2, subscribe=None) as receiver,
        mcastkit.connect(group, iface=LO, name="tx", heartbeat=0.2, subscribe=None) as sender,
    ):
        seen: list[str] = []
        threads: set[str] = set()
        arrived = threading.Event()

        def handler(message: mcastkit.Message) -> None:
            seen.append(message.text())
            threads.add(threading.current_thread().name)
            if len(seen) == 3:
                arrived.set()

        unsubscribe = receiver.subscribe("news", handler)
        time.sleep(0.6)
        for text in ("a", "b", "c"):
            sender.publish("news", text)
        assert arrived.wait(3)
        assert seen == ["a", "b", "c"]
        assert threads == {"mcastkit"}  # the node's thread, not the caller's
        unsubscribe()
        sender.publish("news", "after")
        time.sleep(0.3)
        assert seen == ["a", "b", "c"]


def test_a_reply_too_long_for_one_datagram_comes_back_as_an_error_saying_so() -> None:
    async def scenario() -> None:
        group = "239.255.90.13:5913"
        async with (
            Node(group, iface=LO, name="srv") as server,
            Node(group, iface=LO, name="cli") as client,
        ):
            server.serve("big", lambda request: b"x" * 100_000)
            server.serve("small", lambda request: b"fits")
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not any(
                p.serves("big") and p.serves("small") for p in client.peers.values()
            ):
                await asyncio.sleep(0.05)
            big = await client.request("big", timeout=1.0)
            small = await client.request("small", timeout=1.0)
            assert list(small.replies.values()) == [b"fits"]
            (answer,) = big.replies.values()
            assert answer.startswith(b"error: the reply is 100000 bytes; one reply datagram")

    asyncio.run(scenario())


def test_blocking_api_handler_may_publish_and_is_refused_a_call_that_would_wait_for_itself() -> (
    None
):
    """The seed's echo on the blocking facade: a handler answers on the node's own thread.
    A blocking call there would wait for the thread it runs on: refused at once, not hung."""
    group = "239.255.90.14:5914"
    with (
        mcastkit.connect(group, iface=LO, name="echo", heartbeat=0.2, subscribe=None) as echo,
        mcastkit.connect(group, iface=LO, name="asker", heartbeat=0.2, subscribe="re") as asker,
    ):
        refused: list[str] = []

        def answer(message: mcastkit.Message) -> None:
            echo.publish("re", b"re: " + message.payload)
            started = time.monotonic()
            try:
                echo.peers()
            except RuntimeError as exc:
                refused.append(f"{time.monotonic() - started:.3f} {exc}")

        echo.subscribe("ask", answer)
        time.sleep(0.6)
        asker.publish("ask", "ping")
        reply = asker.recv(timeout=3)
        assert reply is not None and reply.payload == b"re: ping"
        assert len(refused) == 1 and "only publish() works there" in refused[0]
        assert float(refused[0].split()[0]) < 1.0


def test_a_wait_on_the_membership_ends_at_the_join_not_at_a_poll() -> None:
    from mcastkit.subscription import until_members

    async def scenario() -> None:
        async with Node("239.255.90.7:5907", iface=LO, name="waiter", heartbeat=0.5) as waiter:
            loop = asyncio.get_running_loop()
            # Nobody serves "nothing": the wait ends at its timeout, and says so.
            start = loop.time()
            served = await until_members(
                waiter, lambda p: any(x.serves("nothing") for x in p.values()), 0.3
            )
            assert served is False and 0.3 <= loop.time() - start < 1.0
            later = Node("239.255.90.7:5907", iface=LO, name="late", heartbeat=0.5)
            joined_at: list[float] = []

            def seen(peers: dict[int, mcastkit.PeerInfo]) -> bool:
                if any(p.name == "late" for p in peers.values()):
                    joined_at.append(loop.time())
                    return True
                return False

            # A recheck far longer than the test: only the join event can end this wait.
            waiting = asyncio.ensure_future(until_members(waiter, seen, 5.0, recheck=60.0))
            await asyncio.sleep(0.05)
            started = loop.time()
            async with later:
                assert await waiting is True
            assert joined_at[0] - started < 1.0

    asyncio.run(scenario())


def test_a_settling_wait_goes_on_while_members_keep_arriving() -> None:
    from mcastkit.subscription import until_members

    async def scenario() -> None:
        async with Node("239.255.90.8:5908", iface=LO, name="asker", heartbeat=0.5) as asker:
            first = Node("239.255.90.8:5908", iface=LO, name="first", heartbeat=0.5)
            second = Node("239.255.90.8:5908", iface=LO, name="second", heartbeat=0.5)

            async def arrive() -> None:
                await first.start()
                await asyncio.sleep(0.2)  # within the settle time below: waited for
                await second.start()

            arriving = asyncio.ensure_future(arrive())
            try:
                assert await until_members(asker, lambda peers: bool(peers), 10.0, settle=1.0)
                assert {p.name for p in asker.peers.values()} == {"first", "second"}
            finally:
                await arriving
                await first.stop()
                await second.stop()

    asyncio.run(scenario())
