"""A paramiko SFTP server over one directory, for sftpipe's interoperability tests.

    python3 paramiko_server.py --host-key KEY --authorized-key KEY.pub --root DIR --port-file F

Listens on 127.0.0.1 on a free port, writes the port to F once it accepts connections, and
serves every connection that presents the authorized key (any user name). Remote `/` is DIR.
It offers what paramiko's SFTPServerInterface offers: plain SFTP v3, no posix-rename,
statvfs or hardlink extensions. RENAME refuses an existing target, as the protocol says.
Logs go to stderr.
"""

import argparse
import base64
import logging
import os
import socket
import sys
import threading

import paramiko
from paramiko import SFTPAttributes, SFTPHandle, SFTPServer, SFTPServerInterface
from paramiko.sftp import SFTP_FAILURE, SFTP_OK


class Auth(paramiko.ServerInterface):
    def __init__(self, key):
        self.key = key

    def get_allowed_auths(self, username):
        return "publickey"

    def check_auth_publickey(self, username, key):
        if key.get_name() == self.key.get_name() and key.asbytes() == self.key.asbytes():
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_channel_request(self, kind, chanid):
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED


class Handle(SFTPHandle):
    def stat(self):
        try:
            return SFTPAttributes.from_stat(os.fstat(self.readfile.fileno()))
        except OSError as e:
            return SFTPServer.convert_errno(e.errno)

    def chattr(self, attr):
        try:
            SFTPServer.set_file_attr(self.local_path, attr)
            return SFTP_OK
        except OSError as e:
            return SFTPServer.convert_errno(e.errno)


def errno_of(fn):
    """Turns an OSError raised by `fn` into the SFTP status paramiko expects."""

    def wrapped(*args):
        try:
            return fn(*args)
        except OSError as e:
            return SFTPServer.convert_errno(e.errno)

    return wrapped


class DirServer(SFTPServerInterface):
    ROOT = "/"

    def local(self, path):
        return os.path.join(self.ROOT, self.canonicalize(path).lstrip("/"))

    def attrs(self, path, name=None):
        a = SFTPAttributes.from_stat(os.lstat(path))
        if name is not None:
            a.filename = name
        return a

    @errno_of
    def list_folder(self, path):
        path = self.local(path)
        return [self.attrs(os.path.join(path, n), n) for n in os.listdir(path)]

    @errno_of
    def stat(self, path):
        return SFTPAttributes.from_stat(os.stat(self.local(path)))

    @errno_of
    def lstat(self, path):
        return self.attrs(self.local(path))

    @errno_of
    def open(self, path, flags, attr):
        path = self.local(path)
        mode = getattr(attr, "st_mode", None) or 0o666
        fd = os.open(path, flags | getattr(os, "O_BINARY", 0), mode & 0o7777)
        if flags & os.O_CREAT and attr is not None:
            attr._flags &= ~attr.FLAG_PERMISSIONS
            SFTPServer.set_file_attr(path, attr)
        if flags & os.O_WRONLY:
            how = "ab" if flags & os.O_APPEND else "wb"
        elif flags & os.O_RDWR:
            how = "a+b" if flags & os.O_APPEND else "r+b"
        else:
            how = "rb"
        f = os.fdopen(fd, how)
        h = Handle(flags)
        h.filename = path
        h.local_path = path
        h.readfile = f
        h.writefile = f
        return h

    @errno_of
    def remove(self, path):
        os.remove(self.local(path))
        return SFTP_OK

    @errno_of
    def rename(self, oldpath, newpath):
        old, new = self.local(oldpath), self.local(newpath)
        if os.path.lexists(new):
            return SFTP_FAILURE
        os.rename(old, new)
        return SFTP_OK

    @errno_of
    def mkdir(self, path, attr):
        path = self.local(path)
        os.mkdir(path)
        if attr is not None:
            SFTPServer.set_file_attr(path, attr)
        return SFTP_OK

    @errno_of
    def rmdir(self, path):
        os.rmdir(self.local(path))
        return SFTP_OK

    @errno_of
    def chattr(self, path, attr):
        SFTPServer.set_file_attr(self.local(path), attr)
        return SFTP_OK

    @errno_of
    def symlink(self, target_path, path):
        path = self.local(path)
        if target_path.startswith("/"):
            target_path = self.local(target_path)
        os.symlink(target_path, path)
        return SFTP_OK

    @errno_of
    def readlink(self, path):
        target = os.readlink(self.local(path))
        root = self.ROOT.rstrip("/") + "/"
        if target.startswith(root):
            target = "/" + target[len(root):]
        return target


def serve(sock, host_key, auth):
    transport = paramiko.Transport(sock)
    transport.add_server_key(host_key)
    transport.set_subsystem_handler("sftp", SFTPServer, DirServer)
    transport.start_server(server=auth)
    transport.join()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host-key", required=True)
    p.add_argument("--authorized-key", required=True)
    p.add_argument("--root", required=True)
    p.add_argument("--port-file", required=True)
    a = p.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO)
    DirServer.ROOT = os.path.realpath(a.root)
    host_key = paramiko.Ed25519Key.from_private_key_file(a.host_key)
    with open(a.authorized_key) as f:
        kind, blob = f.read().split()[:2]
    auth = Auth(paramiko.PKey.from_type_string(kind, base64.b64decode(blob)))

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    tmp = a.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(listener.getsockname()[1]))
    os.rename(tmp, a.port_file)
    while True:
        sock, _ = listener.accept()
        threading.Thread(target=serve, args=(sock, host_key, auth), daemon=True).start()


if __name__ == "__main__":
    main()
