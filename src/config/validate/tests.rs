//! One test (at least) per validation rule, through the whole loader so paths and positions
//! are the ones a user sees.

use super::*;
use crate::access_log::{AccessLogSettings, AccessLogTarget};
use crate::config::check::header_op_name;
use crate::config::{load_str_with_env, ConfigError};

const BASE: &str = "\
listeners:
  - name: public
    address: 127.0.0.1:8080
clusters:
  - name: backend
    endpoints: [127.0.0.1:9000]
  - name: auth
    endpoints: [127.0.0.1:9001]
";

/// BASE plus one route made of `backend` and the given (already indented) lines.
fn route(lines: &str) -> String {
    format!("{BASE}routes:\n  - cluster: backend\n{lines}")
}

fn load(text: &str) -> Result<Config, Vec<Problem>> {
    match load_str_with_env(text, "t.yaml", &|_| None) {
        Ok(config) => Ok(config),
        Err(ConfigError::Invalid { problems, .. }) => Err(problems),
        Err(other) => panic!("{other}"),
    }
}

fn ok(text: &str) -> Config {
    match load(text) {
        Ok(config) => config,
        Err(problems) => panic!("unexpected problems {problems:#?} in\n{text}"),
    }
}

/// (path, message) of every problem.
fn problems(text: &str) -> Vec<(String, String)> {
    match load(text) {
        Ok(_) => panic!("expected problems in\n{text}"),
        Err(problems) => problems.into_iter().map(|p| (p.path, p.message)).collect(),
    }
}

/// The single problem's path and message.
fn problem(text: &str) -> (String, String) {
    let mut all = problems(text);
    assert_eq!(all.len(), 1, "{all:#?}");
    all.remove(0)
}

fn pair(path: &str, message: &str) -> (String, String) {
    (path.to_string(), message.to_string())
}

#[test]
fn runtime_settings() {
    let config = ok(&format!(
        "runtime: {{workers: 1024, drain_timeout: 0s, watch_interval: 0s}}\n{BASE}"
    ));
    assert_eq!(config.runtime.workers, Some(1024));
    assert_eq!(config.runtime.drain_timeout, Duration::ZERO);
    assert_eq!(config.runtime.watch_interval, None);

    let config = ok(&format!(
        "runtime: {{workers: 0, watch_interval: 500ms}}\n{BASE}"
    ));
    assert_eq!(config.runtime.workers, None);
    assert_eq!(
        config.runtime.watch_interval,
        Some(Duration::from_millis(500))
    );

    assert_eq!(
        problem(&format!("runtime: {{drain_timeout: 10}}\n{BASE}")),
        pair(
            "runtime.drain_timeout",
            "expected a duration like \"250ms\" or \"5s\", found the number 10 (a unit is required)"
        )
    );
    assert_eq!(
        problem(&format!("runtime: {{drain_timeout: '10'}}\n{BASE}")),
        pair(
            "runtime.drain_timeout",
            "invalid duration \"10\": a unit is required, e.g. \"10s\" or \"10ms\""
        )
    );
    assert_eq!(
        problem(&format!("runtime: {{watch_interval: -2s}}\n{BASE}")),
        pair(
            "runtime.watch_interval",
            "invalid duration \"-2s\": a duration cannot be negative"
        )
    );
}

#[test]
fn access_log_targets() {
    let target = |yaml: &str| {
        ok(&format!("access_log: {yaml}\n{BASE}"))
            .sections
            .access_log
    };
    assert_eq!(target("{path: stderr}").target, AccessLogTarget::Stderr);
    assert_eq!(
        target("{path: /var/log/portico.log, enabled: false}"),
        AccessLogSettings {
            enabled: false,
            target: AccessLogTarget::File("/var/log/portico.log".into())
        }
    );
    assert_eq!(
        problem(&format!("access_log: {{path: ''}}\n{BASE}")),
        pair(
            "access_log.path",
            "must be stdout, stderr or a file path, not empty"
        )
    );
}

#[test]
fn admin_address() {
    let config = ok(&format!("admin: {{address: '[::1]:9901'}}\n{BASE}"));
    assert_eq!(
        config.admin,
        Some(AdminSettings {
            address: "[::1]:9901".parse().unwrap()
        })
    );
    assert_eq!(
        problem(&format!("admin: {{address: 'localhost:9901'}}\n{BASE}")),
        pair(
            "admin.address",
            "invalid address \"localhost:9901\": expected IP:port like 0.0.0.0:8080 or \
             [::1]:8080 (host names are not allowed here)"
        )
    );
    assert_eq!(
        problem(&format!("admin: {{address: '0.0.0.0:8080'}}\n{BASE}")),
        pair(
            "admin.address",
            "the admin address 0.0.0.0:8080 overlaps listener `public` (listeners[0], \
             127.0.0.1:8080); the admin endpoint needs its own port"
        )
    );
    assert_eq!(
        problem(&format!("admin: {{}}\n{BASE}")),
        pair("admin", "missing required key `address`")
    );
    // Port 0 means "any free port" and never clashes.
    ok("admin: {address: '127.0.0.1:0'}\nlisteners: [{name: a, address: '127.0.0.1:0'}]\n");
}

#[test]
fn listener_names_and_addresses() {
    let text = "\
listeners:
  - {name: a, address: '127.0.0.1:80'}
  - {name: a, address: '127.0.0.1:81'}
  - {name: '', address: '127.0.0.1:82'}
  - {name: c, address: '127.0.0.1:80'}
  - {name: d, address: '0.0.0.0:81'}
  - {name: e, address: '[::]:82'}
  - {name: f, address: '[::1]:80'}
  - {name: g, address: '127.0.0.1:0'}
  - {name: h, address: '127.0.0.1:0'}
  - {name: i, address: '8080'}
";
    assert_eq!(
        problems(text),
        [
            pair(
                "listeners[1].name",
                "duplicate listener name `a` (also listeners[0])"
            ),
            pair("listeners[2].name", "a listener name cannot be empty"),
            pair(
                "listeners[3].address",
                "address 127.0.0.1:80 is already used by listener `a` (listeners[0])"
            ),
            pair(
                "listeners[4].address",
                "address 0.0.0.0:81 overlaps 127.0.0.1:81 of listener `a` (listeners[1]): both \
                 bind port 81"
            ),
            pair(
                "listeners[5].address",
                "address [::]:82 overlaps 127.0.0.1:82 of listener `` (listeners[2]): both \
                 bind port 82"
            ),
            pair(
                "listeners[9].address",
                "invalid address \"8080\": expected IP:port like 0.0.0.0:8080 or [::1]:8080 \
                 (host names are not allowed here)"
            ),
        ]
    );
    let config = ok("listeners: [{name: v6, address: '[::1]:8080', via: true}]\n");
    assert_eq!(config.listeners[0].address, "[::1]:8080".parse().unwrap());
    assert!(config.listeners[0].via);
}

