//! A fake SFTP server for the hostile-server tests (`tests/hostile.rs`).
//!
//! It answers like a real server from an in-memory tree, with sftpipe's own codec
//! (`sftpipe::proto` decodes the requests and encodes the replies), on its stdin and
//! stdout: the test binary runs itself as a `-D` server command, so the client goes
//! through the real spawn path. A [`Plan`] decides how the replies are damaged on the way
//! out: wrong ids, types, lengths, counts, hostile names, truncation, hanging up at a
//! given byte.
//!
//! Every request still gets exactly one reply, or the damage is something the client must
//! see as an error (an id it never sent, a second reply, a broken frame followed by the
//! end of the stream), so a client that waits forever has a bug: no plan makes the server
//! silently keep a reply.

mod damage;
pub mod tree;

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::Path;

use sftpipe::proto::{ClientPacket, Framer, Request, ServerPacket};

use damage::Damage;
use tree::{Server, Tree};

/// The argument that makes the test binary a fake server:
/// `EXE --fake-sftp-server PLAN TRAP [LAYOUT]`.
pub const ARG: &str = "--fake-sftp-server";

/// How the replies are damaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Every reply as a correct server sends it.
    Honest,
    /// Correct replies, but the stream ends after this many bytes.
    HangUpAfter(usize),
    /// Seeded random damage to about one reply in [`damage::RATE`].
    Random(u64),
    /// Every listing, REALPATH and READLINK answer with seeded hostile names (`..`, `a/b`,
    /// duplicates of real names with other types, ...); nothing else damaged.
    Names(u64),
    /// Every entry of every listing followed by a twin of the same name and another type:
    /// a directory by a symlink, anything else by a directory.
    Twins,
}

impl Plan {
    /// The command-line form, parsed back by [`Plan::parse`].
    pub fn arg(&self) -> String {
        match self {
            Plan::Honest => "honest".into(),
            Plan::HangUpAfter(n) => format!("hangup={n}"),
            Plan::Random(seed) => format!("random={seed}"),
            Plan::Names(seed) => format!("names={seed}"),
            Plan::Twins => "twins".into(),
        }
    }

    /// Parses [`Plan::arg`]'s form.
    pub fn parse(s: &str) -> Option<Plan> {
        match s {
            "honest" => return Some(Plan::Honest),
            "twins" => return Some(Plan::Twins),
            _ => {}
        }
        let (k, v) = s.split_once('=')?;
        match k {
            "hangup" => v.parse().ok().map(Plan::HangUpAfter),
            "random" => v.parse().ok().map(Plan::Random),
            "names" => v.parse().ok().map(Plan::Names),
            _ => None,
        }
    }
}

/// The `-D` command line running this test binary as a fake server. `trap` is a local
/// directory the hostile names and links point into (see [`Tree::sample`]); `layout`, a
/// file where the server writes the length of every packet it sent, one per line.
pub fn command(plan: Plan, trap: &Path, layout: Option<&Path>) -> String {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut words = vec![exe.as_path(), trap];
    words.extend(layout);
    // `-D` splits its command on white space.
    for w in &words {
        let w = w.display().to_string();
        assert!(!w.contains(char::is_whitespace), "a path with spaces: {w}");
    }
    let layout = layout.map_or(String::new(), |l| format!(" {}", l.display()));
    format!(
        "{} {ARG} {} {}{layout}",
        exe.display(),
        plan.arg(),
        trap.display()
    )
}

/// If this process was started as a fake server (`EXE --fake-sftp-server PLAN TRAP`),
/// serves stdin/stdout until the client hangs up and exits; otherwise returns.
pub fn run_if_asked() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some(ARG) {
        return;
    }
    let (Some(plan), Some(trap)) = (args.get(2).and_then(|p| Plan::parse(p)), args.get(3)) else {
        eprintln!("fake server: usage: {ARG} honest|hangup=N|random=SEED TRAP_DIR [LAYOUT]");
        std::process::exit(2);
    };
    let mut packets = Vec::new();
    let code = match serve(plan, Tree::sample(trap.as_bytes()), &mut packets) {
        Ok(()) => 0,
        Err(why) => {
            eprintln!("fake server: {why}");
            1
        }
    };
    if let Some(layout) = args.get(4) {
        let lines: String = packets.iter().map(|n| format!("{n}\n")).collect();
        if let Err(e) = std::fs::write(layout, lines) {
            eprintln!("fake server: cannot write {layout}: {e}");
        }
    }
    std::process::exit(code);
}

/// A reply on its way out, with the request it answers (`None` for VERSION).
pub struct Reply {
    pub request: Option<(u32, Request)>,
    pub packet: ServerPacket,
}

/// Serves stdin/stdout until the client hangs up (or the plan does). `packets` gets the
/// length of each honest packet sent.
pub fn serve(plan: Plan, tree: Tree, packets: &mut Vec<usize>) -> Result<(), String> {
    let mut input = std::io::stdin().lock();
    let mut output = std::fs::File::from(
        std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| format!("stdout: {e}"))?,
    );
    let mut server = Server::new(tree);
    let mut damage = Damage::new(plan);
    let mut framer = Framer::new(1 << 20);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = input.read(&mut buf).map_err(|e| format!("stdin: {e}"))?;
        if n == 0 {
            return Ok(());
        }
        framer.push(&buf[..n]);
        let mut batch = Vec::new();
        while let Some(body) = framer.next_packet().map_err(|e| e.to_string())? {
            let packet =
                ClientPacket::decode(body).map_err(|e| format!("undecodable request: {e}"))?;
            batch.push(match packet {
                ClientPacket::Init { .. } => Reply {
                    request: None,
                    packet: ServerPacket::Version {
                        version: 3,
                        extensions: tree::extensions(),
                    },
                },
                ClientPacket::Request { id, request } => {
                    damage.seen.insert(id);
                    Reply {
                        packet: ServerPacket::Response {
                            id,
                            response: server.answer(&request),
                        },
                        request: Some((id, request)),
                    }
                }
            });
        }
        if plan == Plan::Honest {
            packets.extend(batch.iter().map(|r| {
                let mut v = Vec::new();
                r.packet.encode(&mut v);
                v.len()
            }));
        }
        let (bytes, hang_up) = damage.render(batch);
        if output.write_all(&bytes).is_err() || hang_up {
            // The client went away, or the plan ends the stream here.
            return Ok(());
        }
    }
}
