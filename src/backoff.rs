//! Exponential backoff with full jitter: the one wait-before-retrying policy of the network
//! sinks, the file sink and the egress proxy.

use std::time::Duration;

/// Exponential backoff with full jitter: attempt n waits a uniform random time in
/// `[0, min(cap, base * 2^n)]`, so that many pillions recovering together do not stampede.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff { base, cap, attempt: 0 }
    }

    /// The wait before the next attempt; `retry_after` (from the backend) wins when given.
    pub fn next(&mut self, retry_after: Option<Duration>) -> Duration {
        let ceiling = self.base.saturating_mul(1u32 << self.attempt.min(20)).min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        if let Some(after) = retry_after {
            return after;
        }
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(fastrand::u64(0..=nanos))
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_with_jitter_and_honours_retry_after() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        for attempt in 0..30u32 {
            let ceiling = Duration::from_millis(100).saturating_mul(1 << attempt.min(20)).min(Duration::from_secs(2));
            assert!(backoff.next(None) <= ceiling);
        }
        assert_eq!(backoff.next(Some(Duration::from_secs(7))), Duration::from_secs(7));
        assert_eq!(backoff.attempts(), 31);
    }
}
