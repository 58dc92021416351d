//! The fake server's file system and its honest answers, as OpenSSH's sftp-server gives
//! them.

use std::collections::{BTreeMap, HashMap, VecDeque};

use sftpipe::proto::{
    ExtendedRequest, FileAttributes, Limits, NameEntry, OpenFlags, Request, Response, StatusCode,
    Statvfs, ext,
};

/// What the server announces in `limits@openssh.com`.
pub const MAX_READ: u64 = 32 * 1024;

/// A node of the fake file system.
#[derive(Debug, Clone)]
pub enum Node {
    /// A regular file.
    File(Vec<u8>),
    /// A directory.
    Dir,
    /// A symbolic link and its target.
    Link(Vec<u8>),
}

/// The fake file system: absolute normalised paths to nodes.
#[derive(Debug, Clone)]
pub struct Tree {
    pub nodes: BTreeMap<Vec<u8>, Node>,
}

/// The contents of the sample tree's files, by path under `/data`.
pub const SAMPLE_FILES: &[(&str, usize)] = &[
    ("a.txt", 300),
    ("empty", 0),
    ("big.bin", 70_000),
    ("sub/b", 1000),
    ("sub/deep/c", 5),
];

/// Bytes of a sample file (deterministic).
pub fn sample_bytes(rel: &str, len: usize) -> Vec<u8> {
    let seed = rel
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    crate::common::random_bytes(len, seed)
}

impl Tree {
    /// `/data` with files ([`SAMPLE_FILES`]), a subdirectory tree, links inside the tree,
    /// and links that leave it: `escape` → `TRAP/victim` and `hole` → `TRAP`. The trap
    /// exists on the server too (so following those links remotely works) and, with
    /// different contents, locally: a client that wrote through a recreated link would
    /// change the local trap. `/upload` is an empty directory for uploads.
    pub fn sample(trap: &[u8]) -> Tree {
        let mut nodes = BTreeMap::new();
        for dir in ["/", "/data", "/data/sub", "/data/sub/deep", "/upload"] {
            nodes.insert(dir.as_bytes().to_vec(), Node::Dir);
        }
        for (rel, len) in SAMPLE_FILES {
            let path = format!("/data/{rel}").into_bytes();
            nodes.insert(path, Node::File(sample_bytes(rel, *len)));
        }
        nodes.insert(b"/data/link".to_vec(), Node::Link(b"a.txt".to_vec()));
        let mut victim = trap.to_vec();
        victim.extend_from_slice(b"/victim");
        nodes.insert(b"/data/escape".to_vec(), Node::Link(victim.clone()));
        nodes.insert(b"/data/hole".to_vec(), Node::Link(trap.to_vec()));
        // The trap's ancestors, so that the links resolve on the server.
        let mut at = 0;
        while let Some(i) = trap[at + 1..].iter().position(|&b| b == b'/') {
            at += i + 1;
            nodes.insert(trap[..at].to_vec(), Node::Dir);
        }
        nodes.insert(trap.to_vec(), Node::Dir);
        nodes.insert(victim, Node::File(b"the server's victim\n".to_vec()));
        Tree { nodes }
    }

    fn attrs(&self, path: &[u8]) -> Option<FileAttributes> {
        let (perm, size) = match self.nodes.get(path)? {
            Node::File(d) => (0o100644, d.len() as u64),
            Node::Dir => (0o040755, 4096),
            Node::Link(t) => (0o120777, t.len() as u64),
        };
        Some(FileAttributes {
            size: Some(size),
            uid_gid: Some((1000, 1000)),
            permissions: Some(perm),
            atime_mtime: Some((1_700_000_000, 1_700_000_000)),
            extended: Vec::new(),
        })
    }

    /// `path` with links followed (a few levels, as a kernel would).
    fn follow(&self, path: &[u8]) -> Vec<u8> {
        let mut p = path.to_vec();
        for _ in 0..8 {
            match self.nodes.get(&p) {
                Some(Node::Link(t)) => p = normalize(&join(parent(&p), t)),
                _ => break,
            }
        }
        p
    }

