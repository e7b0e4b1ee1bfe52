//! Record attributes: a small map from names to typed values, kept as one vector sorted by name
//! (a tree past 64 names).
//!
//! A record carries a handful of attributes, written once by a parser and read by a sink on
//! another thread. A sorted vector costs one allocation per record where a tree costs one per
//! node, looks names up by binary search, and iterates in the same (sorted) order a `BTreeMap`
//! would, so the JSON form is unchanged. Names of up to 24 bytes are stored inline
//! (`CompactString`), without an allocation of their own.

use std::cmp::Ordering;
use std::collections::{BTreeMap, btree_map};
use std::fmt;
use std::ops::Index;

use compact_str::CompactString;
use serde::ser::{Serialize, SerializeMap, Serializer};

use super::Value;

/// An attribute's name.
pub type AttributeName = CompactString;

/// Record attributes, keyed by name, iterated in name order.
#[derive(Clone, Default)]
pub struct Attributes {
    entries: Entries,
}

/// Maps past this many names become a tree: a sorted vector's inserts move O(n) entries, and
/// a long line of JSON or logfmt can carry tens of thousands of names.
const LARGE: usize = 64;

#[derive(Clone)]
enum Entries {
    /// Sorted by name, names unique.
    Small(Vec<(AttributeName, Value)>),
    Large(BTreeMap<AttributeName, Value>),
}

impl Default for Entries {
    fn default() -> Entries {
        Entries::Small(Vec::new())
    }
}

impl Attributes {
    pub const fn new() -> Attributes {
        Attributes { entries: Entries::Small(Vec::new()) }
    }

    pub fn len(&self) -> usize {
        match &self.entries {
            Entries::Small(entries) => entries.len(),
            Entries::Large(map) => map.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        match &self.entries {
            Entries::Small(entries) => position(entries, name).ok().map(|i| &entries[i].1),
            Entries::Large(map) => map.get(name),
        }
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut Value> {
        match &mut self.entries {
            Entries::Small(entries) => position(entries, name).ok().map(|i| &mut entries[i].1),
            Entries::Large(map) => map.get_mut(name),
        }
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Sets `name` to `value`, returning the value it replaced.
    pub fn insert(&mut self, name: impl Into<AttributeName> + AsRef<str>, value: Value) -> Option<Value> {
        let entries = match &mut self.entries {
            Entries::Small(entries) => entries,
            Entries::Large(map) => return map.insert(name.into(), value),
        };
        // Parsers often meet names in order: appending needs one comparison.
        let after_last = |(last, _): &(AttributeName, Value)| compare_names(last.as_bytes(), name.as_ref().as_bytes());
        if entries.last().is_none_or(|last| after_last(last).is_lt()) {
            entries.push((name.into(), value));
        } else {
            match position(entries, name.as_ref()) {
                Ok(i) => return Some(std::mem::replace(&mut entries[i].1, value)),
                Err(i) => entries.insert(i, (name.into(), value)),
            }
        }
        if entries.len() > LARGE {
            self.entries = Entries::Large(std::mem::take(entries).into_iter().collect());
        }
        None
    }

    pub fn remove(&mut self, name: &str) -> Option<Value> {
        match &mut self.entries {
            Entries::Small(entries) => position(entries, name).ok().map(|i| entries.remove(i).1),
            Entries::Large(map) => map.remove(name),
        }
    }

    pub fn clear(&mut self) {
        match &mut self.entries {
            Entries::Small(entries) => entries.clear(),
            Entries::Large(_) => self.entries = Entries::default(),
        }
    }

    /// Moves the attributes into an exactly sized map, leaving this one empty but with its
    /// capacity, to build the next record's attributes in without growing a vector again.
    pub fn take_exact(&mut self) -> Attributes {
        match &mut self.entries {
            Entries::Small(entries) => {
                let mut exact = Vec::with_capacity(entries.len());
                exact.append(entries);
                Attributes { entries: Entries::Small(exact) }
            }
            Entries::Large(_) => std::mem::take(self),
        }
    }

    /// Keeps the attributes for which `keep` says true.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &mut Value) -> bool) {
        match &mut self.entries {
            Entries::Small(entries) => entries.retain_mut(|(name, value)| keep(name, value)),
            Entries::Large(map) => map.retain(|name, value| keep(name, value)),
        }
    }

    /// The attributes in name order.
    pub fn iter(&self) -> Iter<'_> {
        match &self.entries {
            Entries::Small(entries) => Iter::Small(entries.iter()),
            Entries::Large(map) => Iter::Large(map.iter()),
        }
    }
}

/// Where `name` is in sorted `entries`, or where it would be inserted.
fn position(entries: &[(AttributeName, Value)], name: &str) -> Result<usize, usize> {
    entries.binary_search_by(|(key, _)| compare_names(key.as_bytes(), name.as_bytes()))
}

/// The attributes of an [`Attributes`] in name order.
pub enum Iter<'a> {
    Small(std::slice::Iter<'a, (AttributeName, Value)>),
    Large(btree_map::Iter<'a, AttributeName, Value>),
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a Value);

    fn next(&mut self) -> Option<(&'a str, &'a Value)> {
        match self {
            Iter::Small(entries) => entries.next().map(|(name, value)| (name.as_str(), value)),
            Iter::Large(entries) => entries.next().map(|(name, value)| (name.as_str(), value)),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            Iter::Small(entries) => entries.size_hint(),
            Iter::Large(entries) => entries.size_hint(),
        }
    }
}

impl ExactSizeIterator for Iter<'_> {}

/// Equal when they hold the same names and values, whichever form each has.
impl PartialEq for Attributes {
    fn eq(&self, other: &Attributes) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

/// Byte order, as `str`'s `Ord`; names usually differ in their first byte, which is compared
/// inline before calling `memcmp`.
#[inline]
fn compare_names(a: &[u8], b: &[u8]) -> Ordering {
    match (a.first(), b.first()) {
        (Some(x), Some(y)) if x != y => x.cmp(y),
        _ => a.cmp(b),
    }
}

impl Index<&str> for Attributes {
    type Output = Value;

