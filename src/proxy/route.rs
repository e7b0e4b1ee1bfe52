//! The `http_route` label: the configured template a path matches, else the path with id-like
//! segments (numbers, UUIDs, long hex) replaced by `{id}`, else `other` once `max_routes`
//! distinct values exist. Whatever clients send, the label's cardinality stays bounded.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use crate::config::units::RouteTemplate;

/// The label value used once `max_routes` distinct routes have been seen.
pub const OTHER: &str = "other";

/// Maps request paths to bounded `http_route` values.
#[derive(Debug)]
pub struct Routes {
    templates: Vec<Template>,
    max_routes: usize,
    seen: RwLock<HashSet<Arc<str>>>,
    other: Arc<str>,
}

/// A configured template split into segments; `None` is a `{placeholder}`.
#[derive(Debug)]
struct Template {
    text: Arc<str>,
    segments: Vec<Option<String>>,
}

impl Template {
    fn new(template: &RouteTemplate) -> Template {
        let segments = template
            .0
            .split('/')
            .skip(1)
            .map(|segment| (!(segment.starts_with('{') && segment.ends_with('}'))).then(|| segment.to_owned()))
            .collect();
        Template { text: Arc::from(template.0.as_str()), segments }
    }

    fn matches(&self, path: &str) -> bool {
        let mut parts = path.split('/').skip(1);
        for expected in &self.segments {
            match (parts.next(), expected) {
                (Some(part), None) if !part.is_empty() => {}
                (Some(part), Some(literal)) if part == literal => {}
                _ => return false,
            }
        }
        parts.next().is_none()
    }
}

impl Routes {
    pub fn new(templates: &[RouteTemplate], max_routes: usize) -> Routes {
        Routes {
            templates: templates.iter().map(Template::new).collect(),
            max_routes,
            seen: RwLock::new(HashSet::new()),
            other: Arc::from(OTHER),
        }
    }

    /// The `http_route` value for a request path (without the query string).
    pub fn route(&self, path: &str) -> Arc<str> {
        if let Some(template) = self.templates.iter().find(|t| t.matches(path)) {
            return Arc::clone(&template.text);
        }
        if needs_templating(path) { self.bounded(&templated(path)) } else { self.bounded(path) }
    }

    /// `route` if it is already known or there is room for it, else `other`.
    fn bounded(&self, route: &str) -> Arc<str> {
        {
            let seen = self.seen.read().unwrap_or_else(|e| e.into_inner());
            if let Some(known) = seen.get(route) {
                return Arc::clone(known);
            }
            if seen.len() >= self.max_routes {
                return Arc::clone(&self.other);
            }
        }
        let mut seen = self.seen.write().unwrap_or_else(|e| e.into_inner());
        if let Some(known) = seen.get(route) {
            return Arc::clone(known);
        }
        if seen.len() >= self.max_routes {
            return Arc::clone(&self.other);
        }
        let route: Arc<str> = Arc::from(route);
        seen.insert(Arc::clone(&route));
        route
    }
}

fn needs_templating(path: &str) -> bool {
    path.split('/').any(is_id)
}

fn templated(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for (index, segment) in path.split('/').enumerate() {
        if index > 0 {
            out.push('/');
        }
        out.push_str(if is_id(segment) { "{id}" } else { segment });
    }
    out
}

/// Numbers, UUIDs and hex strings of 16 or more digits (hashes, object ids) are ids.
fn is_id(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    if bytes.is_empty() {
        return false;
    }
    if bytes.iter().all(u8::is_ascii_digit) {
        return true;
    }
    if is_uuid(bytes) {
        return true;
    }
    bytes.len() >= 16 && bytes.iter().all(u8::is_ascii_hexdigit)
}

fn is_uuid(bytes: &[u8]) -> bool {
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(index, byte)| match index {
            8 | 13 | 18 | 23 => *byte == b'-',
            _ => byte.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(templates: &[&str], max: usize) -> Routes {
        let templates: Vec<RouteTemplate> = templates.iter().map(|t| RouteTemplate((*t).to_owned())).collect();
        Routes::new(&templates, max)
    }

    #[test]
    fn configured_templates_win() {
        let routes = routes(&["/api/users/{id}", "/api/orders/{order_id}/items"], 10);
        assert_eq!(&*routes.route("/api/users/alice"), "/api/users/{id}");
        assert_eq!(&*routes.route("/api/orders/x-1/items"), "/api/orders/{order_id}/items");
        assert_eq!(&*routes.route("/api/orders/x-1/items/2"), "/api/orders/x-1/items/{id}");
    }

    #[test]
    fn id_segments_become_placeholders() {
        let routes = routes(&[], 10);
        assert_eq!(&*routes.route("/users/42"), "/users/{id}");
        assert_eq!(&*routes.route("/u/123e4567-e89b-12d3-a456-426614174000/x"), "/u/{id}/x");
        assert_eq!(&*routes.route("/blob/0123456789abcdef0123"), "/blob/{id}");
        assert_eq!(&*routes.route("/healthz"), "/healthz");
        assert_eq!(&*routes.route("/"), "/");
        assert_eq!(&*routes.route("/cafe"), "/cafe");
    }

    #[test]
    fn past_max_routes_everything_new_is_other() {
        let routes = routes(&[], 3);
        for i in 0..3 {
            assert_ne!(&*routes.route(&format!("/p{i}")), OTHER);
        }
        assert_eq!(&*routes.route("/new"), OTHER);
        assert_eq!(&*routes.route("/p1"), "/p1");
        for i in 0..10_000 {
            assert!(matches!(&*routes.route(&format!("/x{i}/y")), OTHER));
        }
    }
}
