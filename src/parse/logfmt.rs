//! logfmt: `key=value key2="quoted \"value\"" bare_key` pairs, as written by Go's logfmt,
//! logrus and slog's text handler.

/// One key and its value (`None` for a bare key). Values are unescaped.
pub type Pair = (String, Option<String>);

/// Splits `line` into pairs; `None` when it is not logfmt (a token that is not a key).
pub fn parse(line: &str) -> Option<Vec<Pair>> {
    let bytes = line.as_bytes();
    let mut pairs = Vec::new();
    let mut pos = 0;
    loop {
        while pos < bytes.len() && bytes[pos].is_ascii_whitespace() {
            pos += 1;
        }
        if pos >= bytes.len() {
            break;
        }
        let key_start = pos;
        while pos < bytes.len() && is_key_byte(bytes[pos]) {
            pos += 1;
        }
        if pos == key_start {
            return None;
        }
        let key = line[key_start..pos].to_owned();
        if pos >= bytes.len() || bytes[pos].is_ascii_whitespace() {
            pairs.push((key, None));
            continue;
        }
        if bytes[pos] != b'=' {
            return None;
        }
        pos += 1;
        let (value, next) = if bytes.get(pos) == Some(&b'"') { quoted(line, pos + 1)? } else { bare(line, pos) };
        pairs.push((key, Some(value)));
        pos = next;
    }
    (!pairs.is_empty() && pairs.iter().any(|(_, value)| value.is_some())).then_some(pairs)
}

fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'/' | b'@' | b'[' | b']')
}

fn bare(line: &str, start: usize) -> (String, usize) {
    let end = line[start..].find(|c: char| c.is_ascii_whitespace()).map_or(line.len(), |i| start + i);
    (line[start..end].to_owned(), end)
}

/// Reads a quoted value starting after its opening quote; returns it and the offset after the
/// closing quote. An unterminated quote is not logfmt.
fn quoted(line: &str, start: usize) -> Option<(String, usize)> {
    let mut value = String::new();
    let mut chars = line[start..].char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, start + i + 1)),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                't' => value.push('\t'),
                'r' => value.push('\r'),
                other => value.push(other),
            },
            other => value.push(other),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pairs_quotes_escapes_and_bare_keys() {
        let pairs = parse(r#"level=info msg="hello \"world\"" debug user.id=42 empty="""#).expect("logfmt");
        assert_eq!(
            pairs,
            vec![
                ("level".into(), Some("info".into())),
                ("msg".into(), Some("hello \"world\"".into())),
                ("debug".into(), None),
                ("user.id".into(), Some("42".into())),
                ("empty".into(), Some(String::new())),
            ]
        );
    }

    #[test]
    fn prose_is_not_logfmt() {
        assert!(parse("GET /index.html 200").is_none());
        assert!(parse("just words").is_none());
        assert!(parse(r#"a="unterminated"#).is_none());
    }

    proptest! {
        #[test]
        fn never_panics(line in ".*") {
            let _ = parse(&line);
        }
    }
}