    /// The value of `name`; panics when there is none (for tests and known names).
    fn index(&self, name: &str) -> &Value {
        self.get(name).unwrap_or_else(|| panic!("no attribute {name:?}"))
    }
}

impl<N: Into<AttributeName> + AsRef<str>> FromIterator<(N, Value)> for Attributes {
    fn from_iter<I: IntoIterator<Item = (N, Value)>>(iter: I) -> Attributes {
        let mut attributes = Attributes::new();
        for (name, value) in iter {
            attributes.insert(name, value);
        }
        attributes
    }
}

impl fmt::Debug for Attributes {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for Attributes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (name, value) in self.iter() {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn small(attributes: &Attributes) -> &Vec<(AttributeName, Value)> {
        match &attributes.entries {
            Entries::Small(entries) => entries,
            Entries::Large(_) => panic!("a tree"),
        }
    }

    #[test]
    fn many_names_in_reverse_order_make_a_tree() {
        let mut attributes = Attributes::new();
        for i in (0..50_000).rev() {
            attributes.insert(format!("k{i:05}"), Value::from(i));
        }
        assert!(matches!(attributes.entries, Entries::Large(_)));
        assert_eq!(attributes.len(), 50_000);
        assert_eq!(attributes.iter().next().map(|(name, _)| name), Some("k00000"));
        assert_eq!(attributes.get("k49999"), Some(&Value::from(49_999)));
        let mut copy = Attributes::new();
        for i in 0..50_000 {
            copy.insert(format!("k{i:05}"), Value::from(i));
        }
        assert!(copy == attributes);
    }

    #[test]
    fn short_names_are_stored_inline() {
        let mut attributes = Attributes::new();
        attributes.insert("http.request.method", Value::from("GET"));
        attributes.insert("a.name.of.twenty-five.bcd", Value::from(1));
        assert!(!small(&attributes)[1].0.is_heap_allocated(), "19 bytes");
        assert!(small(&attributes)[0].0.is_heap_allocated(), "25 bytes");
    }

    #[test]
    fn insert_replaces_and_remove_takes() {
        let mut attributes = Attributes::new();
        assert_eq!(attributes.insert("b", Value::from(1)), None);
        assert_eq!(attributes.insert("a", Value::from(2)), None);
        assert_eq!(attributes.insert("b", Value::from(3)), Some(Value::from(1)));
        assert_eq!(serde_json::to_string(&attributes).expect("json"), r#"{"a":2,"b":3}"#);
        assert_eq!(attributes.remove("a"), Some(Value::from(2)));
        assert_eq!(attributes.remove("a"), None);
        assert_eq!(attributes["b"], 3);
        assert_eq!(format!("{attributes:?}"), r#"{"b": Number(Number(3))}"#);
    }

    #[test]
    fn take_exact_keeps_the_capacity_behind() {
        let mut scratch = Attributes::new();
        for name in ["a", "b", "c", "d", "e"] {
            scratch.insert(name, Value::Null);
        }
        let capacity = small(&scratch).capacity();
        let taken = scratch.take_exact();
        assert_eq!((taken.len(), small(&taken).capacity()), (5, 5));
        assert!(scratch.is_empty() && small(&scratch).capacity() == capacity);
    }

    proptest! {
        /// Any sequence of inserts, removes and retains leaves what a BTreeMap would hold, in
        /// the same order.
        #[test]
        fn behaves_like_a_btree_map(operations in prop::collection::vec((0u8..3, "[a-p]{0,2}", -50i32..50), 0..400)) {
            let (mut attributes, mut model) = (Attributes::new(), BTreeMap::new());
            for (operation, name, number) in operations {
                match operation {
                    0 => prop_assert_eq!(
                        attributes.insert(name.as_str(), Value::from(number)),
                        model.insert(name.clone(), Value::from(number))
                    ),
                    1 => prop_assert_eq!(attributes.remove(&name), model.remove(&name)),
                    _ => {
                        attributes.retain(|_, value| value.as_i64() != Some(i64::from(number)));
                        model.retain(|_, value| value.as_i64() != Some(i64::from(number)));
                    }
                }
                prop_assert!(attributes.iter().map(|(k, v)| (k.to_owned(), v.clone())).eq(model.clone()));
                prop_assert_eq!(attributes.get(&name), model.get(&name));
            }
        }
    }
}
