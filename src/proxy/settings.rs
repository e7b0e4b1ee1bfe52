//! The `proxy:` section as written ([`ProxyConfig`]) and as checked ([`ProxySettings`]):
//! listen addresses parsed, the app's authority ready to dial, every default applied.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration as StdDuration;

use http::uri::Authority;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use crate::config::units::{Cidr, Duration, Endpoint, ListenAddr, RouteTemplate};
use crate::config::{Checker, ConfigIssue};
pub use crate::proxy::identity::IdentityFiles;

/// `proxy:`
#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// The reverse proxy in front of the app's port.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<InboundConfig>")]
    pub inbound: Option<Spanned<InboundConfig>>,
    /// An egress proxy for the app's own calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbound: Option<OutboundConfig>,
    /// This pod's mesh certificate, key and trust root (e.g. a cert-manager Secret mounted as
    /// files), used for inbound `mtls` and outbound destinations with `mtls: true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentityConfig>,
    /// DNS server for destinations' `dns` names, e.g. 127.0.0.1:5353; default: the system
    /// resolver (/etc/resolv.conf).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_nameserver: Option<SocketAddr>,
}

/// `proxy.identity:` PEM files, re-read when they change (new connections use the new
/// certificate; no restart).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// This pod's certificate chain (PEM), leaf first; its URI SAN (else first DNS SAN) is the
    /// pod's identity.
    pub cert_file: std::path::PathBuf,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: std::path::PathBuf,
    /// Trust root for peers' certificates (PEM, one or more CA certificates).
    pub ca_file: std::path::PathBuf,
}

/// `proxy.inbound.mtls:`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MtlsMode {
    /// Plain HTTP only.
    #[default]
    Off,
    /// TLS (client certificate optional) and plain HTTP on one port.
    Permissive,
    /// TLS with a client certificate signed by `proxy.identity.ca_file`; anything else is refused.
    Required,
}

/// `proxy.inbound:`
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InboundConfig {
    /// Address clients connect to.
    pub listen: ListenAddr,
    /// The app, e.g. http://127.0.0.1:8080.
    pub upstream: Endpoint,
    /// Route templates for the `http_route` label, e.g. /api/users/{id}.
    #[serde(default)]
    pub routes: Vec<RouteTemplate>,
    /// Distinct learned http_route values (paths that match no template) before new ones become
    /// "other"; configured templates do not count.
    #[serde(default = "default_max_routes")]
    pub max_routes: NonZeroUsize,
    /// A learned http_route value unused this long is forgotten, making room for new ones.
    #[serde(default = "default_route_ttl")]
    pub route_ttl: Duration,
    /// Peers (CIDR blocks) whose X-Forwarded-For/-Proto/-Host are kept (pillion appends to
    /// X-Forwarded-For); from any other peer pillion sets them itself. Default: none.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub trusted_proxies: Vec<Cidr>,
    /// Every request also becomes a Record in the log pipeline.
    #[serde(default)]
    pub access_log: bool,
    /// Proxy timeouts.
    #[serde(default)]
    pub timeouts: InboundTimeouts,
    /// TLS termination with client certificates: off | permissive | required (needs
    /// `proxy.identity`).
    #[serde(default)]
    pub mtls: MtlsMode,
    /// Peer identities (URI or DNS SAN) allowed in, `*` matching any characters; others get 403.
    /// Empty: every verified peer (and, when permissive, plain clients).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_identities: Vec<String>,
}

fn default_max_routes() -> NonZeroUsize {
    NonZeroUsize::new(200).unwrap_or(NonZeroUsize::MIN)
}

fn default_route_ttl() -> Duration {
    Duration::from_secs(600)
}

/// `proxy.inbound.timeouts:`
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct InboundTimeouts {
    /// Time allowed to receive request headers (slowloris guard).
    pub header_read: Duration,
    /// Time allowed for the whole request.
    pub request: Duration,
    /// Idle keep-alive connections are closed after this.
    pub idle: Duration,
}

impl Default for InboundTimeouts {
    fn default() -> Self {
        InboundTimeouts {
            header_read: Duration::from_secs(10),
            request: Duration::from_secs(60),
            idle: Duration::from_secs(90),
        }
    }
}

