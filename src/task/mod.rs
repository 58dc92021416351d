//! The task engine: a small single-threaded executor and the primitives tasks await —
//! a FIFO semaphore (open files, bytes in flight) and directory locks (create a remote
//! parent directory once, however many files wait for it).

mod countdown;
pub mod dirlock;
mod executor;
mod group;
mod semaphore;
mod stack;

pub use countdown::{Countdown, Token};
pub use dirlock::DirLocks;
pub(crate) use executor::spawn_detached;
pub use executor::{JoinHandle, Runtime, join_growing, spawn, yield_now};
pub use group::TaskGroup;
pub use semaphore::{Acquire, Permit, Semaphore};
pub use stack::walk_stack;
