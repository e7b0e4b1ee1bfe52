//! The [`Checker`] every component's settings check reports through: it collects issues with
//! the file, line, column and field path, so that one run reports every problem, not just the
//! first.

use serde_saphyr::Spanned;

use super::ConfigIssue;

/// Collects the issues of one config file.
pub struct Checker<'a> {
    origin: &'a str,
    issues: Vec<ConfigIssue>,
}

impl<'a> Checker<'a> {
    pub(super) fn new(origin: &'a str) -> Checker<'a> {
        Checker { origin, issues: Vec::new() }
    }

    /// The file being checked (or `<embedded quickstart>`).
    pub fn origin(&self) -> &'a str {
        self.origin
    }

    /// An issue with `field` at the position of `spanned`.
    pub fn at<T>(&mut self, spanned: &Spanned<T>, field: String, message: String, hint: Option<&str>) {
        let position = Some((spanned.referenced.line() as usize, spanned.referenced.column() as usize));
        self.issues.push(ConfigIssue {
            origin: self.origin.to_owned(),
            position,
            field,
            message,
            hint: hint.map(str::to_owned),
        });
    }

    /// An issue without a position (a file named by the config, say).
    pub fn push(&mut self, issue: ConfigIssue) {
        self.issues.push(issue);
    }

    /// An issue with `field` of this file, without a position.
    pub fn unplaced(&mut self, field: String, message: String) {
        let origin = self.origin.to_owned();
        self.issues.push(ConfigIssue { origin, position: None, field, message, hint: None });
    }

    pub fn is_clean(&self) -> bool {
        self.issues.is_empty()
    }

    pub(super) fn into_issues(self) -> Vec<ConfigIssue> {
        self.issues
    }
}