    fn children(&self, dir: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let prefix = join(dir, b"");
        self.nodes
            .keys()
            .filter(|k| k.starts_with(&prefix) && k.len() > prefix.len())
            .filter(|k| !k[prefix.len()..].contains(&b'/'))
            .map(|k| (k[prefix.len()..].to_vec(), k.clone()))
            .collect()
    }
}

/// `p` absolute, without `.`, `..` or repeated slashes; relative paths start at `/`.
pub fn normalize(p: &[u8]) -> Vec<u8> {
    sftpipe::transfer::remote_normalize(p)
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if name.starts_with(b"/") {
        return name.to_vec();
    }
    let mut p = dir.to_vec();
    if !p.ends_with(b"/") {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

fn parent(p: &[u8]) -> &[u8] {
    match p.iter().rposition(|&b| b == b'/') {
        Some(0) | None => b"/",
        Some(i) => &p[..i],
    }
}

enum Open {
    File(Vec<u8>),
    Dir(VecDeque<NameEntry>),
}

/// Answers requests from a [`Tree`] as OpenSSH's sftp-server would.
pub struct Server {
    tree: Tree,
    handles: HashMap<Vec<u8>, Open>,
    next_handle: u32,
}

fn status(code: StatusCode, message: &str) -> Response {
    Response::Status {
        code,
        message: message.as_bytes().to_vec(),
        language: b"en".to_vec(),
    }
}

fn ok() -> Response {
    status(StatusCode::Ok, "Success")
}

fn missing() -> Response {
    status(StatusCode::NoSuchFile, "No such file")
}

fn failure(why: &str) -> Response {
    status(StatusCode::Failure, why)
}

fn one_name(name: Vec<u8>) -> Response {
    Response::Name(vec![NameEntry {
        longname: name.clone(),
        filename: name,
        attrs: FileAttributes::default(),
    }])
}

/// The extensions announced in VERSION.
pub fn extensions() -> Vec<(Vec<u8>, Vec<u8>)> {
    [
        (ext::POSIX_RENAME, "1"),
        (ext::STATVFS, "2"),
        (ext::FSTATVFS, "2"),
        (ext::HARDLINK, "1"),
        (ext::FSYNC, "1"),
        (ext::LSETSTAT, "1"),
        (ext::LIMITS, "1"),
        (ext::EXPAND_PATH, "1"),
    ]
    .iter()
    .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
    .collect()
}

/// How many entries one READDIR returns (small, so listings take several).
const READDIR_BATCH: usize = 3;

impl Server {
    pub fn new(tree: Tree) -> Server {
        Server {
            tree,
            handles: HashMap::new(),
            next_handle: 0,
        }
    }

    fn new_handle(&mut self, open: Open) -> Response {
        self.next_handle += 1;
        let h = format!("h{}", self.next_handle).into_bytes();
        self.handles.insert(h.clone(), open);
        Response::Handle(h)
    }

    /// The reply to one request.
    pub fn answer(&mut self, req: &Request) -> Response {
        match req {
            Request::Open { path, flags, .. } => self.open(&normalize(path), *flags),
            Request::Close { handle } => match self.handles.remove(handle) {
                Some(_) => ok(),
                None => failure("bad handle"),
            },
            Request::Read {
                handle,
                offset,
                len,
            } => self.read(handle, *offset, *len),
            Request::Write {
                handle,
                offset,
                data,
            } => self.write(handle, *offset, data),
            Request::Stat { path } => self.stat(&self.tree.follow(&normalize(path))),
            Request::Lstat { path } => self.stat(&normalize(path)),
            Request::Fstat { handle } => match self.handles.get(handle) {
                Some(Open::File(p)) => self.stat(&p.clone()),
                _ => failure("bad handle"),
            },
            Request::Setstat { path, .. } => match self.tree.nodes.get(&normalize(path)) {
                Some(_) => ok(),
                None => missing(),
            },
            Request::Fsetstat { handle, .. } => match self.handles.get(handle) {
                Some(_) => ok(),
                None => failure("bad handle"),
            },
            Request::Opendir { path } => self.opendir(&self.tree.follow(&normalize(path))),
            Request::Readdir { handle } => match self.handles.get_mut(handle) {
                Some(Open::Dir(entries)) if entries.is_empty() => {
                    status(StatusCode::Eof, "End of file")
                }
                Some(Open::Dir(entries)) => {
                    let n = entries.len().min(READDIR_BATCH);
                    Response::Name(entries.drain(..n).collect())
                }
                _ => failure("bad handle"),
            },
            Request::Remove { path } => self.remove(&normalize(path), false),
            Request::Rmdir { path } => self.remove(&normalize(path), true),
            Request::Mkdir { path, .. } => self.create(normalize(path), Node::Dir),
            Request::Symlink { target, link, .. } => {
                self.create(normalize(link), Node::Link(target.clone()))
            }
            Request::Realpath { path } => one_name(normalize(path)),
            Request::Readlink { path } => match self.tree.nodes.get(&normalize(path)) {
                Some(Node::Link(t)) => one_name(t.clone()),
                Some(_) => failure("not a symlink"),
                None => missing(),
            },
            Request::Rename { old, new } => self.rename(&normalize(old), normalize(new), false),
            Request::Extended(e) => self.extended(e),
        }
    }

    fn extended(&mut self, e: &ExtendedRequest) -> Response {
        match e {
            ExtendedRequest::Limits => Response::ExtendedReply(
                Limits {
                    max_packet_length: 64 * 1024,
                    max_read_length: MAX_READ,
                    max_write_length: 32 * 1024,
                    max_open_handles: 16,
                }
                .encode(),
            ),
            ExtendedRequest::PosixRename { old, new } => {
                self.rename(&normalize(old), normalize(new), true)
            }
            ExtendedRequest::ExpandPath { path } => {
                let p = path.strip_prefix(b"~").unwrap_or(path);
                one_name(normalize(p))
            }
            ExtendedRequest::Statvfs { .. } | ExtendedRequest::Fstatvfs { .. } => {
                let s = Statvfs {
                    bsize: 4096,
                    frsize: 4096,
                    blocks: 1000,
                    bfree: 500,
                    bavail: 400,
                    files: 100,
                    ffree: 50,
                    favail: 40,
                    fsid: 1,
                    flag: 0,
                    namemax: 255,
                };
                Response::ExtendedReply(s.encode())
            }
            ExtendedRequest::Fsync { .. } | ExtendedRequest::Lsetstat { .. } => ok(),
            ExtendedRequest::Hardlink { old, new } => match self.tree.nodes.get(&normalize(old)) {
                Some(n) => {
                    let n = n.clone();
                    self.create(normalize(new), n)
                }
                None => missing(),
            },
            _ => status(StatusCode::OpUnsupported, "unsupported"),
        }
    }

    fn stat(&self, path: &[u8]) -> Response {
        match self.tree.attrs(path) {
            Some(a) => Response::Attrs(a),
            None => missing(),
        }
    }

    fn open(&mut self, path: &[u8], flags: OpenFlags) -> Response {
        let path = self.tree.follow(path);
        let exists = self.tree.nodes.get(&path).cloned();
        if !flags.contains(OpenFlags::WRITE) {
            return match exists {
                Some(Node::File(_)) => self.new_handle(Open::File(path)),
                Some(_) => failure("not a regular file"),
                None => missing(),
            };
        }
        match exists {
            Some(Node::File(_)) if flags.contains(OpenFlags::EXCL) => {
                return failure("file exists");
            }
            Some(Node::File(_)) if flags.contains(OpenFlags::TRUNC) => {
                self.tree.nodes.insert(path.clone(), Node::File(Vec::new()));
            }
            Some(Node::File(_)) => {}
            Some(_) => return failure("not a regular file"),
            None if !flags.contains(OpenFlags::CREAT) => return missing(),
            None => {
                if !matches!(self.tree.nodes.get(parent(&path)), Some(Node::Dir)) {
                    return missing();
                }
                self.tree.nodes.insert(path.clone(), Node::File(Vec::new()));
            }
        }
        self.new_handle(Open::File(path))
    }

    fn read(&self, handle: &[u8], offset: u64, len: u32) -> Response {
        let Some(Open::File(path)) = self.handles.get(handle) else {
            return failure("bad handle");
        };
        let Some(Node::File(data)) = self.tree.nodes.get(path) else {
            return failure("file vanished");
        };
        let len = u64::from(len).min(MAX_READ);
        match usize::try_from(offset) {
            Ok(o) if o < data.len() => {
                let end = (o as u64 + len).min(data.len() as u64) as usize;
                Response::Data(data[o..end].to_vec())
            }
            _ => status(StatusCode::Eof, "End of file"),
        }
    }

    fn write(&mut self, handle: &[u8], offset: u64, bytes: &[u8]) -> Response {
        let Some(Open::File(path)) = self.handles.get(handle) else {
            return failure("bad handle");
        };
        let Some(Node::File(data)) = self.tree.nodes.get_mut(path) else {
            return failure("file vanished");
        };
        let Some(end) = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(bytes.len()))
            .filter(|&e| e <= 1 << 24)
        else {
            return failure("file too large");
        };
        let start = end - bytes.len();
        if data.len() < end {
            data.resize(end, 0);
        }
        data[start..end].copy_from_slice(bytes);
        ok()
    }

    fn opendir(&mut self, path: &[u8]) -> Response {
        if !matches!(self.tree.nodes.get(path), Some(Node::Dir)) {
            return match self.tree.nodes.get(path) {
                Some(_) => failure("not a directory"),
                None => missing(),
            };
        }
        let mut entries: VecDeque<NameEntry> = [b".".to_vec(), b"..".to_vec()]
            .into_iter()
            .map(|n| NameEntry {
                longname: n.clone(),
                filename: n,
                attrs: self.tree.attrs(path).unwrap_or_default(),
            })
            .collect();
        for (name, full) in self.tree.children(path) {
            entries.push_back(NameEntry {
                longname: name.clone(),
                filename: name,
                attrs: self.tree.attrs(&full).unwrap_or_default(),
            });
        }
        self.new_handle(Open::Dir(entries))
    }

    fn remove(&mut self, path: &[u8], dir: bool) -> Response {
        match self.tree.nodes.get(path) {
            Some(Node::Dir) if dir && self.tree.children(path).is_empty() => {}
            Some(Node::Dir) if dir => return failure("directory not empty"),
            Some(Node::Dir) => return failure("is a directory"),
            Some(_) if dir => return failure("not a directory"),
            Some(_) => {}
            None => return missing(),
        }
        self.tree.nodes.remove(path);
        ok()
    }

    fn create(&mut self, path: Vec<u8>, node: Node) -> Response {
        if self.tree.nodes.contains_key(&path) {
            return failure("file exists");
        }
        if !matches!(self.tree.nodes.get(parent(&path)), Some(Node::Dir)) {
            return missing();
        }
        self.tree.nodes.insert(path, node);
        ok()
    }

    fn rename(&mut self, old: &[u8], new: Vec<u8>, replace: bool) -> Response {
        if !self.tree.nodes.contains_key(old) {
            return missing();
        }
        if self.tree.nodes.contains_key(&new) && !replace {
            return failure("file exists");
        }
        if !matches!(self.tree.nodes.get(parent(&new)), Some(Node::Dir)) || new.starts_with(old) {
            return failure("cannot move there");
        }
        // The node and, for a directory, everything below it.
        let below = join(old, b"");
        let moved: Vec<Vec<u8>> = self
            .tree
            .nodes
            .keys()
            .filter(|k| k.as_slice() == old || k.starts_with(&below))
            .cloned()
            .collect();
        for k in moved {
            if let Some(n) = self.tree.nodes.remove(&k) {
                let mut to = new.clone();
                to.extend_from_slice(&k[old.len()..]);
                self.tree.nodes.insert(to, n);
            }
        }
        ok()
    }
}
