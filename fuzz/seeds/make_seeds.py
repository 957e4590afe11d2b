#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_targets/fcgi_records.rs into fcgi_records/."""
import os
import struct

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fcgi_records")

BEGIN_REQUEST, PARAMS, STDIN, GET_VALUES = 1, 4, 5, 9
RESPONDER, KEEP_CONN = 1, 1


def record(record_type, request_id, content=b""):
    padding = (8 - len(content) % 8) % 8
    header = struct.pack(">BBHHBB", 1, record_type, request_id, len(content), padding, 0)
    return header + content + b"\0" * padding


def length(n):
    return bytes([n]) if n < 128 else struct.pack(">I", n | 0x80000000)


def pairs(items):
    return b"".join(length(len(k)) + length(len(v)) + k + v for k, v in items)


def begin(request_id, flags=0):
    return record(BEGIN_REQUEST, request_id, struct.pack(">HB5x", RESPONDER, flags))


def request(request_id, flags, params, chunks):
    out = begin(request_id, flags)
    out += record(PARAMS, request_id, pairs(params)) + record(PARAMS, request_id)
    for chunk in chunks:
        out += record(STDIN, request_id, chunk)
    return out + record(STDIN, request_id)


SEEDS = {
    "get": request(1, 0, [
        (b"REQUEST_METHOD", b"GET"),
        (b"SCRIPT_NAME", b"/api"),
        (b"PATH_INFO", b"/v1/health"),
        (b"QUERY_STRING", b""),
        (b"HTTP_AUTHORIZATION", b"Bearer x"),
    ], []),
    "post_two_stdin": request(1, KEEP_CONN, [
        (b"REQUEST_METHOD", b"POST"),
        (b"PATH_INFO", b"/v1/sync/push"),
        (b"CONTENT_TYPE", b"application/json"),
        (b"CONTENT_LENGTH", b"40"),
    ], [b'{"changes":[{"id":"a",', b'"value":1}]}' + b" " * 6]),
    # 600 bytes over two STDIN records: past the target's MAX_BODY of 512.
    "post_over_cap": request(2, 0, [
        (b"REQUEST_METHOD", b"POST"),
        (b"PATH_INFO", b"/v1/sync/push"),
        (b"CONTENT_LENGTH", b"600"),
    ], [b"a" * 300, b"b" * 300]),
    "get_values": record(GET_VALUES, 0, pairs([
        (b"FCGI_MAX_CONNS", b""), (b"FCGI_MAX_REQS", b""), (b"FCGI_MPXS_CONNS", b""),
    ])),
}

os.makedirs(HERE, exist_ok=True)
for name, data in SEEDS.items():
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(data)
    print(f"{name}: {len(data)} bytes")
