//! JSON read strictly: an object that repeats a key is refused, at any depth.
//!
//! serde_json keeps the last of repeated keys; other readers (browsers' `JSON.parse` keeps the
//! last too, some keep the first, some refuse) may see another event in the same bytes. Collect
//! refuses such bodies (`duplicate_field`) and ingest dead-letters them with the same code, so
//! every consumer reads an event the same way.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::fmt;

/// The start of the message of the error raised for a repeated key; [`is_duplicate_key`]
/// recognises it after serde_json adds its position.
const DUPLICATE: &str = "duplicate key ";

/// Reads a JSON value like `serde_json::Value`'s own `Deserialize`, refusing repeated keys.
#[derive(Clone, Copy)]
pub struct StrictValue;

/// Parses `text` strictly.
pub fn from_str(text: &str) -> serde_json::Result<Value> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = StrictValue.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// Whether a serde_json error is the refusal of a repeated key.
pub fn is_duplicate_key(error: &serde_json::Error) -> bool {
    error.classify() == serde_json::error::Category::Data
        && error.to_string().starts_with(DUPLICATE)
}

/// The error a visitor raises for a repeated key (the key is quoted, shortened to 64 chars).
pub fn duplicate_key<E: de::Error>(key: &str) -> E {
    let shown: String = key.chars().take(64).collect();
    E::custom(format_args!("{DUPLICATE}{shown:?}"))
}

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // JSON text cannot spell NaN or infinity, so this is always a number.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element_seed(StrictValue)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(duplicate_key(&key));
            }
            let value = map.next_value_seed(StrictValue)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_like_serde_json_without_repeats() {
        let text = r#"{"a":1,"b":[true,null,-2,1.5e3,"x\u00e9"],"c":{"d":18446744073709551615}}"#;
        assert_eq!(
            from_str(text).unwrap(),
            serde_json::from_str::<Value>(text).unwrap()
        );
    }

    #[test]
    fn repeated_keys_are_refused_at_any_depth() {
        for text in [
            r#"{"a":1,"a":2}"#,
            r#"{"a":{"b":1,"b":1}}"#,
            r#"[{"x":[{"k":0,"k":0}]}]"#,
            // The same key spelled with an escape is the same key.
            r#"{"ab":1,"a\u0062":2}"#,
        ] {
            let e = from_str(text).unwrap_err();
            assert!(is_duplicate_key(&e), "{text}: {e}");
        }
        let e = from_str("{\"a\":").unwrap_err();
        assert!(!is_duplicate_key(&e));
        // The same key in sibling objects is not a repeat.
        assert!(from_str(r#"[{"a":1},{"a":2}]"#).is_ok());
    }

    #[test]
    fn deep_nesting_stays_an_error() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(from_str(&deep).is_err());
    }
}
