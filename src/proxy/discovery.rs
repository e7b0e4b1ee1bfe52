//! Endpoints of named destinations from DNS: A and AAAA records of `dns.name` (a Kubernetes
//! headless Service answers with one record per ready pod), resolved with hickory-resolver
//! against `proxy.dns_nameserver` or the system's resolver, and resolved again every `refresh`
//! or when the answer's TTL runs out, whichever is first. A failed lookup keeps the endpoints
//! last known: a DNS outage must not empty a working destination.

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
        let mut failing = false;
        loop {
            let wait = match self.resolve(&name).await {
                Ok((addresses, ttl)) => {
                    failing = false;
                    if addresses != balancer.addresses() {
                        tracing::info!(destination = %balancer.destination(), name = %name.name, endpoints = addresses.len(), "destination endpoints changed");
                        balancer.set_endpoints(&addresses);
                    }
                    name.refresh.min(ttl).max(MIN_REFRESH)
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(destination = %balancer.destination(), name = %name.name, %error, "DNS lookup failed; keeping the endpoints last known");
                    }
                    failing = true;
                    name.refresh.min(Duration::from_secs(1)).max(MIN_REFRESH)
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}
