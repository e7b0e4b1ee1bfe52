//! The one redaction function. Every text pillion shows about its configuration or its peers
//! (`/config`, its own log lines, every error message) goes through [`text`]: the userinfo and
//! query string of every URL, and the value after a password, token, secret, api-key or
//! authorization name (including `Bearer` credentials), become `<redacted>`.

use std::borrow::Cow;
use std::io::{self, Write};
use std::sync::LazyLock;

use regex::Regex;

/// Shown instead of every secret.
pub const REDACTED: &str = "<redacted>";

/// `scheme://[userinfo@]host...[?query]`; the pieces that may hold secrets are captured.
static URL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)\b([a-z][a-z0-9+.-]*://)(?:([^\s"'<>\\/?#@]*)@)?([^\s"'<>\\?#]*)(\?[^\s"'<>\\#]*)?"#)
        .expect("a valid regex")
});

/// `password=...`, `"api_key": "..."`, `token: ...`, `Authorization: ...`.
static NAMED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)\b((?:[a-z0-9]+[_-])*(?:password|passwd|secret|token|api[_-]?key|apikey|access[_-]?key|authorization|credentials?))(\\?["']?\s*[=:]\s*\\?["']?)(?:(?:bearer|basic)\s+)?([^\s"'\\&,;}]+)"#,
    )
    .expect("a valid regex")
});

/// `Bearer <token>` / `Basic <credentials>` anywhere.
static SCHEME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}").expect("a valid regex"));

/// `text` with every secret replaced by `<redacted>`; borrowed when there is none.
pub fn text(text: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(text);
    if text.contains("://") {
        let replaced = URL.replace_all(&out, |caps: &regex::Captures| {
            let mut url = caps[1].to_owned();
            if caps.get(2).is_some() {
                url.push_str(REDACTED);
                url.push('@');
            }
            url.push_str(&caps[3]);
            if let Some(query) = caps.get(4) {
                // Punctuation closing a sentence is not part of the query.
                let query = query.as_str();
                let body = query.trim_end_matches([':', ',', ';', '.', ')']);
                url.push('?');
                if body.len() > 1 {
                    url.push_str(REDACTED);
                }
                url.push_str(&query[body.len()..]);
            }
            url
        });
        if let Cow::Owned(replaced) = replaced {
            out = Cow::Owned(replaced);
        }
    }
    if let Cow::Owned(replaced) = NAMED.replace_all(&out, |caps: &regex::Captures| {
        if &caps[3] == REDACTED || caps[3].starts_with('<') {
            caps[0].to_owned()
        } else {
            format!("{}{}{REDACTED}", &caps[1], &caps[2])
        }
    }) {
        out = Cow::Owned(replaced);
    }
    if let Cow::Owned(replaced) = SCHEME.replace_all(&out, |caps: &regex::Captures| format!("{} {REDACTED}", &caps[1]))
    {
        out = Cow::Owned(replaced);
    }
    out
}

/// A URL as it may be shown: userinfo and query string redacted.
pub fn url(url: &url::Url) -> String {
    text(url.as_str()).into_owned()
}

/// A log writer that redacts each write (a formatted log line) before it reaches `inner`.
pub struct Redacting<W>(pub W);

impl<W: Write> Write for Redacting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match std::str::from_utf8(buf) {
            Ok(line) => {
                self.0.write_all(text(line).as_bytes())?;
                Ok(buf.len())
            }
            Err(_) => self.0.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_userinfo_and_query() {
        assert_eq!(text("http://user:hunter2@loki:99999"), "http://<redacted>@loki:99999");
        assert_eq!(
            text("error sending request for url (https://es:9200/_bulk?api_key=s3cr3t&x=1)"),
            "error sending request for url (https://es:9200/_bulk?<redacted>)"
        );
        assert_eq!(
            text(r#"{"endpoint":"http://u:p@c:4317/v1?t=1","x":1}"#),
            r#"{"endpoint":"http://<redacted>@c:4317/v1?<redacted>","x":1}"#
        );
        assert_eq!(text("http://loki:3100/loki/api/v1/push"), "http://loki:3100/loki/api/v1/push");
        assert_eq!(text("upstream https://x/?token=abc: not http"), "upstream https://x/?<redacted>: not http");
        assert!(matches!(text("nothing to see"), Cow::Borrowed(_)));
    }

    #[test]
    fn named_secrets_and_credentials_go() {
        for (input, secret) in [
            ("password=hunter2", "hunter2"),
            (r#"{"api_key":"k-123"}"#, "k-123"),
            ("Authorization: Bearer abcdefgh12345", "abcdefgh12345"),
            ("bearer_token: tok-9", "tok-9"),
            ("sent header Bearer abcdefgh12345 along", "abcdefgh12345"),
            (r#"message="x" password: "pw""#, "pw"),
        ] {
            let shown = text(input);
            assert!(!shown.contains(secret), "{input} -> {shown}");
            assert!(shown.contains(REDACTED), "{input} -> {shown}");
        }
        assert_eq!(text("tokens_total 5"), "tokens_total 5");
    }
}
