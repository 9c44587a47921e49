-- ntma.lua: a Wireshark dissector for ntma's wire protocol, version 2 (docs/protocol.md
-- sections 2-4, 7.2, 9 and 12; the code is ntma/proto/handshake.py, session.py, tunnel.py
-- and envelope.py).
--
-- What it shows: the 4-byte header of every datagram, the clear fields of each datagram
-- type (indexes, ephemeral key, MACs, cookie nonce, transport counter, the relay
-- envelope's tunnel reference and the handshake inside it), and what is encrypted as
-- "encrypted" with its length. It never decrypts. It links handshakes and transport
-- packets into sessions by their indexes (an init's sender_index is echoed as the
-- response's receiver_index; transport packets carry the receiver's index).
--
-- Anything that breaks a rule the decoders in ntma/proto enforce (version, reserved,
-- sizes, zero indexes, a mac2 on a response, an envelope carrying no handshake) is shown
-- with expert info "ntma.malformed" and never raises a Lua error.
--
-- Registered on the lab's UDP ports (DC 7400, probe and node port 7401, filter 7402,
-- RS 7500; change them in the preferences) and as a heuristic dissector for UDP that
-- claims a datagram only when it passes every check of its type.
--
-- Install: copy (or link) this file into your personal Lua plugins directory
-- (~/.local/lib/wireshark/plugins/), or run `tshark -X lua_script:ntma.lua ...`.

local ntma = Proto("ntma", "ntma (NTMobile) protocol v2")

local VERSION = 2
local T_INIT, T_RESP, T_COOKIE, T_DATA, T_SIGNAL, T_ENVELOPE = 1, 2, 3, 4, 5, 6
local TYPE_NAMES = {
    [T_INIT] = "HANDSHAKE_INIT",
    [T_RESP] = "HANDSHAKE_RESP",
    [T_COOKIE] = "COOKIE_REPLY",
    [T_DATA] = "DATA",
    [T_SIGNAL] = "SIGNAL",
    [T_ENVELOPE] = "RELAY_ENVELOPE",
}

-- Sizes from ntma/proto/handshake.py, session.py, tunnel.py and envelope.py.
local HEADER_LEN = 4
local KEY_LEN, MAC_LEN, TAG_LEN = 32, 16, 16
local INIT_MIN, RESP_MIN, COOKIE_LEN = 150, 94, 64
local MAX_HANDSHAKE = 1400
local TRANSPORT_MIN = 32 -- header 16 + tag 16: an empty DATA is a keep-alive
local ENVELOPE_OVERHEAD = 20 -- header, dc_id [8], tunnel_id u64
local INIT_PAYLOAD_AT = 88 -- after header, sender_index, ephemeral and encrypted static
local RESP_PAYLOAD_AT = 44 -- after header, both indexes and the ephemeral
local FRAMING = 2 -- the `length u16` in front of every handshake payload
local TIMESTAMP_LEN = 12

-- --- fields ------------------------------------------------------------------------

