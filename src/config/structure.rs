//! Structural deserialisation: JSON (from `source.rs`) → the serde mirror of the file, one
//! section and one list element at a time.
//!
//! Part of config loading (read → parse with positions → env substitution → **structural
//! deserialise** → semantic validation → typed `Config`). Deserialising the file in one go
//! stops at the first error, so a file with a typo in `routes[0]` and another in
//! `clusters[3]` would take two runs to fix. Here `runtime`, `admin` and each concern's
//! section are deserialised as wholes and every element of `listeners`, `clusters` and
//! `routes` on its own, through `deserialize.rs`, which reports every mistake with its key
//! path and line:column and sets bad keys aside so the rest still gets its semantic checks.
//!
//! A route's keys are split: `name`, `match` and `cluster` are the core's; every other key
//! belongs to the concern that declared it (`concerns.rs`), which deserialises its own keys
//! here too. A key nobody declared is reported with the keys that are allowed.

use super::deserialize::{describe_value, deserialize, unknown_key_message};
use super::file::{AdminFile, ClusterFile, ListenerFile, RouteFile, RuntimeFile};
use super::problem::Problem;
use super::source::{KeyPath, Seg, SourceMap};
use crate::concerns::{RoutePolicies, Sections};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// The core keys of a route; the concerns own the rest.
const ROUTE_CORE_KEYS: [&str; 3] = ["name", "match", "cluster"];

/// The top-level keys, in the order the reference config documents them: process settings,
/// then the concerns' sections, then the traffic (listeners, clusters, routes).
pub(crate) fn section_keys() -> Vec<&'static str> {
    let mut keys = vec!["runtime", "admin"];
    keys.extend(Sections::keys());
    keys.extend(["listeners", "clusters", "routes"]);
    keys
}

/// The file's sections; an element is `None` when it failed to deserialise (its problem is
/// already reported), so validation can still check everything else with the right indexes.
#[derive(Debug, Default)]
pub(crate) struct Parts {
    pub(crate) runtime: Option<RuntimeFile>,
    /// Outer `None`: the section failed. Inner `None`: no admin listener configured.
    pub(crate) admin: Option<Option<AdminFile>>,
    pub(crate) listeners: Vec<Option<ListenerFile>>,
    pub(crate) clusters: Vec<Option<ClusterFile>>,
    pub(crate) routes: Vec<Option<RouteFile>>,
    /// The concerns' sections that deserialised, by key, as their concern read them.
    pub(crate) sections: Map<String, Value>,
    /// Whether every concern section deserialised.
    pub(crate) sections_ok: bool,
    /// Names of clusters whose element failed to deserialise, so routes that name them are
    /// not also reported as pointing at an unknown cluster.
    pub(crate) unparsed_cluster_names: Vec<String>,
}

/// Places where the file type is a string but a YAML number or boolean is natural to write:
/// sizes (a bare number is bytes), header values to set or add, and the values of header
/// and query conditions. `source.rs` keeps such scalars as their literal text. Durations are
/// deliberately not here: their unit is required, so a bare number is an error. Concerns say
/// which of their own keys are text.
pub(crate) fn wants_text(path: &KeyPath) -> bool {
    let key = |seg: &Seg, names: &[&str]| matches!(seg, Seg::Key(k) if names.contains(&k.as_str()));
    let index = |seg: &Seg| matches!(seg, Seg::Index(_));
    match path.segments() {
        // `min_version: 1.2` is a YAML number; it means the text "1.2".
        [listeners, i, section, name] if key(listeners, &["listeners"]) => {
            index(i)
                && ((key(section, &["limits"])
                    && key(name, &["max_header_bytes", "max_uri_length"]))
                    || (key(section, &["tls"]) && key(name, &["min_version"])))
        }
        [routes, i, matcher, kind, j, value] if key(matcher, &["match"]) => {
            key(routes, &["routes"])
                && index(i)
                && key(kind, &["headers", "query"])
                && index(j)
                && key(value, &["value"])
        }
        [routes, i, rest @ ..] if key(routes, &["routes"]) && index(i) => {
            RoutePolicies::wants_text(rest)
        }
        segments => Sections::wants_text(segments),
    }
}

