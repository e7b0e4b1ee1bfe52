//! The field names of a serde struct, in declaration order, read from its own `Deserialize`
//! impl: what a check needs to list or compare fields without a hand-kept table.

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// The YAML names of `T`'s fields (after `rename`), in declaration order; empty for a type
/// that is not a struct.
pub fn field_names<T: for<'de> Deserialize<'de>>() -> &'static [&'static str] {
    let mut names = None;
    let _ = T::deserialize(FieldNames(&mut names));
    names.unwrap_or_default()
}

/// A deserializer that records the field list serde's derive hands to `deserialize_struct`,
/// then stops.
struct FieldNames<'a>(&'a mut Option<&'static [&'static str]>);

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("only structs have field names"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = Some(fields);
        Err(de::Error::custom("field names recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Example {
        first: u8,
        #[serde(rename = "type")]
        kind: String,
        last: bool,
    }

    #[test]
    fn names_in_declaration_order_after_renames() {
        assert_eq!(field_names::<Example>(), &["first", "type", "last"]);
        assert!(field_names::<u8>().is_empty());
    }
}
