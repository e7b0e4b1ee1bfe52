//! `logs.buffer` as written ([`BufferConfig`]) and as checked ([`BufferSettings`]).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use crate::config::Checker;
use crate::config::units::ByteSize;

/// `logs.buffer:` — the disk buffer.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BufferConfig {
    /// Most bytes the spool keeps on disk; when full, the tailers wait (the files are the
    /// buffer again).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: ByteSize,
}

fn default_max_bytes() -> ByteSize {
    ByteSize::mib(1024)
}

/// `logs.buffer`, checked.
#[derive(Debug, Clone, Copy)]
pub struct BufferSettings {
    pub max_bytes: u64,
}

impl BufferConfig {
    /// At least 1MiB: a spool smaller than a few batches would make every outage a stall.
    pub fn check(spanned: &Spanned<BufferConfig>, checker: &mut Checker) -> BufferSettings {
        let max_bytes = spanned.value.max_bytes.bytes();
        if max_bytes < 1 << 20 {
            let message = format!("buffer max_bytes {} is too small", spanned.value.max_bytes);
            checker.at(spanned, "logs.buffer.max_bytes".into(), message, Some("use at least 1MiB, e.g. 1GiB"));
        }
        BufferSettings { max_bytes }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_buffer_is_off_by_default_and_checked_when_on() {
        let off = crate::config::load_str("logs: {}\n", "t", &|_| None).expect("config");
        assert!(off.logs.buffer.is_none());
        let on = crate::config::load_str("logs:\n  buffer: {}\n", "t", &|_| None).expect("config");
        assert_eq!(on.logs.buffer.map(|b| b.max_bytes), Some(1 << 30));
        let errors = crate::config::load_str("logs:\n  buffer: { max_bytes: 1KiB }\n", "t", &|_| None)
            .expect_err("too small")
            .to_string();
        assert!(errors.contains("logs.buffer.max_bytes"), "{errors}");
    }
}
