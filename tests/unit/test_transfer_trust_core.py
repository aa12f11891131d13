"""Signed and stamped announces, and sealed transfer datagrams (sans-I/O, fake clocks)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from blobs import Blobs
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mcastkit.events import ReceiveState, SendPhase
from mcastkit.keyfiles import load_public_key, load_signing_key, write_signing_key
from mcastkit.security import CIPHERS, GroupKey, KeyRing, SecurityError
from mcastkit.transfer.engine import ReceiveSession, SendSession
from mcastkit.transfer.protocol import BLOCK_SIZE, FileInfo, decode_untrusted, encode_announce
from mcastkit.transfer.sealing import OVERHEAD, Guard
from mcastkit.transfer.storage import MemoryStorage
from mcastkit.transfer.trust import AnnounceCheck, AnnounceSigner, public_text

SENDER = ("10.0.0.1", 4000)
RECEIVER = ("10.0.0.2", 5000)
NOW = 1_800_000_000.0


def _files(blob: bytes) -> list[FileInfo]:
    return [FileInfo("f", len(blob), hashlib.sha256(blob).hexdigest())]


def _body(datagram: bytes) -> tuple[int, bytes]:
    message = decode_untrusted(datagram)
    assert message is not None
    return message.session, message.body


def test_a_signed_announce_from_a_trusted_key_is_taken() -> None:
    key = Ed25519PrivateKey.generate()
    signed = AnnounceSigner(key).sign(encode_announce(7, _files(b"x" * 10), 100, sent_at=NOW))
    check = AnnounceCheck([key.public_key()], max_skew=30, wall_clock=lambda: NOW + 5)
    assert check(*_body(signed)) is None


@pytest.mark.parametrize("attack", ["unsigned", "other-key", "tampered", "moved", "stale", "early"])
def test_announces_an_attacker_can_make_are_refused(attack: str) -> None:
    trusted, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    check = AnnounceCheck([trusted.public_key()], max_skew=30, wall_clock=lambda: NOW)
    files = _files(b"x" * 10)
    sent_at = {"stale": NOW - 31, "early": NOW + 31}.get(attack, NOW)
    plain = encode_announce(7, files, 100, sent_at=sent_at)
    signer = AnnounceSigner(other if attack == "other-key" else trusted)
    datagram = plain if attack == "unsigned" else signer.sign(plain)
    session, body = _body(datagram)
    if attack == "tampered":  # another digest, the signature kept
        body = body.replace(files[0].sha256.encode(), b"0" * 63 + b"1")
    if attack == "moved":  # the same signed list, replayed in another session
        session = 8
    reason = check(session, body)
    assert reason is not None
    expected = {
        "unsigned": "unsigned",
        "other-key": "untrusted key",
        "tampered": "forged",
        "moved": "forged",
        "stale": "stamped -31s",
        "early": "stamped +31s",
    }[attack]
    assert expected in reason


def test_sealed_only_check_needs_a_stamp_but_no_signature() -> None:
    check = AnnounceCheck(None, max_skew=30, wall_clock=lambda: NOW)
    assert check(*_body(encode_announce(7, _files(b"x"), 100, sent_at=NOW - 2))) is None
    assert "time stamp" in (check(*_body(encode_announce(7, _files(b"x"), 100))) or "")


def _transfer(
    blob: bytes, *, sign: AnnounceSigner | None, check: AnnounceCheck | None, clock: float
) -> tuple[SendSession, ReceiveSession, MemoryStorage]:
    sender = SendSession(
        3,
        _files(blob),
        Blobs([blob]),
        now=0.0,
        block_size=100,
        expected=1,
        register_wait=0.5,
        wall_clock=lambda: clock,
        sign=None if sign is None else sign.sign,
    )
    storage = MemoryStorage()
    receiver = ReceiveSession(9, "r", storage, now=0.0, check_announce=check)
    now = 0.0
    while sender.phase != SendPhase.DONE and now < 20:
        for data, destination in sender.tick(now) + sender.next_blocks(50):
            if destination in (None, RECEIVER):
                for reply, _ in receiver.receive(data, SENDER, now):
                    sender.receive(reply, RECEIVER, now)
        for reply, _ in receiver.tick(now):
            sender.receive(reply, RECEIVER, now)
        now += 0.01
    return sender, receiver, storage


def test_engines_carry_the_signature_end_to_end() -> None:
    key = Ed25519PrivateKey.generate()
    blob = os.urandom(5000)
    check = AnnounceCheck([key.public_key()], max_skew=30, wall_clock=lambda: NOW)
    _, receiver, storage = _transfer(blob, sign=AnnounceSigner(key), check=check, clock=NOW)
    assert receiver.state == ReceiveState.COMPLETE
    assert storage.collect()["f"] == blob
    _, refused, _ = _transfer(blob, sign=None, check=check, clock=NOW)
    assert refused.state == ReceiveState.WAITING and refused.session is None
    assert any("unsigned" in reason for reason in refused.refused)
    _, stale, _ = _transfer(blob, sign=AnnounceSigner(key), check=check, clock=NOW - 60)
    assert stale.state == ReceiveState.WAITING
    assert any("stamped" in reason for reason in stale.refused)


def test_a_later_unsigned_announce_cannot_change_the_digests() -> None:
    """An outsider's announce for our session with digests of its own data is refused."""
    key = Ed25519PrivateKey.generate()
    check = AnnounceCheck([key.public_key()], max_skew=30, wall_clock=lambda: NOW)
    receiver = ReceiveSession(9, "r", MemoryStorage(), now=0.0, check_announce=check)
    pending = [FileInfo("f", 300, "0" * 64)]
    signed = AnnounceSigner(key).sign(encode_announce(7, pending, 100, sent_at=NOW))
    receiver.receive(signed, SENDER, 0.0)
    assert receiver.state == ReceiveState.RECEIVING
    forged = encode_announce(7, [FileInfo("f", 300, "ab" * 32)], 100, sent_at=NOW)
    receiver.receive(forged, SENDER, 0.1)
    assert receiver.files[0].digest_pending


