//! Endpoints of named destinations from DNS: A and AAAA records of `dns.name` (a Kubernetes
//! headless Service answers with one record per ready pod), resolved with hickory-resolver
//! against `proxy.dns_nameserver` or the system's resolver, and resolved again every `refresh`
//! or when the answer's TTL runs out, whichever is first. A failed lookup keeps the endpoints
//! last known (so does an empty answer): a DNS outage must not empty a working destination.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{LookupIpStrategy, NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use tokio_util::sync::CancellationToken;

use super::balance::Balancer;

/// Endpoints kept from one answer, at most.
pub const MAX_ENDPOINTS: usize = 512;
/// A lookup that takes longer failed.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// The shortest wait between lookups, whatever the TTL says (a TTL of 0 must not spin).
const MIN_REFRESH: Duration = Duration::from_millis(500);

/// Why the resolver could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up DNS resolution: {0}")]
pub struct DiscoveryError(#[from] hickory_resolver::ResolveError);

/// A DNS name to follow.
#[derive(Debug, Clone)]
pub struct DnsName {
    pub name: String,
    pub port: u16,
    pub refresh: Duration,
}

/// The resolver every DNS destination shares.
pub struct Dns {
    resolver: TokioResolver,
}

impl Dns {
    /// A resolver for `nameserver` (UDP, then TCP for truncated answers), else the system's.
    pub fn new(nameserver: Option<SocketAddr>) -> Result<Dns, DiscoveryError> {
        let mut builder = match nameserver {
            Some(server) => {
                let servers = NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true);
                let config = ResolverConfig::from_parts(None, Vec::new(), servers);
                TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
            }
            None => TokioResolver::builder_tokio()?,
        };
        let options = builder.options_mut();
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        options.timeout = Duration::from_secs(2);
        options.attempts = 2;
        Ok(Dns { resolver: builder.build() })
    }

    /// The name's addresses with `port` (sorted, at most [`MAX_ENDPOINTS`]), and how long the
    /// answer may be kept.
    pub async fn resolve(&self, name: &DnsName) -> Result<(Vec<SocketAddr>, Duration), String> {
        // Every lookup asks the server: the refresh interval, not the cache, decides freshness.
        self.resolver.clear_cache();
        let lookup = match tokio::time::timeout(LOOKUP_TIMEOUT, self.resolver.lookup_ip(name.name.as_str())).await {
            Ok(Ok(lookup)) => lookup,
            Ok(Err(error)) => return Err(error.to_string()),
            Err(_) => return Err("timed out".into()),
        };
        let ttl = lookup.valid_until().saturating_duration_since(std::time::Instant::now());
        let mut addresses: Vec<SocketAddr> =
            lookup.iter().take(MAX_ENDPOINTS).map(|ip| SocketAddr::new(ip, name.port)).collect();
        addresses.sort();
        addresses.dedup();
        Ok((addresses, ttl))
    }

    /// Resolves `name` now (so the destination has endpoints before the first request), then
    /// keeps `balancer`'s endpoints up to date until `shutdown`.
    pub async fn follow(self: Arc<Self>, name: DnsName, balancer: Arc<Balancer>, shutdown: CancellationToken) {
        follow(self, name, balancer, shutdown).await
    }
}

/// A source of answers for a name: [`Dns`], or a script in tests.
pub trait Resolve {
    /// The name's endpoints and how long the answer may be kept, or why there is none.
    fn resolve(&self, name: &DnsName) -> impl Future<Output = Result<(Vec<SocketAddr>, Duration), String>> + Send;
}

impl Resolve for Dns {
    fn resolve(&self, name: &DnsName) -> impl Future<Output = Result<(Vec<SocketAddr>, Duration), String>> + Send {
        Dns::resolve(self, name)
    }
}

/// How long to wait before the next lookup: `refresh` or the answer's TTL, whichever is
/// shorter; after a failure, `refresh` but at most a second (the last answer is still in use,
/// so a recovered server should be seen soon). Never less than [`MIN_REFRESH`].
fn next_wait(refresh: Duration, answer: Result<Duration, ()>) -> Duration {
    match answer {
        Ok(ttl) => refresh.min(ttl),
        Err(()) => refresh.min(Duration::from_secs(1)),
    }
    .max(MIN_REFRESH)
}

