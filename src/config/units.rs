//! Human-friendly config scalars: durations (`250ms`, `5s`, `1m`), sizes (`512KiB`, `1MB`),
//! listen addresses, endpoints, regexes and globs, each validated while it is deserialized so
//! that an error points at the exact line and column of the bad value.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

/// Implements `Deserialize` (via `FromStr`, with the error as a serde message) and `Serialize`
/// (via `Display`) for a config scalar.
macro_rules! string_scalar {
    ($ty:ty) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = ScalarText::deserialize(deserializer)?;
                text.0.parse().map_err(de::Error::custom)
            }
        }
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }
    };
}

/// Any YAML scalar (string, number, bool) read as its text, so `timeout: 5` or `name: 42`
/// are accepted where a string is expected.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScalarText(pub String);

impl<'de> Deserialize<'de> for ScalarText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = ScalarText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ScalarText, E> {
                Ok(ScalarText(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<ScalarText, E> {
                Ok(ScalarText(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ScalarText, E> {
                Ok(ScalarText(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ScalarText, E> {
                Ok(ScalarText(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ScalarText, E> {
                Ok(ScalarText(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<ScalarText, E> {
                Ok(ScalarText(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl Serialize for ScalarText {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// A duration written as a number and a unit: `250ms`, `5s`, `1m`, `1h`, or compound `1m30s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub const fn from_millis(ms: u64) -> Self {
        Duration(std::time::Duration::from_millis(ms))
    }
    pub const fn from_secs(s: u64) -> Self {
        Duration(std::time::Duration::from_secs(s))
    }
    pub fn get(self) -> std::time::Duration {
        self.0
    }
}

impl FromStr for Duration {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let invalid =
            || format!("invalid duration {text:?}: expected a number and a unit (ms, s, m, h), e.g. 250ms, 5s, 1m");
        let mut rest = text.trim();
        if rest.is_empty() {
            return Err(invalid());
        }
        let mut total = std::time::Duration::ZERO;
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
            if digits == 0 {
                return Err(invalid());
            }
            let value: u64 = rest[..digits].parse().map_err(|_| invalid())?;
            rest = &rest[digits..];
            let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
            let part = match rest[..unit_len].trim() {
                "ns" => std::time::Duration::from_nanos(value),
                "us" | "µs" => std::time::Duration::from_micros(value),
                "ms" => std::time::Duration::from_millis(value),
                "s" => std::time::Duration::from_secs(value),
                "m" => std::time::Duration::from_secs(value.saturating_mul(60)),
                "h" => std::time::Duration::from_secs(value.saturating_mul(3600)),
                _ => return Err(invalid()),
            };
            total = total.saturating_add(part);
            rest = &rest[unit_len..];
        }
        Ok(Duration(total))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 && !self.0.is_zero() {
            write!(f, "{}us", self.0.as_micros())
        } else if ms % 3_600_000 == 0 && ms > 0 {
            write!(f, "{}h", ms / 3_600_000)
        } else if ms % 60_000 == 0 && ms > 0 {
            write!(f, "{}m", ms / 60_000)
        } else if ms % 1000 == 0 {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}
string_scalar!(Duration);

/// A byte size: a plain number of bytes, or a number with a decimal (`KB`, `MB`, `GB`) or
/// binary (`KiB`, `MiB`, `GiB`) unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const fn kib(n: u64) -> Self {
        ByteSize(n * 1024)
    }
    pub const fn mib(n: u64) -> Self {
        ByteSize(n * 1024 * 1024)
    }
    pub fn bytes(self) -> u64 {
        self.0
    }
    /// The size as `usize`, saturating on 32-bit targets.
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let invalid = || {
            format!(
                "invalid size {text:?}: expected a number of bytes with an optional unit (B, KB, MB, GB, KiB, MiB, GiB), e.g. 512KiB or 1MiB"
            )
        };
        let trimmed = text.trim();
        let digits = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
        if digits == 0 {
            return Err(invalid());
        }
        let value: u64 = trimmed[..digits].parse().map_err(|_| invalid())?;
        let multiplier: u64 = match trimmed[digits..].trim() {
            "" | "B" | "b" => 1,
            "KB" | "kB" | "kb" | "K" | "k" => 1000,
            "MB" | "mb" | "M" => 1000 * 1000,
            "GB" | "gb" | "G" => 1000 * 1000 * 1000,
            "KiB" | "kib" | "Ki" => 1 << 10,
            "MiB" | "mib" | "Mi" => 1 << 20,
            "GiB" | "gib" | "Gi" => 1 << 30,
            _ => return Err(invalid()),
        };
        value.checked_mul(multiplier).map(ByteSize).ok_or_else(invalid)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let n = self.0;
        if n >= 1 << 30 && n % (1 << 30) == 0 {
            write!(f, "{}GiB", n >> 30)
        } else if n >= 1 << 20 && n % (1 << 20) == 0 {
            write!(f, "{}MiB", n >> 20)
        } else if n >= 1 << 10 && n % (1 << 10) == 0 {
            write!(f, "{}KiB", n >> 10)
        } else {
            write!(f, "{n}")
        }
    }
}
string_scalar!(ByteSize);

/// A `host:port` socket address to listen on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddr(pub SocketAddr);

impl FromStr for ListenAddr {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        if let Some(port) = trimmed.strip_prefix(':') {
            // `:9901` is a common shorthand; we bind loopback-free "all interfaces" only when asked.
            return format!("0.0.0.0:{port}").parse().map(ListenAddr).map_err(|_| bad_listen(text));
        }
        let host_port = trimmed.replace("localhost:", "127.0.0.1:");
        host_port.parse().map(ListenAddr).map_err(|_| bad_listen(text))
    }
}

fn bad_listen(text: &str) -> String {
    format!("invalid listen address {text:?}: expected an IP address and port, e.g. 127.0.0.1:9901 or 0.0.0.0:15001")
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.fmt(f)
    }
}
string_scalar!(ListenAddr);

/// An `http://` or `https://` base URL. Shown and serialized without its userinfo and query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint(pub url::Url);

impl Endpoint {
    pub fn url(&self) -> &url::Url {
        &self.0
    }
}

impl FromStr for Endpoint {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let url = url::Url::parse(text.trim())
            .map_err(|e| format!("invalid endpoint {text:?}: {e}; expected a URL such as http://loki:3100"))?;
        match url.scheme() {
            "http" | "https" if url.host_str().is_some() => Ok(Endpoint(url)),
            "http" | "https" => Err(format!("invalid endpoint {text:?}: the URL has no host")),
            other => {
                Err(format!("invalid endpoint {text:?}: scheme {other:?} is not supported, use http:// or https://"))
            }
        }
    }
}

impl fmt::Display for Endpoint {
    /// The URL without its userinfo and query string (they may hold credentials).
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&crate::redact::url(&self.0))
    }
}
string_scalar!(Endpoint);

/// A CIDR block such as `10.0.0.0/8` or `fd00::/8`; a bare address is a block of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub network: std::net::IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Whether `ip` is inside the block (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(network), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(network) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(network) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let invalid = || format!("invalid CIDR {text:?}: expected an address block such as 10.0.0.0/8 or fd00::/8");
        let (address, prefix) = match text.trim().split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text.trim(), None),
        };
        let network: std::net::IpAddr = address.parse().map_err(|_| invalid())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(invalid)?,
            None => max,
        };
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}
string_scalar!(Cidr);

/// A regular expression, compiled when the config is loaded.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: String,
    compiled: regex::Regex,
}

impl Pattern {
    pub fn regex(&self) -> &regex::Regex {
        &self.compiled
    }
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl FromStr for Pattern {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        regex::Regex::new(text)
            .map(|compiled| Pattern { source: text.to_owned(), compiled })
            .map_err(|e| format!("invalid regex {text:?}: {}", one_line(&e.to_string())))
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.source)
    }
}
string_scalar!(Pattern);

/// A path glob such as `/var/log/app/**/*.log`, checked when the config is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobPattern(pub String);

impl FromStr for GlobPattern {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Err("empty glob pattern".to_owned());
        }
        globset::Glob::new(text)
            .map(|_| GlobPattern(text.to_owned()))
            .map_err(|e| format!("invalid glob {text:?}: {}", one_line(&e.to_string())))
    }
}

impl fmt::Display for GlobPattern {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}
string_scalar!(GlobPattern);

/// A fraction between 0 and 1 inclusive, such as a sampling ratio.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Ratio(pub f64);

impl FromStr for Ratio {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim().parse::<f64>() {
            Ok(value) if (0.0..=1.0).contains(&value) => Ok(Ratio(value)),
            _ => Err(format!("invalid ratio {text:?}: expected a number from 0 to 1, e.g. 0.25")),
        }
    }
}

