//! Structural deserialisation: JSON (from `source.rs`) → the serde mirror in `file.rs`, one
//! section and one list element at a time.
//!
//! Part of config loading (read → parse with positions → env substitution → **structural
//! deserialise** → semantic validation → typed `Config`). Deserialising `FileConfig` in one go
//! stops at the first error, so a file with a typo in `routes[0]` and another in
//! `clusters[3]` would take two runs to fix. Here `runtime`, `admin` and `access_log` are
//! deserialised as wholes and every element of `listeners`, `clusters` and `routes` on its
//! own, each through `serde_path_to_error` so the failing key path (and through the
//! `SourceMap`, its line:column) is known. Inside an element serde still stops at the first
//! error, so the offending key is set aside and the element deserialised again: every
//! structural mistake is reported, and an element that deserialises without its bad keys
//! still gets its semantic checks (the file is rejected either way).
//!
//! serde's messages are rewritten into the file's vocabulary ("mapping", "list", "whole
//! number") and misspelt keys get a "did you mean".

use super::file::{AccessLogFile, AdminFile, ClusterFile, FileConfig, ListenerFile};
use super::file::{RouteFile, RuntimeFile};
use super::source::{KeyPath, Seg, SourceMap};
use super::Problem;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use serde_path_to_error::Segment;
use std::borrow::Cow;

/// The top-level keys, in the order the reference config documents them.
pub(crate) const SECTIONS: [&str; 6] = [
    "runtime",
    "admin",
    "access_log",
    "listeners",
    "clusters",
    "routes",
];

/// Mistakes reported per element before giving up on it (each retry removes one key).
const MAX_RETRIES: usize = 32;

/// Keys whose value is a duration string; a bare number there gets a message about units.
const DURATION_KEYS: [&str; 9] = [
    "handshake_timeout",
    "max_age",
    "drain_timeout",
    "watch_interval",
    "header_read_timeout",
    "request_body_timeout",
    "idle_timeout",
    "connect_timeout",
    "timeout",
];

/// The file's sections; an element is `None` when it failed to deserialise (its problem is
/// already reported), so validation can still check everything else with the right indexes.
#[derive(Debug, Default)]
pub(crate) struct Parts {
    pub runtime: Option<RuntimeFile>,
    /// Outer `None`: the section failed. Inner `None`: no admin listener configured.
    pub admin: Option<Option<AdminFile>>,
    pub access_log: Option<AccessLogFile>,
    pub listeners: Vec<Option<ListenerFile>>,
    pub clusters: Vec<Option<ClusterFile>>,
    pub routes: Vec<Option<RouteFile>>,
    /// Names of clusters whose element failed to deserialise, so routes that name them are
    /// not also reported as pointing at an unknown cluster.
    pub unparsed_cluster_names: Vec<String>,
}

impl Parts {
    /// The whole file, when every part deserialised.
    pub(crate) fn file(&self) -> Option<FileConfig> {
        Some(FileConfig {
            runtime: self.runtime.clone()?,
            admin: self.admin.clone()?,
            access_log: self.access_log.clone()?,
            listeners: self.listeners.iter().cloned().collect::<Option<_>>()?,
            clusters: self.clusters.iter().cloned().collect::<Option<_>>()?,
            routes: self.routes.iter().cloned().collect::<Option<_>>()?,
        })
    }
}

/// Places where the file type is a string but a YAML number or boolean is natural to write:
/// sizes (a bare number is bytes), header values to set or add, and the values of header
/// and query conditions. `source.rs` keeps such scalars as their literal text. Durations are
/// deliberately not here: their unit is required, so a bare number is an error.
pub(crate) fn wants_text(path: &KeyPath) -> bool {
    let key = |seg: &Seg, names: &[&str]| matches!(seg, Seg::Key(k) if names.contains(&k.as_str()));
    let index = |seg: &Seg| matches!(seg, Seg::Index(_));
    match path.segments() {
        // `min_version: 1.2` is a YAML number; it means the text "1.2".
        [listeners, i, section, name] => {
            key(listeners, &["listeners"])
                && index(i)
                && ((key(section, &["limits"])
                    && key(name, &["max_header_bytes", "max_uri_length"]))
                    || (key(section, &["tls"]) && key(name, &["min_version"])))
        }
        [routes, i, size] => key(routes, &["routes"]) && index(i) && key(size, &["max_body_size"]),
        [routes, i, direction, op, Seg::Key(_)] => {
            key(routes, &["routes"])
                && index(i)
                && key(direction, &["request_headers", "response_headers"])
                && key(op, &["set", "add"])
        }
        [routes, i, matcher, kind, j, value] => {
            key(routes, &["routes"])
                && index(i)
                && key(matcher, &["match"])
                && key(kind, &["headers", "query"])
                && index(j)
                && key(value, &["value"])
        }
        _ => false,
    }
}

