//! Spreads accepted connections evenly over the worker threads.
//!
//! Every worker accepts on the same listening sockets, and a worker that is
//! awake when a burst of connections arrives takes all it can: `strace` of
//! the HTTP/1.1 benchmark showed 50 new connections split 52:2 and 51:0
//! between two workers, so one core did all the proxying while the other
//! idled, and the same load ran at 31,700 or 40,600 requests/s depending on
//! the split (issue 6). Since a connection never changes threads
//! (`server::spawn_worker`), the split at accept time decides the load for
//! the connection's whole life.
//!
//! So the accepting worker hands the connection to the worker with the
//! fewest open connections (itself on a tie), as Envoy's "exact" connection
//! balancer does. A hand-over costs a channel send and a wake-up of the
//! other thread, small next to the TLS handshake that follows.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

/// Open-connection counts and the inbox of each worker. `T` is what a
/// hand-over carries (the accepted socket and what serving it needs).
pub(super) struct Balancer<T> {
    workers: Vec<Worker<T>>,
}

struct Worker<T> {
    open: AtomicUsize,
    /// False once the worker is known not to take connections (its thread
    /// did not start, or a hand-over found its inbox closed): it is never
    /// picked again. A worker that stopped is noticed at the next hand-over.
    alive: AtomicBool,
    inbox: mpsc::UnboundedSender<T>,
}

/// Counts one connection as open on its worker until dropped.
pub(super) struct Open<T> {
    balancer: Arc<Balancer<T>>,
    worker: usize,
}

impl<T> Balancer<T> {
    /// A balancer for `n` workers (at least one) and each worker's inbox,
    /// in worker order.
    pub(super) fn new(n: usize) -> (Arc<Self>, Vec<mpsc::UnboundedReceiver<T>>) {
        let (workers, inboxes) = (0..n.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                let worker = Worker {
                    open: AtomicUsize::new(0),
                    alive: AtomicBool::new(true),
                    inbox: tx,
                };
                (worker, rx)
            })
            .unzip();
        (Arc::new(Balancer { workers }), inboxes)
    }

    /// The worker that should serve a connection `me` just accepted: the
    /// live one with the fewest open connections, `me` whenever it has no
    /// more than that (no hand-over without a gain).
    pub(super) fn pick(&self, me: usize) -> usize {
        let mine = self.workers[me].open.load(Ordering::Relaxed);
        let mut best = (me, mine);
        for (i, w) in self.workers.iter().enumerate() {
            if i == me || !w.alive.load(Ordering::Relaxed) {
                continue;
            }
            let open = w.open.load(Ordering::Relaxed);
            if open < best.1 {
                best = (i, open);
            }
        }
        best.0
    }

    /// Open connections over all workers (`systemctl status`).
    pub(super) fn open_total(&self) -> usize {
        self.workers
            .iter()
            .map(|w| w.open.load(Ordering::Relaxed))
            .sum()
    }

    /// Counts a connection as open on `worker` until the guard drops.
    pub(super) fn open(self: &Arc<Self>, worker: usize) -> Open<T> {
        self.workers[worker].open.fetch_add(1, Ordering::Relaxed);
        Open {
            balancer: Arc::clone(self),
            worker,
        }
    }

    /// Sends `item` to `worker`'s inbox. When that worker is gone the item
    /// comes back (for the caller to serve itself) and the worker is not
    /// picked again.
    pub(super) fn hand_over(&self, worker: usize, item: T) -> Result<(), T> {
        self.workers[worker].inbox.send(item).map_err(|e| {
            self.retire(worker);
            e.0
        })
    }

    /// Stops picking `worker` (its thread could not be started, or its
    /// inbox is closed).
    pub(super) fn retire(&self, worker: usize) {
        self.workers[worker].alive.store(false, Ordering::Relaxed);
    }
}

impl<T> Drop for Open<T> {
    fn drop(&mut self) {
        self.balancer.workers[self.worker]
            .open
            .fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts<T>(b: &Balancer<T>) -> Vec<usize> {
        b.workers
            .iter()
            .map(|w| w.open.load(Ordering::Relaxed))
            .collect()
    }

    #[test]
    fn a_burst_accepted_by_one_worker_is_split_evenly() {
        let (b, _inboxes) = Balancer::<()>::new(2);
        // Worker 0 accepts all 50 connections of a burst (what the kernel
        // did in the benchmark); each goes where the fewest are open.
        let open: Vec<_> = (0..50).map(|_| b.open(b.pick(0))).collect();
        assert_eq!(counts(&b), vec![25, 25]);
        drop(open);
        assert_eq!(counts(&b), vec![0, 0]);
    }

    #[test]
    fn the_accepting_worker_keeps_a_connection_on_a_tie() {
        let (b, _inboxes) = Balancer::<()>::new(3);
        let _a = b.open(0);
        let _b = b.open(1);
        let _c = b.open(2);
        assert_eq!(b.pick(1), 1);
        let _d = b.open(1);
        assert_ne!(b.pick(1), 1, "worker 1 now has more than the others");
    }

    #[test]
    fn closed_connections_make_room_on_their_worker() {
        let (b, _inboxes) = Balancer::<()>::new(2);
        let first = b.open(0);
        let _second = b.open(0);
        let _third = b.open(1);
        assert_eq!(b.pick(0), 1);
        drop(first);
        assert_eq!(b.pick(0), 0);
        assert_eq!(b.pick(1), 1);
    }

    #[test]
    fn a_worker_without_a_running_inbox_gives_the_item_back_and_is_skipped() {
        let (b, mut inboxes) = Balancer::<u32>::new(2);
        drop(inboxes.pop()); // worker 1's thread never started
        let _busy = b.open(0);
        assert_eq!(b.pick(0), 1);
        assert_eq!(b.hand_over(1, 7), Err(7));
        assert_eq!(b.pick(0), 0, "a retired worker is not picked again");
    }

    #[test]
    fn a_handed_over_item_arrives_in_the_workers_inbox() {
        let (b, mut inboxes) = Balancer::<u32>::new(2);
        assert_eq!(b.hand_over(1, 7), Ok(()));
        assert_eq!(inboxes[1].try_recv(), Ok(7));
        assert!(inboxes[0].try_recv().is_err());
    }
}
