#!/usr/bin/env bash
# The suite's socket-level subset with every Linux-only facility turned off (GSO, GRO,
# recvmmsg, packet info, IP_MULTICAST_ALL, ip_mreqn, SO_RCVBUFFORCE, SO_MEMINFO, netlink,
# interface flags): the plain POSIX paths that macOS, the BSDs and Windows take, run here.
# Run after scripts/test.sh (which installs what is needed). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
export MCASTKIT_WITHOUT=all
python3 -m pytest \
    tests/unit/test_platform.py \
    tests/integration/test_loopback_sockets.py \
    tests/integration/test_batch_io.py \
    tests/integration/test_driver.py \
    tests/integration/test_node.py \
    tests/integration/test_lan.py \
    tests/cli/test_cli.py \
    "$@"