/// Split the file into [`Parts`]. `Err` when the file is not a mapping at all, which makes
/// every other check meaningless.
pub(crate) fn split(root: &Value, map: &SourceMap) -> Result<(Parts, Vec<Problem>), Problem> {
    let empty = Map::new();
    let object = match root {
        Value::Object(object) => object,
        // An empty file: every section is absent, and validation says what is missing.
        Value::Null => &empty,
        other => {
            let message = format!(
                "the config must be a mapping of sections ({}), found {}",
                SECTIONS.join(", "),
                describe_value(other)
            );
            return Err(Problem::new(
                &KeyPath::root(),
                map.locate(&KeyPath::root()),
                message,
            ));
        }
    };

    let mut problems = Vec::new();
    for key in object.keys() {
        if !SECTIONS.contains(&key.as_str()) {
            let path = KeyPath::root().key(key);
            let message = unknown_key_message(key, &SECTIONS);
            problems.push(Problem::new(&path, map.locate_key(&path), message));
        }
    }

    let mut splitter = Splitter {
        map,
        problems: &mut problems,
    };
    let runtime = splitter.section::<RuntimeFile>(object, "runtime");
    let admin = match object.get("admin") {
        None | Some(Value::Null) => Some(None),
        Some(value) => splitter
            .deserialize::<AdminFile>(value, &KeyPath::root().key("admin"))
            .map(Some),
    };
    let access_log = splitter.section::<AccessLogFile>(object, "access_log");
    let listeners = splitter.list::<ListenerFile>(object, "listeners");
    let clusters = splitter.list::<ClusterFile>(object, "clusters");
    let routes = splitter.list::<RouteFile>(object, "routes");

    let unparsed_cluster_names = match object.get("clusters") {
        Some(Value::Array(items)) => items
            .iter()
            .zip(&clusters)
            .filter(|(_, parsed)| parsed.is_none())
            .filter_map(|(item, _)| item.get("name").and_then(Value::as_str))
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };

    let parts = Parts {
        runtime,
        admin,
        access_log,
        listeners,
        clusters,
        routes,
        unparsed_cluster_names,
    };
    Ok((parts, problems))
}

struct Splitter<'a> {
    map: &'a SourceMap,
    problems: &'a mut Vec<Problem>,
}

impl Splitter<'_> {
    /// A section that may be left out; `key:` with nothing after it counts as left out.
    fn section<T: DeserializeOwned + Default>(
        &mut self,
        object: &Map<String, Value>,
        key: &str,
    ) -> Option<T> {
        match object.get(key) {
            None | Some(Value::Null) => Some(T::default()),
            Some(value) => self.deserialize(value, &KeyPath::root().key(key)),
        }
    }

    /// A list section, each element deserialised on its own.
    fn list<T: DeserializeOwned>(
        &mut self,
        object: &Map<String, Value>,
        key: &str,
    ) -> Vec<Option<T>> {
        let path = KeyPath::root().key(key);
        match object.get(key) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(index, item)| self.deserialize(item, &path.index(index)))
                .collect(),
            Some(other) => {
                let message = format!(
                    "expected a list (items starting with `- `), found {}",
                    describe_value(other)
                );
                self.problems
                    .push(Problem::new(&path, self.map.locate(&path), message));
                // One failed element stands for the unusable section, so validation neither
                // builds a config nor claims the section is empty.
                vec![None]
            }
        }
    }

    /// Deserialise one section or element. After an error, the offending key is removed
    /// and deserialisation retried, so an element with three mistakes shows three problems
    /// and, once what is left deserialises, its remaining fields still get semantic checks.
    /// A missing required key, or a wrong type for the element as a whole, ends the retries.
    fn deserialize<T: DeserializeOwned>(&mut self, value: &Value, base: &KeyPath) -> Option<T> {
        let mut value = Cow::Borrowed(value);
        let mut removed: Vec<Vec<Seg>> = Vec::new();
        for _ in 0..MAX_RETRIES {
            let err = match serde_path_to_error::deserialize::<_, T>(value.as_ref()) {
                Ok(parsed) => return Some(parsed),
                Err(err) => err,
            };
            let mut inner = Vec::new();
            for segment in err.path().iter() {
                match segment {
                    Segment::Seq { index } => inner.push(Seg::Index(*index)),
                    Segment::Map { key } => inner.push(Seg::Key(key.clone())),
                    Segment::Enum { variant } => inner.push(Seg::Key(variant.clone())),
                    Segment::Unknown => {}
                }
            }
            let mut path = base.clone();
            for seg in &inner {
                path.push(seg.clone());
            }
            let raw = err.inner().to_string();
            if let Some(field) = missing_field(&raw) {
                // A required key we removed for having the wrong type: already reported.
                let mut missing = inner.clone();
                missing.push(Seg::Key(field.to_string()));
                if removed.contains(&missing) {
                    return None;
                }
            }
            let problem = match parse_unknown_field(&raw) {
                // serde_path_to_error's path already ends with the unknown key.
                Some((key, expected)) => {
                    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
                    let message = unknown_key_message(&key, &expected);
                    Problem::new(&path, self.map.locate_key(&path), message)
                }
                None => {
                    let message = humanize(&raw, &path);
                    Problem::new(&path, self.map.locate(&path), message)
                }
            };
            self.problems.push(problem);
            if missing_field(&raw).is_some() {
                return None;
            }
            match remove_key(value.to_mut(), &inner) {
                Some(key_path) => removed.push(key_path),
                None => return None,
            }
        }
        None
    }
}

