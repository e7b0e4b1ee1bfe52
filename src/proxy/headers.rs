//! Header checks and rewriting between client and app: the `Host` header validated (RFC 9112
//! §3.2), hop-by-hop headers removed per RFC 9110 §7.6.1 (kept only to pass an Upgrade
//! through), and `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host` and `Forwarded`
//! (RFC 7239) set by pillion, or appended to when the peer is a trusted proxy.

use std::net::{IpAddr, SocketAddr};

use http::header::{
    CONNECTION, FORWARDED, HOST, HeaderMap, HeaderName, HeaderValue, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The `Upgrade` protocol a request or response asks for, when `Connection` names `upgrade`.
pub fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let connection_upgrade = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if connection_upgrade { headers.get(UPGRADE).cloned() } else { None }
}

/// Removes the hop-by-hop headers: those named in `Connection`, then the fixed list. With
/// `upgrade` set, `Connection: upgrade` and `Upgrade` are put back so the app sees the handshake.
/// `Connection` cannot name `Host` nor any of `protected` (the headers pillion itself set).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: Option<&HeaderValue>, protected: &[HeaderName]) {
    // One pass over the names present rather than a hashed lookup per hop-by-hop name: most
    // messages carry none of them, or only `Connection`.
    let present: Vec<HeaderName> = headers.keys().filter(|name| is_hop_by_hop(name)).cloned().collect();
    if !present.is_empty() {
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
            .filter(|name| *name != HOST && !protected.contains(name))
            .collect();
        for name in named.into_iter().chain(present) {
            headers.remove(name);
        }
    }
    if let Some(protocol) = upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, protocol.clone());
    }
}

/// The fixed hop-by-hop list (RFC 9110 §7.6.1, and `Proxy-Connection`). `Trailer` is on it
/// because it announces trailers for the next hop only when the body is chunked end to end.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    [CONNECTION, KEEP_ALIVE, PROXY_CONNECTION, TE, TRANSFER_ENCODING, UPGRADE, TRAILER].contains(name)
}

/// Why a request's `Host` is refused (400).
pub fn check_host(
    version: http::Version,
    headers: &HeaderMap,
    authority: Option<&http::uri::Authority>,
) -> Result<(), &'static str> {
    let mut hosts = headers.get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err("bad request: more than one Host header\n");
    }
    match host {
        Some(value) if !is_valid_host(value.as_bytes()) => Err("bad request: invalid Host header\n"),
        Some(_) => Ok(()),
        // HTTP/2 carries the authority in :authority; HTTP/1.0 may omit it.
        None if authority.is_some() || version == http::Version::HTTP_10 => Ok(()),
        None => Err("bad request: missing Host header\n"),
    }
}

/// `uri-host [ ":" port ]`: a reg-name, IPv4 or bracketed IPv6 address, no userinfo.
fn is_valid_host(value: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(value) else { return false };
    if text.is_empty() || text.contains(['@', '/', '?', '#', ' ', '\\']) {
        return false;
    }
    let (host, port) = match text.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, port)) if v6.parse::<std::net::Ipv6Addr>().is_ok() => ("v6", port),
            _ => return false,
        },
        None => match text.rsplit_once(':') {
            Some((host, port)) => (host, &text[host.len()..][..port.len() + 1]),
            None => (text, ""),
        },
    };
    let port_ok = match port.strip_prefix(':') {
        Some(digits) => {
            digits.is_empty() || (digits.bytes().all(|b| b.is_ascii_digit()) && digits.parse::<u16>().is_ok())
        }
        None => port.is_empty(),
    };
    let host_ok =
        !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b));
    host_ok && port_ok
}

/// What the forwarding headers say about one client connection, built once per connection: the
/// client's address as `X-Forwarded-For` has it, and as `Forwarded`'s `for=` element.
pub struct ClientForwarding {
    for_value: HeaderValue,
    for_element: String,
}

impl ClientForwarding {
    pub fn new(client: SocketAddr) -> ClientForwarding {
        let ip = client.ip().to_canonical();
        let ip_text = ip.to_string();
        let for_element = match ip {
            IpAddr::V4(_) => format!("for={ip_text}"),
            IpAddr::V6(_) => format!("for=\"[{ip_text}]\""),
        };
        // An IP address's text is always a valid header value.
        let for_value = HeaderValue::try_from(ip_text).unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        ClientForwarding { for_value, for_element }
    }
}

