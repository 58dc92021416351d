#!/usr/bin/env python3
"""ssh ProxyCommand that adds latency: relays stdin/stdout to HOST:PORT, holding every
chunk for DELAY seconds in each direction (so RTT = 2 * DELAY) and keeping byte order.

    ssh -o ProxyCommand='delay-relay.py 127.0.0.1 2222 0.010' ...

With --listen LPORT it is a TCP listener on 127.0.0.1:LPORT instead, one relay process per
accepted connection, for clients that take no ProxyCommand (rclone before 1.64 has its own ssh):

    delay-relay.py --listen 2300 127.0.0.1 2222 0.010 &

Kernel traffic shaping (tc netem) is not available everywhere; this needs no privileges.
"""
import os
import socket
import sys
import threading
import time
from collections import deque


def pump(read, write, close_write, delay):
    """Reads chunks, and writes each one `delay` seconds after it was read."""
    queue = deque()
    cond = threading.Condition()
    done = [False]

    def reader():
        while True:
            try:
                data = read()
            except OSError:
                data = b""
            with cond:
                if not data:
                    done[0] = True
                else:
                    queue.append((time.monotonic() + delay, data))
                cond.notify()
            if not data:
                return

    def writer():
        while True:
            with cond:
                while not queue and not done[0]:
                    cond.wait()
                if not queue and done[0]:
                    break
                due, data = queue.popleft()
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                write(data)
            except OSError:
                break
        close_write()

    threads = [threading.Thread(target=reader, daemon=True), threading.Thread(target=writer, daemon=True)]
    for t in threads:
        t.start()
    return threads


def relay(host, port, delay, in_fd, out_fd, close_out):
    """Relays in_fd -> HOST:PORT and HOST:PORT -> out_fd, delaying both ways, until both end."""
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def write_all(fd):
        def w(data):
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
        return w

    def shut_sock():
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    up = pump(lambda: os.read(in_fd, 1 << 18), sock.sendall, shut_sock, delay)
    down = pump(lambda: sock.recv(1 << 18), write_all(out_fd), close_out, delay)
    for t in down:
        t.join()
    for t in up:
        t.join(timeout=1)


def listen(lport, host, port, delay):
    """Accepts on 127.0.0.1:LPORT; a forked child relays each connection (no shared GIL)."""
    import signal
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", lport))
    srv.listen(64)
    while True:
        conn, _ = srv.accept()
        if os.fork() == 0:
            srv.close()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def shut_conn():
                try:
                    conn.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
            relay(host, port, delay, conn.fileno(), conn.fileno(), shut_conn)
            os._exit(0)
        conn.close()


def main():
    if sys.argv[1] == "--listen":
        listen(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
        return
    host, port, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    stdout = sys.stdout.fileno()
    relay(host, port, delay, sys.stdin.fileno(), stdout, lambda: os.close(stdout))


if __name__ == "__main__":
    main()
