"""A small client for ``sftpipe serve`` (standard library only).

It starts ``sftpipe [SSH_ARGS] serve --binary [DESTINATION]`` and talks to it with the
binary framing (a 4-byte big-endian length, then JSON). Every method sends one
command and returns its ``data``, or raises :class:`SftpipeError`.

Usage::

    from sftpipe_client import Client, SftpipeError

    with Client("sftp://alice@files.example.org") as sftp:
        sftp.mkdir("backup/2026", parents=True)
        sftp.put("db.gz", "backup/2026/db.gz")            # -> {"bytes": ..., "files": 1}
        for entry in sftp.listdir("backup/2026"):
            print(entry["name"], entry["size"])
        try:
            sftp.stat("missing")
        except SftpipeError as e:
            print(e.code)                                  # "not_found"

        # Many commands at once over the one connection: answers come back in order.
        replies = sftp.batch([("STAT", {"path": p}) for p in ("a", "b", "c")])

    # A local sftp-server instead of ssh (for tests):
    Client(ssh_args=["-D", "/usr/lib/openssh/sftp-server"])

The sftpipe program is ``$SFTPIPE`` if set, else ``sftpipe`` on the PATH, unless given
as ``program=``. Its log messages go to this process's stderr unless ``stderr=`` says
otherwise (any ``subprocess`` value).
"""

import json
import os
import struct
import subprocess

__all__ = ["Client", "SftpipeError"]


class SftpipeError(Exception):
    """A command failed (``status`` "error", with a ``code`` such as "not_found"), was
    refused as malformed (``status`` "fail"), or the server went away ("closed")."""

    def __init__(self, reply):
        self.reply = reply
        self.status = reply.get("status")
        self.code = reply.get("code")
        self.message = reply.get("message", "")
        self.data = reply.get("data")
        super().__init__(f"{self.status}: {self.message}")


class Client:
    """A running ``sftpipe serve`` process, one SFTP connection."""

    def __init__(self, destination=None, ssh_args=(), program=None, stderr=None):
        program = program or os.environ.get("SFTPIPE", "sftpipe")
        argv = [program, *ssh_args, "serve", "--binary"]
        if destination:
            argv.append(destination)
        self._proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr
        )

    # -- protocol -------------------------------------------------------------------

    def _send(self, message):
        body = json.dumps(message).encode()
        try:
            self._proc.stdin.write(struct.pack("!I", len(body)) + body)
            self._proc.stdin.flush()
        except BrokenPipeError:
            self._closed()

    def _closed(self):
        code = self._proc.wait()
        raise SftpipeError({"status": "closed", "code": "connection",
                            "message": f"sftpipe serve ended (exit status {code})"})

    def _receive(self):
        head = self._proc.stdout.read(4)
        if len(head) < 4:
            self._closed()
        (size,) = struct.unpack("!I", head)
        return json.loads(self._proc.stdout.read(size))

    def call(self, command, **args):
        """Sends one command and returns its data; raises SftpipeError unless ok."""
        self._send({"command": command, "args": args})
        reply = self._receive()
        if reply.get("status") != "ok":
            raise SftpipeError(reply)
        return reply.get("data")

    def batch(self, commands, window=64):
        """Runs (name, args) pairs concurrently, at most `window` at a time; returns
        the reply dicts in the order of `commands` (check each one's "status")."""
        replies = [None] * len(commands)
        pending = 0
        for i, (name, args) in enumerate(commands):
            if pending == window:
                reply = self._receive()
                replies[reply["id"]] = reply
                pending -= 1
            self._send({"command": name, "args": args, "id": i})
            pending += 1
        for _ in range(pending):
            reply = self._receive()
            replies[reply["id"]] = reply
        return replies

    # -- commands -------------------------------------------------------------------

    def put(self, source, dest, recursive=False, preserve=False):
        return self.call("PUT", source=os.fspath(source), dest=dest,
                         recursive=recursive, preserve=preserve)

    def get(self, source, dest, recursive=False, preserve=False):
        return self.call("GET", source=source, dest=os.fspath(dest),
                         recursive=recursive, preserve=preserve)

    def listdir(self, path="."):
        return self.call("LISTDIR", path=path)

    def delete(self, path):
        return self.call("DELETE", path=path)

    def stat(self, path):
        return self.call("STAT", path=path)

    def lstat(self, path):
        return self.call("LSTAT", path=path)

    def mkdir(self, path, parents=False):
        return self.call("MKDIR", path=path, parents=parents)

    def rmdir(self, path):
        return self.call("RMDIR", path=path)

    def rename(self, source, dest):
        return self.call("RENAME", source=source, dest=dest)

    def symlink(self, target, path):
        return self.call("SYMLINK", target=target, path=path)

    def readlink(self, path):
        return self.call("READLINK", path=path)

    def realpath(self, path):
        return self.call("REALPATH", path=path)

    def chmod(self, path, mode):
        return self.call("CHMOD", path=path, mode=mode)

    def statvfs(self, path):
        return self.call("STATVFS", path=path)

    def mirror(self, source, dest, delete=False, exclude=()):
        return self.call("MIRROR", source=os.fspath(source), dest=dest,
                         delete=delete, exclude=list(exclude))

    # -- lifetime -------------------------------------------------------------------

    def close(self):
        """Ends the server (end of input) and returns its exit status."""
        if self._proc.stdin and not self._proc.stdin.closed:
            try:
                self._proc.stdin.close()
            except BrokenPipeError:
                pass
        code = self._proc.wait()
        self._proc.stdout.close()
        return code

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