/// Remove the mapping entry that holds the value at `path` (for a list item, the whole list:
/// removing one item would renumber the rest and misplace later problems). Returns the path
/// of the removed entry, `None` when there is no such entry.
fn remove_key(value: &mut Value, path: &[Seg]) -> Option<Vec<Seg>> {
    let last_key = path.iter().rposition(|seg| matches!(seg, Seg::Key(_)))?;
    let mut parent = Some(value);
    for seg in &path[..last_key] {
        parent = match (parent, seg) {
            (Some(Value::Object(object)), Seg::Key(key)) => object.get_mut(key),
            (Some(Value::Array(items)), Seg::Index(index)) => items.get_mut(*index),
            _ => None,
        };
    }
    match (parent, &path[last_key]) {
        (Some(Value::Object(object)), Seg::Key(key)) => {
            object.remove(key)?;
            Some(path[..=last_key].to_vec())
        }
        _ => None,
    }
}

/// `missing field `x`` → `x`.
fn missing_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
}

/// `unknown field `x`, expected one of `a`, `b`` → (`x`, [`a`, `b`]).
fn parse_unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (key, rest) = rest.split_once('`')?;
    // The expected names are the backquoted words that follow.
    let expected = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    Some((key.to_string(), expected))
}

/// "unknown key `timout`, did you mean `timeout`? (expected one of ...)".
pub(crate) fn unknown_key_message(key: &str, expected: &[&str]) -> String {
    let listed = expected
        .iter()
        .map(|name| format!("`{name}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let known = if expected.is_empty() {
        String::from("no keys are allowed here")
    } else {
        format!("expected one of {listed}")
    };
    match closest(key, expected.iter().copied()) {
        Some(suggestion) => format!("unknown key `{key}`, did you mean `{suggestion}`? ({known})"),
        None => format!("unknown key `{key}` ({known})"),
    }
}

/// The candidate nearest to `word` by edit distance, if it is near enough to be a typo.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .map(|candidate| (edit_distance(word, candidate), candidate))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Edit distance counting a swap of neighbours as one edit (optimal string alignment), so
/// `valeu` is one step from `value`; case-insensitive, since a key in the wrong case is
/// still a typo.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    // rows[i][j]: distance between a[..i] and b[..j].
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

/// Rewrite one of serde's messages in the words of the file.
fn humanize(message: &str, path: &KeyPath) -> String {
    if let Some(field) = missing_field(message) {
        return format!("missing required key `{field}`");
    }
    if let Some(rest) = message.strip_prefix("invalid length ") {
        // serde_json offers a list to a struct as a sequence of fields.
        if rest.contains("expected struct") {
            return String::from("expected a mapping (`key: value` lines), found a list");
        }
    }
    let body = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "));
    if let Some((found, expected)) = body.and_then(|body| body.split_once(", expected ")) {
        let found = describe_found(found);
        let is_number = found.starts_with("the number");
        if is_number && path.last_key().is_some_and(|k| DURATION_KEYS.contains(&k)) {
            return format!(
                "expected a duration like \"250ms\" or \"5s\", found {found} (a unit is required)"
            );
        }
        return format!("expected {}, found {found}", describe_expected(expected));
    }
    message.to_string()
}

fn describe_expected(expected: &str) -> String {
    match expected {
        "usize" | "u64" => String::from("a whole number (0 or more)"),
        "u32" => format!("a whole number from 0 to {}", u32::MAX),
        "u16" => format!("a whole number from 0 to {}", u16::MAX),
        "a boolean" => String::from("true or false"),
        "a sequence" => String::from("a list"),
        "a map" => String::from("a mapping"),
        other if other.starts_with("struct ") => String::from("a mapping (`key: value` lines)"),
        other => other.to_string(),
    }
}

/// serde's `Unexpected` rendering → plain words.
fn describe_found(found: &str) -> String {
    let quoted = |prefix: &str| {
        found
            .strip_prefix(prefix)
            .map(|rest| rest.trim_matches('`').to_string())
    };
    if let Some(number) = quoted("integer ").or_else(|| quoted("floating point ")) {
        return format!("the number {number}");
    }
    if let Some(boolean) = quoted("boolean ") {
        return format!("the boolean {boolean}");
    }
    if let Some(text) = found.strip_prefix("string ") {
        return format!("the string {text}");
    }
    match found {
        "map" => String::from("a mapping"),
        "sequence" => String::from("a list"),
        "null" | "unit value" => String::from("an empty value"),
        other => other.to_string(),
    }
}

fn describe_value(value: &Value) -> String {
    match value {
        Value::Null => String::from("an empty value"),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => String::from("a list"),
        Value::Object(_) => String::from("a mapping"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::source::{parse_tree, to_json};

    fn split_text(text: &str) -> (Parts, Vec<Problem>) {
        let root = parse_tree(text).expect("valid YAML");
        let converted = to_json(root.as_ref(), &|_| None, &wants_text);
        split(&converted.value, &converted.map).expect("a mapping")
    }

    fn summary(problems: &[Problem]) -> Vec<(String, usize, usize, String)> {
        problems
            .iter()
            .map(|p| (p.path.clone(), p.line, p.column, p.message.clone()))
            .collect()
    }

    #[test]
    fn unknown_top_level_key_points_at_the_key() {
        let (_, problems) = split_text("listeners: []\nrouts: []\n");
        assert_eq!(
            summary(&problems),
            [(
                "routs".to_string(),
                2,
                1,
                "unknown key `routs`, did you mean `routes`? (expected one of `runtime`, \
                 `admin`, `access_log`, `listeners`, `clusters`, `routes`)"
                    .to_string()
            )]
        );
    }

    #[test]
    fn unknown_nested_key_points_at_the_key() {
        let text = "routes:\n  - cluster: a\n    match:\n      headers:\n        - name: x\n          valeu: y\n";
        let (parts, problems) = split_text(text);
        assert_eq!(
            summary(&problems),
            [(
                "routes[0].match.headers[0].valeu".to_string(),
                6,
                11,
                "unknown key `valeu`, did you mean `value`? (expected one of `name`, `value`)"
                    .to_string()
            )]
        );
        // The rest of the element still deserialised, so it gets semantic checks too.
        let Some(route) = &parts.routes[0] else {
            panic!("route recovered")
        };
        assert_eq!(route.matcher.headers[0].value, None);
    }

    #[test]
    fn every_failing_element_is_reported() {
        let text = "\
clusters:
  - name: a
    endpoints: [x:1]
    conect_timeout: 1s
  - name: b
  - name: c
    endpoints: [y:2]
routes:
  - cluster: a
    timeout: 5
  - {}
  - cluster: c
    match: []
";
        let (parts, problems) = split_text(text);
        assert_eq!(
            summary(&problems),
            [
                (
                    "clusters[0].conect_timeout".into(),
                    4,
                    5,
                    "unknown key `conect_timeout`, did you mean `connect_timeout`? (expected \
                     one of `name`, `endpoints`, `protocol`, `connect_timeout`, `pool`, `tls`)"
                        .into()
                ),
                (
                    "clusters[1]".into(),
                    5,
                    5,
                    "missing required key `endpoints`".into()
                ),
                (
                    "routes[0].timeout".into(),
                    10,
                    14,
                    "expected a duration like \"250ms\" or \"5s\", found the number 5 (a unit \
                     is required)"
                        .into()
                ),
                (
                    "routes[1]".into(),
                    11,
                    5,
                    "missing required key `cluster`".into()
                ),
                (
                    "routes[2].match".into(),
                    13,
                    12,
                    "expected a mapping (`key: value` lines), found a list".into()
                ),
            ]
        );
        assert!(parts.clusters[2].is_some());
        // `a` recovered once its misspelt key was set aside; `b` lacks a required key.
        assert!(parts.clusters[0].is_some());
        assert_eq!(parts.unparsed_cluster_names, ["b"]);
    }

    #[test]
    fn several_mistakes_in_one_element_are_all_reported() {
        let text = "\
routes:
  - cluster: [a]
    timout: 5s
    match:
      methods: [GET, 7]
      pth_prefix: /x
    max_body_size: {}
";
        let (parts, problems) = split_text(text);
        let found: Vec<_> = problems
            .iter()
            .map(|p| (p.path.as_str(), p.line, p.column))
            .collect();
        // serde visits keys in sorted order; problems are sorted by position later.
        assert_eq!(
            found,
            [
                ("routes[0].cluster", 2, 14),
                ("routes[0].match.methods[1]", 5, 22),
                ("routes[0].match.pth_prefix", 6, 7),
                ("routes[0].max_body_size", 7, 20),
                ("routes[0].timout", 3, 5),
            ]
        );
        // `cluster` is required and was unusable, so the route is not rebuilt without it
        // (and "missing required key `cluster`" is not reported on top).
        assert!(parts.routes[0].is_none());
    }

    #[test]
    fn messages_use_the_files_words() {
        let text = "\
runtime:
  workers: -1
listeners:
  - name: [a]
    address: x
  - name: b
    address: y
    via: 'yes'
  - name: c
    address: z
    limits:
      max_concurrent_streams: 5000000000
clusters: {name: a}
";
        let (_, problems) = split_text(text);
        let messages: Vec<_> = problems
            .iter()
            .map(|p| (p.path.as_str(), p.message.as_str()))
            .collect();
        assert_eq!(
            messages,
            [
                (
                    "runtime.workers",
                    "expected a whole number (0 or more), found the number -1"
                ),
                ("listeners[0].name", "expected a string, found a list"),
                (
                    "listeners[1].via",
                    "expected true or false, found the string \"yes\""
                ),
                (
                    "listeners[2].limits.max_concurrent_streams",
                    "expected a whole number from 0 to 4294967295, found the number 5000000000"
                ),
                (
                    "clusters",
                    "expected a list (items starting with `- `), found a mapping"
                ),
            ]
        );
    }

    #[test]
    fn sizes_and_header_values_accept_numbers() {
        let text = "\
listeners:
  - name: a
    address: 127.0.0.1:1
    limits: {max_header_bytes: 4096, max_uri_length: 1024}
routes:
  - cluster: c
    max_body_size: 100
    match:
      headers: [{name: x-v, value: 2}]
      query: [{name: debug, value: true}]
    request_headers:
      set: {x-version: 2}
      add: {x-flag: false}
";
        let (parts, problems) = split_text(text);
        assert!(problems.is_empty(), "{problems:?}");
        let Some(listener) = &parts.listeners[0] else {
            panic!("listener parsed")
        };
        assert_eq!(listener.limits.max_header_bytes.as_deref(), Some("4096"));
        assert_eq!(listener.limits.max_uri_length.as_deref(), Some("1024"));
        let Some(route) = &parts.routes[0] else {
            panic!("route parsed")
        };
        assert_eq!(route.max_body_size.as_deref(), Some("100"));
        assert_eq!(route.matcher.headers[0].value.as_deref(), Some("2"));
        assert_eq!(route.matcher.query[0].value.as_deref(), Some("true"));
        assert_eq!(route.request_headers.set["x-version"], "2");
        assert_eq!(route.request_headers.add["x-flag"], "false");
    }

    #[test]
    fn empty_sections_count_as_absent() {
        let (parts, problems) = split_text("runtime:\nadmin:\naccess_log:\nlisteners:\n");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(parts.runtime, Some(RuntimeFile::default()));
        assert_eq!(parts.admin, Some(None));
        assert!(parts.listeners.is_empty());
        assert!(parts.file().is_some());
    }

    #[test]
    fn a_file_that_is_not_a_mapping_is_one_problem() {
        let root = parse_tree("- a\n- b\n").unwrap();
        let converted = to_json(root.as_ref(), &|_| None, &wants_text);
        let problem = split(&converted.value, &converted.map).unwrap_err();
        assert_eq!((problem.line, problem.column), (1, 1));
        assert!(
            problem.message.ends_with("found a list"),
            "{}",
            problem.message
        );
    }

    #[test]
    fn typo_suggestions() {
        assert_eq!(
            closest("timout", ["timeout", "name"].into_iter()),
            Some("timeout")
        );
        assert_eq!(
            closest("Name", ["timeout", "name"].into_iter()),
            Some("name")
        );
        assert_eq!(closest("zzz", ["timeout", "name"].into_iter()), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("valeu", "value"), 1);
        assert_eq!(edit_distance("abc", ""), 3);
    }
}
