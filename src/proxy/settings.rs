//! The `proxy:` section as written ([`ProxyConfig`]) and as checked ([`ProxySettings`]):
//! listen addresses parsed, the app's authority ready to dial, every default applied.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration as StdDuration;

use http::uri::Authority;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use crate::config::Checker;
use crate::config::units::{Cidr, Duration, Endpoint, ListenAddr, RouteTemplate};

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
    /// Distinct destinations (server_address values and circuit breakers) before new ones are
    /// counted as "other".
    #[serde(default = "default_max_destinations")]
    pub max_destinations: NonZeroUsize,
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
    pub max_destinations: usize,
}

impl ProxyConfig {
    /// Checks both proxies; `admin` is the admin server's address, which the inbound proxy
    /// must not share.
    pub fn check(&self, checker: &mut Checker, admin: SocketAddr) -> ProxySettings {
        ProxySettings {
            inbound: self.inbound.as_ref().and_then(|inbound| inbound.value.check(checker, inbound, admin)),
            outbound: self.outbound.as_ref().map(OutboundConfig::check),
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
