"""Asks for unicast copies of a file transfer from an address that never proves it hears the
sender (real CLI, three namespace hosts).

Before (issue 22, class 8): one unauthenticated WANT_COPIES datagram made ``mcast send-file``
copy every datagram of the transfer to the asking address for 5 s: a 16-byte datagram with a
victim's source address drew megabytes to the victim. Now an ask must echo a cookie the sender
gave that address, so a spoofed one draws one datagram of about its own size back.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from netlab import Lab, wait_for_line

GROUP = "239.255.74.74:7474"

# The attacker writes the victim's address as its source and never reads: here the victim is
# the attacker's own socket, counting what reaches it.
ATTACK = """
import json, socket, struct, time
ask = struct.pack("!4sB3xQ", b"MKT1", 13, 0)  # docs/protocol.md: WANT_COPIES, no cookie
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
sock.settimeout(0.05)
spent = reflected = 0
deadline = time.monotonic() + 2.5
while time.monotonic() < deadline:
    sock.sendto(ask, ("{sender}", 7474))
    spent += len(ask)
    try:
        while True:
            reflected += len(sock.recv(65535))
    except (TimeoutError, BlockingIOError):
        pass
print(json.dumps({{"spent": spent, "reflected": reflected}}))
"""


def test_a_spoofed_ask_for_copies_draws_one_challenge_not_the_transfer(
    lab: Lab, tmp_path: Path
) -> None:
    sender, receiver, attacker = lab.lan(3)
    source = tmp_path / "payload.bin"
    source.write_bytes(os.urandom(12 << 20))
    inbox = tmp_path / "in"
    inbox.mkdir()
    got = receiver.start_mcast("recv-file", "--group", GROUP, "--dir", str(inbox), "--json",
                               "--wait", "30")  # fmt: skip
    wait_for_line(got.stderr, "waiting for a transfer")
    sent = sender.start_mcast("send-file", str(source), "--group", GROUP, "--receivers", "1",
                              "--rate", "40M", "--json")  # fmt: skip
    attack = attacker.python(ATTACK.format(sender=sender.ipv4), timeout=30)
    figures = json.loads(attack.stdout)
    summary = json.loads(sent.communicate(timeout=60)[0])
    result = json.loads(got.communicate(timeout=60)[0])
    assert summary["ok"] and result["state"] == "complete", (summary, result)
    # Before: every block of the transfer for 5 s after each ask, megabytes. Now: one
    # challenge per ask, 8 bytes longer than it.
    assert figures["reflected"] <= 2 * figures["spent"], figures