/// `proxy.outbound:`
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutboundConfig {
    /// Address the app uses as its HTTP proxy.
    pub listen: ListenAddr,
    /// Timeout per outbound request.
    #[serde(default = "default_outbound_timeout")]
    pub timeout: Duration,
    /// Retries of failed requests.
    #[serde(default)]
    pub retries: RetriesConfig,
    /// Per-destination circuit breaker.
    #[serde(default)]
    pub circuit_breaker: CircuitBreakerConfig,
    /// Services the app calls by name (http://NAME/...): their endpoints, load balancing and
    /// mTLS. Other hosts are proxied as given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destinations: Vec<DestinationConfig>,
    /// Distinct destinations (server_address values and circuit breakers) before new ones are
    /// counted as "other".
    #[serde(default = "default_max_destinations")]
    pub max_destinations: NonZeroUsize,
}

/// `proxy.outbound.destinations[]:`
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    /// The name the app calls, e.g. `analytics` for http://analytics/...
    pub host: String,
    /// Static endpoints, `IP:port`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<SocketAddr>,
    /// Endpoints from DNS A/AAAA records (e.g. a headless Service), re-resolved every `refresh`
    /// or when the answer's TTL runs out, whichever is first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsDiscoveryConfig>,
    /// Originate mTLS with `proxy.identity` and verify the server against its `ca_file`.
    #[serde(default)]
    pub mtls: bool,
    /// The server's identity (URI or DNS SAN) to require; default: a DNS SAN equal to
    /// `dns.name`, else `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_identity: Option<String>,
    /// p2c_ewma (power of two choices over latency, the default) | round_robin.
    #[serde(default)]
    pub load_balancer: LoadBalancer,
    /// Weighted groups of endpoints (a canary): each request picks a group by weight, then an
    /// endpoint in it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub split: Vec<SplitConfig>,
    /// Endpoints that fail `consecutive_failures` times in a row are left out for `eject_for`.
    #[serde(default)]
    pub outlier: OutlierConfig,
}

/// `proxy.outbound.destinations[].dns:`
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DnsDiscoveryConfig {
    /// The name to resolve, e.g. analytics.shop.svc.cluster.local.
    pub name: String,
    /// The port every resolved address is called on.
    pub port: u16,
    /// Resolve again this often (sooner when the answer's TTL is shorter).
    #[serde(default = "default_dns_refresh")]
    pub refresh: Duration,
}

fn default_dns_refresh() -> Duration {
    Duration::from_secs(5)
}

/// `proxy.outbound.destinations[].load_balancer:`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancer {
    /// Of two endpoints drawn at random, the one with the lower latency (EWMA) times load.
    #[default]
    P2cEwma,
    /// Each endpoint in turn.
    RoundRobin,
}

/// `proxy.outbound.destinations[].split[]:`
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SplitConfig {
    /// Endpoints of this group (`IP:port`).
    pub endpoints: Vec<SocketAddr>,
    /// Relative share of requests.
    pub weight: u32,
}

/// `proxy.outbound.destinations[].outlier:`
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct OutlierConfig {
    /// Failures in a row (connect errors, timeouts, 5xx) that eject an endpoint.
    pub consecutive_failures: u32,
    /// How long an ejected endpoint is left out before it is tried again.
    pub eject_for: Duration,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig { consecutive_failures: 5, eject_for: Duration::from_secs(30) }
    }
}

fn default_outbound_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_max_destinations() -> NonZeroUsize {
    NonZeroUsize::new(100).unwrap_or(NonZeroUsize::MIN)
}

/// `proxy.outbound.retries:`
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RetriesConfig {
    /// Retries after the first attempt.
    pub attempts: u32,
    /// Retry only idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE).
    pub idempotent_only: bool,
}

impl Default for RetriesConfig {
    fn default() -> Self {
        RetriesConfig { attempts: 2, idempotent_only: true }
    }
}

/// `proxy.outbound.circuit_breaker:`
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitBreakerConfig {
    /// Consecutive failures that open the circuit.
    pub consecutive_failures: u32,
    /// How long it stays open before a probe.
    pub open_for: Duration,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        CircuitBreakerConfig { consecutive_failures: 5, open_for: Duration::from_secs(30) }
    }
}

