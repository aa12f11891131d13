#!/usr/bin/env bash
# Run the whole test suite on a fresh machine: installs what it needs, then runs pytest.
# As root the suite moves itself into a private network namespace (tests/conftest.py), so no
# test traffic can leave through a real interface. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real peers and tools the tests use (Debian packages): command:package.
tools=(ip:iproute2 socat:socat iperf:iperf nft:nftables tcpdump:tcpdump tshark:tshark
    ethtool:ethtool iptables-legacy:iptables)
# Multicast routers for the routed tests: they skip, saying why, if these cannot be had.
routers=(smcrouted:smcroute vtysh:frr)

missing_of() {
    local pair
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || echo "${pair#*:}"
    done
}

install() {  # install PACKAGES...; returns non-zero when apt-get fails
    export DEBIAN_FRONTEND=noninteractive
    # tshark asks whether non-root users may capture: answer no, without a prompt.
    echo "wireshark-common wireshark-common/install-setuid boolean false" \
        | debconf-set-selections 2>/dev/null || true
    # smcroute and frr are routing daemons: the tests run them inside namespaces only, so
    # their packages must not start them on this host (policy-rc.d says no).
    local policy=/usr/sbin/policy-rc.d made= status=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made=1
    fi
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "$@" >/dev/null; } \
        || status=$?
    if [ -n "$made" ]; then rm -f "$policy"; fi
    return "$status"
}

mapfile -t missing < <(missing_of "${tools[@]}")
mapfile -t missing_routers < <(missing_of "${routers[@]}")
if [ "${#missing[@]}" -gt 0 ] || [ "${#missing_routers[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        if [ "${#missing[@]}" -gt 0 ]; then
            echo "installing Debian packages: ${missing[*]}"
            if ! install "${missing[@]}"; then
                echo "apt-get could not install ${missing[*]}" >&2
                [ "${CI:-}" = "true" ] && exit 1
            fi
        fi
        if [ "${#missing_routers[@]}" -gt 0 ]; then
            echo "installing multicast routers: ${missing_routers[*]}"
            install "${missing_routers[@]}" \
                || echo "apt-get could not install ${missing_routers[*]}: routed tests skip" >&2
        fi
    else
        echo "warning: not root or no apt-get: tests needing ${missing[*]} ${missing_routers[*]} will skip" >&2
    fi
fi

export PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1
python3 -m pip install -q -e '.[test]'
# The tests mostly wait (on namespaces, links, timers): one worker per core (pytest-xdist),
# each moving itself into its own private namespace (tests/conftest.py), halves the time.
# MCASTKIT_TEST_WORKERS=0: one process, as before.
exec python3 -m pytest -n "${MCASTKIT_TEST_WORKERS:-auto}" "$@"
