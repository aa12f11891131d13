"""The firewall as data: which of the packets a group needs would the ruleset drop, and the
rule that lets each through.

The ruleset is read as data (``nft -j list ruleset``, which includes what iptables-nft
made, and ``iptables-legacy-save`` / ``ip6tables-legacy-save``). Each packet the group
needs (a ``Probe``: its UDP in and out, IGMP or MLD in and out, answers from peers) is run
through the base chains of its hook in priority order, rule by rule, following jumps, so an
accept before a drop policy counts, and port, family and interface are respected. A rule
with a match this model does not know is "uncertain": skipped, and reported if it could
drop. A block's fix is an accept rule for exactly that packet, inserted at the top of the
chain where the packet is dropped: after it, the same evaluation lets the packet through.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from dataclasses import dataclass
from ipaddress import ip_address, ip_network
from typing import Any

__all__ = ["Block", "Probe", "evaluate_iptables", "evaluate_nft", "probes_for"]

# ICMPv6 types of MLD (RFC 2710, 3810): query, v1 report, v1 done, v2 report.
MLD_TYPES = {130: "mld-listener-query", 131: "mld-listener-report", 132: "mld-listener-done",
             143: "mld2-listener-report"}  # fmt: skip
PROTOCOLS = {"udp": 17, "igmp": 2, "icmpv6": 58, "ipv6-icmp": 58, "tcp": 6, "hopopt": 0}
HOOKS = {"in": ("prerouting", "input", "ingress"), "out": ("output", "postrouting")}
MAX_DEPTH = 16


@dataclass(frozen=True)
class Probe:
    """One packet the group needs to pass the firewall."""

    label: str
    family: int  # 4 or 6
    direction: str  # "in" or "out"
    l4: str  # "udp", "igmp" or "icmpv6"
    daddr: str
    saddr: str | None = None
    dport: int | None = None
    sport: int | None = None
    iface: str | None = None
    icmp_type: int | None = None

    def accept_nft(self, family: str) -> list[str]:
        """The nft match (then ``accept``) for exactly this kind of packet."""
        ip = "ip" if self.family == 4 else "ip6"
        if self.l4 == "igmp":
            words = ["ip", "protocol", "igmp"]
        elif self.l4 == "icmpv6":
            words = ["icmpv6", "type", "{", ", ".join(MLD_TYPES.values()), "}"]
        elif self.sport is not None:  # answers: unicast from the peers' port
            words = ["udp", "sport", str(self.sport)]
        else:
            words = [ip, "daddr", self.daddr, "udp", "dport", str(self.dport)]
        if family == "inet" and self.l4 == "udp" and words[0] == "udp":
            words = ["meta", "nfproto", "ipv4" if self.family == 4 else "ipv6", *words]
        return [*words, "accept"]

    def accept_iptables(self) -> list[list[str]]:
        """The iptables arguments (after ``-I CHAIN 1``) that accept this kind of packet."""
        if self.l4 == "igmp":
            return [["-p", "igmp", "-j", "ACCEPT"]]
        if self.l4 == "icmpv6":
            return [["-p", "ipv6-icmp", "--icmpv6-type", str(t), "-j", "ACCEPT"] for t in MLD_TYPES]
        if self.sport is not None:
            return [["-p", "udp", "--sport", str(self.sport), "-j", "ACCEPT"]]
        bits = 32 if self.family == 4 else 128
        return [["-d", f"{self.daddr}/{bits}", "-p", "udp", "--dport", str(self.dport), "-j",
                 "ACCEPT"]]  # fmt: skip


@dataclass(frozen=True)
class Block:
    """A probe the firewall drops: where, by what, and the commands that let it through."""

    probe: Probe
    where: str  # "nft inet filter input", "iptables-legacy filter INPUT"
    rule: str | None  # the dropping rule as text; None: the chain's policy
    certain: bool  # False: a rule this model cannot fully read may drop it
    commands: tuple[tuple[str, ...], ...]

    @property
    def fix(self) -> str:
        """The commands as one line to paste."""
        return "; ".join(shlex.join(c) for c in self.commands)


def probes_for(
    group: str, port: int, family: int, iface: str | None, address: str | None
) -> list[Probe]:
    """The packets a member of ``group:port`` on ``iface`` needs through its firewall."""
    if family == 4:
        membership = [
            Probe("IGMP queries in", 4, "in", "igmp", "224.0.0.1", iface=iface),
            Probe("IGMP reports out", 4, "out", "igmp", "224.0.0.22", iface=iface),
        ]
    else:
        membership = [
            Probe("MLD queries in", 6, "in", "icmpv6", "ff02::1", iface=iface, icmp_type=130),
            Probe("MLD reports out", 6, "out", "icmpv6", "ff02::16", iface=iface, icmp_type=143),
        ]
    where = f"{group}:{port}" if family == 4 else f"[{group}]:{port}"
    probes = [
        Probe(f"UDP to {where} in", family, "in", "udp", group, dport=port, iface=iface),
        Probe(f"UDP to {where} out", family, "out", "udp", group, dport=port, iface=iface),
        *membership,
    ]
    if address is not None:
        label = f"answers from peers' port {port} in"
        probes.append(Probe(label, family, "in", "udp", address, sport=port, iface=iface))
    return probes


# --- nft -------------------------------------------------------------------------------


def evaluate_nft(ruleset: dict[str, Any], probe: Probe) -> list[Block]:
    """Every base chain of ``probe``'s hook that drops it (``nft -j list ruleset``)."""
    chains: dict[tuple[str, str, str], dict[str, Any]] = {}
    rules: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for item in ruleset.get("nftables", []):
        if "chain" in item:
            chain = item["chain"]
            key = (chain["family"], chain["table"], chain["name"])
            chains[key] = chain
            rules.setdefault(key, [])
        elif "rule" in item:
            rule = item["rule"]
            rules.setdefault((rule["family"], rule["table"], rule["chain"]), []).append(rule)
    families = {"inet", "ip" if probe.family == 4 else "ip6", "netdev"}
    order = HOOKS[probe.direction]
    bases = sorted(
        (
            (order.index(c["hook"]), int(c.get("prio", 0)), key)
            for key, c in chains.items()
            if key[0] in families
            and c.get("hook") in order
            and c.get("type", "filter") in ("filter", "route")
            and (key[0] != "netdev" or c.get("dev") in (None, probe.iface))
        ),
    )
    blocks = []
    for _hook, _prio, key in bases:
        doubts: list[tuple[tuple[str, str, str], dict[str, Any]]] = []
        verdict = _run_nft_chain(key, rules, probe, 0, doubts)
        if verdict is None:
            verdict = (chains[key].get("policy", "accept"), key, None)
        action, where, rule = verdict
        certain = True
        if action == "accept" and doubts:  # a rule we cannot read fully may drop it first
            (where, rule), action, certain = doubts[0], "drop", False
        if action in ("drop", "reject"):
            family, table, chain = where
            command = ("nft", "insert", "rule", family, table, chain, *probe.accept_nft(family))
            text = None if rule is None else _nft_text(rule)
            blocks.append(Block(probe, f"nft {family} {table} {chain}", text, certain, (command,)))
    return blocks


