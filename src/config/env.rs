//! `${VAR}` and `${VAR:-default}` substitution from the environment, applied to the config
//! text before it is parsed. `$$` writes a literal `$`.

use std::collections::BTreeSet;

/// The result of interpolation: the new text and the names of variables that were unset and
/// had no default (they became empty strings, as in a shell).
#[derive(Debug)]
pub struct Interpolated {
    pub text: String,
    pub unset: BTreeSet<String>,
}

/// Substitutes variables using `lookup`. Fails on an unterminated `${` or an invalid name,
/// returning the 1-based line and column of the offending `$`.
pub fn interpolate(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Interpolated, (usize, usize, String)> {
    let mut out = String::with_capacity(text.len());
    let mut unset = BTreeSet::new();
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
            continue;
        }
        let Some(body_and_tail) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let position = text.len() - rest.len() + dollar;
        let Some(close) = body_and_tail.find('}') else {
            return Err(location_error(text, position, "unterminated ${...}: add the closing brace"));
        };
        let body = &body_and_tail[..close];
        let (name, default) = match body.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (body, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            let message = format!("invalid variable name {name:?} in ${{{body}}}");
            return Err(location_error(text, position, &message));
        }
        match (lookup(name), default) {
            (Some(value), Some(default)) if value.is_empty() => out.push_str(default),
            (Some(value), _) => out.push_str(&value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => {
                unset.insert(name.to_owned());
            }
        }
        rest = &body_and_tail[close + 1..];
    }
    out.push_str(rest);
    Ok(Interpolated { text: out, unset })
}

fn location_error(text: &str, byte: usize, message: &str) -> (usize, usize, String) {
    let before = &text[..byte];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column, message.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TENANT" => Some("acme".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn substitutes_values_and_defaults() {
        let out = interpolate("a: ${TENANT}\nb: ${MISSING:-x}\nc: ${EMPTY:-d}\nd: $$5 $x", env)
            .expect("valid");
        assert_eq!(out.text, "a: acme\nb: x\nc: d\nd: $5 $x");
        assert!(out.unset.is_empty());
    }

    #[test]
    fn unset_without_default_is_empty_and_reported() {
        let out = interpolate("key: '${ES_API_KEY}'", env).expect("valid");
        assert_eq!(out.text, "key: ''");
        assert!(out.unset.contains("ES_API_KEY"));
    }

    #[test]
    fn reports_location_of_bad_syntax() {
        let (line, col, msg) = interpolate("a: 1\nb: x${OOPS", env).expect_err("unterminated");
        assert_eq!((line, col), (2, 5));
        assert!(msg.contains("unterminated"));
        assert!(interpolate("a: ${bad-name}", env).is_err());
    }
}