def test_signing_key_files(tmp_path: Path) -> None:
    path = tmp_path / "sender.key"
    public = write_signing_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_public_key(str(tmp_path / "sender.key.pub")) == public
    assert load_public_key(public_text(public)) == public
    assert load_signing_key(path).public_key() == public
    with pytest.raises(SecurityError, match="exists"):
        write_signing_key(path)
    path.chmod(0o644)
    with pytest.raises(SecurityError, match="chmod 600"):
        load_signing_key(path)
    for bad in ("ed25519:AAAA", "ed25519:not base64!", str(tmp_path / "none.pub")):
        with pytest.raises(SecurityError):
            load_public_key(bad)
    (tmp_path / "junk").write_text(json.dumps({"key": 1}))
    (tmp_path / "junk").chmod(0o600)
    with pytest.raises(SecurityError, match="not an mcastkit signing key"):
        load_signing_key(tmp_path / "junk")


@pytest.mark.parametrize("cipher", sorted(CIPHERS))
def test_guard_seals_and_opens_batches_and_drops_the_rest(cipher: str) -> None:
    key = GroupKey(os.urandom(32))
    sender = Guard(KeyRing([key], os.urandom, cipher=cipher))
    receiver = Guard(KeyRing([key], os.urandom))  # opens either cipher
    outsider = Guard(None)
    stranger = Guard(KeyRing([GroupKey(os.urandom(32))], os.urandom))
    payloads = [os.urandom(n) for n in (10, BLOCK_SIZE - OVERHEAD, 1)]
    sealed = [sender.seal(p) for p in payloads]
    forged = bytearray(sealed[1])
    forged[40] ^= 1
    wire = [*sealed, b"MKT1" + bytes(20), bytes(forged)]
    buffer = memoryview(b"".join(wire))
    spans, at = [], 0
    for datagram in wire:
        spans.append((at, at + len(datagram)))
        at += len(datagram)
    plain, opened = receiver.open_runs(buffer, spans)
    assert [bytes(plain[a:b]) for a, b in opened] == payloads
    assert receiver.dropped == {"unsealed": 1, "forged": 1}
    _, heard = outsider.open_runs(buffer, spans)
    assert heard == [spans[3]] and outsider.dropped == {"sealed-without-key": 4}
    _, none = stranger.open_runs(buffer, spans)
    assert none == [] and stranger.dropped == {"unknown-key": 4, "unsealed": 1}


def test_nonces_never_repeat_within_a_ring_and_wrap_to_a_new_prefix() -> None:
    ring = KeyRing([GroupKey(bytes(32))], os.urandom)
    nonces = {ring.seal(b"x")[8:20] for _ in range(1000)}
    assert len(nonces) == 1000
    ring._counter = (1 << 32) - 2
    before = ring.seal(b"x")[8:16]
    after = ring.seal(b"x")[8:16]
    assert before != after  # a fresh random prefix, never counter zero again
