//! The effective configuration as the admin listener's `/config` shows it, kept as compact
//! JSON text.
//!
//! Off the request path: made once per config load (`validate.rs`), read only when an
//! operator asks `/config`. As a parsed `serde_json::Value` the dump cost more than
//! everything else a route keeps: every concern's keys per route (absent ones as `null`),
//! each an owned `String` in a B-tree node — about 6 KB a route, 30 MB at 5,000 routes. The
//! same as compact text is under 1 KB a route; `/config` parses it back when asked, so its
//! output is unchanged.
//!
//! Most of that text is the keys of the policies a route does not use, written as `null`,
//! and empty maps and lists (`headers: []`, `add: {}`). Those are left out of the text, at
//! any depth of the route's mappings; each route keeps the index of its set of such fields
//! (routes share a handful of distinct sets), and they are put back when the dump is parsed.

use serde::{Serialize, Serializer};
use serde_json::Value;
use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::sync::Arc;

/// The redacted effective config as compact JSON text (cheap to clone: the text is shared).
#[derive(Clone)]
pub(crate) struct ConfigDump {
    /// Without the `null` fields of the routes.
    text: Arc<str>,
    /// The distinct sets of a route's left-out fields, parents before their fields.
    null_sets: Arc<[Box<[Empty]>]>,
    /// Per route, in order: its set's index in `null_sets`.
    route_nulls: Arc<[u32]>,
    /// Tests index into the dump as into a `Value`; parsed on first use.
    #[cfg(test)]
    parsed: std::sync::OnceLock<Value>,
}

impl ConfigDump {
    /// Keep `value` as text; the tree itself is dropped here.
    #[cfg(test)]
    pub(crate) fn new(mut value: Value) -> ConfigDump {
        let mut routes = RouteDumps::default();
        if let Some(Value::Array(items)) = value.as_object_mut().and_then(|o| o.remove("routes")) {
            for route in items {
                routes.push(route);
            }
        }
        match value {
            Value::Object(rest) => routes.finish(rest),
            _ => routes.finish(serde_json::Map::new()),
        }
    }

    /// The dump as a tree, parsed anew on each call (routes' `null` fields put back).
    pub(crate) fn to_value(&self) -> Result<Value, serde_json::Error> {
        let mut value: Value = serde_json::from_str(&self.text)?;
        if let Some(Value::Array(routes)) = value.get_mut("routes") {
            for (route, set) in routes.iter_mut().zip(self.route_nulls.iter()) {
                let (Value::Object(fields), Some(keys)) =
                    (route, self.null_sets.get(*set as usize))
                else {
                    continue;
                };
                for empty in keys.iter() {
                    empty.put_back(fields);
                }
            }
        }
        Ok(value)
    }

    #[cfg(test)]
    fn value(&self) -> &Value {
        self.parsed
            .get_or_init(|| self.to_value().expect("the dump is JSON this module wrote"))
    }
}

/// The routes' part of a [`ConfigDump`], written one route at a time: the validator turns
/// each route's tree into text as soon as the route is checked, so the trees of thousands of
/// routes never exist at once (their peak, and the holes they would leave between what the
/// runtime keeps, were most of the memory a large config left behind).
#[derive(Default)]
pub(crate) struct RouteDumps {
    /// `{"routes":[` and the routes so far, comma-separated.
    text: String,
    sets: HashMap<Vec<Empty>, u32>,
    route_nulls: Vec<u32>,
}

impl RouteDumps {
    /// Add the next route's dump (secrets already redacted).
    pub(crate) fn push(&mut self, mut route: Value) {
        let mut nulls = Vec::new();
        if let Value::Object(fields) = &mut route {
            take_empty(fields, &mut Vec::new(), &mut nulls);
        }
        // Taken children first; put back parents first.
        nulls.reverse();
        let next = u32::try_from(self.sets.len()).unwrap_or(u32::MAX);
        self.route_nulls
            .push(*self.sets.entry(nulls).or_insert(next));
        self.text.push_str(if self.text.is_empty() {
            "{\"routes\":["
        } else {
            ","
        });
        // `Value`'s `Display` is the compact JSON serialisation, and cannot fail.
        let _ = write!(self.text, "{route}");
    }

    /// The whole dump: these routes under `routes`, and the other top-level keys of `rest`.
    pub(crate) fn finish(mut self, rest: serde_json::Map<String, Value>) -> ConfigDump {
        if self.text.is_empty() {
            self.text.push_str("{\"routes\":[");
        }
        self.text.push(']');
        if rest.is_empty() {
            self.text.push('}');
        } else {
            // `{"a":…,"b":…}` after `"routes":[…]`, without its opening brace.
            let rest = Value::Object(rest).to_string();
            self.text.push(',');
            self.text.push_str(rest.get(1..).unwrap_or("}"));
        }
        let mut null_sets = vec![Box::default(); self.sets.len()];
        for (keys, index) in self.sets {
            if let Some(slot) = null_sets.get_mut(index as usize) {
                *slot = keys.into_boxed_slice();
            }
        }
        ConfigDump {
            text: self.text.into(),
            null_sets: null_sets.into(),
            route_nulls: self.route_nulls.into(),
            #[cfg(test)]
            parsed: std::sync::OnceLock::new(),
        }
    }
}