/// The proxies, checked.
#[derive(Debug, Default)]
pub struct ProxySettings {
    pub inbound: Option<InboundSettings>,
    pub outbound: Option<OutboundSettings>,
    /// The mesh identity's files.
    pub identity: Option<IdentityFiles>,
    pub dns_nameserver: Option<SocketAddr>,
}

/// The inbound proxy, checked.
#[derive(Debug, Clone)]
pub struct InboundSettings {
    pub listen: SocketAddr,
    /// The app's `host:port`, ready to dial.
    pub upstream: Authority,
    pub routes: Vec<RouteTemplate>,
    pub max_routes: usize,
    pub route_ttl: StdDuration,
    pub trusted_proxies: Vec<Cidr>,
    pub access_log: bool,
    pub timeouts: Timeouts,
    pub mtls: MtlsMode,
    pub allow_identities: Vec<String>,
}

/// The inbound proxy's timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub header_read: StdDuration,
    pub request: StdDuration,
    pub idle: StdDuration,
}

impl From<InboundTimeouts> for Timeouts {
    fn from(raw: InboundTimeouts) -> Self {
        Timeouts { header_read: raw.header_read.get(), request: raw.request.get(), idle: raw.idle.get() }
    }
}

/// The egress proxy, checked.
#[derive(Debug, Clone)]
pub struct OutboundSettings {
    pub listen: SocketAddr,
    pub timeout: StdDuration,
    /// Retries after the first attempt.
    pub retries: u32,
    pub idempotent_only: bool,
    pub breaker_failures: u32,
    pub breaker_open_for: StdDuration,
    /// Named destinations, checked by [`check_mesh`].
    pub destinations: Vec<DestinationConfig>,
    pub max_destinations: usize,
}

impl ProxyConfig {
    /// Checks both proxies; `admin` is the admin server's address, which the inbound proxy
    /// must not share.
    pub fn check(&self, checker: &mut Checker, admin: SocketAddr) -> ProxySettings {
        self.check_mesh(checker);
        ProxySettings {
            inbound: self.inbound.as_ref().and_then(|inbound| inbound.value.check(checker, inbound, admin)),
            outbound: self.outbound.as_ref().map(OutboundConfig::check),
            identity: self.identity.as_ref().map(|files| IdentityFiles {
                cert_file: files.cert_file.clone(),
                key_file: files.key_file.clone(),
                ca_file: files.ca_file.clone(),
            }),
            dns_nameserver: self.dns_nameserver,
        }
    }
}

impl InboundConfig {
    fn check(
        &self,
        checker: &mut Checker,
        spanned: &Spanned<InboundConfig>,
        admin: SocketAddr,
    ) -> Option<InboundSettings> {
        let listen = self.listen.0;
        if listen.port() != 0 && listen == admin {
            let message = format!("proxy.inbound.listen {listen} is also admin.listen");
            checker.at(spanned, "proxy.inbound.listen".into(), message, Some("give the admin server its own port"));
        }
        let upstream = match upstream_authority(self.upstream.url()) {
            Ok(authority) => authority,
            Err(why) => {
                let message = format!("proxy.inbound.upstream {}: {why}", self.upstream.url());
                let hint = Some("the app is on the same host: use http://127.0.0.1:PORT");
                checker.at(spanned, "proxy.inbound.upstream".into(), message, hint);
                return None;
            }
        };
        Some(InboundSettings {
            listen,
            upstream,
            routes: self.routes.clone(),
            max_routes: self.max_routes.get(),
            route_ttl: self.route_ttl.get(),
            trusted_proxies: self.trusted_proxies.clone(),
            access_log: self.access_log,
            timeouts: self.timeouts.into(),
            mtls: self.mtls,
            allow_identities: self.allow_identities.clone(),
        })
    }
}