impl fmt::Display for Ratio {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.fmt(f)
    }
}
string_scalar!(Ratio);

/// A route template such as `/api/users/{id}`: starts with `/`, `{name}` placeholders
/// fill whole path segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTemplate(pub String);

impl FromStr for RouteTemplate {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let invalid = |why: &str| format!("invalid route template {text:?}: {why}");
        if !text.starts_with('/') {
            return Err(invalid("it must start with '/'"));
        }
        for segment in text.split('/') {
            let opens = segment.matches('{').count();
            let closes = segment.matches('}').count();
            let whole = segment.starts_with('{') && segment.ends_with('}') && segment.len() > 2;
            if opens + closes > 0 && !(opens == 1 && closes == 1 && whole) {
                return Err(invalid("a placeholder must be a whole path segment such as {id}"));
            }
        }
        Ok(RouteTemplate(text.to_owned()))
    }
}

impl fmt::Display for RouteTemplate {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}
string_scalar!(RouteTemplate);

/// A secret (token, password, API key): usable in the program, never printed.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(super::REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        ScalarText::deserialize(deserializer).map(|text| Secret(text.0))
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(super::REDACTED)
    }
}

/// Regex and glob errors span several lines with a caret diagram; config errors are one line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .rfind(|line| !line.is_empty())
        .unwrap_or(message)
        .trim_start_matches("error: ")
        .to_owned()
}

