//! Per-connection bookkeeping for the idle timeout: requests in flight are counted, and a
//! connection with nothing in flight for `idle` since its last request ended is closed. (A
//! client that sends bytes without finishing a request head is the header-read timeout's job.)

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// When a connection's last request ended, and how many of its requests are in flight.
#[derive(Debug)]
pub struct Activity {
    epoch: Instant,
    last_millis: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity { epoch: Instant::now(), last_millis: AtomicU64::new(0), in_flight: AtomicUsize::new(0) })
    }

    fn touch(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.last_millis.store(now, Ordering::Relaxed);
    }

    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub fn request_finished(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.touch();
    }

    /// `None` when the connection has been idle for `idle`; else when to look again.
    pub fn idle_deadline(&self, idle: Duration) -> Option<Instant> {
        let last = self.epoch + Duration::from_millis(self.last_millis.load(Ordering::Relaxed));
        let deadline = last + idle;
        let busy = self.in_flight.load(Ordering::Relaxed) > 0;
        match (busy, deadline > Instant::now()) {
            (true, _) => Some(Instant::now() + idle),
            (false, true) => Some(deadline),
            (false, false) => None,
        }
    }
}

/// Resolves once the connection has been idle for `idle` with nothing in flight.
pub async fn idle(activity: &Activity, idle: Duration) {
    while let Some(next) = activity.idle_deadline(idle) {
        tokio::time::sleep_until(next).await;
    }
}
