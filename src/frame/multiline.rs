//! Multiline rules: which lines continue the record before them (stack traces). A rule is a
//! `start` pattern (a matching line starts a record, any other line continues one) or a
//! preset, which instead names the lines that continue a record:
//!
//! - `java`: the exception line (`java.lang.IllegalStateException: boom`), indented lines
//!   (`\tat ...`), `Caused by:`, `Suppressed:`, `... 12 more`;
//! - `python`: `Traceback (most recent call last):`, indented frames, blank lines between
//!   chained exceptions, the chaining sentences, and the final `SomeError: message` line;
//! - `go`: a `panic:` and everything after it: `goroutine N [running]:`, function lines,
//!   indented file lines, `created by`, `exit status`, blank lines.

use regex::Regex;

use super::MultilinePreset;

/// When a line continues the record before it.
#[derive(Debug, Clone)]
pub struct MultilineRule {
    /// A line matching this starts a record.
    start: Option<Regex>,
    /// A line matching this continues a record.
    continuation: Option<Regex>,
}

const JAVA: &str =
    r"^(\s|Caused by:|Suppressed:|\.\.\. \d+ (more|common frames omitted)|[\w$.]+(Exception|Error|Throwable)(:|$))";
const PYTHON: &str = r"^(\s|$|Traceback \(most recent call last\):|During handling of the above exception|The above exception was the direct cause|[A-Za-z_][\w.]*(Error|Exception|Warning|Interrupt|Exit|Iteration)(:|$))";
const GO: &str = r"^(\s|$|goroutine \d+ \[|\[signal |created by |exit status \d+|[\w./*()\[\]-]+\(.*\)$)";

impl MultilineRule {
    /// Lines matching `start` start records.
    pub fn start(start: Regex) -> MultilineRule {
        MultilineRule { start: Some(start), continuation: None }
    }

    /// A built-in rule.
    pub fn preset(preset: MultilinePreset) -> MultilineRule {
        let pattern = match preset {
            MultilinePreset::Java => JAVA,
            MultilinePreset::Python => PYTHON,
            MultilinePreset::Go => GO,
        };
        // The presets are constants checked by the tests below.
        let continuation = Regex::new(pattern).ok();
        MultilineRule { start: None, continuation }
    }

    /// `line` continues the record before it.
    pub fn continues(&self, line: &str) -> bool {
        if self.continuation.as_ref().is_some_and(|c| c.is_match(line)) {
            return true;
        }
        self.start.as_ref().is_some_and(|start| !start.is_match(line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(rule: &MultilineRule, text: &str) -> Vec<usize> {
        let mut sizes: Vec<usize> = Vec::new();
        for line in text.lines() {
            match sizes.last_mut() {
                Some(size) if rule.continues(line) => *size += 1,
                _ => sizes.push(1),
            }
        }
        sizes
    }

    #[test]
    fn presets_compile() {
        for preset in [MultilinePreset::Java, MultilinePreset::Python, MultilinePreset::Go] {
            assert!(MultilineRule::preset(preset).continuation.is_some(), "{preset:?}");
        }
    }

    #[test]
    fn java_stack_traces_are_one_record() {
        let text = std::fs::read_to_string("fixtures/multiline/java.log").expect("fixture");
        assert_eq!(records(&MultilineRule::preset(MultilinePreset::Java), &text), vec![1, 9, 1]);
    }

    #[test]
    fn python_tracebacks_are_one_record() {
        let text = std::fs::read_to_string("fixtures/multiline/python.log").expect("fixture");
        assert_eq!(records(&MultilineRule::preset(MultilinePreset::Python), &text), vec![1, 13, 1]);
    }

    #[test]
    fn go_panics_are_one_record() {
        let text = std::fs::read_to_string("fixtures/multiline/go.log").expect("fixture");
        assert_eq!(records(&MultilineRule::preset(MultilinePreset::Go), &text), vec![1, 10]);
    }

    #[test]
    fn start_patterns_start_records() {
        let rule = MultilineRule::start(Regex::new(r"^\d{4}-").expect("regex"));
        assert_eq!(records(&rule, "2026-1 a\n  more\nmore\n2026-2 b\n"), vec![3, 1]);
    }
}
