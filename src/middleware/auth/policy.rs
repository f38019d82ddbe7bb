//! A route's auth policy: the `auth` key (and the older `require_client_cert`), checked.
//!
//! Off the request path: checked when a config loads, described by `portico explain`. The
//! auth layer (`layer.rs`) enforces it.

use super::consumers::ConsumersSection;
use super::identity::ForwardHeaders;
use super::providers::AuthProviders;
use crate::config::check::{header_op_name, Description, RouteCheck, RoutePolicy};
use crate::config::deserialize::closest;
use crate::config::model::ClientAuthMode;
use crate::config::source::KeyPath;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The route's authentication and authorisation requirements, checked.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct AuthPolicy {
    /// Only connections with a verified client certificate may use the route.
    pub(crate) client_certificate: bool,
    /// Credentials the route requires; `None` for a route anyone may call.
    pub(crate) rules: Option<Arc<AuthRules>>,
}

/// What a route with `auth.providers` requires of a caller.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct AuthRules {
    /// Any of these authenticates, tried in order.
    pub(crate) providers: Vec<Arc<str>>,
    /// Every one of these scopes is required.
    pub(crate) scopes: Vec<Arc<str>>,
    /// At least one of these scopes is required (when not empty).
    pub(crate) any_scope: Vec<Arc<str>>,
    /// Each claim must have one of its values (or, for an array claim, contain one).
    pub(crate) claims: Vec<(String, Vec<Value>)>,
    /// Only these consumers may call (when not empty).
    pub(crate) consumers: Vec<Arc<str>>,
    pub(crate) forward: ForwardHeaders,
    /// Forward the credential upstream instead of removing it.
    pub(crate) keep_credential: bool,
    /// Each provider as `portico explain` shows it.
    pub(crate) described_providers: Vec<String>,
}

/// The auth keys as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuthFile {
    /// The same as `auth.client_certificate: true` (kept for configs written before `auth`).
    require_client_cert: Option<bool>,
    auth: Option<RouteAuthFile>,
}

/// `auth:` as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteAuthFile {
    providers: Option<Vec<String>>,
    client_certificate: Option<bool>,
    scopes: Option<Vec<String>>,
    any_scope: Option<Vec<String>>,
    claims: Option<BTreeMap<String, Value>>,
    consumers: Option<Vec<String>>,
    forward: Option<ForwardFile>,
    keep_credential: Option<bool>,
}

/// `auth.forward:` as written: header names.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct ForwardFile {
    consumer: Option<String>,
    subject: Option<String>,
    scopes: Option<String>,
    plan: Option<String>,
    claims: Option<BTreeMap<String, String>>,
}

impl RoutePolicy for AuthPolicy {
    const KEYS: &'static [&'static str] = &["auth", "require_client_cert"];
    type File = AuthFile;

    fn adds_layer(&self) -> bool {
        self.client_certificate || self.rules.is_some()
    }

    fn check(file: &AuthFile, route: &mut RouteCheck<'_, '_>) -> Option<Self> {
        let auth = file.auth.clone().unwrap_or_default();
        let (certificate_key, client_certificate) =
            match (file.require_client_cert, auth.client_certificate) {
                (Some(true), _) => (route.key("require_client_cert"), true),
                (_, Some(true)) => (route.key("auth").key("client_certificate"), true),
                _ => (route.key("auth"), false),
            };
        let mut ok = true;
        if client_certificate && !listeners_ask_for_certificates(route) {
            route.report(
                &certificate_key,
                "no listener asks for client certificates (listeners[].tls.client_auth.mode \
                 optional or required), so this route could never be used",
            );
            ok = false;
        }
        let rules = check_rules(&auth, &route.key("auth"), route);
        let rules = match rules {
            Ok(rules) => rules,
            Err(()) => {
                ok = false;
                None
            }
        };
        ok.then(|| AuthPolicy {
            client_certificate,
            rules: rules.map(Arc::new),
        })
    }

    fn describe(&self, _request_path: &str, out: &mut Description) {
        if self.client_certificate {
            out.line("auth", "a verified client certificate (403 without one)");
        }
        let Some(rules) = &self.rules else {
            return;
        };
        out.line(
            "auth",
            format!(
                "{} (401 without a valid credential)",
                if rules.described_providers.len() == 1 {
                    rules.described_providers[0].clone()
                } else {
                    format!("any of: {}", rules.described_providers.join("; "))
                }
            ),
        );
        if !rules.scopes.is_empty() {
            out.line(
                "scopes",
                format!("all of {} (403 otherwise)", join(&rules.scopes)),
            );
        }
        if !rules.any_scope.is_empty() {
            out.line(
                "scopes",
                format!("any of {} (403 otherwise)", join(&rules.any_scope)),
            );
        }
        for (claim, values) in &rules.claims {
            let values: Vec<String> = values.iter().map(Value::to_string).collect();
            out.line("claim", format!("{claim} is one of {}", values.join(", ")));
        }
        if !rules.consumers.is_empty() {
            out.line("consumers", format!("only {}", join(&rules.consumers)));
        }
        let forward = &rules.forward;
        let mut sent: Vec<String> = Vec::new();
        for (what, header) in [
            ("consumer id", &forward.consumer),
            ("subject", &forward.subject),
            ("scopes", &forward.scopes),
            ("plan", &forward.plan),
        ] {
            if let Some(header) = header {
                sent.push(format!("{header}: <{what}>"));
            }
        }
        for (claim, header) in &forward.claims {
            sent.push(format!("{header}: <claim {claim}>"));
        }
        if !sent.is_empty() {
            out.line("identity", format!("sent upstream as {}", sent.join(", ")));
        }
        out.line(
            "credential",
            if rules.keep_credential {
                "forwarded upstream"
            } else {
                "removed before forwarding"
            },
        );
    }

    /// The TLS facts of the connection are in the request context.
    fn reads_context(&self) -> bool {
        self.client_certificate
    }
}