Decision = tuple[str, tuple[str, str, str], dict[str, Any] | None]


def _run_nft_chain(
    key: tuple[str, str, str],
    rules: dict[tuple[str, str, str], list[dict[str, Any]]],
    probe: Probe,
    depth: int,
    doubts: list[tuple[tuple[str, str, str], dict[str, Any]]],
) -> Decision | None:
    """(verdict, chain, rule) of the first rule that decides, or None (the chain ends).
    Rules that might drop but cannot be read fully go to ``doubts``."""
    if depth > MAX_DEPTH:
        return None
    for rule in rules.get(key, []):
        matched: bool | None = True
        verdict: tuple[str, str | None] | None = None
        for expression in rule.get("expr", []):
            if "match" in expression:
                result = _nft_match(expression["match"], probe)
                if result is False:
                    matched = False
                    break
                if result is None:
                    matched = None
            else:
                verdict = _nft_verdict(expression) or verdict
        if matched is False or verdict is None:
            continue
        action, target = verdict
        if matched is None or action == "?":
            if action in ("drop", "reject", "?", "jump", "goto"):
                doubts.append((key, rule))
            continue  # cannot tell: carry on as if it did not match
        if action in ("jump", "goto") and target is not None:
            inner = _run_nft_chain((key[0], key[1], target), rules, probe, depth + 1, doubts)
            if inner is not None and inner[0] != "return":
                return inner
            if action == "goto":
                return None
            continue
        if action == "return":
            return None
        if action in ("accept", "drop", "reject"):
            return action, key, rule
    return None