#[test]
fn address_overlap_rules() {
    let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
    assert!(overlaps(addr("127.0.0.1:80"), addr("127.0.0.1:80")));
    assert!(overlaps(addr("0.0.0.0:80"), addr("127.0.0.1:80")));
    assert!(overlaps(addr("[::]:80"), addr("10.0.0.1:80")));
    assert!(overlaps(addr("[::1]:80"), addr("[::]:80")));
    assert!(!overlaps(addr("0.0.0.0:80"), addr("[::1]:80")));
    assert!(!overlaps(addr("127.0.0.1:80"), addr("127.0.0.2:80")));
    assert!(!overlaps(addr("127.0.0.1:80"), addr("127.0.0.1:81")));
    assert!(!overlaps(addr("127.0.0.1:0"), addr("127.0.0.1:0")));
}

#[test]
fn listener_limits() {
    let limits = |yaml: &str| {
        format!("listeners:\n  - name: a\n    address: 127.0.0.1:1\n    limits: {yaml}\n")
    };
    let config = ok(&limits(
        "{max_header_bytes: 1KiB, max_uri_length: 256, max_headers: 1000, max_connections: 1, \
         max_concurrent_streams: 1, header_read_timeout: 1ms, request_body_timeout: 2m, \
         idle_timeout: 1h}",
    ));
    assert_eq!(
        config.listeners[0].limits,
        ListenerLimits {
            max_header_bytes: 1024,
            max_headers: 1000,
            max_uri_length: 256,
            header_read_timeout: Duration::from_millis(1),
            request_body_timeout: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(3600),
            max_connections: 1,
            max_concurrent_streams: 1,
        }
    );
    ok(&limits("{max_header_bytes: 1MiB, max_uri_length: 1MiB}"));

    let cases = [
        (
            "{max_header_bytes: 1023}",
            "limits.max_header_bytes",
            "1023 is out of range: must be between 1KiB and 1MiB",
        ),
        (
            "{max_header_bytes: 2MiB}",
            "limits.max_header_bytes",
            "2MiB is out of range: must be between 1KiB and 1MiB",
        ),
        (
            "{max_header_bytes: 64kb}",
            "limits.max_header_bytes",
            "invalid size \"64kb\": expected a whole number of bytes, optionally followed by B, \
             KB, MB, GB (1000-based) or KiB, MiB, GiB (1024-based)",
        ),
        (
            "{max_headers: 0}",
            "limits.max_headers",
            "0 is out of range: must be between 1 and 1000",
        ),
        (
            "{max_headers: 1001}",
            "limits.max_headers",
            "1001 is out of range: must be between 1 and 1000",
        ),
        (
            "{max_uri_length: 255}",
            "limits.max_uri_length",
            "255 is out of range: must be between 256 and 1MiB",
        ),
        (
            "{max_header_bytes: 4KiB, max_uri_length: 5KiB}",
            "limits.max_uri_length",
            "max_uri_length 5KiB is larger than max_header_bytes 4KiB: the request line must fit \
             in the header budget",
        ),
        (
            "{max_header_bytes: 4KiB}",
            "limits.max_header_bytes",
            "max_header_bytes 4KiB is smaller than the default max_uri_length of 8KiB; set \
             max_uri_length too",
        ),
        (
            "{max_connections: 0}",
            "limits.max_connections",
            "0 is out of range: must be between 1 and 18446744073709551615",
        ),
        (
            "{max_concurrent_streams: 0}",
            "limits.max_concurrent_streams",
            "0 is out of range: must be between 1 and 4294967295",
        ),
        (
            "{header_read_timeout: 0s}",
            "limits.header_read_timeout",
            "must be greater than 0s",
        ),
        (
            "{request_body_timeout: 0ms}",
            "limits.request_body_timeout",
            "must be greater than 0s",
        ),
        (
            "{idle_timeout: 400d}",
            "limits.idle_timeout",
            "invalid duration \"400d\": expected a number followed by ms, s, m or h",
        ),
    ];
    for (yaml, path, message) in cases {
        assert_eq!(
            problem(&limits(yaml)),
            pair(&format!("listeners[0].{path}"), message),
            "{yaml}"
        );
    }
}

