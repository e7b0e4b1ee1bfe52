//! The OTLP log sink's settings: its fields of the flat sink entry, checked, defaults applied.

use crate::sink::settings::{Compression, HttpSettings, SinkCheck, SinkConfig};
use crate::telemetry::settings::OtlpProtocol;

/// The fields an OTLP sink takes besides the shared HTTP ones.
pub const FIELDS: &[&str] = &["protocol", "compression"];

/// An OTLP log sink, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub http: HttpSettings,
    pub protocol: OtlpProtocol,
    /// gzip request bodies (http/protobuf only).
    pub gzip: bool,
}

/// Checks a `type: otlp` entry.
pub fn check(sink: &SinkConfig, check: &mut SinkCheck) -> Option<Settings> {
    let http = sink.check_http(check, false);
    let protocol = sink.protocol.unwrap_or_default();
    if protocol == OtlpProtocol::Grpc && sink.auth.as_ref().is_some_and(|auth| auth.username.is_some()) {
        let hint = Some("use bearer_token or bearer_token_file, or protocol: http/protobuf");
        check.issue("auth.username", "basic auth is not supported over gRPC".into(), hint);
    }
    Some(Settings {
        http: http?,
        protocol,
        gzip: protocol == OtlpProtocol::HttpProtobuf && sink.compression == Some(Compression::Gzip),
    })
}
