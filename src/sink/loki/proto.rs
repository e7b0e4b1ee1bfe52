//! The Loki push messages (`pkg/push/push.proto`), derived by hand with prost: no build.rs, no
//! protoc. `EntryAdapter` field 3 carries structured metadata (Loki 2.9+); the body of
//! `POST /loki/api/v1/push` is a snappy-compressed (block format) `PushRequest`.
//!
//! The sink writes requests with [`PushEncoder`], which encodes the same messages from
//! borrowed text with prost's field encoders, so no line is copied into an owned message
//! first; the owned messages decode them (tests, receivers).

use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

/// `logproto.PushRequest`
#[derive(Clone, PartialEq, prost::Message)]
pub struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    pub streams: Vec<StreamAdapter>,
}

/// `logproto.StreamAdapter`: one stream (a label set) and its entries, oldest first.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamAdapter {
    /// The label set in Prometheus form: `{app="x", level="info"}`.
    #[prost(string, tag = "1")]
    pub labels: String,
    #[prost(message, repeated, tag = "2")]
    pub entries: Vec<EntryAdapter>,
    #[prost(uint64, tag = "3")]
    pub hash: u64,
}

/// `logproto.EntryAdapter`
#[derive(Clone, PartialEq, prost::Message)]
pub struct EntryAdapter {
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    #[prost(string, tag = "2")]
    pub line: String,
    #[prost(message, repeated, tag = "3")]
    pub structured_metadata: Vec<LabelPairAdapter>,
}

/// `logproto.LabelPairAdapter`
#[derive(Clone, PartialEq, prost::Message)]
pub struct LabelPairAdapter {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `google.protobuf.Timestamp`
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl Timestamp {
    pub fn from_jiff(ts: jiff::Timestamp) -> Timestamp {
        Timestamp { seconds: ts.as_second(), nanos: ts.subsec_nanosecond() }
    }
}

/// Writes a `PushRequest` stream by stream, entry by entry, from borrowed text. Bytes are
/// identical to encoding the owned messages with prost (empty strings omitted, as proto3 does).
#[derive(Default)]
pub struct PushEncoder {
    request: Vec<u8>,
    stream: Vec<u8>,
    entry: Vec<u8>,
}

impl PushEncoder {
    pub fn with_capacity(bytes: usize) -> PushEncoder {
        PushEncoder { request: Vec::with_capacity(bytes), ..PushEncoder::default() }
    }

    /// Starts a `StreamAdapter` with its label text.
    pub fn begin_stream(&mut self, labels: &str) {
        self.stream.clear();
        put_str(1, labels, &mut self.stream);
    }

    /// Adds an `EntryAdapter` to the current stream; `metadata` are (name, value) pairs.
    pub fn entry<'a>(
        &mut self,
        time: jiff::Timestamp,
        line: &str,
        metadata: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) {
        self.entry.clear();
        prost::encoding::message::encode(1, &Timestamp::from_jiff(time), &mut self.entry);
        put_str(2, line, &mut self.entry);
        for (name, value) in metadata {
            let length = str_len(1, name) + str_len(2, value);
            encode_key(3, WireType::LengthDelimited, &mut self.entry);
            encode_varint(length as u64, &mut self.entry);
            put_str(1, name, &mut self.entry);
            put_str(2, value, &mut self.entry);
        }
        put_bytes(2, &self.entry, &mut self.stream);
    }

    /// Ends the current stream.
    pub fn end_stream(&mut self) {
        put_bytes(1, &self.stream, &mut self.request);
    }

    /// The encoded `PushRequest`.
    pub fn finish(self) -> Vec<u8> {
        self.request
    }
}

/// A length-delimited field (always written: an entry or stream is never omitted).
fn put_bytes(tag: u32, bytes: &[u8], out: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// A string field, omitted when empty.
fn put_str(tag: u32, text: &str, out: &mut Vec<u8>) {
    if !text.is_empty() {
        put_bytes(tag, text.as_bytes(), out);
    }
}

fn str_len(tag: u32, text: &str) -> usize {
    if text.is_empty() { 0 } else { key_len(tag) + encoded_len_varint(text.len() as u64) + text.len() }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn the_encoder_writes_what_prost_writes_for_the_owned_messages() {
        let time = jiff::Timestamp::from_nanosecond(1_764_072_000_123_456_789).expect("time");
        let long_line = "x".repeat(300);
        let owned = PushRequest {
            streams: vec![
                StreamAdapter {
                    labels: r#"{level="info"}"#.into(),
                    entries: vec![
                        EntryAdapter {
                            timestamp: Some(Timestamp::from_jiff(time)),
                            line: "hello".into(),
                            structured_metadata: vec![
                                LabelPairAdapter { name: "user".into(), value: "u-1".into() },
                                LabelPairAdapter { name: "empty".into(), value: String::new() },
                            ],
                        },
                        EntryAdapter {
                            timestamp: Some(Timestamp::from_jiff(time)),
                            line: String::new(),
                            structured_metadata: vec![],
                        },
                    ],
                    hash: 0,
                },
                StreamAdapter {
                    labels: r#"{level="warn"}"#.into(),
                    entries: vec![EntryAdapter {
                        timestamp: Some(Timestamp::from_jiff(jiff::Timestamp::UNIX_EPOCH)),
                        line: long_line.clone(),
                        structured_metadata: vec![],
                    }],
                    hash: 0,
                },
            ],
        };
        let mut encoder = PushEncoder::with_capacity(64);
        encoder.begin_stream(r#"{level="info"}"#);
        encoder.entry(time, "hello", [("user", "u-1"), ("empty", "")]);
        encoder.entry(time, "", []);
        encoder.end_stream();
        encoder.begin_stream(r#"{level="warn"}"#);
        encoder.entry(jiff::Timestamp::UNIX_EPOCH, &long_line, []);
        encoder.end_stream();
        let bytes = encoder.finish();
        assert_eq!(bytes, owned.encode_to_vec());
        assert_eq!(PushRequest::decode(bytes.as_slice()).expect("decode"), owned);
    }
}