/// Split the file into [`Parts`]. `Err` when the file is not a mapping at all, which makes
/// every other check meaningless.
pub(crate) fn split(root: &Value, map: &SourceMap) -> Result<(Parts, Vec<Problem>), Problem> {
    let sections = section_keys();
    let empty = Map::new();
    let object = match root {
        Value::Object(object) => object,
        // An empty file: every section is absent, and validation says what is missing.
        Value::Null => &empty,
        other => {
            let message = format!(
                "the config must be a mapping of sections ({}), found {}",
                sections.join(", "),
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
        if !sections.contains(&key.as_str()) {
            let path = KeyPath::root().key(key);
            let message = unknown_key_message(key, &sections);
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
    let listeners = splitter.list::<ListenerFile>(object, "listeners");
    let clusters = splitter.list::<ClusterFile>(object, "clusters");
    let routes = splitter.routes(object);
    let before = splitter.problems.len();
    let concern_sections = Sections::structure(object, map, splitter.problems);
    let sections_ok = splitter.problems.len() == before;

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
        listeners,
        clusters,
        routes,
        sections: concern_sections,
        sections_ok,
        unparsed_cluster_names,
    };
    Ok((parts, problems))
}

struct Splitter<'a> {
    map: &'a SourceMap,
    problems: &'a mut Vec<Problem>,
}

impl Splitter<'_> {
    fn deserialize<T: DeserializeOwned>(&mut self, value: &Value, path: &KeyPath) -> Option<T> {
        deserialize(value, path, self.map, self.problems)
    }

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

    /// The items of a list section, or `Err` with the one failed element that stands for
    /// an unusable section (so validation neither builds a config nor claims it is empty).
    fn items<'v>(&mut self, object: &'v Map<String, Value>, key: &str) -> Result<&'v [Value], ()> {
        let path = KeyPath::root().key(key);
        match object.get(key) {
            None | Some(Value::Null) => Ok(&[]),
            Some(Value::Array(items)) => Ok(items),
            Some(other) => {
                let message = format!(
                    "expected a list (items starting with `- `), found {}",
                    describe_value(other)
                );
                self.problems
                    .push(Problem::new(&path, self.map.locate(&path), message));
                Err(())
            }
        }
    }

    /// A list section, each element deserialised on its own.
    fn list<T: DeserializeOwned>(
        &mut self,
        object: &Map<String, Value>,
        key: &str,
    ) -> Vec<Option<T>> {
        let path = KeyPath::root().key(key);
        match self.items(object, key) {
            Ok(items) => items
                .iter()
                .enumerate()
                .map(|(index, item)| self.deserialize(item, &path.index(index)))
                .collect(),
            Err(()) => vec![None],
        }
    }

    /// The routes: each route's core keys deserialised as a [`RouteFile`], every other key
    /// handed to the concern that owns it.
    fn routes(&mut self, object: &Map<String, Value>) -> Vec<Option<RouteFile>> {
        let section = KeyPath::root().key("routes");
        let items = match self.items(object, "routes") {
            Ok(items) => items,
            Err(()) => return vec![None],
        };
        let policy_keys: Vec<&str> = RoutePolicies::keys().collect();
        let mut allowed: Vec<&str> = ROUTE_CORE_KEYS.to_vec();
        allowed.extend(&policy_keys);
        let mut routes = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let path = section.index(index);
            let Value::Object(fields) = item else {
                // Not a mapping: serde says so in the file's words.
                routes.push(self.deserialize::<RouteFile>(item, &path));
                continue;
            };
            let mut core = Map::new();
            let mut policies = Map::new();
            let mut unknown = Vec::new();
            for (key, value) in fields {
                if ROUTE_CORE_KEYS.contains(&key.as_str()) {
                    core.insert(key.clone(), value.clone());
                } else if policy_keys.contains(&key.as_str()) {
                    policies.insert(key.clone(), value.clone());
                } else {
                    unknown.push(key);
                }
            }
            let core = self.deserialize::<RouteFile>(&Value::Object(core), &path);
            let policies = RoutePolicies::structure(&policies, &path, self.map, self.problems);
            for key in unknown {
                let key_path = path.key(key);
                let message = unknown_key_message(key, &allowed);
                self.problems.push(Problem::new(
                    &key_path,
                    self.map.locate_key(&key_path),
                    message,
                ));
            }
            routes.push(core.zip(policies).map(|(mut route, policies)| {
                route.policies = policies;
                route
            }));
        }
        routes
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::source::{parse_tree, to_json};

    fn split_text(text: &str) -> (Parts, Vec<Problem>) {
        let root = parse_tree(text).expect("valid YAML");
        let converted = to_json(root, &|_| None, &wants_text);
        split(&converted.value, &converted.map).expect("a mapping")
    }

    fn summary(problems: &[Problem]) -> Vec<(String, usize, usize, String)> {
        problems
            .iter()
            .map(|p| (p.path.clone(), p.line, p.column, p.message.clone()))
            .collect()
    }

    /// The top-level keys as an unknown-key message lists them: the core ones, and each
    /// concern's section after `access_log`.
    pub(crate) fn top_level_keys() -> String {
        let keys = section_keys();
        assert_eq!(keys[..3], ["runtime", "admin", "access_log"]);
        assert_eq!(keys[keys.len() - 3..], ["listeners", "clusters", "routes"]);
        keys.iter()
            .map(|key| format!("`{key}`"))
            .collect::<Vec<_>>()
            .join(", ")
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
                format!(
                    "unknown key `routs`, did you mean `routes`? (expected one of {})",
                    top_level_keys()
                )
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
  - { cluster: 7 }
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
                     one of `name`, `endpoints`, `protocol`, `connect_timeout`, `pool`, `tls`, \
                     `load_balancing`, `health_check`, `outlier_detection`, `panic_threshold`, \
                     `circuit_breaker`, `retry_budget`, `dns`, `grpc`)"
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
                    "routes[1].cluster".into(),
                    11,
                    16,
                    "expected a string, found the number 7".into()
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
        // The unusable `cluster` was set aside (a route may lack one: then the checks say
        // whether it needed one), so the route's other keys are still read.
        assert!(parts.routes[0].is_some());
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
        assert_eq!(route.policies["max_body_size"], "100");
        assert_eq!(route.matcher.headers[0].value.as_deref(), Some("2"));
        assert_eq!(route.matcher.query[0].value.as_deref(), Some("true"));
        assert_eq!(route.policies["request_headers"]["set"]["x-version"], "2");
        assert_eq!(route.policies["request_headers"]["add"]["x-flag"], "false");
    }

    #[test]
    fn empty_sections_count_as_absent() {
        let (parts, problems) = split_text("runtime:\nadmin:\naccess_log:\nlisteners:\n");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(parts.runtime, Some(RuntimeFile::default()));
        assert_eq!(parts.admin, Some(None));
        assert!(parts.listeners.is_empty());
        assert!(parts.sections.is_empty());
        assert!(parts.sections_ok);
    }

    #[test]
    fn a_file_that_is_not_a_mapping_is_one_problem() {
        let root = parse_tree("- a\n- b\n").unwrap();
        let converted = to_json(root, &|_| None, &wants_text);
        let problem = split(&converted.value, &converted.map).unwrap_err();
        assert_eq!((problem.line, problem.column), (1, 1));
        assert!(
            problem.message.ends_with("found a list"),
            "{}",
            problem.message
        );
    }
}