/// Implements `JsonSchema` for a config scalar: its JSON type(s) and pattern, inlined where it
/// is used. Patterns also accept a `${VAR}` reference: editors see the file before interpolation.
macro_rules! scalar_schema {
    ($ty:ty, $name:literal, $schema:tt) => {
        impl schemars::JsonSchema for $ty {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                $name.into()
            }
            fn inline_schema() -> bool {
                true
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!($schema)
            }
        }
    };
}

scalar_schema!(ScalarText, "ScalarText", { "type": ["string", "number", "boolean"] });
scalar_schema!(Duration, "Duration", {
    "type": "string",
    "pattern": "^\\s*(\\$\\{[^}]*\\}|([0-9]+\\s*(ns|us|µs|ms|s|m|h)\\s*)+)\\s*$",
    "examples": ["250ms", "5s", "1m30s"]
});
scalar_schema!(ByteSize, "ByteSize", {
    "type": ["string", "integer"],
    "minimum": 0,
    "pattern": "^\\s*(\\$\\{[^}]*\\}|[0-9]+\\s*(B|b|KB|kB|kb|K|k|MB|mb|M|GB|gb|G|KiB|kib|Ki|MiB|mib|Mi|GiB|gib|Gi)?)\\s*$",
    "examples": ["512KiB", "1MiB", "1MB"]
});
scalar_schema!(ListenAddr, "ListenAddr", { "type": "string", "examples": ["127.0.0.1:9901", "0.0.0.0:15001", ":15001"] });
scalar_schema!(Endpoint, "Endpoint", { "type": "string", "pattern": "^\\s*(https?://|\\$\\{)", "examples": ["http://loki:3100"] });
scalar_schema!(Pattern, "Pattern", { "type": "string", "format": "regex" });
scalar_schema!(GlobPattern, "GlobPattern", { "type": "string", "examples": ["/var/log/app/**/*.log"] });
scalar_schema!(Ratio, "Ratio", { "type": ["number", "string"], "minimum": 0, "maximum": 1 });
scalar_schema!(RouteTemplate, "RouteTemplate", { "type": "string", "pattern": "^(/|\\$\\{)", "examples": ["/api/users/{id}"] });
scalar_schema!(Secret, "Secret", { "type": ["string", "number", "boolean"], "writeOnly": true });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print() {
        let cases = [("250ms", 250), ("5s", 5000), ("1m", 60_000), ("1m30s", 90_000), ("2h", 7_200_000)];
        for (text, ms) in cases {
            let parsed: Duration = text.parse().expect(text);
            assert_eq!(parsed.0.as_millis(), ms, "{text}");
            assert_eq!(parsed.to_string().parse::<Duration>().expect("round trip"), parsed);
        }
        for bad in ["", "5", "s", "5 parsecs", "-1s", "1.5s"] {
            assert!(bad.parse::<Duration>().is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn sizes_parse_and_print() {
        let cases = [("512KiB", 512 * 1024), ("1MiB", 1 << 20), ("1MB", 1_000_000), ("100", 100), ("2 GiB", 2 << 30)];
        for (text, bytes) in cases {
            let parsed: ByteSize = text.parse().expect(text);
            assert_eq!(parsed.0, bytes, "{text}");
            assert_eq!(parsed.to_string().parse::<ByteSize>().expect("round trip"), parsed);
        }
        let err = "10 potatoes".parse::<ByteSize>().expect_err("potatoes");
        assert!(err.starts_with("invalid size \"10 potatoes\""), "{err}");
        assert!("99999999999999999999GiB".parse::<ByteSize>().is_err());
    }

    #[test]
    fn endpoints_hide_passwords() {
        let endpoint: Endpoint = "https://user:hunter2@es:9200".parse().expect("valid");
        assert!(!endpoint.to_string().contains("hunter2"));
        assert!("ftp://x".parse::<Endpoint>().is_err());
        assert!("loki:3100".parse::<Endpoint>().is_err());
    }

    #[test]
    fn listen_addresses() {
        assert_eq!("127.0.0.1:9901".parse::<ListenAddr>().expect("v4").0.port(), 9901);
        assert!("[::1]:80".parse::<ListenAddr>().is_ok());
        assert!(":15001".parse::<ListenAddr>().is_ok());
        assert!("nonsense".parse::<ListenAddr>().is_err());
    }

    #[test]
    fn ratios_and_routes() {
        assert!("0.25".parse::<Ratio>().is_ok());
        assert!("1.5".parse::<Ratio>().is_err());
        assert!("/api/users/{id}".parse::<RouteTemplate>().is_ok());
        assert!("api/users".parse::<RouteTemplate>().is_err());
        assert!("/api/{id".parse::<RouteTemplate>().is_err());
        assert!("/api/x{id}".parse::<RouteTemplate>().is_err());
    }

    #[test]
    fn cidrs_contain_their_addresses() {
        let block: Cidr = "10.1.0.0/16".parse().expect("v4");
        assert!(block.contains("10.1.200.3".parse().expect("ip")));
        assert!(block.contains("::ffff:10.1.0.1".parse().expect("mapped")));
        assert!(!block.contains("10.2.0.1".parse().expect("ip")));
        let one: Cidr = "127.0.0.1".parse().expect("bare");
        assert!(one.contains("127.0.0.1".parse().expect("ip")) && !one.contains("127.0.0.2".parse().expect("ip")));
        assert!("0.0.0.0/0".parse::<Cidr>().expect("all").contains("8.8.8.8".parse().expect("ip")));
        assert!("fd00::/8".parse::<Cidr>().expect("v6").contains("fd12::1".parse().expect("ip")));
        for bad in ["10.0.0.0/33", "nope", "10.0.0.0/x"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn regex_errors_are_one_line() {
        let err = "(unclosed".parse::<Pattern>().expect_err("bad regex");
        assert!(!err.contains('\n'), "{err}");
        assert!(err.starts_with("invalid regex"), "{err}");
    }
}