impl OutboundConfig {
    fn check(&self) -> OutboundSettings {
        OutboundSettings {
            listen: self.listen.0,
            timeout: self.timeout.get(),
            retries: self.retries.attempts,
            idempotent_only: self.retries.idempotent_only,
            breaker_failures: self.circuit_breaker.consecutive_failures,
            breaker_open_for: self.circuit_breaker.open_for.get(),
            max_destinations: self.max_destinations.get(),
            destinations: self.destinations.clone(),
        }
    }
}

/// `mtls` needs an identity; destinations need endpoints; a split names known endpoints.
impl ProxyConfig {
    fn check_mesh(&self, checker: &mut Checker) {
        let proxy = self;
        let mut issue = |field: String, message: String, hint: Option<&str>| {
            checker.push(ConfigIssue {
                origin: checker.origin().to_owned(),
                position: None,
                field,
                message,
                hint: hint.map(str::to_owned),
            })
        };
        let identity_hint = Some("add proxy.identity { cert_file, key_file, ca_file }");
        if let Some(inbound) = &proxy.inbound {
            if inbound.value.mtls != MtlsMode::Off && proxy.identity.is_none() {
                issue("proxy.inbound.mtls".into(), "mTLS needs proxy.identity".into(), identity_hint);
            }
        }
        let Some(outbound) = &proxy.outbound else { return };
        let mut hosts = std::collections::HashSet::new();
        for (index, destination) in outbound.destinations.iter().enumerate() {
            let field = |name: &str| format!("proxy.outbound.destinations[{index}].{name}");
            if !hosts.insert(destination.host.to_ascii_lowercase()) {
                issue(field("host"), format!("{} is named twice", destination.host), None);
            }
            if destination.host.is_empty() || destination.host.contains([':', '/', ' ']) {
                issue(
                    field("host"),
                    format!("{:?} is not a host name", destination.host),
                    Some("the name the app calls, e.g. analytics"),
                );
            }
            if destination.mtls && proxy.identity.is_none() {
                issue(field("mtls"), "mTLS needs proxy.identity".into(), identity_hint);
            }
            if destination.server_identity.is_some() && !destination.mtls {
                issue(field("server_identity"), "only checked with mtls: true".into(), Some("set mtls: true"));
            }
            let has_split = !destination.split.is_empty();
            if destination.endpoints.is_empty() && destination.dns.is_none() && !has_split {
                issue(field("endpoints"), "no endpoints: give endpoints, dns or split".into(), None);
            }
            if destination.dns.is_some() && !destination.endpoints.is_empty() {
                issue(field("dns"), "give endpoints or dns, not both".into(), None);
            }
            if let Some(dns) = &destination.dns {
                if dns.refresh.get().is_zero() {
                    issue(field("dns.refresh"), "must be more than 0s".into(), None);
                }
            }
            for (group, split) in destination.split.iter().enumerate() {
                if split.endpoints.is_empty() {
                    issue(field(&format!("split[{group}].endpoints")), "empty".into(), None);
                }
                let unknown = split
                    .endpoints
                    .iter()
                    .find(|e| !destination.endpoints.is_empty() && !destination.endpoints.contains(e));
                if let Some(unknown) = unknown {
                    issue(
                        field(&format!("split[{group}].endpoints")),
                        format!("{unknown} is not in endpoints"),
                        Some("a split names a subset of endpoints"),
                    );
                }
            }
            if has_split && destination.split.iter().all(|s| s.weight == 0) {
                issue(field("split"), "every weight is 0".into(), None);
            }
            if destination.outlier.consecutive_failures == 0 {
                issue(field("outlier.consecutive_failures"), "must be at least 1".into(), None);
            }
        }
    }
}

/// `host:port` of a plain-HTTP upstream.
fn upstream_authority(url: &url::Url) -> Result<Authority, &'static str> {
    if url.scheme() != "http" {
        return Err("only http:// is supported");
    }
    let host = url.host_str().ok_or("no host")?;
    let port = url.port_or_known_default().unwrap_or(80);
    let text = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    text.parse().map_err(|_| "not a valid host and port")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_authority_has_a_port() {
        let url = url::Url::parse("http://localhost").expect("url");
        assert_eq!(upstream_authority(&url).expect("authority").as_str(), "localhost:80");
        let url = url::Url::parse("https://localhost").expect("url");
        assert!(upstream_authority(&url).is_err());
    }
}
