#!/usr/bin/env python3
"""One loopback TCP stream's rate, the ceiling a 1 MiB READ stream is compared with.

    bench/stream.py SECONDS [SEND_CPU RECV_CPU]

The sender writes a 1 MiB buffer with sendall (one copy, user -> socket), the receiver reads
it with recv_into a preallocated buffer (one copy, socket -> user): the copies an iSCSI READ
of page-cached data needs at least. Prints GB/s (10^9 bytes per second). Loopback only; the
run ends after SECONDS.
"""
import os
import socket
import sys
import time

secs = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
cpus = [int(c) for c in sys.argv[2:4]] if len(sys.argv) > 3 else None
CHUNK = 1 << 20

srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.bind(("127.0.0.1", 0))
srv.listen(1)
port = srv.getsockname()[1]
pid = os.fork()
if pid == 0:
    if cpus:
        os.sched_setaffinity(0, {cpus[0]})
    srv.close()
    s = socket.create_connection(("127.0.0.1", port))
    buf = bytes(CHUNK)
    end = time.monotonic() + secs + 1.0
    try:
        while time.monotonic() < end:
            s.sendall(buf)
    except OSError:
        pass
    os._exit(0)
if cpus:
    os.sched_setaffinity(0, {cpus[1]})
conn, _ = srv.accept()
buf = bytearray(CHUNK)
view = memoryview(buf)
# Skip the first half second (slow start, page faults), then count for SECONDS.
t0 = time.monotonic()
while time.monotonic() - t0 < 0.5:
    conn.recv_into(view)
got = 0
start = time.monotonic()
while True:
    n = conn.recv_into(view)
    if n == 0:
        break
    got += n
    if time.monotonic() - start >= secs:
        break
elapsed = time.monotonic() - start
conn.close()
os.waitpid(pid, 0)
print(f"{got / elapsed / 1e9:.2f}")
