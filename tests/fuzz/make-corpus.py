#!/usr/bin/env python3
"""Write the seed corpus of the fuzz targets (tests/fuzz/corpus/<target>/).

Seeds are WIRE.md's captured frames and handshake vectors (§2.9, §4.6) and
edge lengths, in each target's input layout (see the comment at the top of
each tests/fuzz/fuzz-<target>.c). Run from anywhere; rewrites the corpus:

    python3 tests/fuzz/make-corpus.py
"""
import hashlib
import hmac
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def hexb(s):
    return bytes.fromhex(s.replace(" ", ""))


def frame(payload):
    return struct.pack("!i", len(payload)) + payload


HELLO = hexb("00 00 00 05 68 65 6c 6c 6f")
PICKLE = hexb("00 00 00 22 80 04 95 17 00 00 00 00 00 00 00 7d 94 28 8c 02"
              " 6f 70 94 8c 04 70 69 6e 67 94 8c 01 6e 94 4b 2a 75 2e")
EMPTY = hexb("00 00 00 00")
STREAMS = {
    "hello": HELLO,
    "hello-empty": HELLO + EMPTY,
    "pickle": PICKLE,
    "none-ok": hexb("00 00 00 04 80 04 4e 2e") +
    hexb("00 00 00 11 80 04 95 06 00 00 00 00 00 00 00 8c 02 6f 6b 94 2e"),
    "negative": hexb("ff ff ff fe") + frame(b"abc"),
    "large-marker-small": hexb("ff ff ff ff 00 00 00 00 00 00 00 05") +
    b"hello" + EMPTY,
    "large-canonical": hexb("ff ff ff ff 00 00 00 00 80 00 00 00") + b"x",
    "small-max": hexb("7f ff ff ff") + b"xy",
    "trunc-header": hexb("00 00 00"),
    "trunc-large": hexb("ff ff ff ff 00 00"),
    "trunc-payload": hexb("00 00 00 05 68 65"),
    "many-small": b"".join(frame(bytes([i]) * i) for i in range(12)),
    "over-stage": frame(b"s" * 3000) + frame(b"t" * 17),
}

KEY = b"secret"
SRV = bytes(range(0x00, 0x28))  # server random 00 01 02 ...
CLI = bytes(range(0x80, 0xa8))  # client random 80 81 82 ...
CH = b"#CHALLENGE#"
TAG = b"{sha256}"
WELCOME = b"#WELCOME#"


def mac(name, msg):
    return hmac.new(KEY, msg, getattr(hashlib, name)).digest()


# The wire sequences of WIRE.md §4.6 (checked against the captures there).
LEG_S_RESP = hexb("7d ef a9 cc 46 ab c3 58 33 25 d1 7c cd a7 51 90")
LEG_C_RESP = hexb("85 3a c2 88 3a f5 7c ef a5 d6 df 14 aa 50 1c a0")
MOD_S_RESP = TAG + hexb("fc 57 fb e6 50 d6 12 4b 98 21 5e 7b 5d 19 7d 58"
                        " 07 ad 69 98 2d 27 5a 97 35 ea 2d 56 f1 fa 69 89")
MOD_C_RESP = TAG + hexb("c7 55 82 06 f5 35 27 f2 32 e4 c2 d8 10 fa 62 44"
                        " 94 67 e3 25 a2 4b a2 ff 74 b9 4e bf d2 71 e5 83")
MIX_LEG_CLIENT = hexb("8e 48 d2 bb 34 9b 4b 72 b9 38 29 99 ed 5b 62 eb")
MIX_LEG_SERVER = hexb("dc d0 92 68 15 af 6e 2a 3d 8a 10 34 86 87 2f 8b")
assert LEG_S_RESP == mac("md5", SRV[:20])
assert LEG_C_RESP == mac("md5", CLI[:20])
assert MOD_S_RESP == TAG + mac("sha256", TAG + SRV)
assert MOD_C_RESP == TAG + mac("sha256", TAG + CLI)
assert MIX_LEG_CLIENT == mac("md5", TAG + SRV)
assert MIX_LEG_SERVER == mac("md5", TAG + CLI)