#[test]
fn clusters() {
    let config = ok(&format!(
        "{BASE}  - name: h2\n    endpoints: ['[::1]:50051', 'api.internal:443']\n    protocol: \
         http2\n    connect_timeout: 250ms\n    pool: {{max_idle_per_endpoint: 0, idle_timeout: 5s}}\n"
    ));
    let cluster = &config.clusters[2];
    assert_eq!(cluster.protocol, UpstreamProtocol::Http2);
    assert_eq!(cluster.connect_timeout, Duration::from_millis(250));
    assert_eq!(
        cluster.pool,
        PoolSettings {
            max_idle_per_endpoint: 0,
            idle_timeout: Duration::from_secs(5)
        }
    );
    assert_eq!(cluster.endpoints[0].to_string(), "[::1]:50051");
    assert_eq!(cluster.endpoints[1].to_string(), "api.internal:443");

    let text = "\
listeners: [{name: a, address: '127.0.0.1:1'}]
clusters:
  - {name: backend, endpoints: ['a:1']}
  - {name: backend, endpoints: ['b:1']}
  - {name: '', endpoints: ['c:1']}
  - {name: none, endpoints: []}
  - {name: proto, endpoints: ['d:1'], protocol: h2}
  - {name: slow, endpoints: ['e:1'], connect_timeout: 0s}
  - {name: pool, endpoints: ['f:1'], pool: {idle_timeout: 0s}}
  - {name: dup, endpoints: ['g:1', 'g:1']}
";
    assert_eq!(
        problems(text),
        [
            pair(
                "clusters[1].name",
                "duplicate cluster name `backend` (also clusters[0])"
            ),
            pair("clusters[2].name", "a cluster name cannot be empty"),
            pair(
                "clusters[3].endpoints",
                "a cluster needs at least one endpoint (`host:port`)"
            ),
            pair(
                "clusters[4].protocol",
                "unknown protocol \"h2\": expected http1 or http2 (h2c)"
            ),
            pair("clusters[5].connect_timeout", "must be greater than 0s"),
            pair("clusters[6].pool.idle_timeout", "must be greater than 0s"),
            pair("clusters[7].endpoints[1]", "duplicate endpoint g:1"),
        ]
    );
}

#[test]
fn endpoint_forms() {
    let good = [
        ("127.0.0.1:80", "127.0.0.1", 80),
        ("backend.internal:8080", "backend.internal", 8080),
        ("[::1]:9000", "::1", 9000),
        ("[2001:db8::1]:65535", "2001:db8::1", 65535),
        ("my_host-1:1", "my_host-1", 1),
    ];
    for (text, host, port) in good {
        assert_eq!(
            parse_endpoint(text),
            Ok(Endpoint {
                host: host.into(),
                port
            }),
            "{text}"
        );
    }
    let bad = [
        (
            "http://a:80",
            "must be host:port without a scheme: remove `http://`",
        ),
        ("https://a", "remove `https://`"),
        ("a", "has no port"),
        ("a:", "port \"\" is not a number from 1 to 65535"),
        ("a:0", "port \"0\" is not a number from 1 to 65535"),
        ("a:65536", "port \"65536\" is not a number from 1 to 65535"),
        ("a:http", "port \"http\" is not a number"),
        (":80", "has an empty host"),
        (
            "::1:80",
            "an IPv6 address must be in brackets, like [::1]:8080",
        ),
        ("[::1]", "has no port"),
        ("[::1:80", "missing `]`"),
        ("[nope]:80", "\"nope\" is not an IPv6 address"),
        ("a/b:80", "host \"a/b\" contains '/'"),
    ];
    for (text, expected) in bad {
        let message = parse_endpoint(text).expect_err(text);
        assert!(message.contains(expected), "{text}: {message}");
        assert!(message.contains(&format!("{text:?}")), "{text}: {message}");
    }
}

#[test]
fn route_cluster_references() {
    let config = ok(&format!(
        "{BASE}routes:\n  - cluster: auth\n  - cluster: backend\n"
    ));
    assert_eq!(config.routes[0].cluster_index, Some(1));
    assert_eq!(config.routes[1].cluster_index, Some(0));

    assert_eq!(
        problem(&format!("{BASE}routes:\n  - cluster: Auth2\n")),
        pair(
            "routes[0].cluster",
            "unknown cluster `Auth2`, did you mean `auth`? (known clusters: `backend`, `auth`)"
        )
    );
    assert_eq!(
        problem(&format!("{BASE}routes:\n  - cluster: payments\n")),
        pair(
            "routes[0].cluster",
            "unknown cluster `payments` (known clusters: `backend`, `auth`)"
        )
    );
    // A cluster that failed to deserialise is reported once, not again by its routes.
    assert_eq!(
        problem(&format!(
            "{BASE}  - name: broken\n    endpoints: 5\nroutes:\n  - cluster: broken\n"
        )),
        pair(
            "clusters[2].endpoints",
            "expected a list, found the number 5"
        )
    );
}

#[test]
fn route_names() {
    let text = format!(
        "{BASE}routes:\n  - cluster: backend\n  - {{cluster: backend, name: route-0}}\n  \
         - {{cluster: backend, name: x}}\n  - {{cluster: backend, name: x}}\n  \
         - {{cluster: backend, name: ''}}\n  - {{cluster: backend, name: route-6}}\n  \
         - cluster: backend\n"
    );
    assert_eq!(
        problems(&text),
        [
            pair(
                "routes[1].name",
                "duplicate route name `route-0` (also routes[0])"
            ),
            pair(
                "routes[3].name",
                "duplicate route name `x` (also routes[2])"
            ),
            pair("routes[4].name", "a route name cannot be empty"),
            pair(
                "routes[6].name",
                "this route's default name `route-6` is already used by routes[5]; give it a \
                 name"
            ),
        ]
    );
}

#[test]
fn path_conditions() {
    let path_of = |yaml: &str| {
        ok(&route(&format!("    match: {yaml}\n"))).routes[0]
            .matcher
            .path
            .clone()
    };
    assert_eq!(path_of("{}"), PathMatch::Prefix("/".into()));
    assert_eq!(path_of("{path_prefix: /}"), PathMatch::Prefix("/".into()));
    assert_eq!(
        path_of("{path_prefix: /api/}"),
        PathMatch::Prefix("/api".into())
    );
    assert_eq!(path_of("{path_prefix: //}"), PathMatch::Prefix("/".into()));
    assert_eq!(path_of("{path_exact: /a/}"), PathMatch::Exact("/a/".into()));
    assert_eq!(
        path_of("{path_template: '/v1/users/{id}'}"),
        PathMatch::Template("/v1/users/{id}".into())
    );

    let cases = [
        (
            "{path_exact: /a, path_prefix: /b, path_template: /c}",
            "match.path_prefix",
            "only one of path_exact, path_prefix and path_template may be set; this route also \
             has path_exact",
        ),
        (
            "{path_prefix: /b, path_template: /c}",
            "match.path_template",
            "only one of path_exact, path_prefix and path_template may be set; this route also \
             has path_prefix",
        ),
        (
            "{path_exact: a}",
            "match.path_exact",
            "\"a\" must start with `/`",
        ),
        (
            "{path_prefix: '/a?b=1'}",
            "match.path_prefix",
            "\"/a?b=1\" contains `?` or `#`: paths never include the query or fragment (use \
             match.query for query parameters)",
        ),
        (
            "{path_exact: '/a b'}",
            "match.path_exact",
            "\"/a b\" contains whitespace or a control character; percent-encode it",
        ),
        (
            "{path_template: 'v1/{id}'}",
            "match.path_template",
            "\"v1/{id}\" must start with `/`",
        ),
        (
            "{path_template: '/v1/{id'}",
            "match.path_template",
            "\"/v1/{id\": invalid path template at byte 4: '{' is never closed",
        ),
    ];
    for (yaml, path, message) in cases {
        assert_eq!(
            problem(&route(&format!("    match: {yaml}\n"))),
            pair(&format!("routes[0].{path}"), message),
            "{yaml}"
        );
    }
}