fn join(items: &[Arc<str>]) -> String {
    items.iter().map(|s| &**s).collect::<Vec<_>>().join(", ")
}

fn listeners_ask_for_certificates(route: &RouteCheck<'_, '_>) -> bool {
    route.listeners().any(|listener| {
        listener
            .tls
            .as_ref()
            .and_then(|tls| tls.client_auth.as_ref())
            .and_then(|auth| auth.mode)
            .is_some_and(|mode| mode != ClientAuthMode::None)
    })
}

/// `Ok(None)`: the route takes no credentials.
fn check_rules(
    file: &RouteAuthFile,
    path: &KeyPath,
    route: &mut RouteCheck<'_, '_>,
) -> Result<Option<AuthRules>, ()> {
    let mut ok = true;
    let names = file.providers.clone().unwrap_or_default();
    if names.is_empty() {
        // Requirements without a way to authenticate could never be met.
        let needs_providers = [
            (
                "scopes",
                file.scopes.as_ref().is_some_and(|s| !s.is_empty()),
            ),
            (
                "any_scope",
                file.any_scope.as_ref().is_some_and(|s| !s.is_empty()),
            ),
            (
                "claims",
                file.claims.as_ref().is_some_and(|c| !c.is_empty()),
            ),
            (
                "consumers",
                file.consumers.as_ref().is_some_and(|c| !c.is_empty()),
            ),
            ("forward", file.forward.is_some()),
            ("keep_credential", file.keep_credential.is_some()),
        ];
        for (key, present) in needs_providers {
            if present {
                let message = if file.providers.is_some() {
                    format!("`{key}` needs at least one provider in auth.providers")
                } else {
                    format!(
                        "`{key}` needs auth.providers: the identity providers whose credentials \
                         this route takes"
                    )
                };
                route.report(&path.key(key), message);
                ok = false;
            }
        }
        return if ok { Ok(None) } else { Err(()) };
    }
    let section = route.section::<AuthProviders>();
    let mut described_providers = Vec::with_capacity(names.len());
    let mut providers = Vec::with_capacity(names.len());
    for (index, name) in names.iter().enumerate() {
        let at = path.key("providers").index(index);
        if providers.iter().any(|p: &Arc<str>| &**p == name) {
            route.report(&at, format!("provider `{name}` is listed twice"));
            ok = false;
            continue;
        }
        match section {
            Some(section) => match section.find(name) {
                Some(provider) => described_providers.push(provider.describe()),
                None => {
                    let known = section.providers.iter().map(|p| &*p.name);
                    let mut message = format!("unknown provider `{name}`");
                    match closest(name, known) {
                        Some(close) => message.push_str(&format!("; did you mean `{close}`?")),
                        None if section.providers.is_empty() => {
                            message.push_str(": define it under auth_providers");
                        }
                        None => {
                            let known: Vec<&str> =
                                section.providers.iter().map(|p| &*p.name).collect();
                            message
                                .push_str(&format!(" (auth_providers has {})", known.join(", ")));
                        }
                    }
                    route.report(&at, message);
                    ok = false;
                }
            },
            // The section did not check out; its problems are reported already.
            None => ok = false,
        }
        providers.push(Arc::from(name.as_str()));
    }
    let scopes = scope_list(file.scopes.as_deref(), &path.key("scopes"), route, &mut ok);
    let any_scope = scope_list(
        file.any_scope.as_deref(),
        &path.key("any_scope"),
        route,
        &mut ok,
    );
    let mut claims = Vec::new();
    for (claim, value) in file.claims.iter().flatten() {
        let values = match value {
            Value::Array(values) => values.clone(),
            Value::Null => Vec::new(),
            value => vec![value.clone()],
        };
        if values.is_empty() {
            route.report(
                &path.key("claims").key(claim),
                "give the value (or list of values) the claim must have",
            );
            ok = false;
        }
        claims.push((claim.clone(), values));
    }
    let mut consumers = Vec::new();
    let directory = route
        .section::<ConsumersSection>()
        .map(|section| section.directory.clone());
    for (index, id) in file.consumers.iter().flatten().enumerate() {
        if let Some(directory) = &directory {
            if !directory.knows(id) {
                route.report(
                    &path.key("consumers").index(index),
                    format!("unknown consumer `{id}`: no consumer in `consumers` has this id"),
                );
                ok = false;
            }
        }
        consumers.push(Arc::from(id.as_str()));
    }
    let forward = check_forward(file.forward.as_ref(), &path.key("forward"), route, &mut ok);
    if !ok {
        return Err(());
    }
    Ok(Some(AuthRules {
        providers,
        scopes,
        any_scope,
        claims,
        consumers,
        forward,
        keep_credential: file.keep_credential.unwrap_or(false),
        described_providers,
    }))
}

