//! sftpipe: a fast SFTP client that drives the system `ssh`.
//!
//! sftpipe spawns `ssh [options] -s -- HOST sftp` (or, with
//! [`ConnectOptions::local_server`], a local `sftp-server`) and speaks SFTP version 3 with
//! OpenSSH's extensions over its pipes, from one `mio` event loop. Every operation is a
//! cooperative task, so thousands of files move concurrently over one connection.
//!
//! * [`Session`]: blocking methods for every operation.
//! * [`Sftp`]: the same operations as futures, to run many at once with [`Session::run`]
//!   and [`task::spawn`].
//! * [`proto`]: the wire format, pure and I/O-free.
//! * [`backend::Backend`]: SFTP, or for servers without it the legacy scp protocol
//!   ([`scp`]), for `get` and `put`.
//!
//! ```no_run
//! use sftpipe::{ConnectOptions, Session};
//! # fn main() -> sftpipe::Result<()> {
//! let session = Session::connect(&ConnectOptions::local_server("/usr/lib/openssh/sftp-server"))?;
//! let attrs = session.stat("/etc/hostname")?;
//! println!("{} bytes", attrs.size.unwrap_or(0));
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod backend;
mod child;
pub mod client;
pub mod error;
pub mod glob;
pub mod interrupt;
pub mod location;
pub mod mirror;
pub mod proto;
pub mod reactor;
pub mod reprepro;
pub mod scp;
pub mod serve;
pub mod session;
pub mod task;
pub mod transfer;
pub mod transport;

pub use client::{Handle, Prefetch, Sftp};
pub use error::{ConnectionError, Error, Result};
pub use proto::{FileAttributes, FileType, NameEntry, OpenFlags, StatusCode};
pub use session::{File, Session};
pub use transport::{ConnectOptions, Transport};