#[test]
fn host_conditions() {
    let good = [
        (
            "api.example.com",
            HostMatch::Exact("api.example.com".into()),
        ),
        (
            "API.Example.COM",
            HostMatch::Exact("api.example.com".into()),
        ),
        ("*.Example.com", HostMatch::Suffix(".example.com".into())),
        ("localhost", HostMatch::Exact("localhost".into())),
        ("[::1]", HostMatch::Exact("[::1]".into())),
        ("10.0.0.1", HostMatch::Exact("10.0.0.1".into())),
    ];
    for (text, expected) in good {
        assert_eq!(parse_host(text), Ok(expected), "{text}");
    }
    let bad = [
        ("", "cannot be empty"),
        ("http://api.example.com", "without a scheme"),
        ("api.example.com:8080", "must not include a port"),
        ("*.example.com:443", "must not include a port"),
        ("*", "`*` is only allowed as the whole first label"),
        ("api.*.com", "`*` is only allowed as the whole first label"),
        (
            "*api.example.com",
            "`*` is only allowed as the whole first label",
        ),
        (
            "*.*.example.com",
            "`*` is only allowed as the whole first label",
        ),
        ("*.", "has an empty label"),
        ("a..b", "has an empty label"),
        ("api/v1", "contains '/'"),
        ("bücher.de", "use punycode"),
        ("[::1]:80", "bracketed IPv6 address, without a port"),
    ];
    for (text, expected) in bad {
        let message = parse_host(text).expect_err(text);
        assert!(message.contains(expected), "{text}: {message}");
    }
    assert_eq!(
        problem(&route("    match: {host: 'api.example.com:80'}\n")),
        pair(
            "routes[0].match.host",
            "host \"api.example.com:80\" must not include a port: a route matches the host on any \
             port"
        )
    );
}

#[test]
fn method_conditions() {
    let config = ok(&route("    match: {methods: [GET, POST, PURGE]}\n"));
    assert_eq!(
        config.routes[0].matcher.methods,
        [
            Method::GET,
            Method::POST,
            Method::from_bytes(b"PURGE").unwrap()
        ]
    );
    assert_eq!(
        problems(&route(
            "    match: {methods: [get, GET, POST, GET, 'G T', '']}\n"
        )),
        [
            pair(
                "routes[0].match.methods[0]",
                "method \"get\" must be uppercase: write `GET` (methods are case-sensitive)"
            ),
            pair("routes[0].match.methods[3]", "duplicate method GET"),
            pair(
                "routes[0].match.methods[4]",
                "\"G T\" is not a valid HTTP method"
            ),
            pair(
                "routes[0].match.methods[5]",
                "\"\" is not a valid HTTP method"
            ),
        ]
    );
    assert_eq!(
        parse_method("Purge"),
        Err(
            "method \"Purge\" must be uppercase: write `PURGE` (methods are case-sensitive)".into()
        )
    );
}

#[test]
fn header_and_query_conditions() {
    let config = ok(&route(
        "    match:\n      headers: [{name: X-Tenant, value: acme}, {name: x-debug}]\n      \
         query: [{name: v, value: 2}, {name: debug}]\n",
    ));
    let matcher = &config.routes[0].matcher;
    assert_eq!(
        matcher.headers,
        [
            HeaderCondition {
                name: HeaderName::from_static("x-tenant"),
                value: Some("acme".into())
            },
            HeaderCondition {
                name: HeaderName::from_static("x-debug"),
                value: None
            },
        ]
    );
    assert_eq!(
        matcher.query,
        [
            QueryCondition {
                name: "v".into(),
                value: Some("2".into())
            },
            QueryCondition {
                name: "debug".into(),
                value: None
            },
        ]
    );
    assert_eq!(
        problems(&route(
            "    match:\n      headers: [{name: 'x tenant'}, {name: x, value: \"a\\nb\"}]\n      \
             query: [{name: ''}]\n"
        )),
        [
            pair(
                "routes[0].match.headers[0].name",
                "\"x tenant\" is not a valid header name"
            ),
            pair(
                "routes[0].match.headers[1].value",
                "\"a\\nb\" is not a valid header value, so this condition could never match"
            ),
            pair(
                "routes[0].match.query[0].name",
                "a query parameter name cannot be empty"
            ),
        ]
    );
}