REFUSE, LEGACY, CORRECT = 0x01, 0x02, 0x04


def auth_input(flags, rnd, frames, key=KEY):
    out = bytes([flags, len(key)]) + key + rnd
    for f in frames:
        if len(f) >= 255:
            out += bytes([255, len(f) - 255])
        else:
            out += bytes([len(f)])
        out += f
    return out


def auth_server():
    return {
        "legacy": auth_input(LEGACY, SRV[:20], [
            LEG_S_RESP, CH + CLI[:20], WELCOME]),
        "modern": auth_input(0, SRV, [MOD_S_RESP, CH + TAG + CLI, WELCOME]),
        "modern-legacy-client": auth_input(0, SRV, [
            MIX_LEG_CLIENT, CH + CLI[:20], WELCOME]),
        "modern-md5-tagged": auth_input(0, SRV, [
            b"{md5}" + mac("md5", TAG + SRV), CH + TAG + CLI, WELCOME]),
        "refuse-md5": auth_input(REFUSE, SRV, [
            MIX_LEG_CLIENT, CH + TAG + CLI, WELCOME]),
        "correct-usual": auth_input(CORRECT, SRV, [
            b"", CH + b"{sha3_384}" + CLI, WELCOME]),
        "correct-raw-md5": auth_input(CORRECT | 0x40, SRV, [
            b"", CH + b"{sha384}" + CLI, b"#FAILURE#"]),
        "correct-md5-tag": auth_input(CORRECT | 0x80, SRV[:20], [
            b"", CH + b"{md5}" + CLI, WELCOME]),
        "correct-sha3-384": auth_input(CORRECT | 0xc0 | 0x08, SRV, [
            b"", CH + b"{sha3_256}" + CLI, WELCOME]),
        "empty-key": auth_input(CORRECT, SRV, [b"", CH + CLI[:20],
                                               WELCOME], key=b""),
        "junk-256": auth_input(0, SRV, [b"\x01" * 256]),
    }


def auth_client():
    return {
        "legacy": auth_input(LEGACY, CLI[:20], [
            CH + SRV[:20], WELCOME, LEG_C_RESP]),
        "modern": auth_input(0, CLI, [CH + TAG + SRV, WELCOME, MOD_C_RESP]),
        "modern-legacy-server": auth_input(0, CLI, [
            CH + SRV[:20], WELCOME, MIX_LEG_SERVER]),
        "sha1-challenge": auth_input(0, CLI, [CH + b"{sha1}" + SRV]),
        "bare-challenge": auth_input(0, CLI, [CH]),
        "short-challenge": auth_input(0, CLI, [CH + SRV[:16]]),
        "tagged-20": auth_input(0, CLI, [CH + TAG + SRV[:12], WELCOME,
                                         MOD_C_RESP]),
        "refuse-md5": auth_input(REFUSE, CLI, [CH + SRV[:20]]),
        "correct": auth_input(CORRECT, CLI, [
            CH + b"{sha3_384}" + SRV, WELCOME, b""]),
        "correct-raw-md5": auth_input(CORRECT | 0x40 | 0x10, CLI, [
            CH + b"{md5}" + SRV, WELCOME, b""]),
        "failure": auth_input(0, CLI, [CH + TAG + SRV, b"#FAILURE#"]),
    }


