"""Tests of sftpipe_client against ``sftpipe -D /usr/lib/openssh/sftp-server serve``.

Run from this directory with ``python3 -m unittest``. The binary is ``$SFTPIPE``, else
``target/debug/sftpipe`` of this repository (``cargo build`` first).
"""

import os
import stat
import tempfile
import unittest
from pathlib import Path

from sftpipe_client import Client, SftpipeError

REPO = Path(__file__).resolve().parents[2]
SFTPIPE = os.environ.get("SFTPIPE") or str(REPO / "target" / "debug" / "sftpipe")
SFTP_SERVER = "/usr/lib/openssh/sftp-server"


@unittest.skipUnless(os.access(SFTPIPE, os.X_OK), f"no sftpipe binary at {SFTPIPE}")
@unittest.skipUnless(os.path.exists(SFTP_SERVER), f"no {SFTP_SERVER}")
class ClientTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="sftpipe-py-")
        self.dir = Path(self.tmp.name)
        self.client = Client(ssh_args=["-D", SFTP_SERVER], program=SFTPIPE)

    def tearDown(self):
        self.assertEqual(self.client.close(), 0)
        self.tmp.cleanup()

    def remote(self, name):
        # With -D the "remote" side is this machine: remote paths are local ones.
        return str(self.dir / name)

    def test_put_get_listdir_delete(self):
        src = self.dir / "src.txt"
        src.write_bytes(b"hello sftpipe\n")
        self.assertEqual(self.client.put(src, self.remote("up/dst.txt"))["bytes"], 14)
        self.assertEqual((self.dir / "up/dst.txt").read_bytes(), b"hello sftpipe\n")
        self.client.get(self.remote("up/dst.txt"), self.dir / "back.txt")
        self.assertEqual((self.dir / "back.txt").read_bytes(), b"hello sftpipe\n")
        entries = self.client.listdir(self.remote("up"))
        self.assertEqual([e["name"] for e in entries], ["dst.txt"])
        self.assertEqual(entries[0]["size"], 14)
        self.assertTrue(stat.S_ISREG(entries[0]["mode"]))
        self.client.delete(self.remote("up/dst.txt"))
        self.assertFalse((self.dir / "up/dst.txt").exists())

    def test_directories_links_and_attributes(self):
        self.client.mkdir(self.remote("a/b/c"), parents=True)
        self.assertTrue((self.dir / "a/b/c").is_dir())
        self.client.rmdir(self.remote("a/b/c"))
        self.assertFalse((self.dir / "a/b/c").exists())
        (self.dir / "f").write_text("x")
        self.client.chmod(self.remote("f"), 0o600)
        st = self.client.stat(self.remote("f"))
        self.assertEqual((st["type"], st["size"], st["mode"] & 0o777), ("file", 1, 0o600))
        self.client.symlink("f", self.remote("link"))
        self.assertEqual(os.readlink(self.dir / "link"), "f")
        self.assertEqual(self.client.readlink(self.remote("link")), "f")
        self.assertEqual(self.client.lstat(self.remote("link"))["type"], "symlink")
        self.client.rename(self.remote("f"), self.remote("g"))
        self.assertEqual((self.dir / "g").read_text(), "x")
        self.assertEqual(self.client.realpath(self.remote("a/../g")), self.remote("g"))
        self.assertGreater(self.client.statvfs(self.remote("."))["bsize"], 0)

    def test_trees_and_mirror(self):
        for name in ("t/one", "t/sub/two", "t/skip.tmp"):
            (self.dir / name).parent.mkdir(parents=True, exist_ok=True)
            (self.dir / name).write_text(name)
        data = self.client.put(self.dir / "t", self.remote("t-up"), recursive=True)
        self.assertEqual(data["files"], 3)
        self.client.get(self.remote("t-up"), self.dir / "t-down", recursive=True)
        self.assertEqual((self.dir / "t-down/sub/two").read_text(), "t/sub/two")
        (self.dir / "m").mkdir()
        (self.dir / "m/old").write_text("old")
        data = self.client.mirror(self.dir / "t", self.remote("m"), delete=True,
                                  exclude=["*.tmp"])
        self.assertEqual((data["copied"], data["deleted"]), (2, 1))
        self.assertEqual(sorted(os.listdir(self.dir / "m")), ["one", "sub"])

    def test_errors_raise(self):
        with self.assertRaises(SftpipeError) as cm:
            self.client.stat(self.remote("missing"))
        self.assertEqual((cm.exception.status, cm.exception.code), ("error", "not_found"))
        with self.assertRaises(SftpipeError) as cm:
            self.client.call("NO_SUCH_COMMAND")
        self.assertEqual(cm.exception.status, "fail")
        # The server is still there.
        self.assertEqual(self.client.realpath(self.remote(".")), str(self.dir))

    def test_batch_runs_concurrently_and_keeps_order(self):
        for i in range(100):
            (self.dir / f"f{i}").write_bytes(b"x" * i)
        puts = [("PUT", {"source": str(self.dir / f"f{i}"), "dest": self.remote(f"out/f{i}")})
                for i in range(100)]
        self.assertTrue(all(r["status"] == "ok" for r in self.client.batch(puts, window=16)))
        stats = self.client.batch([("STAT", {"path": self.remote(f"out/f{i}")})
                                   for i in range(100)])
        self.assertEqual([r["data"]["size"] for r in stats], list(range(100)))


if __name__ == "__main__":
    unittest.main()