#[test]
fn strip_prefix_rules() {
    let strip = |lines: &str| {
        ok(&route(lines)).routes[0]
            .policies
            .transform
            .strip_prefix
            .clone()
    };
    assert_eq!(strip("    strip_prefix: /api/\n"), Some("/api".into()));
    assert_eq!(
        strip("    strip_prefix: /api\n    match: {path_prefix: /api/v1}\n"),
        Some("/api".into())
    );
    assert_eq!(
        strip("    strip_prefix: /api/\n    match: {path_prefix: /api/}\n"),
        Some("/api".into())
    );
    // A longer strip applies to the part of the prefix's traffic under it.
    assert_eq!(
        strip("    strip_prefix: /api/v1\n    match: {path_prefix: /api}\n"),
        Some("/api/v1".into())
    );
    assert_eq!(
        strip("    strip_prefix: /a\n    match: {path_exact: /a/b}\n"),
        Some("/a".into())
    );
    assert_eq!(
        strip("    strip_prefix: /x\n    match: {path_template: '/y/{id}'}\n"),
        Some("/x".into())
    );

    let cases = [
        ("    strip_prefix: api\n", "\"api\" must start with `/`"),
        (
            "    strip_prefix: /\n",
            "stripping `/` would remove nothing; leave strip_prefix out",
        ),
        (
            "    strip_prefix: /api\n    match: {path_prefix: /apix}\n",
            "strip_prefix \"/api\" would never apply: this route's path_prefix \"/apix\" matches \
             no path that starts with \"/api\" on a segment boundary",
        ),
        (
            "    strip_prefix: /v2\n    match: {path_prefix: /v1/users}\n",
            "strip_prefix \"/v2\" would never apply: this route's path_prefix \"/v1/users\" \
             matches no path that starts with \"/v2\" on a segment boundary",
        ),
        (
            "    strip_prefix: /a/b\n    match: {path_exact: /a}\n",
            "strip_prefix \"/a/b\" would never apply: this route's path_exact \"/a\" matches no \
             path that starts with \"/a/b\" on a segment boundary",
        ),
    ];
    for (lines, message) in cases {
        assert_eq!(
            problem(&route(lines)),
            pair("routes[0].strip_prefix", message),
            "{lines}"
        );
    }
    assert!(is_segment_prefix("/", "/anything"));
    assert!(is_segment_prefix("/a", "/a"));
    assert!(is_segment_prefix("/a", "/a/b"));
    assert!(!is_segment_prefix("/a", "/ab"));
    assert!(!is_segment_prefix("/a/b", "/a"));
}

#[test]
fn route_values() {
    let config = ok(&route(
        "    host_rewrite: users.internal:8080\n    timeout: 1.5s\n    max_body_size: 0\n",
    ));
    let r = &config.routes[0];
    assert_eq!(
        r.policies.transform.host_rewrite,
        Some(HeaderValue::from_static("users.internal:8080"))
    );
    assert_eq!(r.policies.timeout.timeout, Duration::from_millis(1500));
    assert_eq!(r.policies.body_limit.max_body_size, 0);

    let cases = [
        (
            "    host_rewrite: \"a\\u0001b\"\n",
            "routes[0].host_rewrite",
            "\"a\\u{1}b\" is not a valid Host header value",
        ),
        (
            "    host_rewrite: ''\n",
            "routes[0].host_rewrite",
            "cannot be empty; leave it out",
        ),
        (
            "    timeout: 0s\n",
            "routes[0].timeout",
            "must be greater than 0s",
        ),
        (
            "    timeout: 9000h\n",
            "routes[0].timeout",
            "invalid duration \"9000h\": longer than the maximum of one year",
        ),
        (
            "    max_body_size: 1.5MiB\n",
            "routes[0].max_body_size",
            "invalid size \"1.5MiB\": expected a whole number of bytes, optionally followed by \
             B, KB, MB, GB (1000-based) or KiB, MiB, GiB (1024-based)",
        ),
        (
            "    max_body_size: 99999999999GiB\n",
            "routes[0].max_body_size",
            "invalid size \"99999999999GiB\": too large",
        ),
    ];
    for (lines, path, message) in cases {
        assert_eq!(problem(&route(lines)), pair(path, message), "{lines}");
    }
}

#[test]
fn header_operations() {
    let config = ok(&route(
        "    request_headers:\n      set: {X-A: '1', x-b: two}\n      add: {x-c: '3'}\n      \
         remove: [x-d]\n    response_headers:\n      remove: [server]\n",
    ));
    let ops = &config.routes[0].policies.transform.request_headers;
    assert_eq!(
        ops.set,
        [
            (
                HeaderName::from_static("x-a"),
                HeaderValue::from_static("1")
            ),
            (
                HeaderName::from_static("x-b"),
                HeaderValue::from_static("two")
            ),
        ]
    );
    assert_eq!(
        ops.add,
        [(
            HeaderName::from_static("x-c"),
            HeaderValue::from_static("3")
        )]
    );
    assert_eq!(ops.remove, [HeaderName::from_static("x-d")]);
    assert_eq!(
        config.routes[0].policies.transform.response_headers.remove,
        [HeaderName::from_static("server")]
    );

    let text = route(
        "    request_headers:
      set:
        Host: example.com
        X-Dup: a
        x-dup: b
        'bad name': v
        x-ok: \"line\\nbreak\"
      add: {Transfer-Encoding: chunked, TE: trailers}
      remove: [keep-alive, x-a, X-A, upgrade]
    response_headers:
      set: {host: x, trailer: y, proxy-connection: z}
",
    );
    let hop = |name: &str| {
        format!(
            "`{name}` is a hop-by-hop header: the proxy manages it per connection, so it cannot \
             be changed here"
        )
    };
    let prefix = "routes[0].request_headers";
    assert_eq!(
        problems(&text),
        [
            pair(
                &format!("{prefix}.set.Host"),
                "the Host header cannot be changed here; use the route's host_rewrite"
            ),
            pair(
                &format!("{prefix}.set.x-dup"),
                "header `x-dup` is given twice (names are case-insensitive)"
            ),
            pair(
                &format!("{prefix}.set.bad name"),
                "\"bad name\" is not a valid header name"
            ),
            pair(
                &format!("{prefix}.set.x-ok"),
                "\"line\\nbreak\" is not a valid header value (visible ASCII, spaces and tabs \
                 only)"
            ),
            pair(
                &format!("{prefix}.add.Transfer-Encoding"),
                &hop("transfer-encoding")
            ),
            pair(&format!("{prefix}.add.TE"), &hop("te")),
            pair(&format!("{prefix}.remove[0]"), &hop("keep-alive")),
            pair(
                &format!("{prefix}.remove[2]"),
                "header `x-a` is listed twice"
            ),
            pair(&format!("{prefix}.remove[3]"), &hop("upgrade")),
            pair(
                "routes[0].response_headers.set.host",
                "`host` is a request header; it has no meaning in a response"
            ),
            pair(
                "routes[0].response_headers.set.trailer",
                "`trailer` announces a message's trailer fields, which only whoever sends its \
                 body can know; it cannot be set here"
            ),
            pair(
                "routes[0].response_headers.set.proxy-connection",
                &hop("proxy-connection")
            ),
        ]
    );
    let refused = [
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "upgrade",
        "proxy-connection",
        "trailer",
    ];
    for name in refused {
        assert!(header_op_name(name, true).is_err(), "{name}");
        assert!(
            header_op_name(&name.to_ascii_uppercase(), false).is_err(),
            "{name}"
        );
    }
}