def _nft_verdict(expression: dict[str, Any]) -> tuple[str, str | None] | None:
    for action in ("accept", "drop", "reject", "return"):
        if action in expression:
            return action, None
    for action in ("jump", "goto"):
        if action in expression:
            return action, expression[action].get("target")
    if "queue" in expression or "vmap" in expression:
        return "?", None  # a verdict this model does not follow: the rule stays in doubt
    return None  # counter, log, limit, meta set...: no verdict


def _nft_match(match: dict[str, Any], probe: Probe) -> bool | None:
    op = match.get("op", "==")
    if op not in ("==", "!=", "in"):
        return None
    value = _nft_field(match.get("left"), probe)
    if value is _UNKNOWN:
        return None
    if value is _ABSENT:
        return False  # a field of a protocol this packet does not carry: no match
    result = _nft_compare(value, match.get("right"))
    if result is None:
        return None
    return result if op != "!=" else not result


_UNKNOWN = object()
_ABSENT = object()


def _nft_field(left: Any, probe: Probe) -> Any:
    if not isinstance(left, dict):
        return _UNKNOWN
    if "payload" in left:
        protocol = left["payload"].get("protocol")
        field = left["payload"].get("field")
        if protocol in ("ip", "ip6"):
            if (protocol == "ip") != (probe.family == 4):
                return _ABSENT
            if field == "daddr":
                return probe.daddr
            if field == "saddr":
                return probe.saddr if probe.saddr is not None else _UNKNOWN
            if field in ("protocol", "nexthdr"):
                if probe.family == 6 and probe.l4 == "icmpv6":
                    return "hopopt"  # MLD carries a hop-by-hop router alert first
                return probe.l4
            return _UNKNOWN
        if protocol in ("udp", "th"):
            if probe.l4 != "udp":
                return _ABSENT
            if field == "dport":
                return probe.dport if probe.dport is not None else _UNKNOWN
            if field == "sport":
                return probe.sport if probe.sport is not None else _UNKNOWN
            return _UNKNOWN
        if protocol in ("icmpv6", "igmp"):
            wanted = "icmpv6" if protocol == "icmpv6" else "igmp"
            if probe.l4 != wanted:
                return _ABSENT
            if field == "type" and probe.icmp_type is not None:
                return probe.icmp_type
            return _UNKNOWN
        if protocol in ("tcp", "icmp", "sctp", "dccp", "esp", "ah"):
            return _ABSENT
        return _UNKNOWN
    if "meta" in left:
        key = left["meta"].get("key")
        if key == "l4proto":
            return probe.l4
        if key == "nfproto":
            return "ipv4" if probe.family == 4 else "ipv6"
        if key in ("iifname", "iif"):
            if probe.direction != "in":
                return _ABSENT
            return probe.iface if probe.iface is not None else _UNKNOWN
        if key in ("oifname", "oif"):
            if probe.direction != "out":
                return _ABSENT
            return probe.iface if probe.iface is not None else _UNKNOWN
        if key == "pkttype":
            return "host" if probe.sport is not None else "multicast"
        return _UNKNOWN
    if "ct" in left and left["ct"].get("key") == "state":
        return "new"  # multicast never sees a reply, so conntrack calls every packet new
    return _UNKNOWN


