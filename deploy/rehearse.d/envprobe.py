#!/usr/bin/python3
"""What a program started by Apache on the rehearsal host sees.

Python 3 standard library only. Uploaded next to the binary (in its own
directory, with its own .htaccess) by deploy/rehearse, it answers every
request with one JSON object: who it runs as, its working directory, its
process environment and, under FastCGI, the request's params. Run as CGI
when GATEWAY_INTERFACE is set, else as a FastCGI responder on the
listening socket mod_fcgid hands over on fd 0 (one request, then exit).

  envprobe.py summarize < ANSWER
      One line from such an answer: the mode, the user, whether a SetEnv
      of HEALTHSYNC_ENV_FILE arrived (and where), HOME and PATH.
"""

import json
import os
import pwd
import socket
import struct
import sys


def facts(params=None):
    return {
        "mode": "cgi" if params is None else "fcgi",
        "uid": os.getuid(),
        "euid": os.geteuid(),
        "user": pwd.getpwuid(os.getuid()).pw_name,
        "passwd_home": pwd.getpwuid(os.getuid()).pw_dir,
        "cwd": os.getcwd(),
        "environ": dict(os.environ),
        "params": params,
    }


def answer(body):
    data = json.dumps(body, indent=1, sort_keys=True).encode()
    return b"Status: 200 OK\r\nContent-Type: application/json\r\n\r\n" + data


def read_exact(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def pairs(buf):
    out, i = {}, 0
    while i < len(buf):
        lengths = []
        for _ in range(2):
            n = buf[i]
            if n & 0x80:
                n = struct.unpack(">I", buf[i:i + 4])[0] & 0x7FFFFFFF
                i += 4
            else:
                i += 1
            lengths.append(n)
        name = buf[i:i + lengths[0]].decode("latin-1")
        i += lengths[0]
        out[name] = buf[i:i + lengths[1]].decode("latin-1")
        i += lengths[1]
    return out


def record(kind, request_id, content):
    return struct.pack(">BBHHBx", 1, kind, request_id, len(content), 0) + content


def serve_fastcgi():
    listener = socket.socket(fileno=0)
    conn, _ = listener.accept()
    params, request_id = b"", 1
    while True:
        _, kind, request_id, length, padding = struct.unpack(">BBHHBx", read_exact(conn, 8))
        content = read_exact(conn, length)
        read_exact(conn, padding)
        if kind == 4 and length:  # FCGI_PARAMS
            params += content
        if kind == 5 and not length:  # end of FCGI_STDIN
            break
    out = answer(facts(pairs(params)))
    for start in range(0, len(out), 60000):
        conn.sendall(record(6, request_id, out[start:start + 60000]))
    conn.sendall(record(6, request_id, b""))
    conn.sendall(record(3, request_id, struct.pack(">IB3x", 0, 0)))
    conn.close()


def summarize(answer):
    env, params = answer["environ"], answer["params"]
    if params is not None and "HEALTHSYNC_ENV_FILE" in params:
        setenv = "in the request params"
    elif "HEALTHSYNC_ENV_FILE" in env:
        setenv = "in the environment"
    else:
        setenv = "stripped"
    mode = "FastCGI" if params is not None else "CGI"
    return (f"{mode} as {answer['user']}: SetEnv {setenv}, "
            f"HOME {env.get('HOME', 'unset')}, PATH {env.get('PATH', 'unset')}")


if __name__ == "__main__":
    if sys.argv[1:] == ["summarize"]:
        print(summarize(json.load(sys.stdin)))
    elif "GATEWAY_INTERFACE" in os.environ:
        sys.stdout.buffer.write(answer(facts()))
    else:
        serve_fastcgi()
