-- mcastkit.lua: a Wireshark (and tshark) dissector for mcastkit's datagrams.
--
-- Every kind is told apart by its first bytes (src/mcastkit/magics.py), so it runs as a
-- heuristic on UDP: any port. Kinds: group frames (wire.py, with the reliable stream's
-- RDATA, NACK, RSTATE and ACK bodies: reliable/codec.py), sealed envelopes (security.py:
-- the key id and nonce; the rest is ciphertext), file transfer (transfer/protocol.py), ping
-- (diag/ping.py), bench (diag/bench.py) and relay (relay.py). All fields are big-endian.
--
-- Install: copy this file into Wireshark's personal Lua plugins folder (`mcast dump
-- --wireshark-plugin` prints it), or load it for one run: tshark -X lua_script:mcastkit.lua
-- Filter with: mcastkit, mcastkit.type == 4, mcastkit.topic == "chat", mcastkit.ping.seq ...

local mk = Proto("mcastkit", "mcastkit")

local FRAME_TYPES = {
    [1] = "HELLO", [2] = "HEARTBEAT", [3] = "GOODBYE", [4] = "DATA", [5] = "REQUEST",
    [6] = "REPLY", [7] = "RDATA", [8] = "NACK", [9] = "RSTATE", [10] = "ACK", [11] = "PEERS",
}
local FLAG_NAMES = {
    { 0x01, "unicast" }, { 0x02, "hello-answer" }, { 0x04, "hello-wanted" },
    { 0x08, "repair" }, { 0x10, "ack-wanted" }, { 0x20, "want-copies" },
}
local CIPHERS = { [0xE1] = "chacha20-poly1305", [0xE2] = "aes-256-gcm" }
local TRANSFER_KINDS = {
    [1] = "ANNOUNCE", [2] = "REGISTER", [3] = "REG_ACK", [4] = "DATA", [5] = "STATUS_REQ",
    [6] = "STATUS", [7] = "COMPLETE", [8] = "DONE_ACK", [9] = "ABORT", [10] = "PROGRESS_REQ",
    [11] = "PROGRESS", [12] = "MISSING_MAP", [13] = "WANT_COPIES",
}
local PING_KINDS = { [1] = "PROBE", [2] = "ANSWER" }
local PING_PATHS = { [1] = "multicast", [2] = "unicast" }
local RELAY_KINDS = { [1] = "HELLO", [2] = "GROUP", [3] = "UNICAST" }

local f = {
    kind = ProtoField.string("mcastkit.kind", "Kind"),
    version = ProtoField.uint8("mcastkit.version", "Version"),
    type = ProtoField.uint8("mcastkit.type", "Type", base.DEC, FRAME_TYPES),
    flags = ProtoField.uint8("mcastkit.flags", "Flags", base.HEX),
    flag_names = ProtoField.string("mcastkit.flags.names", "Flag names"),
    topic_len = ProtoField.uint8("mcastkit.topic_len", "Topic length"),
    sender = ProtoField.uint64("mcastkit.sender", "Sender", base.HEX),
    incarnation = ProtoField.uint32("mcastkit.incarnation", "Incarnation", base.HEX),
    seq = ProtoField.uint32("mcastkit.seq", "Sequence"),
    timestamp = ProtoField.uint64("mcastkit.timestamp_us", "Timestamp (us since the epoch)"),
    topic = ProtoField.string("mcastkit.topic", "Topic"),
    payload = ProtoField.bytes("mcastkit.payload", "Payload"),
    payload_len = ProtoField.uint32("mcastkit.payload_len", "Payload length"),
    rdata_seq = ProtoField.uint64("mcastkit.rdata.stream_seq", "Stream sequence"),
    rdata_length = ProtoField.uint32("mcastkit.rdata.message_length", "Message length"),
    rdata_offset = ProtoField.uint32("mcastkit.rdata.offset", "Fragment offset"),
    target = ProtoField.uint64("mcastkit.target", "Target sender", base.HEX),
    target_incarnation = ProtoField.uint32("mcastkit.target_incarnation", "Target incarnation",
        base.HEX),
    nack_ranges = ProtoField.uint16("mcastkit.nack.ranges", "Ranges"),
    nack_first = ProtoField.uint64("mcastkit.nack.first", "First missing"),
    nack_count = ProtoField.uint32("mcastkit.nack.count", "Count"),
    rstate_oldest = ProtoField.uint64("mcastkit.rstate.oldest", "Oldest repairable"),
    rstate_next = ProtoField.uint64("mcastkit.rstate.next", "Next sequence"),
    ack_through = ProtoField.uint64("mcastkit.ack.through", "Delivered through"),
    cipher = ProtoField.uint8("mcastkit.sealed.cipher", "Cipher", base.HEX, CIPHERS),
    key_id = ProtoField.uint32("mcastkit.sealed.key_id", "Key id", base.HEX),
    nonce = ProtoField.bytes("mcastkit.sealed.nonce", "Nonce"),
    sealed_len = ProtoField.uint32("mcastkit.sealed.length", "Ciphertext and tag length"),
    transfer_kind = ProtoField.uint8("mcastkit.transfer.kind", "Kind", base.DEC, TRANSFER_KINDS),
    transfer_session = ProtoField.uint64("mcastkit.transfer.session", "Session", base.HEX),
    transfer_file = ProtoField.uint16("mcastkit.transfer.file_index", "File index"),
    transfer_block = ProtoField.uint32("mcastkit.transfer.block", "Block"),
    transfer_body = ProtoField.uint32("mcastkit.transfer.body_len", "Body length"),
    ping_kind = ProtoField.uint8("mcastkit.ping.kind", "Kind", base.DEC, PING_KINDS),
    ping_path = ProtoField.uint8("mcastkit.ping.path", "Path", base.DEC, PING_PATHS),
    ping_ttl = ProtoField.uint8("mcastkit.ping.ttl_sent", "TTL sent"),
    ping_sender = ProtoField.uint64("mcastkit.ping.sender", "Sender", base.HEX),
    ping_seq = ProtoField.uint32("mcastkit.ping.seq", "Sequence"),
    ping_sent = ProtoField.uint64("mcastkit.ping.sent_ns", "Sent (sender's clock, ns)"),
    ping_to = ProtoField.uint64("mcastkit.ping.prober", "Prober", base.HEX),
    ping_echo_seq = ProtoField.uint32("mcastkit.ping.echo_seq", "Echoed sequence"),
    ping_echo_sent = ProtoField.uint64("mcastkit.ping.echo_sent_ns", "Echoed send time (ns)"),
    ping_ttl_seen = ProtoField.uint8("mcastkit.ping.ttl_seen", "TTL seen on the probe"),
    bench_seq = ProtoField.uint64("mcastkit.bench.seq", "Sequence"),
    bench_sent = ProtoField.uint64("mcastkit.bench.sent_ns", "Sent (sender's clock, ns)"),
    relay_kind = ProtoField.uint8("mcastkit.relay.kind", "Kind", base.DEC, RELAY_KINDS),
    relay_hop = ProtoField.uint8("mcastkit.relay.hop", "Hop"),
    relay_count = ProtoField.uint16("mcastkit.relay.endpoints", "Endpoints"),
    relay_id = ProtoField.uint64("mcastkit.relay.id", "Relay", base.HEX),
}
mk.fields = {}
for _, field in pairs(f) do
    table.insert(mk.fields, field)
end

local truncated = ProtoExpert.new("mcastkit.truncated", "Truncated mcastkit datagram",
    expert.group.MALFORMED, expert.severity.WARN)
mk.experts = { truncated }

local function short(tvb, tree, need)
    if tvb:len() < need then
        tree:add_proto_expert_info(truncated)
        return true
    end
    return false
end

local function hex8(range)
    return string.format("%08x", range:uint())
end

local function frame_body(tvb, tree, frame_type, at)
    local left = tvb:len() - at
    if frame_type == 7 and left >= 16 then -- RDATA: stream seq, message length, offset
        tree:add(f.rdata_seq, tvb(at, 8))
        tree:add(f.rdata_length, tvb(at + 8, 4))
        tree:add(f.rdata_offset, tvb(at + 12, 4))
        return " stream seq " .. tvb(at, 8):uint64():tonumber()
    elseif frame_type == 8 and left >= 14 then -- NACK: target, incarnation, ranges
        tree:add(f.target, tvb(at, 8))
        tree:add(f.target_incarnation, tvb(at + 8, 4))
        local ranges = tvb(at + 12, 2):uint()
        tree:add(f.nack_ranges, tvb(at + 12, 2))
        local offset = at + 14
        for _ = 1, ranges do
            if offset + 12 > tvb:len() then break end
            tree:add(f.nack_first, tvb(offset, 8))
            tree:add(f.nack_count, tvb(offset + 8, 4))
            offset = offset + 12
        end
        return " " .. ranges .. " range(s)"
    elseif frame_type == 9 and left >= 16 then -- RSTATE: oldest, next (then timing)
        tree:add(f.rstate_oldest, tvb(at, 8))
        tree:add(f.rstate_next, tvb(at + 8, 8))
        return ""
    elseif frame_type == 10 and left >= 20 then -- ACK: target, incarnation, through
        tree:add(f.target, tvb(at, 8))
        tree:add(f.target_incarnation, tvb(at + 8, 4))
        tree:add(f.ack_through, tvb(at + 12, 8))
        return ""
    end
    return ""
end

local function dissect_frame(tvb, pinfo, tree)
    tree:add(f.kind, "mcastkit"):set_generated()
    if short(tvb, tree, 32) then return end
    local frame_type = tvb(3, 1):uint()
    local flags = tvb(4, 1):uint()
    local topic_len = tvb(5, 1):uint()
    tree:add(f.version, tvb(2, 1))
    tree:add(f.type, tvb(3, 1))
    tree:add(f.flags, tvb(4, 1))
    local names = {}
    for _, pair in ipairs(FLAG_NAMES) do
        if bit32.band(flags, pair[1]) ~= 0 then table.insert(names, pair[2]) end
    end
    tree:add(f.flag_names, table.concat(names, ",")):set_generated()
    tree:add(f.topic_len, tvb(5, 1))
    tree:add(f.sender, tvb(8, 8))
    tree:add(f.incarnation, tvb(16, 4))
    tree:add(f.seq, tvb(20, 4))
    tree:add(f.timestamp, tvb(24, 8))
    if short(tvb, tree, 32 + topic_len) then return end
    local topic = topic_len > 0 and tvb(32, topic_len):string(ENC_UTF_8) or ""
    if topic_len > 0 then tree:add(f.topic, tvb(32, topic_len), topic) end
    local at = 32 + topic_len
    tree:add(f.payload_len, tvb:len() - at):set_generated()
    if tvb:len() > at then tree:add(f.payload, tvb(at)) end
    local detail = frame_body(tvb, tree, frame_type, at)
    pinfo.cols.info:set(string.format("%s%s from %s seq %d%s%s",
        FRAME_TYPES[frame_type] or ("type " .. frame_type),
        #names > 0 and (" [" .. table.concat(names, ",") .. "]") or "",
        hex8(tvb(8, 4)), tvb(20, 4):uint(),
        topic ~= "" and (" topic " .. topic) or "", detail))
end

local function dissect_sealed(tvb, pinfo, tree)
    tree:add(f.kind, "mcastkit-sealed"):set_generated()
    if short(tvb, tree, 20 + 16) then return end
    tree:add(f.version, tvb(2, 1))
    tree:add(f.cipher, tvb(3, 1))
    tree:add(f.key_id, tvb(4, 4))
    tree:add(f.nonce, tvb(8, 12))
    tree:add(f.sealed_len, tvb:len() - 20):set_generated()
    pinfo.cols.info:set(string.format("sealed (%s) key %s, %d bytes",
        CIPHERS[tvb(3, 1):uint()] or "?", hex8(tvb(4, 4)), tvb:len() - 20))
end

local function dissect_transfer(tvb, pinfo, tree)
    tree:add(f.kind, "mcast-transfer"):set_generated()
    if short(tvb, tree, 16) then return end
    local kind = tvb(4, 1):uint()
    tree:add(f.transfer_kind, tvb(4, 1))
    tree:add(f.transfer_session, tvb(8, 8))
    local info = string.format("transfer %s session %s", TRANSFER_KINDS[kind] or kind,
        hex8(tvb(8, 4)))
    if kind == 4 and tvb:len() >= 22 then -- DATA: file index, block index
        tree:add(f.transfer_file, tvb(16, 2))
        tree:add(f.transfer_block, tvb(18, 4))
        info = info .. string.format(" file %d block %d", tvb(16, 2):uint(), tvb(18, 4):uint())
    end
    tree:add(f.transfer_body, tvb:len() - 16):set_generated()
    pinfo.cols.info:set(info)
end

local function dissect_ping(tvb, pinfo, tree)
    tree:add(f.kind, "mcast-ping"):set_generated()
    if short(tvb, tree, 28) then return end
    local kind = tvb(4, 1):uint()
    tree:add(f.ping_kind, tvb(4, 1))
    tree:add(f.ping_path, tvb(5, 1))
    tree:add(f.ping_ttl, tvb(6, 1))
    tree:add(f.ping_sender, tvb(8, 8))
    tree:add(f.ping_seq, tvb(16, 4))
    tree:add(f.ping_sent, tvb(20, 8))
    if kind == 2 and tvb:len() >= 52 then
        tree:add(f.ping_to, tvb(28, 8))
        tree:add(f.ping_echo_seq, tvb(36, 4))
        tree:add(f.ping_echo_sent, tvb(40, 8))
        tree:add(f.ping_ttl_seen, tvb(48, 1))
    end
    pinfo.cols.info:set(string.format("ping %s (%s) from %s seq %d", PING_KINDS[kind] or kind,
        PING_PATHS[tvb(5, 1):uint()] or "?", hex8(tvb(8, 4)), tvb(16, 4):uint()))
end

local function dissect_bench(tvb, pinfo, tree)
    tree:add(f.kind, "mcast-bench"):set_generated()
    if short(tvb, tree, 20) then return end
    tree:add(f.bench_seq, tvb(4, 8))
    tree:add(f.bench_sent, tvb(12, 8))
    pinfo.cols.info:set("bench seq " .. tvb(4, 8):uint64():tonumber())
end

local function dissect_relay(tvb, pinfo, tree)
    tree:add(f.kind, "mcast-relay"):set_generated()
    if short(tvb, tree, 16) then return end
    tree:add(f.relay_kind, tvb(4, 1))
    tree:add(f.relay_hop, tvb(5, 1))
    tree:add(f.relay_count, tvb(6, 2))
    tree:add(f.relay_id, tvb(8, 8))
    pinfo.cols.info:set(string.format("relay %s from %s hop %d",
        RELAY_KINDS[tvb(4, 1):uint()] or "?", hex8(tvb(8, 4)), tvb(5, 1):uint()))
end

local BY_MAGIC = {
    MKT1 = dissect_transfer, MKP1 = dissect_ping, MKB1 = dissect_bench, MKR1 = dissect_relay,
}

local function heuristic(tvb, pinfo, tree)
    if tvb:len() < 4 then return false end
    local dissect = BY_MAGIC[tvb:raw(0, 4)]
    if dissect == nil then
        if tvb:raw(0, 2) ~= "MK" or tvb(2, 1):uint() ~= 1 then return false end
        local kind = tvb(3, 1):uint()
        dissect = (kind == 0xE1 or kind == 0xE2) and dissect_sealed or dissect_frame
    end
    pinfo.cols.protocol:set("MCASTKIT")
    dissect(tvb, pinfo, tree:add(mk, tvb(), "mcastkit"))
    return true
end

mk:register_heuristic("udp", heuristic)