def _nft_compare(value: Any, right: Any) -> bool | None:
    if isinstance(right, dict) and "set" in right:
        results = [_nft_compare(value, item) for item in right["set"]]
        if any(results):
            return True
        return None if None in results else False
    if isinstance(right, list):  # ct state established,related
        return _nft_compare(value, {"set": right})
    if isinstance(right, dict) and "prefix" in right:
        try:
            network = ip_network(f"{right['prefix']['addr']}/{right['prefix']['len']}", False)
            return ip_address(value) in network
        except (ValueError, TypeError, KeyError):
            return None
    if isinstance(right, dict) and "range" in right:
        low, high = right["range"]
        try:
            if isinstance(value, int):
                return int(low) <= value <= int(high)
            first, last, address = ip_address(low), ip_address(high), ip_address(value)
            if not first.version == last.version == address.version:
                return False
            return int(first) <= int(address) <= int(last)
        except (ValueError, TypeError):
            return None
    if isinstance(right, dict) or (isinstance(right, str) and right.startswith("@")):
        return None  # a named set or map, or an expression this model does not read
    return _same(value, right)


def _same(value: Any, right: Any) -> bool | None:
    if isinstance(value, str) and value in PROTOCOLS and isinstance(right, int | str):
        other = PROTOCOLS.get(str(right), right)
        return PROTOCOLS[value] == (int(other) if str(other).isdigit() else other)
    if isinstance(value, int) and isinstance(right, str):
        named = {name: number for number, name in MLD_TYPES.items()}
        if right in named:
            return value == named[right]
        return int(right) == value if right.isdigit() else None
    if isinstance(value, str) and isinstance(right, str):
        if "*" in right:  # iifname "eth*"
            return fnmatch.fnmatchcase(value, right)
        try:
            return ip_address(value) == ip_address(right)
        except ValueError:
            return value == right
    return bool(value == right)


def _nft_text(rule: dict[str, Any]) -> str:
    """A rule, roughly as ``nft list`` writes it (for people, not for nft)."""
    words = []
    for expression in rule.get("expr", []):
        if "match" in expression:
            match = expression["match"]
            left = match.get("left", {})
            if "payload" in left:
                name = f"{left['payload'].get('protocol')} {left['payload'].get('field')}"
            elif "meta" in left:
                name = f"meta {left['meta'].get('key')}"
            elif "ct" in left:
                name = f"ct {left['ct'].get('key')}"
            else:
                name = "?"
            operator = "" if match.get("op") in ("==", "in") else f"{match.get('op')} "
            words.append(f"{name} {operator}{_nft_value(match.get('right'))}")
        else:
            verdict = _nft_verdict(expression)
            if verdict is not None:
                words.append(" ".join(v for v in verdict if v and v != "?") or "queue")
    return f"{' '.join(words)} (handle {rule.get('handle')})"


def _nft_value(right: Any) -> str:
    if isinstance(right, dict) and "prefix" in right:
        return f"{right['prefix'].get('addr')}/{right['prefix'].get('len')}"
    if isinstance(right, dict) and "range" in right:
        return "-".join(str(v) for v in right["range"])
    if isinstance(right, dict) and "set" in right:
        return "{ " + ", ".join(_nft_value(v) for v in right["set"]) + " }"
    if isinstance(right, list):
        return ",".join(str(v) for v in right)
    return str(right)


# --- iptables-legacy --------------------------------------------------------------------


def evaluate_iptables(save: str, probe: Probe, *, tool: str) -> list[Block]:
    """The filter table of ``iptables-legacy-save`` output (or ip6tables'): does it drop
    ``probe``? ``tool`` names the command for the fix (``iptables-legacy``)."""
    chains: dict[str, list[list[str]]] = {}
    policies: dict[str, str] = {}
    table = ""
    for line in save.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif table != "filter":
            continue
        elif line.startswith(":"):
            name, policy = line[1:].split()[:2]
            policies[name] = policy
            chains.setdefault(name, [])
        elif line.startswith("-A "):
            words = shlex.split(line)
            chains.setdefault(words[1], []).append(words[2:])
    base = "INPUT" if probe.direction == "in" else "OUTPUT"
    if base not in policies:
        return []
    decided = _run_ipt_chain(base, chains, probe, 0)
    if decided is None:
        decided = (policies[base], base, None, True)
    action, chain, rule, certain = decided
    if action not in ("DROP", "REJECT"):
        return []
    commands = tuple((tool, "-I", chain, "1", *args) for args in probe.accept_iptables())
    text = None if rule is None else " ".join(["-A", chain, *rule])
    return [Block(probe, f"{tool} filter {chain}", text, certain, commands)]