def address():
    strings = [
        "unix:/tmp/cqw.sock", "unix:rel/path", "/abs/path", "rel",
        "@abstract", "unix:@", "unix:@name", "unix:", "unix:./@file",
        "tcp:127.0.0.1:80", "tcp:[::1]:0", "tcp:localhost:65535",
        "tcp:host:65536", "tcp:h:00080", "tcp:[10.0.0.1]:1", "tcp:::1:80",
        "tcp:[]:1", "tcp::80", "tcp:h:", "tcp:[::1]80",
        "pipe:\\\\.\\pipe\\name", "\\\\.\\pipe\\x", "pipe:x", "./a:b",
        "UNIX:/x", "ftp:x", "/" + "p" * 254, "/" + "p" * 255,
        "tcp:" + "h" * 255 + ":1", "tcp:" + "h" * 256 + ":1",
    ]
    out = {}
    for i, s in enumerate(strings):
        out["s%02d" % i] = b"\x00" + s.encode()
    # struct cqw__addr on x86-64: kind, path[256], path_len, host[256],
    # port, ipv6_literal (536 bytes).
    def raw(kind, path=b"", host=b"", port=0, v6=0, path_len=None):
        b = struct.pack("<i", kind) + path.ljust(256, b"\x00")
        b += struct.pack("<I", 0)
        b += struct.pack("<Q", len(path) if path_len is None else path_len)
        b += host.ljust(256, b"\x00") + struct.pack("<ii", port, v6)
        return b"\x03" + b

    # The same from fields: kind, path_len (16 bits), fill, path, host,
    # port (32 bits), ipv6_literal.
    def fields(kind, path=b"", host=b"", port=0, v6=0, path_len=None,
               fill=0):
        n = len(path) if path_len is None else path_len
        return (b"\x01" + bytes([kind]) + struct.pack("<HB", n, fill) +
                bytes([len(path)]) + path + bytes([len(host)]) + host +
                struct.pack("<iB", port, v6))
    out["f-unix"] = fields(1, b"/tmp/s")
    out["f-unix-at"] = fields(1, b"@x")
    out["f-abstract"] = fields(2, b"name")
    out["f-tcp"] = fields(3, host=b"127.0.0.1", port=80)
    out["f-tcp6"] = fields(3, host=b"fe80::1%eth0", port=1, v6=1)
    out["f-tcp-unterminated"] = fields(3, host=b"h", port=1, fill=0x41)
    out["f-pipe"] = fields(4, b"\\\\.\\pipe\\p")
    out["f-bad-port"] = fields(3, host=b"h", port=-1)
    out["r-unix"] = raw(1, b"/tmp/s")
    out["r-unix-at"] = raw(1, b"@x")
    out["r-abstract"] = raw(2, b"name")
    out["r-abstract-empty"] = raw(2, b"")
    out["r-tcp"] = raw(3, host=b"127.0.0.1", port=80)
    out["r-tcp6"] = raw(3, host=b"::1", port=65535, v6=1)
    out["r-pipe"] = raw(4, b"\\\\.\\pipe\\p")
    out["r-bad-kind"] = raw(9, b"/x")
    return out


def recv():
    cfgs = [0x00, 0x21, 0x26, 0x2b, 0x3c, 0x6d, 0xe8, 0xfe, 0xac, 0xaf,
            0x1c, 0x3d, 0x5e, 0x7f, 0xdc]
    out = {}
    for name, s in STREAMS.items():
        for c in cfgs:
            out["%s-%02x" % (name, c)] = bytes([c]) + s
    legacy = b"".join(frame(p) for p in [
        CH + SRV[:20], LEG_S_RESP, WELCOME, CH + CLI[:20], LEG_C_RESP,
        WELCOME, b"hello"])
    for c in cfgs:
        out["auth-legacy-%02x" % c] = bytes([c]) + legacy
    return out


def frames():
    out = {}
    for name, s in STREAMS.items():
        for mode in (0x00, 0x02, 0x06, 0x87):
            out["%s-%02x" % (name, mode)] = bytes([mode, 0x5a]) + s
    return out


def write(target, files):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        os.unlink(os.path.join(d, f))
    for name, data in files.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)


write("frame", frames())
write("auth-server", auth_server())
write("auth-client", auth_client())
write("address", address())
write("recv", recv())