local f = {
    version = ProtoField.uint8("ntma.version", "Version", base.DEC),
    type = ProtoField.uint8("ntma.type", "Type", base.HEX, TYPE_NAMES),
    reserved = ProtoField.uint16("ntma.reserved", "Reserved", base.HEX),
    sender_index = ProtoField.uint32("ntma.sender_index", "Sender index", base.HEX),
    receiver_index = ProtoField.uint32("ntma.receiver_index", "Receiver index", base.HEX),
    ephemeral = ProtoField.bytes("ntma.ephemeral", "Ephemeral public key"),
    encrypted_static = ProtoField.bytes("ntma.encrypted_static", "Encrypted static key"),
    encrypted = ProtoField.bytes("ntma.encrypted", "Encrypted payload"),
    encrypted_len = ProtoField.uint16("ntma.encrypted.length", "Encrypted payload length"),
    plaintext_len = ProtoField.uint16(
        "ntma.plaintext_length",
        "Plaintext length (the encrypted payload, tag not counted)"
    ),
    body_len = ProtoField.uint16(
        "ntma.body_length",
        "Body (and padding) length, from the datagram size"
    ),
    tag = ProtoField.bytes("ntma.tag", "AEAD tag"),
    mac1 = ProtoField.bytes("ntma.mac1", "mac1"),
    mac2 = ProtoField.bytes("ntma.mac2", "mac2"),
    has_mac2 = ProtoField.bool("ntma.has_mac2", "mac2 set (the initiator holds a cookie)"),
    nonce = ProtoField.bytes("ntma.cookie.nonce", "Cookie nonce"),
    cookie = ProtoField.bytes("ntma.cookie.encrypted", "Encrypted cookie"),
    counter = ProtoField.uint64("ntma.counter", "Counter", base.DEC),
    keepalive = ProtoField.bool("ntma.keepalive", "Keep-alive (empty DATA)"),
    punch = ProtoField.bool("ntma.punch", "PUNCH (opens the sender's NAT; dropped by receivers)"),
    dc_id = ProtoField.bytes("ntma.dc_id", "DC id"),
    tunnel_id = ProtoField.uint64("ntma.tunnel_id", "Tunnel id", base.HEX),
    inner = ProtoField.bytes("ntma.inner", "Carried handshake datagram"),
    session_kind = ProtoField.string(
        "ntma.session.kind",
        "Session (guessed from the responder's port)"
    ),
    init_frame = ProtoField.framenum("ntma.session.init_frame", "Handshake init in frame"),
    resp_frame = ProtoField.framenum("ntma.session.resp_frame", "Handshake response in frame"),
    direction = ProtoField.string("ntma.session.direction", "Direction"),
}
ntma.fields = f

local malformed = ProtoExpert.new(
    "ntma.malformed",
    "Malformed ntma datagram",
    expert.group.MALFORMED,
    expert.severity.ERROR
)
local index_warning = ProtoExpert.new(
    "ntma.index_zero",
    "Index 0 (never allocated)",
    expert.group.PROTOCOL,
    expert.severity.WARN
)
local note = ProtoExpert.new("ntma.note", "ntma note", expert.group.SEQUENCE, expert.severity.NOTE)
ntma.experts = { malformed, index_warning, note }

-- --- preferences: the ports that name the responder ----------------------------------

ntma.prefs.dc_port = Pref.uint("DC port", 7400, "The DC's main (signalling) port")
ntma.prefs.probe_port = Pref.uint("DC probe port", 7401, "The DC's probe port")
ntma.prefs.node_port = Pref.uint("Node port", 7401, "The port nodes and adapters listen on")
ntma.prefs.rs_port = Pref.uint("RS port", 7500, "The Relay Server's port")
ntma.prefs.filter_port = Pref.uint("DC filter port", 7402, "The DC's filter port (it only sends)")

-- --- session tracking (first pass; results kept per frame) ----------------------------

local inits, sessions, by_frame

local function reset()
    inits = {} -- (sender_index, ephemeral) and sender_index of an init -> {frame, kind}
    sessions = {} -- an index either end chose -> {init, resp, kind, side}
    by_frame = {} -- frame number -> what the tracker found for it
end
reset()
ntma.init = reset -- a new capture file

local function kind_of(dst_port, enveloped)
    if enveloped then
        return "tunnel (through the RS)"
    end
    if dst_port == ntma.prefs.dc_port then
        return "node-DC"
    end
    if dst_port == ntma.prefs.rs_port then
        return "node-RS"
    end
    if dst_port == ntma.prefs.node_port then
        return "tunnel"
    end
    return "unknown"
end

-- Copies of one init (7.2: the same bytes to every endpoint) are one handshake: keyed by
-- the sender_index and the ephemeral; a response finds the latest init with its index.
local function track_init(pinfo, index, ephemeral, enveloped)
    local found = by_frame[pinfo.number]
    if found == nil then
        local key = string.format("%08x", index) .. ephemeral
        local entry = inits[key]
        if entry == nil then
            entry = { frame = pinfo.number, kind = kind_of(pinfo.dst_port, enveloped) }
            inits[key] = entry
            inits[index] = entry
        end
        found = { init = entry.frame, kind = entry.kind }
        by_frame[pinfo.number] = found
    end
    return found
end