/// [`Dns::follow`] with any [`Resolve`]: a changed answer replaces the balancer's endpoints, a
/// failed lookup keeps them.
async fn follow<R: Resolve>(resolver: Arc<R>, name: DnsName, balancer: Arc<Balancer>, shutdown: CancellationToken) {
    let mut failing = false;
    loop {
        // An empty answer counts as a failure: it would leave the destination with nothing.
        let answer = match resolver.resolve(&name).await {
            Ok((addresses, _)) if addresses.is_empty() => Err("no addresses in the answer".to_owned()),
            answer => answer,
        };
        let wait = match answer {
            Ok((addresses, ttl)) => {
                failing = false;
                if addresses != balancer.addresses() {
                    tracing::info!(destination = %balancer.destination(), name = %name.name, endpoints = addresses.len(), "destination endpoints changed");
                    balancer.set_endpoints(&addresses);
                }
                next_wait(name.refresh, Ok(ttl))
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(destination = %balancer.destination(), name = %name.name, %error, "DNS lookup failed; keeping the endpoints last known");
                }
                failing = true;
                next_wait(name.refresh, Err(()))
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::net::IpAddr;
    use std::sync::Mutex;

    use prometheus_client::metrics::family::Family;
    use tokio::time::Instant;

    use super::*;
    use crate::proxy::balance::Outlier;
    use crate::proxy::settings::LoadBalancer;

    type Answer = Result<(Vec<SocketAddr>, Duration), String>;

    /// Answers from a list, then failures; remembers when it was asked.
    struct Script {
        answers: Mutex<VecDeque<Answer>>,
        asked: Mutex<Vec<Instant>>,
    }

    impl Resolve for Script {
        fn resolve(&self, _: &DnsName) -> impl Future<Output = Answer> + Send {
            self.asked.lock().expect("lock").push(Instant::now());
            let answer = self.answers.lock().expect("lock").pop_front().unwrap_or_else(|| Err("script over".into()));
            std::future::ready(answer)
        }
    }

    fn address(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    fn ok(ports: &[u16], ttl_ms: u64) -> Answer {
        Ok((ports.iter().map(|&p| address(p)).collect(), Duration::from_millis(ttl_ms)))
    }

    /// Follows a scripted name with `refresh`; returns the script, the balancer and the token
    /// that stops following.
    fn start(
        answers: Vec<Answer>,
        refresh: Duration,
    ) -> (Arc<Script>, Arc<Balancer>, CancellationToken, tokio::task::JoinHandle<()>) {
        let script = Arc::new(Script { answers: Mutex::new(answers.into()), asked: Mutex::new(Vec::new()) });
        let outlier = Outlier { consecutive_failures: 5, eject_for: Duration::from_secs(30) };
        let balancer =
            Arc::new(Balancer::new(Arc::from("svc"), LoadBalancer::RoundRobin, outlier, Vec::new(), Family::default()));
        let name = DnsName { name: "svc.test".into(), port: 80, refresh };
        let stop = CancellationToken::new();
        let task = tokio::spawn(follow(Arc::clone(&script), name, Arc::clone(&balancer), stop.clone()));
        (script, balancer, stop, task)
    }

    /// When the script was asked, in milliseconds since `start`.
    fn asked_at(script: &Script, start: Instant) -> Vec<u128> {
        script.asked.lock().expect("lock").iter().map(|t| t.duration_since(start).as_millis()).collect()
    }

    #[test]
    fn the_wait_is_the_shorter_of_refresh_and_ttl_and_never_spins() {
        let s = Duration::from_secs;
        assert_eq!(next_wait(s(5), Ok(s(2))), s(2));
        assert_eq!(next_wait(s(5), Ok(s(300))), s(5));
        assert_eq!(next_wait(s(5), Ok(Duration::ZERO)), MIN_REFRESH);
        assert_eq!(next_wait(s(5), Err(())), s(1));
        assert_eq!(next_wait(Duration::from_millis(700), Err(())), Duration::from_millis(700));
        assert_eq!(next_wait(Duration::from_millis(1), Err(())), MIN_REFRESH);
    }

    #[tokio::test(start_paused = true)]
    async fn lookups_come_at_the_shorter_of_refresh_and_ttl_until_shutdown() {
        let begin = Instant::now();
        let answers = vec![ok(&[1], 2_000), ok(&[1], 30_000), ok(&[1], 0), ok(&[1], 3_000), ok(&[1], 60_000)];
        let (script, balancer, stop, task) = start(answers, Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(10_600)).await;
        // 0; TTL 2 s; refresh 5 s (TTL 30 s); TTL 0 -> the 500 ms floor; TTL 3 s.
        assert_eq!(asked_at(&script, begin), vec![0, 2_000, 7_000, 7_500, 10_500]);
        assert_eq!(balancer.addresses(), vec![address(1)]);
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(1), task).await.expect("stops on shutdown").expect("task");
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(script.asked.lock().expect("lock").len(), 5, "no lookup after shutdown");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_or_empty_lookup_keeps_the_last_answer_and_a_new_answer_replaces_it() {
        let begin = Instant::now();
        let answers = vec![
            ok(&[2, 1], 30_000),
            Err("SERVFAIL".into()),
            Err("timed out".into()),
            ok(&[], 30_000),
            ok(&[2, 3], 30_000),
            ok(&[2, 3], 30_000),
        ];
        let (script, balancer, stop, _task) = start(answers, Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(balancer.addresses(), vec![address(2), address(1)], "the first answer, as given");
        // Failures at 5 s, 6 s and the empty answer at 7 s keep it; retries come every second.
        tokio::time::sleep(Duration::from_millis(7_500)).await;
        assert_eq!(asked_at(&script, begin), vec![0, 5_000, 6_000, 7_000]);
        assert_eq!(balancer.addresses(), vec![address(2), address(1)], "kept through failures");
        // The answer changes at 8 s: the set follows (and the refresh is back to 5 s).
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        assert_eq!(balancer.addresses(), vec![address(2), address(3)]);
        tokio::time::sleep(Duration::from_millis(5_000)).await;
        assert_eq!(asked_at(&script, begin), vec![0, 5_000, 6_000, 7_000, 8_000, 13_000]);
        assert_eq!(balancer.addresses(), vec![address(2), address(3)]);
        stop.cancel();
    }

    /// A DNS server on 127.0.0.1 that answers every A/AAAA question with `ips` and `ttl`.
    async fn dns_server(ips: Arc<Mutex<Vec<IpAddr>>>, ttl: u32) -> SocketAddr {
        use hickory_proto::op::{Message, MessageType, ResponseCode};
        use hickory_proto::rr::rdata::{A, AAAA};
        use hickory_proto::rr::{RData, Record, RecordType};
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let address = socket.local_addr().expect("address");
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
                let Ok(query) = Message::from_vec(&buf[..n]) else { continue };
                let mut response = Message::new();
                response.set_id(query.id());
                response.set_message_type(MessageType::Response);
                response.set_op_code(query.op_code());
                response.set_recursion_desired(query.recursion_desired());
                response.set_recursion_available(true);
                response.set_response_code(ResponseCode::NoError);
                let ips = ips.lock().expect("lock").clone();
                for question in query.queries() {
                    response.add_query(question.clone());
                    for ip in &ips {
                        let rdata = match (question.query_type(), ip) {
                            (RecordType::A, IpAddr::V4(v4)) => RData::A(A(*v4)),
                            (RecordType::AAAA, IpAddr::V6(v6)) => RData::AAAA(AAAA(*v6)),
                            _ => continue,
                        };
                        response.add_answer(Record::from_rdata(question.name().clone(), ttl, rdata));
                    }
                }
                if let Ok(bytes) = response.to_vec() {
                    let _ = socket.send_to(&bytes, peer).await;
                }
            }
        });
        address
    }

    #[tokio::test]
    async fn resolves_a_and_aaaa_with_the_answers_ttl_and_asks_the_server_every_time() {
        let ips: Vec<IpAddr> =
            vec!["10.0.0.9".parse().expect("ip"), "fd00::7".parse().expect("ip"), "10.0.0.8".parse().expect("ip")];
        let answers = Arc::new(Mutex::new(ips));
        let dns = Dns::new(Some(dns_server(Arc::clone(&answers), 7).await)).expect("resolver");
        let name =
            DnsName { name: "analytics.shop.svc.cluster.local".into(), port: 15001, refresh: Duration::from_secs(5) };
        let (addresses, ttl) = dns.resolve(&name).await.expect("lookup");
        let expected: Vec<SocketAddr> = ["10.0.0.8:15001", "10.0.0.9:15001", "[fd00::7]:15001"]
            .iter()
            .map(|a| a.parse().expect("address"))
            .collect();
        assert_eq!(addresses, expected, "both families, with the port, sorted");
        assert!(ttl > Duration::from_secs(5) && ttl <= Duration::from_secs(7), "{ttl:?}");

        // Within the TTL, a changed answer is seen at once: the cache is not trusted.
        *answers.lock().expect("lock") = vec!["10.0.0.10".parse().expect("ip")];
        let (addresses, _) = dns.resolve(&name).await.expect("lookup");
        assert_eq!(addresses, vec!["10.0.0.10:15001".parse::<SocketAddr>().expect("address")]);

        // No records is an error, not an empty set.
        answers.lock().expect("lock").clear();
        assert!(dns.resolve(&name).await.is_err());
    }
}
