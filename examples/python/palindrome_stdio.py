#!/usr/bin/env python3
"""The lecture's palindrome server as a program on stdin and stdout, the inetd way: porthost's
`exec` service (or tcpserver, inetd, systemd's Accept=yes) runs it once per connection with the
connection as its descriptors 0 and 1. It answers like the palindrome-v3 service: `1` for a
palindrome, an empty line for not, an empty line or the end of input ends the session, and a
line longer than 65536 bytes gets `ERR line longer than 65536 bytes` and ends it.

Usage: porthost run --config examples/exec.toml, then `nc 127.0.0.1 7030`; or by hand,
`printf 'abba\\nabc\\n' | python3 examples/python/palindrome_stdio.py`.
"""

import sys

MAX_LINE_BYTES = 65536


def is_palindrome(text):
    """Letters and digits only, ignoring case, Unicode-aware: the same test as the services."""
    letters = "".join(c.lower() for c in text if c.isalnum())
    return letters == letters[::-1]


def main():
    read, write = sys.stdin.buffer, sys.stdout.buffer
    while True:
        # Bounded: one byte more than the limit tells a line that is too long.
        line = read.readline(MAX_LINE_BYTES + 2)
        if not line:
            break
        body = line[:-1] if line.endswith(b"\n") else line
        if body.endswith(b"\r"):
            body = body[:-1]
        if len(body) > MAX_LINE_BYTES:
            write.write(b"ERR line longer than %d bytes\n" % MAX_LINE_BYTES)
            write.flush()
            break
        text = body.decode("utf-8", "replace")
        if not text:
            break
        write.write(b"1\n" if is_palindrome(text) else b"\n")
        write.flush()
    print("session over", file=sys.stderr)


if __name__ == "__main__":
    main()