#[test]
fn positions_of_semantic_problems() {
    // Name problems in header maps point at the key, value problems at the value, and a
    // default that conflicts points at the nearest key the user wrote.
    let text = route(
        "    request_headers:\n      set:\n        Connection: \"a\\u0001\"\n    \
         timeout: 0s\n",
    );
    let found = match load(&text) {
        Err(problems) => problems,
        Ok(_) => panic!("expected problems"),
    };
    let positions: Vec<_> = found
        .iter()
        .map(|p| (p.path.as_str(), p.line, p.column))
        .collect();
    assert_eq!(
        positions,
        [
            ("routes[0].request_headers.set.Connection", 13, 9),
            ("routes[0].request_headers.set.Connection", 13, 21),
            ("routes[0].timeout", 14, 14),
        ]
    );
}

#[test]
fn redaction_replaces_only_existing_paths() {
    let mut dump = serde_json::json!({"a": {"b": [1, {"c": "secret"}]}, "d": "plain"});
    let secrets = [
        KeyPath::root().key("a").key("b").index(1).key("c"),
        KeyPath::root().key("missing").key("x"),
        KeyPath::root().key("a").key("b").index(9),
    ];
    redact(&mut dump, &secrets);
    assert_eq!(
        dump,
        serde_json::json!({"a": {"b": [1, {"c": "<redacted>"}]}, "d": "plain"})
    );
}

/// PEM files for the TLS tests: `server.pem`/`server-key.pem` (localhost), `other-key.pem`
/// (a key that belongs to nothing), `ca.pem` (self-signed, usable as a trust anchor).
fn tls_files() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    std::fs::write(dir.path().join("server.pem"), cert.pem()).expect("write");
    std::fs::write(dir.path().join("server-key.pem"), key.serialize_pem()).expect("write");
    std::fs::write(dir.path().join("ca.pem"), cert.pem()).expect("write");
    let other = rcgen::KeyPair::generate().expect("key");
    std::fs::write(dir.path().join("other-key.pem"), other.serialize_pem()).expect("write");
    dir
}

/// A config whose only listener has `tls` built from `keys` (YAML flow-mapping entries);
/// relative paths resolve against `dir`.
fn tls_config(dir: &Path, keys: &str, extra: &str) -> Result<Config, Vec<Problem>> {
    let text = format!(
        "listeners:\n  - name: secure\n    address: 127.0.0.1:8443\n    tls: {{ {keys} }}\n{extra}clusters:\n  - name: backend\n    endpoints: [127.0.0.1:9000]\n"
    );
    match crate::config::load_str_in(&text, "t.yaml", &|_| None, Some(dir)) {
        Ok(config) => Ok(config),
        Err(ConfigError::Invalid { problems, .. }) => Err(problems),
        Err(other) => panic!("{other}"),
    }
}

fn tls_problems(dir: &Path, keys: &str, extra: &str) -> Vec<(String, String)> {
    match tls_config(dir, keys, extra) {
        Ok(_) => panic!("expected problems for {keys}"),
        Err(problems) => problems.into_iter().map(|p| (p.path, p.message)).collect(),
    }
}

const CERT: &str = "certificates: [{cert: server.pem, key: server-key.pem}]";

#[test]
fn listener_tls_defaults_and_relative_paths() {
    let dir = tls_files();
    let config = tls_config(dir.path(), CERT, "").expect("valid");
    let tls = config.listeners[0].tls.as_ref().expect("tls");
    assert_eq!(tls.certificates[0].cert, dir.path().join("server.pem"));
    assert!(tls.certificates[0].server_names.is_empty());
    assert_eq!(tls.unknown_sni, UnknownSni::DefaultCertificate);
    assert_eq!(tls.min_version, TlsVersion::Tls12);
    assert_eq!(tls.handshake_timeout, Duration::from_secs(10));
    assert_eq!(tls.client_auth, ClientAuth::default());
    assert_eq!(tls.hsts, None);

    let config = tls_config(
        dir.path(),
        &format!(
            "{CERT}, unknown_sni: refuse, min_version: 1.3, handshake_timeout: 2s, \
             client_auth: {{mode: optional, ca: ca.pem, forward_header: X-Client-Cert}}, \
             hsts: {{max_age: 1h, include_subdomains: true}}"
        ),
        "",
    )
    .expect("valid");
    let tls = config.listeners[0].tls.as_ref().expect("tls");
    assert_eq!(tls.unknown_sni, UnknownSni::Refuse);
    assert_eq!(tls.min_version, TlsVersion::Tls13);
    assert_eq!(tls.client_auth.mode, ClientAuthMode::Optional);
    assert_eq!(
        tls.client_auth
            .forward_header
            .as_ref()
            .map(HeaderName::as_str),
        Some("x-client-cert")
    );
    let hsts = tls.hsts.as_ref().expect("hsts");
    assert_eq!(hsts.header_value(), "max-age=3600; includeSubDomains");
}

