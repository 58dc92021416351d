"""asyncssh's SFTP server chrooted to one directory, for sftpipe's interoperability tests.

    python3 asyncssh_server.py --host-key KEY --authorized-keys FILE --root DIR --port-file F

Listens on 127.0.0.1 on a free port, writes the port to F once it accepts connections, and
serves SFTP (no shell, no scp) to any user holding a key in FILE. Remote `/` is DIR.
Logs go to stderr.
"""

import argparse
import asyncio
import logging
import os
import sys

import asyncssh


async def run(a):
    root = os.path.realpath(a.root)
    server = await asyncssh.listen(
        "127.0.0.1",
        0,
        server_host_keys=[a.host_key],
        authorized_client_keys=a.authorized_keys,
        sftp_factory=lambda chan: asyncssh.SFTPServer(chan, chroot=root),
        allow_scp=False,
    )
    port = server.sockets[0].getsockname()[1]
    tmp = a.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(port))
    os.rename(tmp, a.port_file)
    await server.wait_closed()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host-key", required=True)
    p.add_argument("--authorized-keys", required=True)
    p.add_argument("--root", required=True)
    p.add_argument("--port-file", required=True)
    a = p.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO)
    asyncio.run(run(a))


if __name__ == "__main__":
    main()
