//! The effective configuration as the admin listener's `/config` shows it, kept as compact
//! JSON text.
//!
//! Off the request path: made once per config load (`validate.rs`), read only when an
//! operator asks `/config`. As a parsed `serde_json::Value` the dump cost more than
//! everything else a route keeps: every concern's keys per route (absent ones as `null`),
//! each an owned `String` in a B-tree node — about 6 KB a route, 30 MB at 5,000 routes. The
//! same as compact text is under 1 KB a route; `/config` parses it back when asked, so its
//! output is unchanged.

use serde::{Serialize, Serializer};
use serde_json::Value;
use std::fmt;
use std::sync::Arc;

/// The redacted effective config as compact JSON text (cheap to clone: the text is shared).
#[derive(Clone)]
pub(crate) struct ConfigDump {
    text: Arc<str>,
    /// Tests index into the dump as into a `Value`; parsed on first use.
    #[cfg(test)]
    parsed: std::sync::OnceLock<Value>,
}

impl ConfigDump {
    /// Keep `value` as text; the tree itself is dropped here.
    pub(crate) fn new(value: Value) -> ConfigDump {
        ConfigDump {
            // `Value`'s `Display` is the compact JSON serialisation, and cannot fail.
            text: value.to_string().into(),
            #[cfg(test)]
            parsed: std::sync::OnceLock::new(),
        }
    }

    /// The dump as a tree, parsed anew on each call.
    pub(crate) fn to_value(&self) -> Result<Value, serde_json::Error> {
        serde_json::from_str(&self.text)
    }

    #[cfg(test)]
    fn value(&self) -> &Value {
        self.parsed
            .get_or_init(|| self.to_value().expect("the dump is JSON this module wrote"))
    }
}

/// Serialises as the tree it was made from (so `/config` renders it pretty as before).
impl Serialize for ConfigDump {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_value()
            .map_err(serde::ser::Error::custom)?
            .serialize(serializer)
    }
}

/// The compact JSON text, as `Value`'s `Display` writes it.
impl fmt::Display for ConfigDump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for ConfigDump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConfigDump({} bytes)", self.text.len())
    }
}

#[cfg(test)]
impl std::ops::Index<&str> for ConfigDump {
    type Output = Value;

    fn index(&self, key: &str) -> &Value {
        &self.value()[key]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_as_the_tree_it_was_made_from() {
        let tree = json!({
            "routes": [{ "name": "a", "percent": 33.3, "tiny": 1e-7, "big": 1.7976931348623157e308,
                         "third": 0.30000000000000004, "none": null, "list": [], "map": {} }],
            "runtime": { "workers": 1, "text": "quote \" and \\u{1F600} 😀" }
        });
        let dump = ConfigDump::new(tree.clone());
        assert_eq!(
            serde_json::to_vec_pretty(&dump).expect("serialises"),
            serde_json::to_vec_pretty(&tree).expect("serialises")
        );
        assert_eq!(dump.to_string(), tree.to_string());
        assert_eq!(dump["routes"][0]["name"], "a");
        assert_eq!(dump.to_value().expect("parses"), tree);
    }
}