def _run_ipt_chain(
    chain: str, chains: dict[str, list[list[str]]], probe: Probe, depth: int
) -> tuple[str, str, list[str] | None, bool] | None:
    """(target, chain, rule, certain) of the first rule that decides, or None."""
    if depth > MAX_DEPTH:
        return None
    for rule in chains.get(chain, []):
        matched, target = _ipt_match(rule, probe)
        if matched is False or target is None:
            continue
        if matched is None:
            if target in ("DROP", "REJECT"):
                return target, chain, rule, False
            continue
        if target in chains:
            inner = _run_ipt_chain(target, chains, probe, depth + 1)
            if inner is not None and inner[0] != "RETURN":
                return inner
            continue
        if target == "RETURN":
            return None
        if target in ("ACCEPT", "DROP", "REJECT"):
            return target, chain, rule, True
    return None


_IPT_VALUE = {"-s", "-d", "-p", "-i", "-o", "-m", "-j", "-g"}  # and every --long option


def _ipt_match(rule: list[str], probe: Probe) -> tuple[bool | None, str | None]:
    """Whether ``rule`` (iptables-save words after ``-A CHAIN``) matches, and its target."""
    matched: bool | None = True
    target = None
    index = 0
    while index < len(rule):
        negate = rule[index] == "!"
        index += negate
        if index >= len(rule):
            break
        option = rule[index]
        value = rule[index + 1] if index + 1 < len(rule) else ""
        index += 2 if option in _IPT_VALUE or option.startswith("--") else 1
        if option in ("-j", "-g"):
            target = value
            continue
        if option == "-m":
            continue
        result = _ipt_option(option, value, probe)
        if result is not None and negate:
            result = not result
        if result is False:
            return False, None
        if result is None:
            matched = None
    return matched, target


def _ipt_option(option: str, value: str, probe: Probe) -> bool | None:
    if option in ("-s", "-d"):
        address = probe.daddr if option == "-d" else probe.saddr
        if address is None:
            return None
        try:
            return ip_address(address) in ip_network(value, strict=False)
        except ValueError:
            return None
    if option == "-p":
        name = value.lower()
        if name == "all":
            return True
        wanted = PROTOCOLS.get(name, int(name) if name.isdigit() else -1)
        return PROTOCOLS[probe.l4] == wanted
    if option in ("-i", "-o"):
        if (option == "-i") != (probe.direction == "in"):
            return False
        if probe.iface is None:
            return None
        return fnmatch.fnmatchcase(probe.iface, value.replace("+", "*"))
    if option in ("--dport", "--sport", "--dports", "--sports"):
        port = probe.dport if "dport" in option else probe.sport
        if probe.l4 != "udp":
            return False
        if port is None:
            return None
        return any(_in_port_range(port, part) for part in value.split(","))
    if option == "--icmpv6-type":
        if probe.icmp_type is None:
            return False
        kind = value.split("/")[0]
        return kind == str(probe.icmp_type) or kind == MLD_TYPES.get(probe.icmp_type)
    if option in ("--ctstate", "--state"):
        return "NEW" in value.upper().split(",")
    if option.startswith("--reject-with"):
        return True
    return None


def _in_port_range(port: int, text: str) -> bool:
    low, _, high = text.partition(":")
    if not re.fullmatch(r"\d+", low) or (high and not re.fullmatch(r"\d+", high)):
        return False
    return int(low) <= port <= int(high or low)
