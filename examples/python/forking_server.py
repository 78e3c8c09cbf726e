"""The palindrome server as the lecture writes it, on socketserver.ForkingTCPServer: the peer
that porthost's process-per-client model is measured against (`porthost bench --python`, or
examples/compare_forking.sh). Like every ForkingTCPServer it serves at most `max_children` (40)
clients at once; the next wait until a child ends.

Usage: python3 forking_server.py [PORT]   (0 or nothing: an ephemeral port, printed on stdout)
"""

import socketserver
import sys


def test_palindrome(text):
    """Letters and digits only, ignoring case: the same test as porthost's services."""
    letters = [c.lower() for c in text if c.isalnum()]
    return letters == letters[::-1]


class RequestHandler(socketserver.StreamRequestHandler):
    def handle(self):
        while True:
            line = self.rfile.readline()
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            if not text:
                break
            self.wfile.write(b"1\n" if test_palindrome(text) else b"\n")


class PalindromeServer(socketserver.ForkingTCPServer):
    allow_reuse_address = True
    # The default backlog of 5 would make the comparison about the backlog, not forking: the
    # same backlog as porthost's ports and the bench's other servers.
    request_queue_size = 4096


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    with PalindromeServer(("127.0.0.1", port), RequestHandler) as server:
        print(f"{server.server_address[0]}:{server.server_address[1]}", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main()
