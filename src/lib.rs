//! sftpipe: a fast SFTP client that drives the system `ssh`.
//!
//! sftpipe spawns `ssh [options] -s -- HOST sftp` (or, with
//! [`ConnectOptions::local_server`], a local `sftp-server`) and speaks SFTP version 3 with
//! OpenSSH's extensions over its pipes, from one `mio` event loop. Every operation is a
//! cooperative task, so thousands of files move concurrently over one connection.
//!
//! Where to start:
//!
//! * [`ConnectOptions`]: how to reach the server (`ConnectOptions::host("h").port(22)`).
//! * [`Client`]: the handle to embed. `Send + Sync + Clone`; every operation returns a
//!   [`Reply`], a `Send` future that works under any executor (tokio, smol, a plain
//!   `block_on`), or `.wait()` for it from a plain thread. Calls from all threads share
//!   the one connection, pipelined.
//! * [`Session`]: the single-threaded engine itself, with blocking methods, and
//!   [`Sftp`]/[`Transfer`] futures to run many at once with [`Session::run`] on the
//!   calling thread (what the CLI uses).
//! * [`TransferOptions`], [`mirror`] ([`MirrorOptions`]): uploads, downloads, trees and
//!   mirrors; [`Error`] with [`Error::kind`] for matching.
//! * [`proto`]: the wire format, pure and I/O-free. [`lowlevel`]: the reactor and the
//!   channel, for those who drive the engine themselves.
//! * [`backend::Backend`]: SFTP, or for servers without it the legacy scp protocol
//!   ([`scp`]), for `get` and `put` ([`Transport`] in [`ConnectOptions`]).
//!
//! Library defaults are the CLI's: a mirror keeps modification times (unless
//! [`MirrorOptions::no_times`]); `put`/`get` and the tree transfers copy times and
//! modes only when asked ([`TransferOptions::preserve_times`], as `-p`).
//!
//! ```no_run
//! use sftpipe::{Client, ConnectOptions};
//! # fn main() -> sftpipe::Result<()> {
//! let client = Client::connect(&ConnectOptions::host("backup.example.org").port(2222))?;
//! let attrs = client.stat("/etc/hostname").wait()?;
//! println!("{} bytes", attrs.size.unwrap_or(0));
//! # Ok(()) }
//! ```
//!
//! The examples directory shows more: many threads on one handle, tokio, 1,000 uploads
//! at once, a mirror with progress, errors by kind.
#![warn(missing_docs)]

pub mod backend;
mod child;
pub mod client;
mod connect_options;
pub mod error;
pub mod glob;
pub mod interrupt;
pub mod location;
pub mod mirror;
pub mod pool;
pub mod proto;
#[doc(hidden)]
pub mod reactor;
pub mod reprepro;
pub mod scp;
pub mod serve;
pub mod session;
pub mod task;
mod threaded;
pub mod transfer;
pub mod transport;

pub use client::{Handle, Prefetch, Sftp};
pub use error::{ConnectionError, Error, Result};
pub use mirror::{MirrorOptions, MirrorReport, mirror_down, mirror_up};
pub use proto::{FileAttributes, FileType, NameEntry, OpenFlags, StatusCode};
pub use session::{File, Session};
pub use threaded::{Client, Reply, SharedProgress, block_on};
pub use transfer::{Progress, Report, Transfer, TransferOptions};
pub use transport::{ConnectOptions, Transport};

/// The engine's moving parts, for driving it directly: the event loop
/// ([`Reactor`](crate::lowlevel::Reactor)), the connection's I/O half
/// ([`Channel`](crate::lowlevel::Channel)) and its sources. The submit-level functions of
/// [`Sftp`] (`submit_*`, `call`) belong here too. Most users need none of it: see
/// [`Client`] and [`Session`].
pub mod lowlevel {
    pub use crate::reactor::{AsyncFd, Channel, ChildPipes, Reactor, Source};
    pub use crate::task::{Runtime, spawn};
}
