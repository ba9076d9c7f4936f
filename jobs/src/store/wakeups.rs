//! Per-queue wake-up signals shared by every worker of a process.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::Notify;

#[derive(Default)]
pub struct Wakeups {
    queues: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Wakeups {
    /// The signal for `queue`; wait on it with `notified()` next to a poll timer.
    pub fn queue(&self, queue: &str) -> Arc<Notify> {
        let mut map = self.queues.lock().expect("wakeups lock");
        map.entry(queue.to_string()).or_default().clone()
    }

    pub fn notify(&self, queue: &str) {
        let n = self.queue(queue);
        // notify_one stores a permit if nobody waits yet, so a wake-up between a claim that found
        // nothing and the next wait is not lost.
        n.notify_one();
        n.notify_waiters();
    }
}