/// A field left out of a route's dump text: where it was and what it held.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Empty {
    /// Mapping keys from the route down to the field.
    path: Box<[Box<str>]>,
    kind: EmptyKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum EmptyKind {
    Null,
    Map,
    List,
}

impl Empty {
    fn put_back(&self, route: &mut serde_json::Map<String, Value>) {
        let Some((last, parents)) = self.path.split_last() else {
            return;
        };
        let mut fields = route;
        for key in parents {
            match fields.get_mut(&**key) {
                Some(Value::Object(inner)) => fields = inner,
                _ => return,
            }
        }
        let value = match self.kind {
            EmptyKind::Null => Value::Null,
            EmptyKind::Map => Value::Object(serde_json::Map::new()),
            EmptyKind::List => Value::Array(Vec::new()),
        };
        fields.insert(last.to_string(), value);
    }
}

/// Remove the `null`, `{}` and `[]` fields of `fields` and of the mappings below it (not
/// inside lists), noting each in `out` after its own fields (so a mapping emptied by this
/// is noted, and put back, as `{}` before them).
fn take_empty(
    fields: &mut serde_json::Map<String, Value>,
    path: &mut Vec<Box<str>>,
    out: &mut Vec<Empty>,
) {
    fields.retain(|key, field| {
        path.push(key.as_str().into());
        if let Value::Object(inner) = field {
            take_empty(inner, path, out);
        }
        let kind = match field {
            Value::Null => Some(EmptyKind::Null),
            Value::Object(inner) if inner.is_empty() => Some(EmptyKind::Map),
            Value::Array(items) if items.is_empty() => Some(EmptyKind::List),
            _ => None,
        };
        if let Some(kind) = kind {
            out.push(Empty {
                path: path.as_slice().into(),
                kind,
            });
        }
        path.pop();
        kind.is_none()
    });
}

/// Serialises as the tree it was made from (so `/config` renders it pretty as before).
impl Serialize for ConfigDump {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_value()
            .map_err(serde::ser::Error::custom)?
            .serialize(serializer)
    }
}

/// The compact JSON text of the tree it was made from, as `Value`'s `Display` writes it.
impl fmt::Display for ConfigDump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_value() {
            Ok(value) => write!(f, "{value}"),
            Err(_) => f.write_str(&self.text),
        }
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
            "routes": [
                { "name": "a", "percent": 33.3, "tiny": 1e-7, "big": 1.7976931348623157e308,
                  "third": 0.30000000000000004, "none": null, "list": [], "map": {},
                  "nested": { "kept": null, "empty": {}, "deeper": { "list": [], "x": 1 } },
                  "in_list": [{ "a": null }, []] },
                { "name": "b", "none": null, "other": null },
                { "name": "c", "none": null },
                { "name": "d" }
            ],
            "runtime": { "workers": 1, "text": "quote \" and \\u{1F600} 😀", "gone": null }
        });
        let dump = ConfigDump::new(tree.clone());
        assert_eq!(
            serde_json::to_vec_pretty(&dump).expect("serialises"),
            serde_json::to_vec_pretty(&tree).expect("serialises")
        );
        assert_eq!(dump.to_string(), tree.to_string());
        assert_eq!(dump["routes"][0]["name"], "a");
        assert_eq!(dump.to_value().expect("parses"), tree);
        assert_eq!(dump["routes"][1]["other"], Value::Null);
        assert!(dump["routes"][3].get("none").is_none());
        // The routes' empty fields are not in the text (those inside lists are), and the
        // routes that left out the same fields share their set.
        assert!(!dump.text.contains("\"other\""));
        assert!(!dump.text.contains("\"empty\""));
        assert!(!dump.text.contains("\"deeper\":{\"list\""));
        assert!(dump.text.contains("\"in_list\":[{\"a\":null},[]]"));
        assert_eq!(dump.null_sets.len(), 4);
    }

    #[test]
    fn a_dump_without_routes_or_other_keys_renders_as_it_was() {
        for tree in [json!({}), json!({ "routes": [] }), json!({ "admin": null })] {
            let dump = ConfigDump::new(tree.clone());
            let mut expected = tree.clone();
            // The routes key is always there (a config always has the list).
            expected
                .as_object_mut()
                .expect("object")
                .entry("routes")
                .or_insert(json!([]));
            assert_eq!(dump.to_value().expect("parses"), expected);
        }
    }
}
