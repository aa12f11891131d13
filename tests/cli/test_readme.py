"""The README's library example must run as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def _run_example(marker: str, timeout: float = 60, cwd: Path | None = None) -> str:
    """Run the README's first python block containing ``marker``; return its output."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    example = next(b for b in blocks if marker in b)
    result = subprocess.run(
        [sys.executable, "-c", example], capture_output=True, text=True, timeout=timeout, cwd=cwd
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_readme_python_example_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README has no python example"
    result = subprocess.run(
        [sys.executable, "-c", blocks[0]], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert "hello group" in result.stdout
    assert "from the chosen source" in result.stdout


def test_readme_node_example_runs() -> None:
    output = _run_example("mcastkit.Node(")
    assert "hello group" in output
    assert "b's answer to what time?" in output
    assert "['b']" in output


def test_readme_names_the_two_setup_commands() -> None:
    text = README.read_text()
    assert "python3 -m pip install . && mcast demo --nodes 3" in text
    assert "bash scripts/test.sh" in text


def test_readme_blocking_example_runs() -> None:
    output = _run_example("mcastkit.connect(")
    assert "script started" in output
    assert "'complete': True" in output and "'name': 'server'" in output


def test_readme_reliable_example_runs() -> None:
    output = _run_example("reliable=True")
    assert "True 8388608 True" in output
    assert "that was all" in output


def test_readme_burst_example_runs() -> None:
    output = _run_example("async def burst(")
    assert "5000 of 5000" in output


def test_readme_handler_example_runs() -> None:
    output = _run_example("async def handled(")
    assert "[('price/eur', '1.08'), ('price/gbp', '1.27')]" in output


def test_readme_unicast_only_example_runs() -> None:
    output = _run_example("multicast=False")
    assert "over unicast [('late', 'unicast')]" in output


def test_readme_no_multicast_shell_example_runs() -> None:
    """The one-host try of "No multicast here?": the two commands as written."""
    text = README.read_text()
    block = next(b for b in re.findall(r"```sh\n(.*?)```", text, re.S) if "--no-multicast" in b)
    lines = [line.split("#")[0].strip() for line in block.splitlines()]
    subscribe = next(line for line in lines if line.startswith("mcast subscribe"))
    publish = next(line for line in lines if line.startswith("mcast publish"))
    mcast = [sys.executable, "-m", "mcastkit"]
    receiver = subprocess.Popen(
        mcast + subscribe.rstrip("&").split()[1:], stdout=subprocess.PIPE, text=True
    )
    try:
        sent = subprocess.run(mcast + publish.split()[1:], capture_output=True, timeout=30)
        assert sent.returncode == 0, sent.stderr
        out, _ = receiver.communicate(timeout=30)
    finally:
        receiver.kill()
    assert receiver.returncode == 0 and "hello" in out


def test_readme_send_files_example_reaches_a_library_receiver(tmp_path: Path) -> None:
    # The README's send_files block, as written, to a receive_files of the library.
    import hashlib
    import os
    import threading

    from mcastkit import parse_group
    from mcastkit.transfer import ReceiveOptions, receive_files

    image = os.urandom(3 << 20)
    (tmp_path / "image.iso").write_bytes(image)
    into = tmp_path / "into"
    received: dict[str, object] = {}

    def receive() -> None:
        options = ReceiveOptions(iface="lo", wait=20, parents=True)
        received.update(receive_files(parse_group("239.255.77.83:5083"), into, options))

    receiver = threading.Thread(target=receive)
    receiver.start()
    output = _run_example("send_files(", timeout=60, cwd=tmp_path)
    receiver.join(30)
    assert "registered:" in output and "complete" in output, output
    assert received["state"] == "complete", received
    assert hashlib.sha256((into / "image.iso").read_bytes()).digest() == (
        hashlib.sha256(image).digest()
    )
