//! End-to-end tests of config loading: text in, `Config` or sorted problems out.

use super::model::*;
use super::*;
use crate::access_log::{AccessLogSettings, AccessLogTarget};
use crate::middleware::auth::AuthPolicy;
use crate::middleware::body_limit::BodyLimitPolicy;
use crate::middleware::timeout::TimeoutPolicy;
use crate::middleware::transform::TransformPolicy;
use serde_json::json;
use std::time::Duration;

const REFERENCE: &str = include_str!("../../config/portico.yaml");

fn no_env(_: &str) -> Option<String> {
    None
}

fn problems_of(text: &str) -> Vec<Problem> {
    problems_with_env(text, &no_env)
}

fn problems_with_env(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Vec<Problem> {
    match load_str_with_env(text, "test.yaml", env) {
        Ok(_) => panic!("expected problems in:\n{text}"),
        Err(ConfigError::Invalid { origin, problems }) => {
            assert_eq!(origin, "test.yaml");
            assert!(!problems.is_empty());
            problems
        }
        Err(other) => panic!("unexpected error {other}"),
    }
}

/// (path, line, column, message) for exact comparisons.
fn summary(problems: &[Problem]) -> Vec<(&str, usize, usize, &str)> {
    problems
        .iter()
        .map(|p| (p.path.as_str(), p.line, p.column, p.message.as_str()))
        .collect()
}

#[test]
fn the_reference_config_is_valid() {
    // Relative files (the gRPC cluster's protos) are relative to the file's directory.
    let base = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config"));
    let config = match super::load_str_in(REFERENCE, "reference.yaml", &no_env, Some(base)) {
        Ok(config) => config,
        Err(err) => panic!("{err}"),
    };
    assert_eq!(config.listeners.len(), 3);
    assert_eq!(
        config.listeners[2].redirect_https,
        Some(RedirectHttps {
            port: 8443,
            status: 308
        })
    );
    assert_eq!(config.clusters.len(), 4);
    assert_eq!(config.routes.len(), 11);
    assert_eq!(config.routes[5].name, "route-5");
    // The gRPC cluster and its transcoding route.
    assert!(config.clusters[3].grpc.is_some());
    assert!(config.routes[4].policies.grpc.transcode.is_some());
    // A split names its clusters; routes that answer by themselves have none.
    assert_eq!(config.routes[7].cluster_index, None);
    assert_eq!(config.routes[9].cluster_index, None);
    assert_eq!(config.routes[10].cluster_index, None);
    let auth = &config.routes[0].policies.transform.request_headers.set[0];
    assert_eq!(auth.0, "authorization");
    assert_eq!(auth.1, "Bearer dev-token");
    assert_eq!(
        config.routes[2].matcher.path,
        PathMatch::Template("/files/{bucket}/{path=**}".into())
    );
    assert_eq!(
        config.routes[3].matcher.path,
        PathMatch::Prefix("/upload".into())
    );
    assert_eq!(
        config.routes[2].matcher.host,
        Some(HostMatch::Suffix(".files.example.com".into()))
    );
    assert_eq!(
        config.clusters[1].endpoints,
        [Endpoint {
            host: "::1".into(),
            port: 9003
        }]
    );
    // The secret is redacted; its neighbours are not.
    let set = &config.redacted_dump["routes"][0]["request_headers"]["set"];
    assert_eq!(set["authorization"], "<redacted>");
    assert_eq!(set["x-forwarded-prefix"], "/v1/users");
}

#[test]
fn the_reference_config_documents_every_key() {
    // Every key the file structs accept appears in the reference as `key:`. The list is the
    // serde field names of file.rs; a key added there without documentation fails here.
    let keys = [
        "runtime",
        "workers",
        "drain_timeout",
        "watch_interval",
        "admin",
        "address",
        "access_log",
        "enabled",
        "path",
        "listeners",
        "name",
        "via",
        "limits",
        "max_header_bytes",
        "max_headers",
        "max_uri_length",
        "header_read_timeout",
        "request_body_timeout",
        "idle_timeout",
        "max_connections",
        "max_concurrent_streams",
        "clusters",
        "endpoints",
        "protocol",
        "connect_timeout",
        "pool",
        "max_idle_per_endpoint",
        "routes",
        "match",
        "host",
        "path_exact",
        "path_prefix",
        "path_template",
        "methods",
        "headers",
        "value",
        "query",
        "cluster",
    ];
    // The concerns' keys (each route policy's and section's file struct, every level) come
    // from the concerns themselves, so a concern that adds a key must document it.
    let concern_keys = crate::concerns::documented_keys();
    assert!(concern_keys.iter().any(|key| key == "max_body_size"));
    assert!(concern_keys.iter().any(|key| key == "remove"));
    for key in keys
        .iter()
        .copied()
        .chain(concern_keys.iter().map(String::as_str))
    {
        assert!(
            REFERENCE.contains(&format!(" {key}:")) || REFERENCE.contains(&format!("\n{key}:")),
            "reference.yaml does not set `{key}`"
        );
    }
    for section in super::structure::section_keys() {
        assert!(REFERENCE.contains(&format!("\n{section}:")), "{section}");
    }
}

#[test]
fn many_problems_are_all_reported_in_order() {
    let text = "\
runtime:
  workers: 2000
listeners:
  - name: public
    address: 127.0.0.1:8080
  - name: public
    address: localhost:8081
clusters:
  - name: backend
    endpoints: [http://10.0.0.1:80, 10.0.0.2]
routes:
  - cluster: backnd
    match:
      path_prefix: api
      methods: [get]
    timeout: 5 sec
    request_headers:
      set:
        Connection: close
routs: []
";
    let problems = problems_of(text);
    assert_eq!(
        summary(&problems),
        [
            (
                "runtime.workers",
                2,
                12,
                "2000 worker threads is more than the maximum of 1024; use 0 for one per CPU"
            ),
            (
                "listeners[1].name",
                6,
                11,
                "duplicate listener name `public` (also listeners[0])"
            ),
            (
                "listeners[1].address",
                7,
                14,
                "invalid address \"localhost:8081\": expected IP:port like 0.0.0.0:8080 or \
                 [::1]:8080 (host names are not allowed here)"
            ),
            (
                "clusters[0].endpoints[0]",
                10,
                17,
                "endpoint \"http://10.0.0.1:80\" must be host:port without a scheme: remove \
                 `http://` (set the cluster's protocol instead)"
            ),
            (
                "clusters[0].endpoints[1]",
                10,
                37,
                "endpoint \"10.0.0.2\" has no port: expected host:port like \
                 backend.internal:8080"
            ),
            (
                "routes[0].cluster",
                12,
                14,
                "unknown cluster `backnd`, did you mean `backend`? (known clusters: `backend`)"
            ),
            (
                "routes[0].match.path_prefix",
                14,
                20,
                "\"api\" must start with `/`"
            ),
            (
                "routes[0].match.methods[0]",
                15,
                17,
                "method \"get\" must be uppercase: write `GET` (methods are case-sensitive)"
            ),
            (
                "routes[0].timeout",
                16,
                14,
                "invalid duration \"5 sec\": expected a number followed by ms, s, m or h"
            ),
            (
                "routes[0].request_headers.set.Connection",
                19,
                9,
                "`connection` is a hop-by-hop header: the proxy manages it per connection, so \
                 it cannot be changed here"
            ),
            (
                "routs",
                20,
                1,
                &format!(
                    "unknown key `routs`, did you mean `routes`? (expected one of {})",
                    super::structure::tests::top_level_keys()
                )
            ),
        ]
    );
}

#[test]
fn invalid_config_display_lists_every_problem_with_its_origin() {
    let text = "listeners:\n  - name: a\n    address: 127.0.0.1:1\nroutes:\n  - cluster: x\n    timeout: 5 sec\n";
    let err = load_str_with_env(text, "portico.yaml", &no_env).unwrap_err();
    assert_eq!(
        err.to_string(),
        "portico.yaml: 2 problems\n\
         portico.yaml:5:14: routes[0].cluster: unknown cluster `x`: no clusters are defined\n\
         portico.yaml:6:14: routes[0].timeout: invalid duration \"5 sec\": expected a number \
         followed by ms, s, m or h"
    );
    let err = load_str_with_env("a: [", "portico.yaml", &no_env).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("portico.yaml: 1 problem\nportico.yaml:1:5: YAML syntax error: "),
        "{text}"
    );
}

#[test]
fn yaml_syntax_errors_are_one_problem_with_a_position() {
    let problems = problems_of("listeners:\n  - name: a\n   address: x\n");
    assert_eq!(problems.len(), 1);
    assert_eq!((problems[0].line, problems[0].column), (3, 11));
    assert_eq!(problems[0].path, "");
    assert!(problems[0].message.starts_with("YAML syntax error: "));
}

#[test]
fn duplicate_keys_are_problems() {
    let text = "listeners:\n  - name: a\n    address: 127.0.0.1:1\n    name: b\n";
    assert_eq!(
        summary(&problems_of(text)),
        [(
            "listeners[0].name",
            4,
            5,
            "duplicate key `name` (first defined at line 2)"
        )]
    );
}

#[test]
fn unknown_keys_point_at_the_key() {
    let text = "\
listeners:
  - name: a
    address: 127.0.0.1:1
    limits:
      max_header_byte: 1KiB
acces_log: {}
";
    assert_eq!(
        summary(&problems_of(text)),
        [
            (
                "listeners[0].limits.max_header_byte",
                5,
                7,
                "unknown key `max_header_byte`, did you mean `max_header_bytes`? (expected one \
                 of `max_header_bytes`, `max_headers`, `max_uri_length`, `header_read_timeout`, \
                 `request_body_timeout`, `idle_timeout`, `max_connections`, \
                 `max_concurrent_streams`)"
            ),
            (
                "acces_log",
                6,
                1,
                "unknown key `acces_log`, did you mean `access_log`? (expected one of \
                 `runtime`, `admin`, `access_log`, `consumers`, `auth_providers`, `trusted_proxies`, `rate_limiting`, `listeners`, `clusters`, `routes`)"
            ),
        ]
    );
}

const MINIMAL: &str = "\
listeners:
  - name: public
    address: 127.0.0.1:8080
clusters:
  - name: backend
    endpoints: [127.0.0.1:9000]
routes:
  - cluster: backend
";

#[test]
fn all_defaults() {
    let config = load_str_with_env(MINIMAL, "t", &no_env).unwrap();
    assert_eq!(
        config.runtime,
        RuntimeSettings {
            workers: None,
            drain_timeout: Duration::from_secs(30),
            watch_interval: Some(Duration::from_secs(2)),
        }
    );
    assert_eq!(config.admin, None);
    assert_eq!(
        config.sections.access_log,
        AccessLogSettings {
            enabled: true,
            target: AccessLogTarget::Stdout
        }
    );
    let listener = &config.listeners[0];
    assert!(!listener.via);
    assert_eq!(listener.limits, ListenerLimits::default());
    assert_eq!(listener.limits.max_header_bytes, 64 * 1024);
    let cluster = &config.clusters[0];
    assert_eq!(cluster.protocol, UpstreamProtocol::Http1);
    assert_eq!(cluster.connect_timeout, Duration::from_secs(1));
    assert_eq!(cluster.pool, PoolSettings::default());
    let route = &config.routes[0];
    assert_eq!(
        *route,
        Route {
            name: "route-0".into(),
            matcher: RouteMatch {
                host: None,
                path: PathMatch::Prefix("/".into()),
                methods: vec![],
                headers: vec![],
                query: vec![],
            },
            cluster: "backend".into(),
            cluster_index: Some(0),
            policies: std::sync::Arc::new(crate::concerns::RoutePolicies {
                cors: Default::default(),
                compression: Default::default(),
                ip_rules: Default::default(),
                direct: Default::default(),
                fault: Default::default(),
                split: Default::default(),
                mirror: Default::default(),
                body_limit: BodyLimitPolicy {
                    max_body_size: 10 * 1024 * 1024
                },
                auth: AuthPolicy::default(),
                rate_limit: Default::default(),
                concurrency: Default::default(),
                transform: TransformPolicy::default(),
                timeout: TimeoutPolicy {
                    timeout: Duration::from_secs(15)
                },
                retry: crate::middleware::retry::RetryPolicy { retry: None },
                grpc: crate::grpc::GrpcPolicy::default(),
            }),
        }
    );
    assert_eq!(
        config.redacted_dump["routes"][0],
        json!({
            "name": null, "cluster": "backend", "strip_prefix": null, "host_rewrite": null,
            "timeout": null, "max_body_size": null,
            "match": {"host": null, "path_exact": null, "path_prefix": null,
                      "path_template": null, "methods": [], "headers": [], "query": []},
            "request_headers": {"set": {}, "add": {}, "remove": []},
            "response_headers": {"set": {}, "add": {}, "remove": []},
            "require_client_cert": null, "auth": null, "retry": null,
            "cors": null,
            "compression": null, "request_decompression": null,
            "ip_rules": null,
            "rate_limit": null, "concurrency_limit": null,
            "direct_response": null, "redirect": null, "fault": null,
            "traffic_split": null, "mirror": null,
            "path_rewrite": null, "regex_rewrite": null,
            "query_params": {"set": {}, "add": {}, "remove": []},
            "grpc_transcode": null, "grpc_web": null,
        })
    );
}

#[test]
fn an_empty_file_needs_a_listener() {
    // An empty document is positioned where it starts (after `---`, if any).
    for (text, line) in [("", 1), ("# nothing\n", 1), ("---\n", 2)] {
        assert_eq!(
            summary(&problems_of(text)),
            [(
                "listeners",
                line,
                1,
                "at least one listener is required, e.g. `- {name: public, address: \
                 0.0.0.0:8080}`"
            )]
        );
    }
}

fn test_env(name: &str) -> Option<String> {
    match name {
        "WORKERS" => Some("8".into()),
        "TOKEN" => Some("s3cret-token".into()),
        "PORT" => Some("8443".into()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

#[test]
fn env_substitution_and_redaction() {
    let text = "\
runtime:
  workers: ${WORKERS}
listeners:
  - name: public
    address: 127.0.0.1:${PORT}
clusters:
  - name: backend
    endpoints: [\"${BACKEND:-127.0.0.1:9000}\"]
routes:
  - cluster: backend
    name: api
    host_rewrite: ${EMPTY:-internal}
    request_headers:
      set:
        authorization: Bearer ${TOKEN}
        x-price: $$5
        x-plain: visible
";
    let config = load_str_with_env(text, "t", &test_env).unwrap();
    assert_eq!(config.runtime.workers, Some(8));
    assert_eq!(config.listeners[0].address.port(), 8443);
    assert_eq!(config.clusters[0].endpoints[0].port, 9000);
    assert_eq!(
        config.routes[0].policies.transform.host_rewrite,
        Some(http::HeaderValue::from_static("internal"))
    );
    let set = &config.routes[0].policies.transform.request_headers.set;
    let value = |name: &str| set.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    assert_eq!(value("authorization").unwrap(), "Bearer s3cret-token");
    assert_eq!(value("x-price").unwrap(), "$5");

    let dump = &config.redacted_dump;
    assert_eq!(dump["runtime"]["workers"], "<redacted>");
    assert_eq!(dump["listeners"][0]["address"], "<redacted>");
    assert_eq!(dump["clusters"][0]["endpoints"][0], "<redacted>");
    assert_eq!(dump["routes"][0]["host_rewrite"], "<redacted>");
    let set = &dump["routes"][0]["request_headers"]["set"];
    assert_eq!(set["authorization"], "<redacted>");
    assert_eq!(set["x-price"], "$5");
    assert_eq!(set["x-plain"], "visible");
    assert_eq!(dump["listeners"][0]["name"], "public");
    assert_eq!(dump["routes"][0]["name"], "api");
    let rendered = dump.to_string();
    assert!(!rendered.contains("s3cret"), "{rendered}");
    assert!(!rendered.contains("8443"), "{rendered}");
}

#[test]
fn a_quoted_reference_stays_text() {
    let text =
        "runtime:\n  workers: \"${WORKERS}\"\nlisteners: [{name: a, address: \"127.0.0.1:1\"}]\n";
    assert_eq!(
        summary(&problems_with_env(text, &test_env)),
        [(
            "runtime.workers",
            2,
            12,
            "expected a whole number (0 or more), found the string \"8\""
        )]
    );
}

#[test]
fn missing_variables_are_reported_once_at_their_value() {
    let text = "\
listeners:
  - name: public
    address: ${LISTEN_ADDRESS}
    limits:
      idle_timeout: ${IDLE}s
runtime:
  workers: ${NOPE}
routes:
  - cluster: x
    request_headers:
      set: {authorization: \"Bearer ${API_TOKEN\"}
";
    // Without suppression the placeholder `${LISTEN_ADDRESS}` would also be an "invalid
    // address", `${NOPE}` an "expected a whole number" and so on.
    assert_eq!(
        summary(&problems_of(text)),
        [
            (
                "listeners[0].address",
                3,
                14,
                "environment variable LISTEN_ADDRESS is not set"
            ),
            (
                "listeners[0].limits.idle_timeout",
                5,
                21,
                "environment variable IDLE is not set"
            ),
            (
                "runtime.workers",
                7,
                12,
                "environment variable NOPE is not set"
            ),
            (
                "routes[0].cluster",
                9,
                14,
                "unknown cluster `x`: no clusters are defined"
            ),
            (
                "routes[0].request_headers.set.authorization",
                11,
                28,
                "malformed `${...}` in \"Bearer ${API_TOKEN\": no closing `}`"
            ),
        ]
    );
}

#[test]
fn load_str_reads_the_process_environment() {
    // PATH is set in every test environment; a value of `${PATH}` in a header proves the
    // lookup goes to the real environment without modifying it.
    let text =
        format!("{MINIMAL}    request_headers:\n      set:\n        x-path: \"${{PATH}}\"\n");
    let config = load_str(&text, "t").unwrap();
    let path = std::env::var("PATH").unwrap();
    assert_eq!(
        config.routes[0].policies.transform.request_headers.set[0].1,
        path.as_str()
    );
}

#[test]
fn load_file_reads_and_names_the_file() {
    let dir = std::env::temp_dir().join(format!("portico-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.yaml");
    std::fs::write(&good, MINIMAL).unwrap();
    assert_eq!(load_file(&good).unwrap().listeners[0].name, "public");

    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "listeners: []\n").unwrap();
    let text = load_file(&bad).unwrap_err().to_string();
    assert!(
        text.starts_with(&format!(
            "{}: 1 problem\n{}:1:12: listeners: ",
            bad.display(),
            bad.display()
        )),
        "{text}"
    );

    let missing = dir.join("missing.yaml");
    match load_file(&missing) {
        Err(ConfigError::Io { path, source }) => {
            assert_eq!(path, missing);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("{other:?}"),
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn problem_display() {
    let problem = Problem {
        path: "routes[1].timeout".into(),
        line: 12,
        column: 14,
        message: "invalid duration \"5 sec\": expected a number followed by ms, s, m or h".into(),
    };
    assert_eq!(
        problem.with_origin("portico.yaml").to_string(),
        "portico.yaml:12:14: routes[1].timeout: invalid duration \"5 sec\": expected a number \
         followed by ms, s, m or h"
    );
    let whole_file = Problem {
        path: String::new(),
        ..problem
    };
    assert_eq!(
        whole_file.to_string(),
        "12:14: invalid duration \"5 sec\": expected a number followed by ms, s, m or h"
    );
}

#[test]
fn poisoned_paths_cover_only_their_subtree() {
    assert!(is_under("routes[0]", "routes"));
    assert!(is_under("routes", "routes"));
    assert!(is_under("routes.x", "routes"));
    assert!(!is_under("routes2", "routes"));
    assert!(!is_under("route", "routes"));
}
