//! A group of tasks of which only so many run at once.

use std::future::Future;

use super::{Semaphore, spawn_detached};

/// Runs each future given to [`TaskGroup::spawn`] as its own task, at most `limit` at
/// once, so a batch of a million files holds a bounded number of suspended tasks (and of
/// the local files they keep open); [`TaskGroup::join`] waits for all of them.
///
/// No handle is kept per task: each holds one of the group's permits until it ends, so
/// the group is done when every permit is back. (A list of handles reaped now and then
/// cost a scan of thousands of handles per spawn once that many were running.)
pub struct TaskGroup {
    slots: Semaphore,
}

impl TaskGroup {
    /// A group running at most `limit` tasks at once (at least one).
    pub fn new(limit: usize) -> Self {
        TaskGroup {
            slots: Semaphore::new(limit.max(1)),
        }
    }

    /// Waits for a free slot, then starts `f` as a task holding it until it ends.
    pub async fn spawn(&mut self, f: impl Future<Output = ()> + 'static) {
        let slot = self.slots.acquire(1).await;
        spawn_detached(async move {
            f.await;
            drop(slot);
        });
    }

    /// Waits until every task of the group has ended.
    pub async fn join(self) {
        let all = self.slots.capacity();
        drop(self.slots.acquire(all).await);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{Runtime, yield_now};
    use std::cell::Cell;
    use std::rc::Rc;

    #[test]
    fn runs_every_task_at_most_limit_at_once_and_joins_them_all() {
        let rt = Runtime::new().unwrap();
        let running = Rc::new(Cell::new(0));
        let peak = Rc::new(Cell::new(0));
        let done = Rc::new(Cell::new(0));
        let tasks = 5000;
        rt.block_on(async {
            let mut group = TaskGroup::new(3);
            for _ in 0..tasks {
                let (running, peak, done) = (running.clone(), peak.clone(), done.clone());
                group
                    .spawn(async move {
                        running.set(running.get() + 1);
                        peak.set(peak.get().max(running.get()));
                        yield_now().await;
                        yield_now().await;
                        running.set(running.get() - 1);
                        done.set(done.get() + 1);
                    })
                    .await;
            }
            group.join().await;
            assert_eq!(done.get(), tasks);
        });
        assert_eq!(peak.get(), 3);
    }
}
