//! Record attributes: a small map from names to typed values, kept as one vector sorted by name.
//!
//! A record carries a handful of attributes, written once by a parser and read by a sink on
//! another thread. A sorted vector costs one allocation per record where a tree costs one per
//! node, looks names up by binary search, and iterates in the same (sorted) order a `BTreeMap`
//! would, so the JSON form is unchanged. Names of up to 24 bytes are stored inline
//! (`CompactString`), without an allocation of their own.

use std::cmp::Ordering;
use std::fmt;
use std::ops::Index;

use compact_str::CompactString;
use serde::ser::{Serialize, SerializeMap, Serializer};

use super::Value;

/// An attribute's name.
pub type AttributeName = CompactString;

/// Record attributes, keyed by name, iterated in name order.
#[derive(Clone, Default, PartialEq)]
pub struct Attributes {
    /// Sorted by name, names unique.
    entries: Vec<(AttributeName, Value)>,
}

impl Attributes {
    pub const fn new() -> Attributes {
        Attributes { entries: Vec::new() }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Where `name` is, or where it would be inserted.
    fn position(&self, name: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|(key, _)| compare_names(key.as_bytes(), name.as_bytes()))
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.position(name).ok().map(|i| &self.entries[i].1)
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut Value> {
        self.position(name).ok().map(|i| &mut self.entries[i].1)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.position(name).is_ok()
    }

    /// Sets `name` to `value`, returning the value it replaced.
    pub fn insert(&mut self, name: impl Into<AttributeName> + AsRef<str>, value: Value) -> Option<Value> {
        // Parsers often meet names in order: appending needs one comparison.
        if self.entries.last().is_none_or(|(last, _)| compare_names(last.as_bytes(), name.as_ref().as_bytes()).is_lt())
        {
            self.entries.push((name.into(), value));
            return None;
        }
        match self.position(name.as_ref()) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                self.entries.insert(i, (name.into(), value));
                None
            }
        }
    }

    pub fn remove(&mut self, name: &str) -> Option<Value> {
        self.position(name).ok().map(|i| self.entries.remove(i).1)
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Moves the attributes into an exactly sized map, leaving this one empty but with its
    /// capacity, to build the next record's attributes in without growing a vector again.
    pub fn take_exact(&mut self) -> Attributes {
        Attributes { entries: self.entries.drain(..).collect() }
    }

    /// Keeps the attributes for which `keep` says true.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &mut Value) -> bool) {
        self.entries.retain_mut(|(name, value)| keep(name, value));
    }

    /// The attributes in name order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(name, value)| (name.as_str(), value))
    }

    /// The attributes in name order, values mutable.
    pub fn iter_mut(&mut self) -> impl ExactSizeIterator<Item = (&str, &mut Value)> {
        self.entries.iter_mut().map(|(name, value)| (name.as_str(), value))
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

impl IntoIterator for Attributes {
    type Item = (AttributeName, Value);
    type IntoIter = std::vec::IntoIter<(AttributeName, Value)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl fmt::Debug for Attributes {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for Attributes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.entries.len()))?;
        for (name, value) in &self.entries {
            map.serialize_entry(name.as_str(), value)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn short_names_are_stored_inline() {
        let mut attributes = Attributes::new();
        attributes.insert("http.request.method", Value::from("GET"));
        attributes.insert("a.name.of.twenty-five.bcd", Value::from(1));
        assert!(!attributes.entries[1].0.is_heap_allocated(), "19 bytes");
        assert!(attributes.entries[0].0.is_heap_allocated(), "25 bytes");
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
        let capacity = scratch.entries.capacity();
        let taken = scratch.take_exact();
        assert_eq!((taken.len(), taken.entries.capacity()), (5, 5));
        assert!(scratch.is_empty() && scratch.entries.capacity() == capacity);
    }

    proptest! {
        /// Any sequence of inserts, removes and retains leaves what a BTreeMap would hold, in
        /// the same order.
        #[test]
        fn behaves_like_a_btree_map(operations in prop::collection::vec((0u8..3, "[a-e]{0,3}", any::<i32>()), 0..64)) {
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
