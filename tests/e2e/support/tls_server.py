"""A stand-in HTTPS server for the TLS cases of `healthsync smoke`.

    python3 tls_server.py CERT KEY NAME

Listens on a free port of 127.0.0.1 (printed on the first line of standard
output) and serves GET /api/health with the API's envelope only when the
client asked for NAME both in TLS SNI and in the Host header (with the
port); anything else gets a JSON 404 envelope. It stops after 60 seconds
or when standard input closes, so a test that dies leaves nothing behind.
"""

import http.server
import json
import ssl
import sys
import threading

cert, key, name = sys.argv[1:4]
seen_sni = []


def remember_sni(_socket, server_name, _context):
    seen_sni.append(server_name)


class Handler(http.server.BaseHTTPRequestHandler):
    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        host = self.headers.get("Host")
        expected_host = f"{name}:{self.server.server_address[1]}"
        sni = seen_sni[-1] if seen_sni else None
        if self.path == "/api/health" and host == expected_host and sni == name:
            self.answer(200, {"success": True, "data": {
                "status": "ok", "database": "ok", "schema_version": 1,
                "version": "tls-fixture",
                "limits": {"max_body_bytes": 131072, "max_batch": 1000,
                           "max_record_bytes": 65536}}})
        else:
            message = f"fixture: path {self.path}, Host {host}, SNI {sni}"
            self.answer(404, {"success": False, "error": {
                "code": "NOT_FOUND", "message": message}})

    do_POST = do_GET

    def log_message(self, *_args):
        pass


context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
context.sni_callback = remember_sni
server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)


def stop_when_told():
    sys.stdin.read()
    server.shutdown()


threading.Thread(target=stop_when_told, daemon=True).start()
deadline = threading.Timer(60, server.shutdown)
deadline.daemon = True
deadline.start()
server.serve_forever()
