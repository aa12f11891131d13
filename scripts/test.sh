#!/usr/bin/env bash
# Run the whole test suite on a fresh machine: installs what it needs, then runs pytest.
# As root the suite moves itself into a private network namespace (tests/conftest.py), so no
# test traffic can leave through a real interface. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real peers and tools the tests use (Debian packages).
tools=(ip:iproute2 socat:socat iperf:iperf nft:nftables tcpdump:tcpdump tshark:tshark ethtool:ethtool iptables-legacy:iptables)
missing=()
for pair in "${tools[@]}"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing Debian packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        # tshark asks whether non-root users may capture: answer no, without a prompt.
        echo "wireshark-common wireshark-common/install-setuid boolean false" \
            | debconf-set-selections 2>/dev/null || true
        if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
            echo "apt-get could not install ${missing[*]}" >&2
            [ "${CI:-}" = "true" ] && exit 1
        fi
    else
        echo "warning: not root or no apt-get: tests needing ${missing[*]} will skip" >&2
    fi
fi

export PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1
python3 -m pip install -q -e '.[test]'
exec python3 -m pytest "$@"
