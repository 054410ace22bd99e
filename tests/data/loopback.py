"""An HTTP server on 127.0.0.1 serving a folder, with range requests and injected faults.

Tests use it as `$CLIPJAX_DATA_MIRROR`: no test reaches the internet.
"""

import contextlib
import http.server
import pathlib
import threading


class _Handler(http.server.BaseHTTPRequestHandler):
    """GET of files below `server.root`; honours `Range: bytes=N-` unless `server.ignore_range`."""

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):  # noqa: N802 (http.server's name)
        server = self.server
        path = server.root / self.path.lstrip("/")
        server.requests.append((self.path, self.headers.get("Range")))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        if self.headers.get("Range") and not server.ignore_range:
            start = int(self.headers["Range"].split("=")[1].rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path in server.cut_once:  # send half, then drop the connection
            server.cut_once.discard(self.path)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@contextlib.contextmanager
def serve(root: pathlib.Path, *, cut_once=(), ignore_range=False):
    """Serves `root` on 127.0.0.1; yields the server (`.url`, `.requests`, `.cut_once`)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.root = pathlib.Path(root)
    server.requests = []
    server.cut_once = set(cut_once)
    server.ignore_range = ignore_range
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