/// Sets `X-Forwarded-For`, `-Proto`, `-Host` and `Forwarded` for the app. From a `trusted` peer
/// (a proxy in `trusted_proxies`) the values it sent are kept and the peer is appended; from
/// anyone else the client's values are dropped and pillion's own are set.
pub fn add_forwarded(
    headers: &mut HeaderMap,
    client: &ClientForwarding,
    trusted: bool,
    proto: &'static str,
    authority: Option<&str>,
) {
    if !trusted {
        for name in [X_FORWARDED_FOR, X_FORWARDED_PROTO, X_FORWARDED_HOST, FORWARDED] {
            headers.remove(name);
        }
    }
    append_list(headers, X_FORWARDED_FOR, &client.for_value);
    if !headers.contains_key(X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    // The Host header's value as is (no copy), else the request target's authority.
    let host_header = headers.get(HOST).filter(|h| h.to_str().is_ok()).cloned();
    let host_value = host_header.or_else(|| authority.and_then(|a| HeaderValue::from_str(a).ok()));
    let host = match &host_value {
        Some(value) => value.to_str().ok(),
        None => authority,
    };
    let mut element = String::with_capacity(64);
    element.push_str(&client.for_element);
    if let Some(host) = host.filter(|h| is_token(h)) {
        element.push_str(";host=");
        element.push_str(host);
    }
    element.push_str(";proto=");
    element.push_str(proto);
    if let Some(value) = &host_value {
        if !headers.contains_key(X_FORWARDED_HOST) {
            headers.insert(X_FORWARDED_HOST, value.clone());
        }
    }
    if let Ok(element) = HeaderValue::try_from(element) {
        append_list(headers, FORWARDED, &element);
    }
}

fn is_token(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~:!#$%&'*+^`|".contains(&b))
}

/// Appends `item` to a comma-separated header, merging repeated header lines into one.
fn append_list(headers: &mut HeaderMap, name: HeaderName, item: &HeaderValue) {
    let mut existing = headers.get_all(&name).iter().filter_map(|v| v.to_str().ok()).peekable();
    if existing.peek().is_none() {
        headers.insert(name, item.clone());
        return;
    }
    let mut joined = String::new();
    for value in existing {
        joined.push_str(value);
        joined.push_str(", ");
    }
    joined.push_str(item.to_str().unwrap_or_default());
    if let Ok(value) = HeaderValue::try_from(joined) {
        headers.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_including_those_named_in_connection() {
        let mut headers = HeaderMap::new();
        headers.insert(CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert(KEEP_ALIVE, HeaderValue::from_static("timeout=5"));
        headers.insert(TE, HeaderValue::from_static("trailers"));
        headers.insert("x-kept", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut headers, None, &[]);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert!(headers.contains_key("x-kept"));
    }

    #[test]
    fn upgrade_survives_when_asked() {
        let mut headers = HeaderMap::new();
        headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        let upgrade = upgrade_protocol(&headers);
        strip_hop_by_hop(&mut headers, upgrade.as_ref(), &[]);
        assert_eq!(headers[UPGRADE], "websocket");
        assert_eq!(headers[CONNECTION], "upgrade");
    }

    #[test]
    fn forwarded_headers_append_the_client() {
        let mut headers = HeaderMap::new();
        headers.insert(X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        headers.insert(HOST, HeaderValue::from_static("shop.example"));
        let client = ClientForwarding::new("[::1]:5000".parse().expect("addr"));
        add_forwarded(&mut headers, &client, true, "http", None);
        assert_eq!(headers[X_FORWARDED_FOR], "10.0.0.1, ::1");
        assert_eq!(headers[X_FORWARDED_PROTO], "http");
        assert_eq!(headers[X_FORWARDED_HOST], "shop.example");
        assert_eq!(headers[FORWARDED], "for=\"[::1]\";host=shop.example;proto=http");
    }

    #[test]
    fn untrusted_peers_cannot_set_forwarded_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(X_FORWARDED_FOR, HeaderValue::from_static("6.6.6.6"));
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        headers.insert(X_FORWARDED_HOST, HeaderValue::from_static("evil.example"));
        headers.insert(HOST, HeaderValue::from_static("shop.example"));
        let client = ClientForwarding::new("10.0.0.9:5000".parse().expect("addr"));
        add_forwarded(&mut headers, &client, false, "http", None);
        assert_eq!(headers[X_FORWARDED_FOR], "10.0.0.9");
        assert_eq!(headers[X_FORWARDED_PROTO], "http");
        assert_eq!(headers[X_FORWARDED_HOST], "shop.example");
    }

    #[test]
    fn host_must_be_one_valid_value() {
        let v11 = http::Version::HTTP_11;
        let mut headers = HeaderMap::new();
        assert!(check_host(v11, &headers, None).is_err(), "missing");
        assert!(check_host(http::Version::HTTP_10, &headers, None).is_ok());
        headers.insert(HOST, HeaderValue::from_static("shop.example:8080"));
        assert!(check_host(v11, &headers, None).is_ok());
        headers.append(HOST, HeaderValue::from_static("other.example"));
        assert!(check_host(v11, &headers, None).is_err(), "duplicate");
        for bad in ["", "a b", "user@shop", "shop:99999", "shop/x", "[::1"] {
            let mut headers = HeaderMap::new();
            headers.insert(HOST, HeaderValue::from_str(bad).expect("value"));
            assert!(check_host(v11, &headers, None).is_err(), "{bad:?}");
        }
        for good in ["shop", "10.0.0.1:80", "[::1]:8080", "xn--bcher-kva.example"] {
            let mut headers = HeaderMap::new();
            headers.insert(HOST, HeaderValue::from_str(good).expect("value"));
            assert!(check_host(v11, &headers, None).is_ok(), "{good:?}");
        }
    }
}