local function track_resp(pinfo, sender, receiver)
    local found = by_frame[pinfo.number]
    if found == nil then
        local init = inits[receiver]
        found = { resp = pinfo.number }
        if init ~= nil then
            found.init, found.kind = init.frame, init.kind
            sessions[sender] = { init = init.frame, resp = pinfo.number, kind = init.kind,
                side = "initiator to responder" }
            sessions[receiver] = { init = init.frame, resp = pinfo.number, kind = init.kind,
                side = "responder to initiator" }
        end
        by_frame[pinfo.number] = found
    end
    return found
end

local function track_transport(pinfo, receiver)
    local found = by_frame[pinfo.number]
    if found == nil then
        local s = sessions[receiver]
        found = {}
        if s ~= nil then
            found = { init = s.init, resp = s.resp, kind = s.kind, side = s.side }
        end
        by_frame[pinfo.number] = found
    end
    return found
end

local function add_session(tree, found)
    if found.kind ~= nil then
        tree:add(f.session_kind, found.kind):set_generated()
    end
    if found.init ~= nil then
        tree:add(f.init_frame, found.init):set_generated()
    end
    if found.resp ~= nil then
        tree:add(f.resp_frame, found.resp):set_generated()
    end
    if found.side ~= nil then
        tree:add(f.direction, found.side):set_generated()
    end
end

-- --- checks shared by the dissector and the heuristic --------------------------------

local function is_zero(range)
    local bytes = range:bytes()
    for i = 0, bytes:len() - 1 do
        if bytes:get_index(i) ~= 0 then
            return false
        end
    end
    return true
end

-- Why a datagram of this type breaks the layout, or nil. `buf` holds the whole datagram.
local function problem(buf, enveloped)
    local len = buf:len()
    if len < HEADER_LEN then
        return "shorter than the 4-byte header"
    end
    local version, t = buf(0, 1):uint(), buf(1, 1):uint()
    if version ~= VERSION then
        return "version " .. version .. " (only 2 exists)"
    end
    if TYPE_NAMES[t] == nil then
        return string.format("unknown datagram type 0x%02x", t)
    end
    if buf(2, 2):uint() ~= 0 then
        return "reserved bytes not zero"
    end
    if enveloped and t ~= T_INIT and t ~= T_RESP and t ~= T_COOKIE then
        return "an envelope carries only handshake datagrams, not " .. TYPE_NAMES[t]
    end
    if t == T_INIT then
        if len < INIT_MIN or len > MAX_HANDSHAKE then
            return "handshake init of " .. len .. " bytes (150 to 1400)"
        end
    elseif t == T_RESP then
        if len < RESP_MIN or len > MAX_HANDSHAKE then
            return "handshake response of " .. len .. " bytes (94 to 1400)"
        end
        if not is_zero(buf(len - MAC_LEN, MAC_LEN)) then
            return "a handshake response with a mac2"
        end
    elseif t == T_COOKIE then
        if len ~= COOKIE_LEN then
            return "cookie reply of " .. len .. " bytes (always 64)"
        end
    elseif t == T_DATA or t == T_SIGNAL then
        if len < TRANSPORT_MIN then
            return "transport packet of " .. len .. " bytes (at least 32)"
        end
    elseif t == T_ENVELOPE then
        if len < ENVELOPE_OVERHEAD + HEADER_LEN or len > ENVELOPE_OVERHEAD + MAX_HANDSHAKE then
            return "relay envelope of " .. len .. " bytes"
        end
        if buf(12, 8):uint64() == UInt64(0) then
            return "relay envelope with tunnel_id 0"
        end
        return problem(buf(ENVELOPE_OVERHEAD):tvb(), true)
    end
    return nil
end

