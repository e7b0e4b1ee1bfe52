//! OTLP over gRPC: a unary `LogsService/Export` call through a tonic channel. The request is
//! already encoded (on the blocking pool, like every sink's), so a pass-through codec sends its
//! bytes as they are. gRPC status codes are mapped to the HTTP statuses the shared retry
//! policy understands: UNAVAILABLE and friends to 503, RESOURCE_EXHAUSTED to 429, the rest
//! to 400.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::sink::SinkError;
use crate::sink::http::{Auth, BoxFuture, Reply, Request, Transport, auth};
use crate::sink::settings::HttpSettings;

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

/// A gRPC channel to the collector (connected lazily, reconnected as needed).
pub(crate) struct GrpcTransport {
    channel: Channel,
    target: String,
    metadata: Vec<(tonic::metadata::AsciiMetadataKey, tonic::metadata::AsciiMetadataValue)>,
    /// `bearer_token` or `bearer_token_file` (re-read when it changes).
    auth: Auth,
}

impl GrpcTransport {
    pub fn new(config: &HttpSettings) -> Result<GrpcTransport, SinkError> {
        let error = |message: String| SinkError::Setup { sink: config.sink.to_string(), message };
        let endpoint = &config.endpoint;
        let timeout = config.request_timeout;
        let mut builder = Endpoint::from_shared(endpoint.as_str().trim_end_matches('/').to_owned())
            .map_err(|e| error(format!("endpoint: {e}")))?
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)));
        if endpoint.scheme() == "https" {
            builder = builder.tls_config(tls(config).map_err(error)?).map_err(|e| error(format!("tls: {e}")))?;
        }
        let mut metadata = Vec::new();
        for (name, value) in &config.headers {
            let key = name.to_ascii_lowercase().parse().map_err(|e| error(format!("header {name:?}: {e}")))?;
            let value = value.expose().parse().map_err(|e| error(format!("header {name:?}: {e}")))?;
            metadata.push((key, value));
        }
        let auth = auth(&config.auth).map_err(error)?;
        Ok(GrpcTransport { channel: builder.connect_lazy(), target: endpoint.to_string(), metadata, auth })
    }

    async fn export(&self, request: &Request) -> Reply {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        if let Err(error) = grpc.ready().await {
            return Reply::Failed { reason: format!("gRPC channel not ready: {error}") };
        }
        let mut call = tonic::Request::new(request.body.clone());
        for (key, value) in &self.metadata {
            call.metadata_mut().insert(key.clone(), value.clone());
        }
        match self.auth.bearer().map(|token| token.map(|t| format!("Bearer {t}").parse())) {
            Ok(None) => {}
            Ok(Some(Ok(value))) => {
                call.metadata_mut().insert("authorization", value);
            }
            Ok(Some(Err(_))) => return Reply::Failed { reason: "the bearer token is not valid header text".into() },
            Err(reason) => return Reply::Failed { reason },
        }
        let path = http::uri::PathAndQuery::from_static(EXPORT_PATH);
        match grpc.unary(call, path, RawCodec).await {
            Ok(response) => Reply::Answer { status: 200, retry_after: None, body: response.into_inner() },
            Err(status) => reply_for(&status),
        }
    }

    async fn connect_check(&self) -> Result<String, String> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        match tokio::time::timeout(Duration::from_secs(5), grpc.ready()).await {
            Ok(Ok(())) => Ok(format!("{} channel ready", self.target)),
            Ok(Err(error)) => Err(format!("{}: {error}", self.target)),
            Err(_) => Err(format!("{}: no connection within 5s", self.target)),
        }
    }
}

impl Transport for GrpcTransport {
    fn send<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Reply> {
        Box::pin(self.export(request))
    }

    fn health_check(&self) -> BoxFuture<'_, Result<String, String>> {
        Box::pin(self.connect_check())
    }
}

/// The HTTP status with the same retry meaning as a gRPC status (per the OTLP spec's list of
/// retryable codes).
fn reply_for(status: &tonic::Status) -> Reply {
    let http = match status.code() {
        Code::Ok => 200,
        Code::ResourceExhausted => 429,
        Code::Unavailable
        | Code::Cancelled
        | Code::Aborted
        | Code::OutOfRange
        | Code::DataLoss
        | Code::DeadlineExceeded
        | Code::Unknown
        | Code::Internal => 503,
        _ => 400,
    };
    let reason = format!("gRPC {:?}: {}", status.code(), status.message());
    if http == 503 && status.message().contains("transport") {
        return Reply::Failed { reason };
    }
    Reply::Answer { status: http, retry_after: None, body: Bytes::from(reason) }
}

fn tls(config: &HttpSettings) -> Result<ClientTlsConfig, String> {
    let mut tls = ClientTlsConfig::new();
    let settings = &config.tls;
    match &settings.ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| format!("tls.ca_file {}: {e}", path.display()))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        None => tls = tls.with_native_roots(),
    }
    if let Some((cert, key)) = &settings.client_cert {
        let cert = std::fs::read(cert).map_err(|e| format!("tls.cert_file {}: {e}", cert.display()))?;
        let key = std::fs::read(key).map_err(|e| format!("tls.key_file {}: {e}", key.display()))?;
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Ok(tls)
}

/// A codec that sends and receives message bytes unchanged.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Self::Error> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_map_to_the_retry_policy() {
        let status = |code| match reply_for(&tonic::Status::new(code, "x")) {
            Reply::Answer { status, .. } => status,
            Reply::Failed { .. } => 0,
        };
        assert_eq!(status(Code::Unavailable), 503);
        assert_eq!(status(Code::ResourceExhausted), 429);
        assert_eq!(status(Code::InvalidArgument), 400);
        assert_eq!(status(Code::PermissionDenied), 400);
    }
}