#[test]
fn listener_tls_problems_name_the_key() {
    let dir = tls_files();
    let d = dir.path();
    let at = |path: &str, needle: &str, found: Vec<(String, String)>| {
        assert!(
            found.iter().any(|(p, m)| p == path && m.contains(needle)),
            "no `{needle}` at {path} in {found:#?}"
        );
    };
    at(
        "listeners[0].tls.certificates[0].cert",
        "cannot read",
        tls_problems(
            d,
            "certificates: [{cert: missing.pem, key: server-key.pem}]",
            "",
        ),
    );
    at(
        "listeners[0].tls.certificates[0].key",
        "cannot be used with",
        tls_problems(
            d,
            "certificates: [{cert: server.pem, key: other-key.pem}]",
            "",
        ),
    );
    at(
        "listeners[0].tls.certificates[0].key",
        "no PRIVATE KEY",
        tls_problems(d, "certificates: [{cert: server.pem, key: server.pem}]", ""),
    );
    at(
        "listeners[0].tls.certificates",
        "at least one certificate",
        tls_problems(d, "certificates: []", ""),
    );
    at(
        "listeners[0].tls.certificates[0].server_names[1]",
        "`*` is only allowed",
        tls_problems(
            d,
            "certificates: [{cert: server.pem, key: server-key.pem, server_names: [a.example, 'a.*.example']}]",
            "",
        ),
    );
    at(
        "listeners[0].tls.certificates[1]",
        "also served by certificates[0]",
        tls_problems(
            d,
            "certificates: [{cert: server.pem, key: server-key.pem}, {cert: server.pem, key: server-key.pem}]",
            "",
        ),
    );
    at(
        "listeners[0].tls.unknown_sni",
        "expected default or refuse",
        tls_problems(d, &format!("{CERT}, unknown_sni: reject"), ""),
    );
    at(
        "listeners[0].tls.min_version",
        "unsupported TLS version \"1.1\"",
        tls_problems(d, &format!("{CERT}, min_version: 1.1"), ""),
    );
    at(
        "listeners[0].tls.handshake_timeout",
        "greater than 0s",
        tls_problems(d, &format!("{CERT}, handshake_timeout: 0s"), ""),
    );
    at(
        "listeners[0].tls.client_auth",
        "`ca`",
        tls_problems(d, &format!("{CERT}, client_auth: {{mode: required}}"), ""),
    );
    at(
        "listeners[0].tls.client_auth.mode",
        "expected none, optional or required",
        tls_problems(
            d,
            &format!("{CERT}, client_auth: {{mode: always, ca: ca.pem}}"),
            "",
        ),
    );
    at(
        "listeners[0].tls.client_auth.forward_header",
        "hop-by-hop",
        tls_problems(
            d,
            &format!(
                "{CERT}, client_auth: {{mode: optional, ca: ca.pem, forward_header: connection}}"
            ),
            "",
        ),
    );
    at(
        "listeners[0].tls.client_auth.forward_header",
        "mode none",
        tls_problems(
            d,
            &format!("{CERT}, client_auth: {{forward_header: x-cert}}"),
            "",
        ),
    );
    at(
        "listeners[0].tls.ciphers",
        "unknown key `ciphers`",
        tls_problems(d, &format!("{CERT}, ciphers: all"), ""),
    );
}

/// A config whose only listener has `tls` with the certificate and these block-style lines
/// (indented under `tls:`), so positions are easy to read off.
fn cipher_config(dir: &Path, lines: &str) -> Result<Config, Vec<Problem>> {
    let text = format!(
        "listeners:\n  - name: secure\n    address: 127.0.0.1:8443\n    tls:\n      {CERT}\n{lines}clusters:\n  - name: backend\n    endpoints: [127.0.0.1:9000]\n"
    );
    match crate::config::load_str_in(&text, "t.yaml", &|_| None, Some(dir)) {
        Ok(config) => Ok(config),
        Err(ConfigError::Invalid { problems, .. }) => Err(problems),
        Err(other) => panic!("{other}"),
    }
}

fn cipher_problems(dir: &Path, lines: &str) -> Vec<(String, usize, usize, String)> {
    match cipher_config(dir, lines) {
        Ok(_) => panic!("expected problems for {lines}"),
        Err(problems) => problems
            .into_iter()
            .map(|p| (p.path, p.line, p.column, p.message))
            .collect(),
    }
}

#[test]
fn listener_cipher_suites_are_kept_in_order() {
    let dir = tls_files();
    let config = cipher_config(dir.path(), "").expect("valid");
    let tls = config.listeners[0].tls.as_ref().expect("tls");
    assert_eq!(tls.cipher_suites, None);

    let config = cipher_config(
        dir.path(),
        "      cipher_suites:\n        - TLS_CHACHA20_POLY1305_SHA256\n        - TLS_AES_128_GCM_SHA256\n        - TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256\n",
    )
    .expect("valid");
    let tls = config.listeners[0].tls.as_ref().expect("tls");
    let names: Vec<&str> = tls
        .cipher_suites
        .as_deref()
        .expect("suites")
        .iter()
        .map(|suite| pki::cipher_suite_name(*suite))
        .collect();
    assert_eq!(
        names,
        [
            "TLS_CHACHA20_POLY1305_SHA256",
            "TLS_AES_128_GCM_SHA256",
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
        ]
    );
    // TLS 1.3 suites alone are fine on a listener that also allows 1.2: it speaks 1.3 only.
    cipher_config(
        dir.path(),
        "      cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
    )
    .expect("valid");
    // TLS 1.2 suites are fine with min_version 1.3 as long as one 1.3 suite is there.
    cipher_config(
        dir.path(),
        "      min_version: \"1.3\"\n      cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384]\n",
    )
    .expect("valid");
}