-- Index 0 is never allocated (4.4), but the code's parsers accept it (a receiver then
-- finds no session, or takes DATA to index 0 for a PUNCH): a warning, not malformed.
-- Call only on a datagram problem() accepted.
local function index_zero(buf)
    local t = buf(1, 1):uint()
    if t == T_INIT and buf(4, 4):uint() == 0 then
        return "sender_index 0 (never allocated)"
    elseif t == T_RESP and (buf(4, 4):uint() == 0 or buf(8, 4):uint() == 0) then
        return "an index of 0 (never allocated)"
    elseif (t == T_COOKIE or t == T_SIGNAL) and buf(4, 4):uint() == 0 then
        return TYPE_NAMES[t] .. " to receiver_index 0 (never allocated)"
    elseif t == T_DATA and buf(4, 4):uint() == 0 then
        local punch = buf:len() == TRANSPORT_MIN and is_zero(buf(8, 8))
            and is_zero(buf(TRANSPORT_MIN - TAG_LEN, TAG_LEN))
        if not punch then
            return "DATA to receiver_index 0 that is not a PUNCH (dropped as one)"
        end
    end
    return nil
end

-- --- one dissector per datagram type --------------------------------------------------

local function add_encrypted(tree, buf, at, len, plain_label)
    if len <= 0 then
        return
    end
    local item = tree:add(f.encrypted, buf(at, len))
    item:append_text(" (" .. len .. " bytes, " .. plain_label .. ")")
    tree:add(f.encrypted_len, buf(at, len), len):set_generated()
end

local function dissect_init(buf, pinfo, tree, enveloped)
    local len = buf:len()
    local index = buf(4, 4):uint()
    tree:add(f.sender_index, buf(4, 4))
    tree:add(f.ephemeral, buf(8, KEY_LEN))
    tree:add(f.encrypted_static, buf(40, KEY_LEN + TAG_LEN))
    local payload = len - INIT_PAYLOAD_AT - 2 * MAC_LEN
    add_encrypted(tree, buf, INIT_PAYLOAD_AT, payload, "length, timestamp, init body, padding, tag")
    tree:add(f.body_len, payload - TAG_LEN - FRAMING - TIMESTAMP_LEN):set_generated()
    tree:add(f.mac1, buf(len - 2 * MAC_LEN, MAC_LEN))
    local mac2 = buf(len - MAC_LEN, MAC_LEN)
    tree:add(f.mac2, mac2)
    local has_mac2 = not is_zero(mac2)
    tree:add(f.has_mac2, has_mac2):set_generated()
    add_session(tree, track_init(pinfo, index, buf(8, KEY_LEN):bytes():tohex(), enveloped))
    local info = string.format("HANDSHAKE_INIT sender=0x%08x", index)
    if has_mac2 then
        info = info .. " mac2"
    end
    return info
end

local function dissect_resp(buf, pinfo, tree)
    local len = buf:len()
    local sender, receiver = buf(4, 4):uint(), buf(8, 4):uint()
    tree:add(f.sender_index, buf(4, 4))
    tree:add(f.receiver_index, buf(8, 4))
    tree:add(f.ephemeral, buf(12, KEY_LEN))
    local payload = len - RESP_PAYLOAD_AT - 2 * MAC_LEN
    add_encrypted(tree, buf, RESP_PAYLOAD_AT, payload, "length, response body, tag")
    tree:add(f.body_len, payload - TAG_LEN - FRAMING):set_generated()
    tree:add(f.mac1, buf(len - 2 * MAC_LEN, MAC_LEN))
    tree:add(f.mac2, buf(len - MAC_LEN, MAC_LEN))
    local found = track_resp(pinfo, sender, receiver)
    add_session(tree, found)
    if found.init == nil then
        tree:add_proto_expert_info(note, "no HANDSHAKE_INIT with this receiver_index seen")
    end
    return string.format("HANDSHAKE_RESP sender=0x%08x receiver=0x%08x", sender, receiver)
end

local function dissect_cookie(buf, _, tree)
    tree:add(f.receiver_index, buf(4, 4))
    tree:add(f.nonce, buf(8, 24))
    tree:add(f.cookie, buf(32, 32))
    return string.format("COOKIE_REPLY receiver=0x%08x", buf(4, 4):uint())
end