fn scope_list(
    scopes: Option<&[String]>,
    path: &KeyPath,
    route: &mut RouteCheck<'_, '_>,
    ok: &mut bool,
) -> Vec<Arc<str>> {
    let mut out = Vec::new();
    for (index, scope) in scopes.into_iter().flatten().enumerate() {
        if scope.is_empty()
            || scope
                .chars()
                .any(|c| c.is_whitespace() || c == '"' || c == '\\')
        {
            route.report(
                &path.index(index),
                format!("{scope:?} is not a scope: no spaces, quotes or backslashes"),
            );
            *ok = false;
        } else {
            out.push(Arc::from(scope.as_str()));
        }
    }
    out
}

fn check_forward(
    file: Option<&ForwardFile>,
    path: &KeyPath,
    route: &mut RouteCheck<'_, '_>,
    ok: &mut bool,
) -> ForwardHeaders {
    let Some(file) = file else {
        return ForwardHeaders::default();
    };
    let mut header = |key: &str, text: &Option<String>, route: &mut RouteCheck<'_, '_>| {
        let text = text.as_deref()?;
        match header_op_name(text, true) {
            Ok(name) => Some(name),
            Err(message) => {
                route.report(&path.key(key), message);
                *ok = false;
                None
            }
        }
    };
    let mut forward = ForwardHeaders {
        consumer: header("consumer", &file.consumer, route),
        subject: header("subject", &file.subject, route),
        scopes: header("scopes", &file.scopes, route),
        plan: header("plan", &file.plan, route),
        claims: Vec::new(),
    };
    for (claim, name) in file.claims.iter().flatten() {
        match header_op_name(name, true) {
            Ok(header) => forward.claims.push((claim.clone(), header)),
            Err(message) => {
                route.report(&path.key("claims").key(claim), message);
                *ok = false;
            }
        }
    }
    let mut seen: Vec<&http::HeaderName> = Vec::new();
    for name in forward.names() {
        if seen.contains(&name) {
            route.report(path, format!("`{name}` is used for two things"));
            *ok = false;
        }
        seen.push(name);
    }
    forward
}

#[cfg(test)]
mod tests {
    use crate::config::{load_str, ConfigError};

    const KEY: &str = "sha256:a4bcd87663b46d8a7d43537830717237575e9fb9b23eb50d41d926573d483624";

    fn problems(sections_and_route: &str) -> Vec<(String, String)> {
        let text = format!(
            "listeners: [{{ name: p, address: \"127.0.0.1:0\" }}]\nclusters: [{{ name: b, \
             endpoints: [\"127.0.0.1:1\"] }}]\n{sections_and_route}"
        );
        match load_str(&text, "t.yaml") {
            Ok(_) => panic!("expected problems in:\n{text}"),
            Err(ConfigError::Invalid { problems, .. }) => problems
                .into_iter()
                .map(|p| (format!("{}:{}", p.path, p.line), p.message))
                .collect(),
            Err(other) => panic!("{other}"),
        }
    }

