//! Load balancing over a named destination's endpoints: a weighted `split` picks a group first
//! (smooth weighted round robin, so 90/10 is 90/10 over every 100 requests), then `p2c_ewma` (of
//! two endpoints drawn at random, the one with the lower latency estimate times requests in
//! flight; Linkerd's choice) or `round_robin` picks the endpoint. An endpoint that fails
//! `consecutive_failures` times in a row is ejected for `eject_for`, then re-admitted. The set of
//! endpoints can be replaced at any time (discovery); endpoints that stay keep their state.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::time::Instant;

use super::metrics::EndpointLabels;
use super::settings::LoadBalancer;

/// How fast an unused endpoint's latency estimate fades (so a slow spell is forgiven).
const DECAY: Duration = Duration::from_secs(5);
/// An estimate also fades with the destination's traffic: by e once the destination has served
/// this many requests per endpoint without a sample from it. A latency spike then costs an
/// endpoint a few dozen requests, not the seconds of [`DECAY`].
const AGING_PER_ENDPOINT: f64 = 3.0;
/// Weight of a new latency sample in the estimate.
const ALPHA: f64 = 0.3;
/// Costs within this factor of each other are a tie, broken by the endpoint picked longer ago:
/// loopback jitter between equal endpoints must not starve one of them.
const TIE: f64 = 1.5;
/// The latency a failure counts as, so that p2c turns away from a failing endpoint at once.
const FAILURE_PENALTY: Duration = Duration::from_secs(1);

/// One endpoint and what the balancer knows of it.
#[derive(Debug)]
pub struct Endpoint {
    pub address: SocketAddr,
    in_flight: AtomicUsize,
    /// The pick counter's value when this endpoint was last picked.
    last_pick: AtomicU64,
    state: Mutex<EndpointState>,
}

#[derive(Debug)]
struct EndpointState {
    /// Latency estimate, in seconds, as of `updated`.
    estimate: f64,
    updated: Instant,
    /// The destination's pick counter at `updated`.
    updated_pick: u64,
    failures: u32,
    ejected_until: Option<Instant>,
}