local function dissect_transport(buf, pinfo, tree, t)
    local len = buf:len()
    local receiver = buf(4, 4):uint()
    local counter = buf(8, 8):uint64()
    tree:add(f.receiver_index, buf(4, 4))
    tree:add(f.counter, buf(8, 8))
    local plain = len - TRANSPORT_MIN
    local what = t == T_DATA and "one inner IP packet" or "one signalling message"
    if plain > 0 then
        add_encrypted(tree, buf, 16, plain, what)
    end
    tree:add(f.plaintext_len, plain):set_generated()
    tree:add(f.tag, buf(len - TAG_LEN, TAG_LEN))
    local name = TYPE_NAMES[t]
    if t == T_DATA and receiver == 0 then
        local punch = len == TRANSPORT_MIN and counter == UInt64(0)
            and is_zero(buf(len - TAG_LEN, TAG_LEN))
        if punch then
            tree:add(f.punch, true):set_generated()
            return "DATA PUNCH"
        end
        return "DATA to receiver_index 0, not a PUNCH"
    elseif t == T_DATA and plain == 0 then
        tree:add(f.keepalive, true):set_generated()
        name = "DATA keep-alive"
    end
    add_session(tree, track_transport(pinfo, receiver))
    return string.format("%s receiver=0x%08x counter=%s len=%d", name, receiver,
        tostring(counter), plain)
end

local dissect_datagram -- forward: the envelope dissects the handshake it carries

local function dissect_envelope(buf, pinfo, tree)
    tree:add(f.dc_id, buf(4, 8))
    tree:add(f.tunnel_id, buf(12, 8))
    local inner = buf(ENVELOPE_OVERHEAD)
    local sub = tree:add(f.inner, inner)
    local info = dissect_datagram(inner:tvb(), pinfo, sub, true)
    return string.format("RELAY_ENVELOPE tunnel=0x%s [%s]", buf(12, 8):uint64():tohex(), info)
end

local DISSECT = {
    [T_INIT] = dissect_init,
    [T_RESP] = dissect_resp,
    [T_COOKIE] = dissect_cookie,
    [T_ENVELOPE] = dissect_envelope,
}

-- Adds the header and the type's fields to `tree`; returns a one-line summary.
dissect_datagram = function(buf, pinfo, tree, enveloped)
    local len = buf:len()
    if len < HEADER_LEN then
        tree:add_proto_expert_info(malformed, "shorter than the 4-byte header")
        return "malformed (truncated header)"
    end
    tree:add(f.version, buf(0, 1))
    tree:add(f.type, buf(1, 1))
    tree:add(f.reserved, buf(2, 2))
    local why = problem(buf, enveloped)
    local t = buf(1, 1):uint()
    if why ~= nil then
        tree:add_proto_expert_info(malformed, why)
        if t == T_ENVELOPE and len >= ENVELOPE_OVERHEAD + HEADER_LEN and buf(0, 1):uint() == 2 then
            return dissect_envelope(buf, pinfo, tree) .. " malformed"
        end
        return (TYPE_NAMES[t] or "unknown") .. " malformed: " .. why
    end
    local zero = index_zero(buf)
    if zero ~= nil then
        tree:add_proto_expert_info(index_warning, zero)
    end
    if t == T_DATA or t == T_SIGNAL then
        return dissect_transport(buf, pinfo, tree, t)
    end
    return DISSECT[t](buf, pinfo, tree, enveloped)
end

function ntma.dissector(buf, pinfo, tree)
    pinfo.cols.protocol = "NTMA"
    local root = tree:add(ntma, buf(), "ntma protocol v2")
    local info = dissect_datagram(buf, pinfo, root, false)
    pinfo.cols.info = info
    root:append_text(", " .. info)
    return buf:len()
end

-- Claims a UDP payload on any port only when it passes every check of its type.
local function heuristic(buf, pinfo, tree)
    if buf:len() < HEADER_LEN or problem(buf, false) ~= nil or index_zero(buf) ~= nil then
        return false
    end
    ntma.dissector(buf, pinfo, tree)
    return true
end

local registered = {}

-- (Re)registers the port preferences in UDP's port table.
local function register_ports()
    local udp = DissectorTable.get("udp.port")
    for _, port in ipairs(registered) do
        udp:remove(port, ntma)
    end
    local p = ntma.prefs
    registered = { p.dc_port, p.probe_port, p.filter_port, p.node_port, p.rs_port }
    for _, port in ipairs(registered) do
        udp:add(port, ntma)
    end
end

register_ports()
ntma.prefs_changed = register_ports
ntma:register_heuristic("udp", heuristic)