    #[test]
    fn impossible_policies_are_reported_where_they_are_written() {
        let found = problems(
            "auth_providers: [{ name: keys, api_key: {} }]\nroutes:\n  - cluster: b\n    \
             auth: { providers: [kyes] }\n  - cluster: b\n    auth: { scopes: [a] }\n",
        );
        assert_eq!(
            found,
            [
                (
                    "routes[0].auth.providers[0]:6".to_string(),
                    "unknown provider `kyes`; did you mean `keys`?".to_string()
                ),
                (
                    "routes[1].auth.scopes:8".to_string(),
                    "`scopes` needs auth.providers: the identity providers whose credentials \
                     this route takes"
                        .to_string()
                ),
            ]
        );
    }

    #[test]
    fn consumers_are_checked_for_duplicates_digests_and_references() {
        let found = problems(&format!(
            "consumers:\n  - {{ id: a, api_keys: [\"{KEY}\"] }}\n  - {{ id: a, api_keys: \
             [\"{KEY}\"] }}\n  - {{ id: c, api_keys: [pk_live_plaintext] }}\nauth_providers: [{{ \
             name: keys, api_key: {{}} }}]\nroutes:\n  - {{ cluster: b, auth: {{ providers: \
             [keys], consumers: [nobody] }} }}\n"
        ));
        let messages: Vec<String> = found.iter().map(|(at, m)| format!("{at} {m}")).collect();
        for expected in [
            "consumers[1].id:5 duplicate consumer id `a` (also [0])",
            "consumers[1].api_keys:5 this API key digest is also one of [0]'s",
            "consumers[2].api_keys:6 expected a digest `sha256:<64 hex digits>`",
        ] {
            assert!(
                messages.iter().any(|m| m.starts_with(expected)),
                "{expected} not in {messages:#?}"
            );
        }
        // The consumers did not check out, so a reference to one is not reported on top.
        assert!(
            !messages.iter().any(|m| m.contains("nobody")),
            "{messages:#?}"
        );
    }

    #[test]
    fn a_route_may_name_only_known_consumers() {
        let found = problems(&format!(
            "consumers: [{{ id: a, api_keys: [\"{KEY}\"] }}]\nauth_providers: [{{ name: keys, \
             api_key: {{}} }}]\nroutes:\n  - {{ cluster: b, auth: {{ providers: [keys], \
             consumers: [b] }} }}\n"
        ));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, "routes[0].auth.consumers[0]:6");
    }

    #[test]
    fn provider_mistakes_are_reported_at_their_keys() {
        let found = problems(
            "auth_providers:\n  - name: own\n    oauth2_server: { issuer: \"https://api.test\", \
             signing_keys: k, listeners: [pubic] }\n  - name: idp\n    jwt: { issuer: i, \
             audiences: [a], algorithms: [HS256, none], jwks_url: \"https://i/jwks\" }\n  - name: \
             both\n    api_key: {}\n    jwt: {}\nroutes: [{ cluster: b }]\n",
        );
        let at: Vec<&str> = found.iter().map(|(at, _)| at.as_str()).collect();
        assert_eq!(
            at,
            [
                "auth_providers[0].oauth2_server.listeners[0]:5",
                "auth_providers[1].jwt.algorithms[0]:7",
                "auth_providers[1].jwt.algorithms[1]:7",
                "auth_providers[2]:8",
            ],
            "{found:#?}"
        );
        assert!(found[0].1.starts_with("unknown listener `pubic`"));
        assert!(found[1].1.contains("needs `secret`"));
        assert!(found[2].1.contains("`none` is never accepted"));
    }

    #[test]
    fn credentials_written_in_the_file_are_redacted_in_the_config_dump() {
        let secret = "an-hmac-secret-that-is-32-bytes-long!!";
        let text = format!(
            "listeners: [{{ name: p, address: \"127.0.0.1:0\" }}]\nclusters: [{{ name: b, \
             endpoints: [\"127.0.0.1:1\"] }}]\nconsumers: [{{ id: a, api_keys: [\"{KEY}\"], \
             oauth2: {{ client_id: c, client_secret: \"{KEY}\" }} }}]\nauth_providers:\n  - \
             {{ name: h, jwt: {{ issuer: i, audiences: [a], secret: \"{secret}\" }} }}\n  - {{ \
             name: o, introspection: {{ endpoint: \"https://idp/i\", client_id: g, \
             client_secret: hunter2 }} }}\nroutes: [{{ cluster: b }}]\n"
        );
        let config = load_str(&text, "t.yaml").unwrap();
        let dump = config.redacted_dump.to_string();
        for secret in [KEY, secret, "hunter2"] {
            assert!(!dump.contains(secret), "{secret} in {dump}");
        }
        assert_eq!(
            config.redacted_dump["consumers"][0]["api_keys"][0],
            "<redacted>"
        );
        assert_eq!(
            config.redacted_dump["auth_providers"][1]["introspection"]["client_id"],
            "g"
        );
    }
}
