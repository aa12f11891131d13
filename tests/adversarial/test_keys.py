"""Keys: never on the command line if avoidable, never readable by others, salted per group."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ISOLATED

from mcastkit import SecurityError, key_from_passphrase, load_key_file

GROUP = "239.255.73.73:7373"


def _mcast(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mcastkit", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def _subscribe(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``mcast subscribe news --count 1 ARGS`` in the background."""
    return subprocess.Popen(
        [sys.executable, "-m", "mcastkit", "subscribe", "news", "--count", "1", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def test_the_salt_binds_a_key_to_its_group() -> None:
    # Before: one constant salt for every deployment, so one precomputed table served all.
    a = key_from_passphrase("same words", group="239.1.1.1:5000")
    b = key_from_passphrase("same words", group="239.1.1.2:5000")
    c = key_from_passphrase("same words", group="239.1.1.1:5001")
    same = key_from_passphrase("same words", group="239.1.1.1:5000%eth0")  # iface not part
    assert len({a.key_id, b.key_id, c.key_id}) == 3
    assert same.secret == a.secret


def test_a_key_file_others_can_read_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "group.key"
    assert _mcast("keygen", str(path)).returncode == 0
    assert load_key_file(path).key_id
    path.chmod(0o644)
    with pytest.raises(SecurityError, match="chmod 600"):
        load_key_file(path)
    done = _mcast("subscribe", "--group", GROUP, "--iface", "lo", "--key-file", str(path))
    assert done.returncode == 2
    assert f"chmod 600 {path}" in done.stderr and "Traceback" not in done.stderr


def test_empty_passphrases_are_refused(tmp_path: Path) -> None:
    done = _mcast("subscribe", "--group", GROUP, "--iface", "lo", "--passphrase", "")
    assert done.returncode == 2 and "empty" in done.stderr
    done = _mcast("subscribe", "--group", GROUP, "--iface", "lo", env={"MCAST_PASSPHRASE": ""})
    assert done.returncode == 2 and "empty" in done.stderr
    secret = tmp_path / "pass"
    secret.write_text("\n")
    secret.chmod(0o600)
    done = _mcast("subscribe", "--group", GROUP, "--iface", "lo", "--passphrase-file", str(secret))
    assert done.returncode == 2 and "empty" in done.stderr


def test_a_passphrase_file_others_can_read_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "pass"
    secret.write_text("words\n")
    secret.chmod(0o640)
    done = _mcast("subscribe", "--group", GROUP, "--iface", "lo", "--passphrase-file", str(secret))
    assert done.returncode == 2 and f"chmod 600 {secret}" in done.stderr


@pytest.mark.skipif(not ISOLATED, reason="needs the private network namespace")
def test_env_and_file_passphrases_seal_the_group_and_argv_warns(tmp_path: Path) -> None:
    secret = tmp_path / "pass"
    secret.write_text("hunter2 is not a passphrase\n")
    secret.chmod(0o600)
    common = ("--group", GROUP, "--iface", "lo")
    subscriber = _subscribe(*common, "--timeout", "8", "--passphrase-file", str(secret))
    stranger = _subscribe(*common, "--timeout", "4", env={"MCAST_PASSPHRASE": "another passphrase"})
    published = _mcast(
        "publish",
        "news",
        "sealed hello",
        *common,
        "--wait",
        "1.5",
        env={"MCAST_PASSPHRASE": "hunter2 is not a passphrase"},
    )
    assert published.returncode == 0, published.stderr
    assert "visible to every local user" not in published.stderr
    out, _ = subscriber.communicate(timeout=30)
    assert subscriber.returncode == 0 and "sealed hello" in out
    out, _ = stranger.communicate(timeout=30)
    assert stranger.returncode == 1 and "sealed hello" not in out
    warned = _mcast("publish", "news", "x", *common, "--passphrase", "argv words", "--wait", "0.2")
    assert "visible to every local user" in warned.stderr


@pytest.mark.parametrize("form", ["separate", "equals"])
def test_a_passphrase_on_the_command_line_is_wiped_from_ps(form: str) -> None:
    # Before: `ps` showed --passphrase's value for as long as the member ran (issue 22, 10).
    secret = "argv words 7d1f"
    given = ["--passphrase", secret] if form == "separate" else [f"--passphrase={secret}"]
    member = _subscribe("--group", GROUP, "--iface", "lo", *given)
    try:
        assert member.stderr is not None
        line = member.stderr.readline()
        assert "visible to every local user" in line and "until mcast started" in line, line
        shown = Path(f"/proc/{member.pid}/cmdline").read_bytes()
        assert secret.encode() not in shown, shown
        assert b"x" * len(secret) in shown and b"--passphrase" in shown
    finally:
        member.terminate()
        member.communicate(timeout=30)
