#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into <target>/ beside this
script: fuzz_targets/<target>.rs reads them, and `cargo test --test
fuzz_regressions` replays them through the same checks
(tests/fuzz/checks/<target>.rs, whose decoders these encoders mirror)."""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

# ---------------------------------------------------------------- fcgi_records

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


FCGI_RECORDS = {
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

# ---------------------------------------------------------------- cgi_request
# KEY=VALUE lines, an empty line, the body (tests/fuzz/checks/cgi_request.rs).


def cgi(params, body=b""):
    head = b"".join(key + b"=" + value + b"\n" for key, value in params)
    return head + b"\n" + body


PUSH = b'{"meals":[]}'
CGI_REQUEST = {
    "get_health": cgi([(b"REQUEST_METHOD", b"GET"), (b"REQUEST_URI", b"/api/health"),
                       (b"HTTPS", b"on"), (b"REMOTE_ADDR", b"127.0.0.1")]),
    "post_push": cgi([(b"REQUEST_METHOD", b"POST"), (b"REQUEST_URI", b"/api/meals/sync"),
                      (b"CONTENT_TYPE", b"application/json; charset=utf-8"),
                      (b"CONTENT_LENGTH", str(len(PUSH)).encode()),
                      (b"HTTP_AUTHORIZATION", b"Bearer x.y.z"),
                      (b"HTTP_X_DEVICE_ID", b"phone-1")], PUSH),
    "get_pull_query": cgi([(b"REQUEST_METHOD", b"get"),
                           (b"REQUEST_URI", b"/x/api/health-metrics/?sync_token=12&limit=50"
                                            b"&since=2024-01-15T10:30:00+02:00&flag"),
                           (b"REDIRECT_HTTP_AUTHORIZATION", b"Bearer t")]),
    "get_pull_bad_query": cgi([(b"REQUEST_METHOD", b"GET"),
                               (b"REQUEST_URI", b"/api/meal-plans?since=yesterday&limit=0"
                                                b"&sync_token=%FF")]),
    "path_not_utf8": cgi([(b"REQUEST_METHOD", b"GET"), (b"REQUEST_URI", b"/api/%FF")]),
    "path_raw_byte": cgi([(b"REQUEST_METHOD", b"GET"), (b"REQUEST_URI", b"/api/\xff")]),
    "method_not_utf8": cgi([(b"REQUEST_METHOD", b"G\xe9T"), (b"REQUEST_URI", b"/api/health")]),
    "no_method": cgi([(b"REQUEST_URI", b"/api/health")]),
    "options": cgi([(b"REQUEST_METHOD", b"OPTIONS"), (b"REQUEST_URI", b"/api/account"),
                    (b"HTTP_ORIGIN", b"https://app.example")]),
    "method_not_allowed": cgi([(b"REQUEST_METHOD", b"DELETE"), (b"REQUEST_URI", b"/api/health")]),
    "length_short": cgi([(b"REQUEST_METHOD", b"POST"), (b"REQUEST_URI", b"/api/sync/bulk"),
                         (b"CONTENT_TYPE", b"application/json"), (b"CONTENT_LENGTH", b"40")],
                        b'{"meals":'),
    "length_not_a_number": cgi([(b"REQUEST_METHOD", b"POST"), (b"REQUEST_URI", b"/api/auth/login"),
                                (b"CONTENT_LENGTH", b"12x")], b'{"email":1}'),
    "over_cap": cgi([(b"REQUEST_METHOD", b"POST"), (b"REQUEST_URI", b"/api/auth/register"),
                     (b"CONTENT_TYPE", b"application/json")], b"{" + b" " * 80 + b"}"),
    "chunked_text": cgi([(b"REQUEST_METHOD", b"PATCH"), (b"REQUEST_URI", b"/api/account"),
                         (b"CONTENT_TYPE", b"text/plain"), (b"REQUEST_SCHEME", b"https")],
                        b"name=x"),
}

# ---------------------------------------------------------------- push_body
# The body itself (tests/fuzz/checks/push_body.rs; MAX_RECORD_BYTES 300,
# MAX_BATCH 16, server clock 2024-06-01T12:00:00Z).

ID1 = "3F2B8C1E-6A4D-4E5F-9A7B-1C2D3E4F5A6B"
ID2 = "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a"
T1 = "2024-05-01T10:00:00.123Z"


def rec(id_=ID1, data=None, updated_at=T1, **more):
    out = {"id": id_, "data": {"weight": 70} if data is None else data, "updated_at": updated_at}
    out.update(more)
    return out


def deep(levels):
    value = 1
    for _ in range(levels - 1):
        value = {"a": value}
    return {"a": value}


def body(value):
    return json.dumps(value, separators=(",", ":")).encode()


PUSH_BODY = {
    "push_metrics": body({"metrics": [rec(deleted_at=None, base_version=3)]}),
    "push_medications_mixed": body({"medications": [
        rec(ID1, {"name": "x", "sideEffects": ["nausea"]}),
        rec(ID1.lower(), {"name": "dup"}),
        rec("00000000-0000-0000-0000-000000000000"),
        rec("{" + ID2 + "}"),
        rec(ID2, [1]),
        rec(ID2, None, "2030-01-01T00:00:00Z"),
        rec(ID2, None, "1999-12-31T23:59:59Z"),
        rec(ID2, None, "2024-05-01T10:00:00"),
        rec(ID2, None, T1, base_version=-1),
        rec(ID2, None, T1, deleted_at="2024-05-01T11:00:00+01:00"),
        {"id": 7, "data": {}},
        "not a record",
    ]}),
    "push_meals_deep_and_large": body({"meals": [
        rec(ID1, deep(31)),
        rec(ID2, deep(32)),
        rec("0f2b8c1e-6a4d-4e5f-9a7b-1c2d3e4f5a6b", {"notes": "n" * 300}),
    ]}),
    "push_exercises_null": body({"exercises": None}),
    "push_too_many": body({"meal_plans": [rec() for _ in range(17)]}),
    "bulk": body({
        "health_metrics": [rec(ID1, {"bodyMeasurements": {"waist": 80}, "notes": "a"})],
        "meals": [rec(ID2, {"date": "2024-05-01"}, "2024-05-01T10:00:00-05:00")],
        "medications": None,
        "sync_token": "12",
        "limit": 50,
    }),
    "bulk_since_and_typo": body({"last_sync_at": "2024-05-01T10:00:00Z", "meal_plan": [],
                                 "limit": 0}),
    "not_an_object": b"[]",
    "not_json": b'{"metrics":[',
}

# ---------------------------------------------------------------- rfc3339

RFC3339 = {
    "utc_millis": b"2024-01-15T10:30:00.123Z",
    "offset_half_second": b"2024-01-15T12:30:00.5+02:00",
    "nanos_negative_zero": b"1999-12-31T23:59:59.999999999-00:00",
    "lower_z_and_t": b"2000-01-01t00:00:00z",
    "leap_second": b"2016-12-31T23:59:60Z",
    "last_year": b"9999-12-31T23:59:59.999Z",
    "first_year": b"0000-01-01T00:00:00Z",
    "pre_epoch": b"1969-12-31T23:59:59.9995+00:00",
}

# ---------------------------------------------------------------- merge
# Mirrors the decoder of tests/fuzz/checks/merge.rs. side(data, updated,
# deleted, version): a client side with a version sends it as base_version,
# so 0 against the stored 1 or 2 makes a concurrent edit.

ENTITIES = ["health_metrics", "medications", "meals", "exercises", "meal_plans"]
KEYS = ["sideEffects", "bodyMeasurements", "notes", "date", "name", "dose", "weight", "waist"]
STRINGS = ["", "a", "b", "ab", "nausea", "headache", "2024-01-15", "2024-01-16"]


def enc_string(text):
    if text in STRINGS:
        return bytes([STRINGS.index(text)])
    raw = text.encode()
    assert len(raw) < 16, text
    return bytes([0xC0, len(raw)]) + raw


def enc_value(value):
    if value is None:
        return b"\x00"
    if isinstance(value, bool):
        return bytes([1, int(value)])
    if isinstance(value, int):
        return bytes([2, value + 128])
    if isinstance(value, float):
        return bytes([3, int(value * 2)])
    if isinstance(value, str):
        return b"\x04" + enc_string(value)
    if isinstance(value, list):
        assert len(value) < 5
        return bytes([5, len(value)]) + b"".join(enc_value(v) for v in value)
    return b"\x06" + enc_object(value)


def enc_object(obj):
    assert len(obj) < 6
    out = bytes([len(obj)])
    for key, value in obj.items():
        out += bytes([KEYS.index(key)]) if key in KEYS else b"\xf0" + enc_string(key)
        out += enc_value(value)
    return out


def side(data, updated, deleted=None, version=None):
    flags = (1 if deleted is not None else 0) | (2 if version is not None else 0)
    return bytes([flags, updated, deleted or 0, version or 0]) + enc_object(data)


def merge(entity, limit, client, server):
    return bytes([ENTITIES.index(entity), (limit - 8) // 4]) + client + server


MERGE = {
    "medications_union": merge("medications", 1000,
                               side({"name": "x", "sideEffects": ["nausea", "a"]}, 5, None, 0),
                               side({"name": "y", "sideEffects": ["headache", "a"]}, 3, None, 1)),
    "medications_union_too_large": merge("medications", 48,
                                         side({"sideEffects": ["nausea", "2024-01-15"]}, 9, None, 0),
                                         side({"sideEffects": ["headache", "2024-01-16"]}, 3, None, 1)),
    "metrics_notes_and_measurements": merge(
        "health_metrics", 1000,
        side({"notes": "ab", "bodyMeasurements": {"waist": 80}, "weight": 70.5}, 4, None, 0),
        side({"notes": "b", "bodyMeasurements": {"chest": 90}, "dose": [1, 2]}, 4, None, 2)),
    "metrics_measurement_lists": merge(
        "health_metrics", 1000,
        side({"bodyMeasurements": [1, "a", {"waist": 1}], "notes": "a"}, 2, None, 3),
        side({"bodyMeasurements": [1, 2], "notes": "b"}, 7, None, 1)),
    "meals_different_dates": merge("meals", 1000,
                                   side({"date": "2024-01-15", "name": "lunch"}, 8, None, 0),
                                   side({"date": "2024-01-16", "name": "lunch"}, 2, None, 1)),
    "meals_same_date": merge("meals", 1000,
                             side({"date": "2024-01-15"}, 8, None, 3),
                             side({"date": "2024-01-15", "name": "b"}, 8, None, 1)),
    "exercises_retry": merge("exercises", 1000,
                             side({"minutes": 30}, 6, None, 0),
                             side({"minutes": 30}, 6, None, 2)),
    "meal_plans_delete_against_edit": merge("meal_plans", 1000,
                                            side({"name": "a"}, 9, 9, 0),
                                            side({"name": "b"}, 3, None, 1)),
    "plain_update": merge("medications", 1000,
                          side({"dose": "1"}, 1, None, 2),
                          side({"dose": "2"}, 5, None, 2)),
}

# ---------------------------------------------------------------- write

TARGETS = {
    "fcgi_records": FCGI_RECORDS,
    "cgi_request": CGI_REQUEST,
    "push_body": PUSH_BODY,
    "rfc3339": RFC3339,
    "merge": MERGE,
}

for target, seeds in TARGETS.items():
    directory = os.path.join(HERE, target)
    os.makedirs(directory, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(directory, name), "wb") as f:
            f.write(data)
        print(f"{target}/{name}: {len(data)} bytes")
