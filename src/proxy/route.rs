//! The `http_route` label: the configured template a path matches, else the path with id-like
//! segments (numbers, UUIDs, long hex) replaced by `{id}`. Learned (untemplated) values are at
//! most [`MAX_ROUTE_BYTES`] long and at most `max_routes` at once; one unused for `route_ttl` is
//! forgotten to make room, and past that new ones are `other`. Configured templates are never
//! crowded out: they do not count against `max_routes`. Whatever clients send, the label's
//! cardinality and length stay bounded.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::config::units::RouteTemplate;

/// The label value used for routes that are too long or past `max_routes`.
pub const OTHER: &str = "other";

/// The longest `http_route` value learned from a path; longer ones are `other`.
pub const MAX_ROUTE_BYTES: usize = 128;

/// `last_sweep` before the first sweep.
const NEVER: u64 = u64::MAX;

/// Called with each learned route that is forgotten, so its metric series can go too.
pub type OnForget = Box<dyn Fn(&str) + Send + Sync>;

/// Maps request paths to bounded `http_route` values.
pub struct Routes {
    templates: Vec<Template>,
    max_routes: usize,
    ttl: Duration,
    epoch: Instant,
    /// Learned routes and when each was last used (milliseconds since `epoch`).
    learned: RwLock<HashMap<Arc<str>, AtomicU64>>,
    /// When expired routes were last looked for (milliseconds since `epoch`).
    last_sweep: AtomicU64,
    other: Arc<str>,
    on_forget: OnForget,
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes").field("templates", &self.templates).field("max_routes", &self.max_routes).finish()
    }
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
    pub fn new(templates: &[RouteTemplate], max_routes: usize, ttl: Duration, on_forget: OnForget) -> Routes {
        Routes {
            templates: templates.iter().map(Template::new).collect(),
            max_routes,
            ttl,
            epoch: Instant::now(),
            learned: RwLock::new(HashMap::new()),
            last_sweep: AtomicU64::new(NEVER),
            other: Arc::from(OTHER),
            on_forget,
        }
    }

    /// The `http_route` value for a request path (without the query string).
    pub fn route(&self, path: &str) -> Arc<str> {
        if let Some(template) = self.templates.iter().find(|t| t.matches(path)) {
            return Arc::clone(&template.text);
        }
        // A path far longer than any route cannot template down to one: not worth a copy.
        if path.len() > MAX_ROUTE_BYTES * 8 {
            return Arc::clone(&self.other);
        }
        if needs_templating(path) { self.bounded(&templated(path)) } else { self.bounded(path) }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// `route` if it is already known or there is room for it, else `other`.
    fn bounded(&self, route: &str) -> Arc<str> {
        if route.len() > MAX_ROUTE_BYTES {
            return Arc::clone(&self.other);
        }
        let now = self.now_ms();
        {
            let learned = self.learned.read().unwrap_or_else(|e| e.into_inner());
            if let Some((known, used)) = learned.get_key_value(route) {
                used.store(now, Ordering::Relaxed);
                return Arc::clone(known);
            }
            if learned.len() >= self.max_routes && !self.sweep_due(now) {
                return Arc::clone(&self.other);
            }
        }
        let mut learned = self.learned.write().unwrap_or_else(|e| e.into_inner());
        if let Some((known, used)) = learned.get_key_value(route) {
            used.store(now, Ordering::Relaxed);
            return Arc::clone(known);
        }
        if learned.len() >= self.max_routes && self.sweep_due(now) {
            self.last_sweep.store(now, Ordering::Relaxed);
            let ttl = self.ttl.as_millis() as u64;
            learned.retain(|route, used| {
                let keep = now.saturating_sub(used.load(Ordering::Relaxed)) < ttl;
                if !keep {
                    (self.on_forget)(route);
                }
                keep
            });
        }
        if learned.len() >= self.max_routes {
            return Arc::clone(&self.other);
        }
        let route: Arc<str> = Arc::from(route);
        learned.insert(Arc::clone(&route), AtomicU64::new(now));
        route
    }

    /// Whether a full table may be swept for expired routes now: at most once a second (a
    /// sweep is a pass over `max_routes` entries under the write lock).
    fn sweep_due(&self, now: u64) -> bool {
        let last = self.last_sweep.load(Ordering::Relaxed);
        last == NEVER || now.saturating_sub(last) >= 1000.min(self.ttl.as_millis() as u64)
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
        Routes::new(&templates, max, Duration::from_secs(600), Box::new(|_| {}))
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

    #[test]
    fn long_routes_are_other_and_templates_are_never_crowded_out() {
        let routes = routes(&["/api/users/{id}"], 2);
        assert_eq!(&*routes.route(&format!("/{}", "z".repeat(MAX_ROUTE_BYTES))), OTHER);
        assert_eq!(&*routes.route(&format!("/{}", "z".repeat(60_000))), OTHER);
        for i in 0..100 {
            routes.route(&format!("/junk{i}"));
        }
        assert_eq!(&*routes.route("/api/users/alice"), "/api/users/{id}");
    }

    #[test]
    fn idle_learned_routes_are_forgotten_after_the_ttl() {
        let forgotten = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let seen = Arc::clone(&forgotten);
        let on_forget: OnForget = Box::new(move |route| seen.lock().expect("lock").push(route.to_owned()));
        let routes = Routes::new(&[], 2, Duration::from_millis(50), on_forget);
        assert_eq!(&*routes.route("/junk1"), "/junk1");
        assert_eq!(&*routes.route("/junk2"), "/junk2");
        assert_eq!(&*routes.route("/real"), OTHER, "the first sweep finds nothing expired yet");
        std::thread::sleep(Duration::from_millis(120));
        routes.last_sweep.store(NEVER, Ordering::Relaxed);
        let _ = routes.route("/junk2");
        assert_eq!(&*routes.route("/real"), "/real");
        assert_eq!(*forgotten.lock().expect("lock"), vec!["/junk1".to_owned()]);
    }
}