#[test]
fn listener_cipher_suite_problems_have_positions() {
    let dir = tls_files();
    let d = dir.path();
    let found = cipher_problems(
        d,
        "      cipher_suites:\n        - TLS_AES_128_GCM_SHA256\n        - TLS13_AES_256_GCM_SHA384\n        - ECDHE-RSA-AES128-GCM-SHA256\n        - TLS_AES_128_GCM_SHA256\n",
    );
    let summary: Vec<_> = found
        .iter()
        .map(|(path, line, column, message)| (path.as_str(), *line, *column, message.as_str()))
        .collect();
    assert_eq!(summary.len(), 3, "{summary:#?}");
    assert_eq!(
        (summary[0].0, summary[0].1, summary[0].2),
        ("listeners[0].tls.cipher_suites[1]", 8, 11)
    );
    assert!(summary[0].3.starts_with(
        "unknown cipher suite \"TLS13_AES_256_GCM_SHA384\", did you mean `TLS_AES_256_GCM_SHA384`?"
    ));
    assert_eq!(
        (summary[1].0, summary[1].1, summary[1].2),
        ("listeners[0].tls.cipher_suites[2]", 9, 11)
    );
    assert_eq!(
        summary[1].3,
        "ECDHE-RSA-AES128-GCM-SHA256 is OpenSSL's name for this suite; write its IANA name \
         `TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`"
    );
    assert_eq!(
        summary[2],
        (
            "listeners[0].tls.cipher_suites[3]",
            10,
            11,
            "TLS_AES_128_GCM_SHA256 is listed twice (also cipher_suites[0])"
        )
    );

    let found = cipher_problems(
        d,
        "      min_version: \"1.3\"\n      cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]\n",
    );
    assert_eq!(found.len(), 1, "{found:#?}");
    let (path, line, column, message) = &found[0];
    assert_eq!(
        (path.as_str(), *line, *column),
        ("listeners[0].tls.cipher_suites", 7, 22)
    );
    assert_eq!(
        message,
        "no suite here can be used with min_version \"1.3\": \
         TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 only \
         work with TLS 1.2; add a TLS 1.3 suite (TLS_AES_256_GCM_SHA384, \
         TLS_AES_128_GCM_SHA256, TLS_CHACHA20_POLY1305_SHA256)"
    );

    let found = cipher_problems(d, "      cipher_suites: [RC4-MD5]\n");
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(
        (found[0].0.as_str(), found[0].1, found[0].2),
        ("listeners[0].tls.cipher_suites[0]", 6, 23)
    );
    assert!(found[0].3.starts_with(
        "unknown cipher suite \"RC4-MD5\"; supported, by IANA name: TLS_AES_256_GCM_SHA384, \
         TLS_AES_128_GCM_SHA256, TLS_CHACHA20_POLY1305_SHA256, \
         TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"
    ));

    let found = cipher_problems(d, "      cipher_suites: []\n");
    assert_eq!(
        found
            .iter()
            .map(|(p, l, c, m)| (p.as_str(), *l, *c, m.as_str()))
            .collect::<Vec<_>>(),
        [(
            "listeners[0].tls.cipher_suites",
            6,
            22,
            "an empty list allows no cipher suite; leave cipher_suites out for the defaults"
        )]
    );
}

#[test]
fn redirects_and_routes_that_require_client_certificates() {
    let dir = tls_files();
    let d = dir.path();
    let found = tls_problems(d, CERT, "    redirect_https: { port: 8443 }\n");
    assert_eq!(
        found,
        [pair(
            "listeners[0].redirect_https",
            "a TLS listener cannot redirect to HTTPS: it already is HTTPS; remove redirect_https or tls"
        )]
    );
    let plain = ok(
        "listeners:\n  - name: plain\n    address: 127.0.0.1:8080\n    redirect_https: {port: 8443}\n",
    );
    assert_eq!(
        plain.listeners[0].redirect_https,
        Some(RedirectHttps {
            port: 8443,
            status: 308
        })
    );
    assert_eq!(
        problem("listeners:\n  - name: plain\n    address: 127.0.0.1:8080\n    redirect_https: {status: 302}\n"),
        pair(
            "listeners[0].redirect_https.status",
            "302 is not a redirect status used here: expected 301 or 308 (308 keeps the method and body)"
        )
    );
    assert_eq!(
        problem(&route("    require_client_cert: true\n")),
        pair(
            "routes[0].require_client_cert",
            "no listener asks for client certificates (listeners[].tls.client_auth.mode optional or required), so this route could never be used"
        )
    );
    let config = tls_config(
        d,
        &format!("{CERT}, client_auth: {{mode: required, ca: ca.pem}}"),
        "",
    );
    assert!(config.is_ok());
}

#[test]
fn upstream_tls_settings() {
    let dir = tls_files();
    let d = dir.path();
    let cluster = |tls: &str| {
        format!(
            "listeners:\n  - name: public\n    address: 127.0.0.1:8080\nclusters:\n  - name: secure\n    endpoints: [backend.internal:443]\n    tls: {tls}\n"
        )
    };
    let load = |text: &str| match crate::config::load_str_in(text, "t.yaml", &|_| None, Some(d)) {
        Ok(config) => Ok(config),
        Err(ConfigError::Invalid { problems, .. }) => Err(problems
            .into_iter()
            .map(|p| (p.path, p.message))
            .collect::<Vec<_>>()),
        Err(other) => panic!("{other}"),
    };
    let config = load(&cluster("{}")).expect("system roots");
    assert_eq!(
        config.clusters[0].tls,
        Some(UpstreamTls {
            ca: None,
            server_name: None,
            client_cert: None
        })
    );
    let config = load(&cluster(
        "{ca: ca.pem, server_name: Backend.Example, client_cert: server.pem, client_key: server-key.pem}",
    ))
    .expect("valid");
    let tls = config.clusters[0].tls.as_ref().expect("tls");
    assert_eq!(tls.ca, Some(d.join("ca.pem")));
    assert_eq!(tls.server_name.as_deref(), Some("backend.example"));
    assert_eq!(
        tls.client_cert,
        Some((d.join("server.pem"), d.join("server-key.pem")))
    );
    assert_eq!(
        load(&cluster("{client_cert: server.pem}")).expect_err("half a pair"),
        [pair(
            "clusters[0].tls",
            "client_cert needs client_key (its private key)"
        )]
    );
    assert_eq!(
        load(&cluster("{server_name: 'not a name'}")).expect_err("bad name"),
        [pair(
            "clusters[0].tls.server_name",
            "\"not a name\" is not a DNS name or IP address usable as SNI"
        )]
    );
    let found = load(&cluster("{insecure_skip_verify: true}")).expect_err("not offered");
    assert!(
        found[0].1.starts_with("unknown key `insecure_skip_verify`"),
        "{found:?}"
    );
}