impl Endpoint {
    fn new(address: SocketAddr) -> Arc<Endpoint> {
        Arc::new(Endpoint {
            address,
            in_flight: AtomicUsize::new(0),
            last_pick: AtomicU64::new(0),
            state: Mutex::new(EndpointState {
                estimate: 0.0,
                updated: Instant::now(),
                updated_pick: 0,
                failures: 0,
                ejected_until: None,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, EndpointState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Latency estimate (faded since its last sample) times the requests in flight plus one.
    fn cost(&self, age: Age) -> f64 {
        let estimate = age.fade(&self.lock());
        estimate * (self.in_flight.load(Ordering::Relaxed) + 1) as f64
    }

    fn ejected(&self, now: Instant) -> bool {
        self.lock().ejected_until.is_some_and(|until| until > now)
    }
}

/// Now, in time and in picks, to fade estimates by.
#[derive(Debug, Clone, Copy)]
struct Age {
    now: Instant,
    picks: u64,
    /// Picks over which an estimate fades by e.
    aging: f64,
}

impl Age {
    fn fade(self, state: &EndpointState) -> f64 {
        let idle = self.now.saturating_duration_since(state.updated).as_secs_f64() / DECAY.as_secs_f64();
        let unsampled = self.picks.saturating_sub(state.updated_pick) as f64 / self.aging;
        state.estimate * (-(idle + unsampled)).exp()
    }
}

/// Outlier ejection settings.
#[derive(Debug, Clone, Copy)]
pub struct Outlier {
    pub consecutive_failures: u32,
    pub eject_for: Duration,
}

/// A split group: endpoints by address, and a weight.
#[derive(Debug, Clone)]
pub struct Group {
    pub endpoints: Vec<SocketAddr>,
    pub weight: u32,
}

/// The balancer of one named destination.
pub struct Balancer {
    destination: Arc<str>,
    policy: LoadBalancer,
    outlier: Outlier,
    groups: Vec<Group>,
    /// Smooth weighted round robin's current weights, one per group.
    group_weights: Mutex<Vec<i64>>,
    endpoints: RwLock<Arc<Vec<Arc<Endpoint>>>>,
    next: AtomicUsize,
    picks: AtomicU64,
    gauge: Family<EndpointLabels, Gauge>,
}

/// An endpoint in use by one request: reports its outcome and latency once done.
pub struct Pick {
    pub endpoint: Arc<Endpoint>,
    started: Instant,
}

impl Balancer {
    pub fn new(
        destination: Arc<str>,
        policy: LoadBalancer,
        outlier: Outlier,
        groups: Vec<Group>,
        gauge: Family<EndpointLabels, Gauge>,
    ) -> Balancer {
        let group_weights = Mutex::new(vec![0; groups.len()]);
        let balancer = Balancer {
            destination,
            policy,
            outlier: Outlier { consecutive_failures: outlier.consecutive_failures.max(1), ..outlier },
            groups,
            group_weights,
            endpoints: RwLock::new(Arc::new(Vec::new())),
            next: AtomicUsize::new(0),
            picks: AtomicU64::new(0),
            gauge,
        };
        balancer.update_gauge();
        balancer
    }

    pub fn destination(&self) -> &Arc<str> {
        &self.destination
    }

    fn snapshot(&self) -> Arc<Vec<Arc<Endpoint>>> {
        Arc::clone(&self.endpoints.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The endpoints' addresses, in order.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.snapshot().iter().map(|e| e.address).collect()
    }

    /// Replaces the endpoint set; endpoints already known keep their estimates and ejections.
    pub fn set_endpoints(&self, addresses: &[SocketAddr]) {
        let current = self.snapshot();
        let mut next: Vec<Arc<Endpoint>> = Vec::with_capacity(addresses.len());
        for address in addresses {
            if next.iter().any(|e| e.address == *address) {
                continue;
            }
            let known = current.iter().find(|e| e.address == *address).cloned();
            next.push(known.unwrap_or_else(|| Endpoint::new(*address)));
        }
        *self.endpoints.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        self.update_gauge();
    }

    /// Picks an endpoint not in `tried` (unless every one was), preferring endpoints that are
    /// not ejected; `None` when there are no endpoints at all.
    pub fn pick(&self, tried: &[SocketAddr]) -> Option<Pick> {
        let now = Instant::now();
        let endpoints = self.snapshot();
        if endpoints.is_empty() {
            return None;
        }
        self.readmit(&endpoints, now);
        let untried: Vec<&Arc<Endpoint>> = endpoints.iter().filter(|e| !tried.contains(&e.address)).collect();
        let pool = if untried.is_empty() { endpoints.iter().collect() } else { untried };
        let pool = self.in_group(pool, now);
        let up: Vec<&Arc<Endpoint>> = pool.iter().copied().filter(|e| !e.ejected(now)).collect();
        // Every candidate ejected: trying one beats failing the request.
        let candidates = if up.is_empty() { pool } else { up };
        let endpoint = match self.policy {
            LoadBalancer::RoundRobin => {
                let index = self.next.fetch_add(1, Ordering::Relaxed) % candidates.len();
                candidates[index]
            }
            LoadBalancer::P2cEwma => p2c(&candidates, self.age(now, endpoints.len())),
        };
        endpoint.last_pick.store(self.picks.fetch_add(1, Ordering::Relaxed) + 1, Ordering::Relaxed);
        endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(Pick { endpoint: Arc::clone(endpoint), started: now })
    }

    /// With a split: the endpoints of the group whose turn it is (groups with no endpoint up in
    /// `pool` sit out). Without one, `pool` as it is.
    fn in_group<'a>(&self, pool: Vec<&'a Arc<Endpoint>>, now: Instant) -> Vec<&'a Arc<Endpoint>> {
        if self.groups.is_empty() {
            return pool;
        }
        let members = |group: &Group, up_only: bool| -> Vec<&'a Arc<Endpoint>> {
            pool.iter()
                .copied()
                .filter(|e| group.endpoints.contains(&e.address) && (!up_only || !e.ejected(now)))
                .collect()
        };
        let eligible: Vec<usize> = (0..self.groups.len())
            .filter(|&i| self.groups[i].weight > 0 && !members(&self.groups[i], true).is_empty())
            .collect();
        let Some(chosen) = self.next_group(&eligible) else {
            return pool;
        };
        let chosen = members(&self.groups[chosen], false);
        if chosen.is_empty() { pool } else { chosen }
    }

    /// Smooth weighted round robin (nginx's) over the `eligible` groups.
    fn next_group(&self, eligible: &[usize]) -> Option<usize> {
        let mut current = self.group_weights.lock().unwrap_or_else(|e| e.into_inner());
        let total: i64 = eligible.iter().map(|&i| i64::from(self.groups[i].weight)).sum();
        let mut best: Option<usize> = None;
        for &i in eligible {
            current[i] += i64::from(self.groups[i].weight);
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        let best = best?;
        current[best] -= total;
        Some(best)
    }

    fn age(&self, now: Instant, endpoints: usize) -> Age {
        Age { now, picks: self.picks.load(Ordering::Relaxed), aging: AGING_PER_ENDPOINT * endpoints.max(1) as f64 }
    }

    /// Records how a request to `pick` went: latency feeds the estimate, failures count toward
    /// ejection.
    pub fn report(&self, pick: Pick, success: bool) {
        let endpoint = &pick.endpoint;
        let now = Instant::now();
        let latency = if success { now.saturating_duration_since(pick.started) } else { FAILURE_PENALTY };
        let age = self.age(now, self.snapshot().len());
        let ejected = {
            let mut state = endpoint.lock();
            let faded = age.fade(&state);
            let sample = latency.as_secs_f64();
            state.estimate = if faded == 0.0 { sample } else { faded + ALPHA * (sample - faded) };
            state.updated = now;
            state.updated_pick = age.picks;
            if success {
                state.failures = 0;
                false
            } else {
                state.failures += 1;
                let eject = state.failures >= self.outlier.consecutive_failures && state.ejected_until.is_none();
                if eject {
                    state.ejected_until = Some(now + self.outlier.eject_for);
                }
                eject
            }
        };
        if ejected {
            tracing::warn!(destination = %self.destination, endpoint = %endpoint.address, eject_for = ?self.outlier.eject_for, "endpoint ejected after consecutive failures");
            self.update_gauge();
        }
    }

    /// Re-admits endpoints whose ejection is over (their failure count starts again).
    fn readmit(&self, endpoints: &[Arc<Endpoint>], now: Instant) {
        let mut changed = false;
        for endpoint in endpoints {
            let mut state = endpoint.lock();
            if state.ejected_until.is_some_and(|until| until <= now) {
                state.ejected_until = None;
                state.failures = 0;
                state.estimate = 0.0;
                changed = true;
                tracing::info!(destination = %self.destination, endpoint = %endpoint.address, "ejected endpoint re-admitted");
            }
        }
        if changed {
            self.update_gauge();
        }
    }

    /// Re-admits endpoints due back and refreshes `pillion_endpoints` (called on a timer, so the
    /// gauge is right without traffic).
    pub fn tick(&self) {
        let endpoints = self.snapshot();
        self.readmit(&endpoints, Instant::now());
    }

    fn update_gauge(&self) {
        let now = Instant::now();
        let endpoints = self.snapshot();
        let ejected = endpoints.iter().filter(|e| e.ejected(now)).count() as i64;
        let label = |state| EndpointLabels { destination: Arc::clone(&self.destination), state };
        self.gauge.get_or_create(&label("up")).set(endpoints.len() as i64 - ejected);
        self.gauge.get_or_create(&label("ejected")).set(ejected);
    }
}

impl Drop for Pick {
    /// Reported or abandoned (the client went away), the request is no longer in flight.
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Power of two choices: of two distinct random candidates, the cheaper; a tie (within [`TIE`])
/// goes to the one picked longer ago.
fn p2c<'a>(candidates: &[&'a Arc<Endpoint>], age: Age) -> &'a Arc<Endpoint> {
    if candidates.len() == 1 {
        return candidates[0];
    }
    let first = fastrand::usize(..candidates.len());
    let mut second = fastrand::usize(..candidates.len() - 1);
    if second >= first {
        second += 1;
    }
    let (a, b) = (candidates[first], candidates[second]);
    let (cost_a, cost_b) = (a.cost(age), b.cost(age));
    let tie = cost_a <= cost_b * TIE && cost_b <= cost_a * TIE;
    if tie {
        if a.last_pick.load(Ordering::Relaxed) <= b.last_pick.load(Ordering::Relaxed) { a } else { b }
    } else if cost_a < cost_b {
        a
    } else {
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn balancer(policy: LoadBalancer, groups: Vec<Group>) -> Balancer {
        let outlier = Outlier { consecutive_failures: 3, eject_for: Duration::from_secs(30) };
        Balancer::new(Arc::from("svc"), policy, outlier, groups, Family::default())
    }

    /// Sends `count` requests that take `latency(port)` each, sequentially; counts per port.
    fn run(
        balancer: &Balancer,
        count: usize,
        latency: impl Fn(u16) -> Duration,
    ) -> std::collections::HashMap<u16, usize> {
        let mut counts = std::collections::HashMap::new();
        for _ in 0..count {
            let pick = balancer.pick(&[]).expect("pick");
            let port = pick.endpoint.address.port();
            *counts.entry(port).or_default() += 1;
            let mut pick = pick;
            pick.started -= latency(port);
            balancer.report(pick, true);
        }
        counts
    }

    #[tokio::test(start_paused = true)]
    async fn equal_endpoints_share_the_load() {
        for policy in [LoadBalancer::P2cEwma, LoadBalancer::RoundRobin] {
            let balancer = balancer(policy, Vec::new());
            balancer.set_endpoints(&[address(1), address(2), address(3)]);
            let counts = run(&balancer, 300, |port| Duration::from_micros(300 + 40 * u64::from(port)));
            for port in 1..=3 {
                assert!(counts[&port] >= 60, "{policy:?}: {counts:?}");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn p2c_turns_away_from_a_slow_endpoint() {
        let balancer = balancer(LoadBalancer::P2cEwma, Vec::new());
        balancer.set_endpoints(&[address(1), address(2), address(3)]);
        let counts = run(&balancer, 300, |port| Duration::from_millis(if port == 3 { 50 } else { 1 }));
        assert!(counts.get(&3).copied().unwrap_or(0) < 30, "{counts:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_split_is_exact_over_each_round() {
        let groups = vec![
            Group { endpoints: vec![address(1), address(2)], weight: 90 },
            Group { endpoints: vec![address(3)], weight: 10 },
        ];
        let balancer = balancer(LoadBalancer::P2cEwma, groups);
        balancer.set_endpoints(&[address(1), address(2), address(3)]);
        let counts = run(&balancer, 1000, |_| Duration::from_millis(1));
        assert_eq!(counts[&3], 100, "{counts:?}");
        assert_eq!(counts[&1] + counts[&2], 900);
    }

    #[tokio::test(start_paused = true)]
    async fn failing_endpoints_are_ejected_then_readmitted() {
        let balancer = balancer(LoadBalancer::RoundRobin, Vec::new());
        balancer.set_endpoints(&[address(1), address(2)]);
        for _ in 0..3 {
            let pick = balancer.pick(&[address(2)]).expect("pick");
            assert_eq!(pick.endpoint.address, address(1));
            balancer.report(pick, false);
        }
        for _ in 0..10 {
            let pick = balancer.pick(&[]).expect("pick");
            assert_eq!(pick.endpoint.address, address(2), "1 is ejected");
            balancer.report(pick, true);
        }
        tokio::time::advance(Duration::from_secs(31)).await;
        let seen: Vec<_> = (0..4)
            .map(|_| {
                let pick = balancer.pick(&[]).expect("pick");
                let port = pick.endpoint.address.port();
                balancer.report(pick, true);
                port
            })
            .collect();
        assert!(seen.contains(&1), "re-admitted after eject_for: {seen:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn retries_go_elsewhere_and_discovery_keeps_state() {
        let balancer = balancer(LoadBalancer::P2cEwma, Vec::new());
        balancer.set_endpoints(&[address(1), address(2)]);
        for _ in 0..20 {
            let first = balancer.pick(&[]).expect("pick");
            let again = balancer.pick(&[first.endpoint.address]).expect("pick");
            assert_ne!(first.endpoint.address, again.endpoint.address);
            balancer.report(first, true);
            balancer.report(again, true);
        }
        let pick = balancer.pick(&[address(2)]).expect("pick");
        let before = Arc::clone(&pick.endpoint);
        balancer.report(pick, true);
        balancer.set_endpoints(&[address(1), address(3)]);
        assert!(Arc::ptr_eq(&before, &balancer.snapshot()[0]), "address 1 kept its state");
        assert_eq!(balancer.addresses(), vec![address(1), address(3)]);
        let only = balancer.pick(&[address(1), address(3)]).expect("every endpoint tried: any");
        balancer.report(only, true);
    }

    /// `pillion_endpoints{destination="svc",state}`: (up, ejected).
    fn gauge(balancer: &Balancer) -> (i64, i64) {
        let value =
            |state| balancer.gauge.get_or_create(&EndpointLabels { destination: Arc::from("svc"), state }).get();
        (value("up"), value("ejected"))
    }

    #[tokio::test(start_paused = true)]
    async fn p2c_weighs_requests_in_flight() {
        let balancer = balancer(LoadBalancer::P2cEwma, Vec::new());
        balancer.set_endpoints(&[address(1), address(2)]);
        run(&balancer, 20, |_| Duration::from_millis(1));
        // Five slow requests stay in flight on endpoint 1: with the same latency, 2 costs less.
        let held: Vec<Pick> = (0..5).map(|_| balancer.pick(&[address(2)]).expect("pick")).collect();
        assert!(held.iter().all(|p| p.endpoint.address == address(1)));
        assert_eq!(balancer.snapshot()[0].in_flight.load(Ordering::Relaxed), 5);
        let next = run(&balancer, 3, |_| Duration::from_millis(1));
        assert_eq!(next.get(&2), Some(&3), "{next:?}");
        // Abandoned (the client went away) or reported, a pick is no longer in flight.
        drop(held);
        assert_eq!(balancer.snapshot()[0].in_flight.load(Ordering::Relaxed), 0);
        assert_eq!(balancer.snapshot()[1].in_flight.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_split_group_with_every_endpoint_ejected_sits_out_until_readmitted() {
        let groups = vec![
            Group { endpoints: vec![address(1), address(2)], weight: 90 },
            Group { endpoints: vec![address(3)], weight: 10 },
        ];
        let balancer = balancer(LoadBalancer::RoundRobin, groups);
        balancer.set_endpoints(&[address(1), address(2), address(3)]);
        for _ in 0..3 {
            let pick = balancer.pick(&[address(1), address(2)]).expect("pick");
            assert_eq!(pick.endpoint.address, address(3));
            balancer.report(pick, false);
        }
        assert_eq!(gauge(&balancer), (2, 1));
        let counts = run(&balancer, 100, |_| Duration::from_millis(1));
        assert_eq!(counts.get(&3), None, "the canary is ejected: {counts:?}");
        assert_eq!(counts[&1] + counts[&2], 100);
        // Back after eject_for: the gauge follows on the timer, and the canary gets its share.
        tokio::time::advance(Duration::from_secs(31)).await;
        balancer.tick();
        assert_eq!(gauge(&balancer), (3, 0));
        let counts = run(&balancer, 100, |_| Duration::from_millis(1));
        let canary = counts.get(&3).copied().unwrap_or(0);
        assert!((8..=12).contains(&canary), "{counts:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn with_every_endpoint_ejected_one_is_still_tried_and_none_means_no_endpoints() {
        let balancer = balancer(LoadBalancer::P2cEwma, Vec::new());
        assert!(balancer.pick(&[]).is_none(), "no endpoints yet");
        assert_eq!(gauge(&balancer), (0, 0));
        balancer.set_endpoints(&[address(1)]);
        for _ in 0..3 {
            let pick = balancer.pick(&[]).expect("pick");
            balancer.report(pick, false);
        }
        assert_eq!(gauge(&balancer), (0, 1));
        let pick = balancer.pick(&[]).expect("an ejected endpoint beats failing the request");
        assert_eq!(pick.endpoint.address, address(1));
        // More failures while ejected do not extend the ejection.
        balancer.report(pick, false);
        tokio::time::advance(Duration::from_secs(31)).await;
        balancer.tick();
        assert_eq!(gauge(&balancer), (1, 0));
        // An endpoint that leaves the set leaves the gauge.
        balancer.set_endpoints(&[]);
        assert_eq!(gauge(&balancer), (0, 0));
        assert!(balancer.pick(&[]).is_none());
    }
}
