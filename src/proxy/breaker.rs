//! Per-destination circuit breakers for the egress proxy: after `consecutive_failures`
//! failures a destination is open (requests fail fast with 503) for `open_for`; then one probe
//! request is let through (half-open), and its outcome closes or reopens the circuit. The state
//! is exported as `pillion_circuit_breaker_state` (0 closed, 1 open, 2 half-open).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::time::Instant;

use super::metrics::DestinationLabel;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// A probe went out at `since`; if it never reports back, another may go after `open_for`.
    HalfOpen {
        since: Instant,
    },
}

impl State {
    fn gauge(self) -> i64 {
        match self {
            State::Closed { .. } => 0,
            State::Open { .. } => 1,
            State::HalfOpen { .. } => 2,
        }
    }
}

/// Whether a request may go to its destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The circuit is closed.
    Allowed,
    /// The circuit was open long enough: this request is the probe.
    Probe,
    /// Open (or a probe is already out): answer 503 now.
    Rejected,
}

/// The breakers of every destination seen.
pub struct Breakers {
    threshold: u32,
    open_for: Duration,
    states: Mutex<HashMap<Arc<str>, State>>,
    gauge: Family<DestinationLabel, Gauge>,
}

impl Breakers {
    pub fn new(threshold: u32, open_for: Duration, gauge: Family<DestinationLabel, Gauge>) -> Breakers {
        Breakers { threshold: threshold.max(1), open_for, states: Mutex::new(HashMap::new()), gauge }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, State>> {
        self.states.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, states: &mut HashMap<Arc<str>, State>, destination: &Arc<str>, state: State) {
        states.insert(Arc::clone(destination), state);
        self.gauge.get_or_create(&DestinationLabel { server_address: Arc::clone(destination) }).set(state.gauge());
    }

    /// Decides whether a request to `destination` goes ahead.
    pub fn admit(&self, destination: &Arc<str>) -> Admission {
        let mut states = self.lock();
        match states.get(destination).copied() {
            None | Some(State::Closed { .. }) => Admission::Allowed,
            Some(State::Open { until }) if Instant::now() >= until => {
                self.set(&mut states, destination, State::HalfOpen { since: Instant::now() });
                Admission::Probe
            }
            Some(State::HalfOpen { since }) if Instant::now() >= since + self.open_for => {
                self.set(&mut states, destination, State::HalfOpen { since: Instant::now() });
                Admission::Probe
            }
            Some(State::Open { .. } | State::HalfOpen { .. }) => Admission::Rejected,
        }
    }

    /// Records a request's outcome (a failure is a connect error, a timeout or a 5xx).
    pub fn record(&self, destination: &Arc<str>, success: bool) {
        let mut states = self.lock();
        let current = states.get(destination).copied().unwrap_or(State::Closed { failures: 0 });
        let next = match (current, success) {
            (_, true) => State::Closed { failures: 0 },
            (State::HalfOpen { .. }, false) => State::Open { until: Instant::now() + self.open_for },
            (State::Closed { failures }, false) if failures + 1 >= self.threshold => {
                State::Open { until: Instant::now() + self.open_for }
            }
            (State::Closed { failures }, false) => State::Closed { failures: failures + 1 },
            // A late result from before the circuit opened changes nothing.
            (State::Open { until }, false) => State::Open { until },
        };
        if next != current || !states.contains_key(destination) {
            self.set(&mut states, destination, next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_and_recovers_through_a_probe() {
        let breakers = Breakers::new(3, Duration::from_secs(30), Family::default());
        let dest: Arc<str> = Arc::from("svc:80");
        for _ in 0..2 {
            assert_eq!(breakers.admit(&dest), Admission::Allowed);
            breakers.record(&dest, false);
        }
        breakers.record(&dest, true);
        for _ in 0..3 {
            breakers.record(&dest, false);
        }
        assert_eq!(breakers.admit(&dest), Admission::Rejected);
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(breakers.admit(&dest), Admission::Probe);
        assert_eq!(breakers.admit(&dest), Admission::Rejected, "one probe at a time");
        breakers.record(&dest, false);
        assert_eq!(breakers.admit(&dest), Admission::Rejected, "a failed probe reopens");
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(breakers.admit(&dest), Admission::Probe);
        breakers.record(&dest, true);
        assert_eq!(breakers.admit(&dest), Admission::Allowed);
    }
}
