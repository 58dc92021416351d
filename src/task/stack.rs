//! A walk over a stack of work that grows as it is done (a tree's directories), a
//! bounded number of items at once.

use std::cell::{Cell, RefCell};
use std::future::Future;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use super::spawn;

/// Visits the items of `stack`, each as its own task, at most `in_flight` at once, until
/// the stack is empty and every visit ended (a visit may push more), or `stop` is set (no
/// visit starts then; those running end). The last pushed is visited first: depth-first
/// for a tree, so the stack of those waiting stays short.
pub async fn walk_stack<D, F, Fut>(
    stack: &RefCell<Vec<D>>,
    in_flight: usize,
    stop: &Cell<bool>,
    mut visit: F,
) where
    F: FnMut(D) -> Fut,
    Fut: Future<Output = ()> + 'static,
{
    let mut running = FuturesUnordered::new();
    loop {
        while running.len() < in_flight.max(1) && !stop.get() {
            let Some(item) = stack.borrow_mut().pop() else {
                break;
            };
            running.push(spawn(visit(item)));
        }
        if running.next().await.is_none() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{Runtime, yield_now};
    use std::rc::Rc;

    /// A tree of depth 4 and fan-out 3, its nodes pushed by their parents' visits.
    #[test]
    fn visits_what_visits_push_at_most_in_flight_at_once() {
        let rt = Runtime::new().unwrap();
        let stack = Rc::new(RefCell::new(vec![0u32]));
        let (running, peak, visited) = (
            Rc::new(Cell::new(0)),
            Rc::new(Cell::new(0)),
            Rc::new(Cell::new(0)),
        );
        rt.block_on(walk_stack(&stack.clone(), 3, &Cell::new(false), |depth| {
            let (stack, running, peak, visited) = (
                stack.clone(),
                running.clone(),
                peak.clone(),
                visited.clone(),
            );
            async move {
                running.set(running.get() + 1);
                peak.set(peak.get().max(running.get()));
                yield_now().await;
                if depth < 4 {
                    stack.borrow_mut().extend([depth + 1; 3]);
                }
                yield_now().await;
                running.set(running.get() - 1);
                visited.set(visited.get() + 1);
            }
        }));
        assert_eq!(visited.get(), 1 + 3 + 9 + 27 + 81);
        assert_eq!(peak.get(), 3);
    }

    #[test]
    fn a_stop_starts_no_more_visits() {
        let rt = Runtime::new().unwrap();
        let stack = RefCell::new(vec![1, 2, 3, 4, 5]);
        let stop = Rc::new(Cell::new(false));
        let visited = Rc::new(Cell::new(0));
        rt.block_on(walk_stack(&stack, 1, &stop.clone(), |_| {
            let (stop, visited) = (stop.clone(), visited.clone());
            async move {
                visited.set(visited.get() + 1);
                stop.set(visited.get() == 2);
            }
        }));
        assert_eq!(visited.get(), 2);
        assert_eq!(stack.borrow().len(), 3);
    }
}
