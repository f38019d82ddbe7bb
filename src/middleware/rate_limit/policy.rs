//! A route's `rate_limit` key and the top-level `rate_limiting` section (plans, Redis),
//! checked.
//!
//! Off the request path: checked when a config loads, described by `portico explain`. The
//! rate-limit layer (`layer.rs`) enforces them with the limiters of `services.rs`.

use super::key::{KeyPart, KeySpec};
use super::limits::{check_limits, Limit, LimitFile};
use crate::config::check::{Checker, Description, RouteCheck, RoutePolicy, Section};
use crate::config::source::{KeyPath, Seg};
use crate::config::REDACTED;
use crate::middleware::auth::consumers::ConsumersSection;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Keys each local limit holds at most, unless the route or plan says otherwise.
pub(crate) const DEFAULT_MAX_KEYS: usize = 100_000;
const MAX_MAX_KEYS: u64 = 50_000_000;
const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(50);
const DEFAULT_REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Where a set of limits keeps its counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Store {
    /// In this process.
    #[default]
    Local,
    /// In Redis, shared by every gateway that uses it.
    Redis,
}

/// Which rate-limit headers answers carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum HeaderStyle {
    /// `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers).
    #[default]
    Ietf,
    /// `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset`.
    Classic,
    /// None but `Retry-After` on a 429.
    None,
}

/// What a gateway does when Redis cannot answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum OnRedisError {
    /// Fail open: decide with a local limiter of the same limits (per gateway).
    #[default]
    Local,
    /// Fail closed: 503 `rate_limit_unavailable`.
    Refuse,
}

/// A route's limits, checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RouteLimits {
    pub(crate) key: KeySpec,
    /// Used when the request lacks a part of `key`.
    pub(crate) fallback: KeySpec,
    /// The route's own limits, in checking order.
    pub(crate) limits: Vec<Limit>,
    /// Also apply the caller's plan.
    pub(crate) plan: bool,
    pub(crate) store: Store,
    pub(crate) max_keys: usize,
    pub(crate) headers: HeaderStyle,
}

/// The route's `rate_limit`, checked; `None` when it has none.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct RateLimitPolicy {
    pub(crate) limits: Option<Arc<RouteLimits>>,
}

/// `rate_limit` as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct RateLimitRouteFile {
    rate_limit: Option<RateLimitFile>,
}

/// A key written as one part or a list of parts.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub(crate) enum KeyFile {
    One(String),
    Parts(Vec<String>),
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct RateLimitFile {
    /// Default: `consumer`.
    key: Option<KeyFile>,
    /// Default: `ip`.
    fallback_key: Option<KeyFile>,
    #[serde(default)]
    limits: Vec<LimitFile>,
    /// Default: false.
    plan: Option<bool>,
    /// Default: `local`.
    store: Option<Store>,
    /// Default: 100000.
    max_keys: Option<u64>,
    /// Default: `ietf`.
    headers: Option<HeaderStyle>,
}

/// Check a key (`path`) against what it may contain.
pub(crate) fn check_key(
    file: Option<&KeyFile>,
    default: KeyPart,
    path: &KeyPath,
    checker: &mut Checker<'_>,
) -> Option<KeySpec> {
    let texts: Vec<&str> = match file {
        None => {
            return Some(KeySpec {
                parts: vec![default],
            })
        }
        Some(KeyFile::One(text)) => vec![text.as_str()],
        Some(KeyFile::Parts(parts)) => parts.iter().map(String::as_str).collect(),
    };
    if texts.is_empty() {
        checker.report(
            path,
            "names no key part: give consumer, ip, route, header:<name> or claim:<name>",
        );
        return None;
    }
    let mut parts: Vec<KeyPart> = Vec::with_capacity(texts.len());
    for text in texts {
        match KeyPart::parse(text.trim()) {
            Ok(part) if parts.contains(&part) => {
                checker.report(path, format!("`{}` is named twice", part.label()));
                return None;
            }
            Ok(part) => parts.push(part),
            Err(message) => {
                checker.report(path, message);
                return None;
            }
        }
    }
    Some(KeySpec { parts })
}

pub(crate) fn check_max_keys(
    value: Option<u64>,
    path: &KeyPath,
    checker: &mut Checker<'_>,
) -> Option<usize> {
    let count = checker.count(path, value, DEFAULT_MAX_KEYS as u64, (1, MAX_MAX_KEYS))?;
    usize::try_from(count).ok()
}

impl RoutePolicy for RateLimitPolicy {
    const KEYS: &'static [&'static str] = &["rate_limit"];
    type File = RateLimitRouteFile;

    fn adds_layer(&self) -> bool {
        self.limits.is_some()
    }

    fn check(file: &RateLimitRouteFile, route: &mut RouteCheck<'_, '_>) -> Option<Self> {
        let Some(file) = &file.rate_limit else {
            return Some(RateLimitPolicy::default());
        };
        let path = route.key("rate_limit");
        let key = check_key(
            file.key.as_ref(),
            KeyPart::Consumer,
            &path.key("key"),
            route,
        );
        let fallback = check_key(
            file.fallback_key.as_ref(),
            KeyPart::ClientIp,
            &path.key("fallback_key"),
            route,
        );
        if let Some(fallback) = &fallback {
            if let Some(part) = fallback.parts.iter().find(|part| !part.always_present()) {
                route.report(
                    &path.key("fallback_key"),
                    format!(
                        "`{}` can be missing too: a fallback key is made of `ip` and `route`, \
                         which every request has",
                        part.label()
                    ),
                );
                return None;
            }
        }
        let limits = check_limits(&file.limits, &path.key("limits"), route);
        let max_keys = check_max_keys(file.max_keys, &path.key("max_keys"), route);
        let plan = file.plan.unwrap_or(false);
        let store = file.store.unwrap_or_default();
        let (key, fallback, limits, max_keys) = (key?, fallback?, limits?, max_keys?);
        if limits.is_empty() && !plan {
            route.report(
                &path,
                "limits nothing: give `limits`, or `plan: true` to apply the caller's plan",
            );
            return None;
        }
        let section = route.section::<RateLimiting>();
        if store == Store::Redis && section.is_some_and(|s| s.redis.is_none()) {
            route.report(
                &path.key("store"),
                "`store: redis` needs rate_limiting.redis (where the shared counts are kept)",
            );
            return None;
        }
        if file.key.is_some() {
            check_key_has_identity(&key, &path.key("key"), route)?;
        }
        if plan {
            if !has_auth(route) {
                route.report(
                    &path.key("plan"),
                    "a plan is the consumer's, and this route has no `auth` to find the \
                     consumer: add `auth`, or leave `plan` out",
                );
                return None;
            }
            check_plans_exist(route, &path.key("plan"))?;
        }
        Some(RateLimitPolicy {
            limits: Some(Arc::new(RouteLimits {
                key,
                fallback,
                limits,
                plan,
                store,
                max_keys,
                headers: file.headers.unwrap_or_default(),
            })),
        })
    }

    fn describe(&self, _request_path: &str, out: &mut Description) {
        let Some(limits) = &self.limits else {
            return;
        };
        let mut text = limits
            .limits
            .iter()
            .map(Limit::describe)
            .collect::<Vec<_>>()
            .join(", ");
        if limits.plan {
            if !text.is_empty() {
                text.push_str(", ");
            }
            text.push_str("and the caller's plan (rate_limiting.plans, keyed by consumer)");
        }
        out.line(
            "rate limit",
            format!(
                "{text}; key {} (without it: {}); store {}; 429 rate_limited",
                limits.key.label(),
                limits.fallback.label(),
                match limits.store {
                    Store::Local => "local",
                    Store::Redis => "redis (shared by every gateway)",
                }
            ),
        );
    }

    /// The client address comes from the connection's peer.
    fn reads_context(&self) -> bool {
        self.limits
            .as_ref()
            .is_some_and(|l| l.key.needs_context() || l.fallback.needs_context())
    }

    /// Consumer and claim keys, and plans (the consumer's), come from the identity.
    fn reads_identity(&self) -> bool {
        self.limits
            .as_ref()
            .is_some_and(|l| l.plan || l.key.needs_identity() || l.fallback.needs_identity())
    }
}

/// Whether the route authenticates its callers (and so may have a consumer and claims).
fn has_auth(route: &RouteCheck<'_, '_>) -> bool {
    route.writes("auth") || route.writes("require_client_cert")
}

/// A key with a part that only auth establishes (`consumer`, `claim:<name>`) on a route
/// without `auth` could never be made: every request would use the fallback key, which is
/// not what the key says. Reported at the key (`at`).
pub(crate) fn check_key_has_identity(
    key: &KeySpec,
    at: &KeyPath,
    route: &mut RouteCheck<'_, '_>,
) -> Option<()> {
    if has_auth(route) {
        return Some(());
    }
    let Some(part) = key
        .parts
        .iter()
        .find(|part| matches!(part, KeyPart::Consumer | KeyPart::Claim(_)))
    else {
        return Some(());
    };
    route.report(
        at,
        format!(
            "`{}` comes from auth, and this route has no `auth`: every request would use the \
             fallback key; add `auth`, or key by ip, route or header:<name>",
            part.label()
        ),
    );
    None
}

/// Every consumer's plan must be one `rate_limiting.plans` declares, for a route that applies
/// plans: a consumer whose plan is unknown would otherwise be unlimited.
fn check_plans_exist(route: &mut RouteCheck<'_, '_>, at: &KeyPath) -> Option<()> {
    let (Some(consumers), Some(section)) = (
        route.section::<ConsumersSection>(),
        route.section::<RateLimiting>(),
    ) else {
        // A section did not check out: its problems are reported already.
        return Some(());
    };
    let missing: Vec<String> = consumers
        .directory
        .plans()
        .filter(|(_, plan)| !section.plans.contains_key(*plan))
        .map(|(id, plan)| format!("`{id}` has plan `{plan}`"))
        .collect();
    if missing.is_empty() {
        return Some(());
    }
    route.report(
        at,
        format!(
            "consumers name plans that rate_limiting.plans does not declare ({}): declare them, \
             or such consumers would be limited by nothing but the route",
            missing.join(", ")
        ),
    );
    None
}

/// A plan, checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    pub(crate) name: Arc<str>,
    pub(crate) limits: Vec<Limit>,
    pub(crate) store: Store,
    pub(crate) max_keys: usize,
}

/// The Redis that `store: redis` limits share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RedisSettings {
    pub(crate) url: String,
    pub(crate) timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) on_error: OnRedisError,
    pub(crate) key_prefix: Arc<str>,
}

/// The `rate_limiting` section, checked.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct RateLimiting {
    pub(crate) plans: HashMap<Arc<str>, Arc<Plan>>,
    pub(crate) redis: Option<RedisSettings>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct RateLimitingFile {
    #[serde(default)]
    plans: Vec<PlanFile>,
    redis: Option<RedisFile>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlanFile {
    name: String,
    #[serde(default)]
    limits: Vec<LimitFile>,
    store: Option<Store>,
    max_keys: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct RedisFile {
    url: String,
    timeout: Option<String>,
    connect_timeout: Option<String>,
    on_error: Option<OnRedisError>,
    key_prefix: Option<String>,
}

impl Section for RateLimiting {
    const KEY: &'static str = "rate_limiting";
    type File = RateLimitingFile;

    fn check(file: &RateLimitingFile, path: &KeyPath, checker: &mut Checker<'_>) -> Option<Self> {
        let mut ok = true;
        let mut plans = HashMap::new();
        for (index, plan) in file.plans.iter().enumerate() {
            let at = path.key("plans").index(index);
            let name_ok = !plan.name.is_empty()
                && plan
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !name_ok {
                checker.report(
                    &at.key("name"),
                    format!(
                        "{:?} is not a plan name: letters, digits, `-`, `_` and `.`",
                        plan.name
                    ),
                );
                ok = false;
                continue;
            }
            if plans.contains_key(plan.name.as_str()) {
                checker.report(&at.key("name"), format!("duplicate plan `{}`", plan.name));
                ok = false;
                continue;
            }
            let limits = check_limits(&plan.limits, &at.key("limits"), checker);
            let max_keys = check_max_keys(plan.max_keys, &at.key("max_keys"), checker);
            let (Some(limits), Some(max_keys)) = (limits, max_keys) else {
                ok = false;
                continue;
            };
            if limits.is_empty() {
                checker.report(&at.key("limits"), "a plan needs at least one limit");
                ok = false;
                continue;
            }
            let store = plan.store.unwrap_or_default();
            if store == Store::Redis && file.redis.is_none() {
                checker.report(
                    &at.key("store"),
                    "`store: redis` needs rate_limiting.redis (where the shared counts are kept)",
                );
                ok = false;
                continue;
            }
            let name: Arc<str> = Arc::from(plan.name.as_str());
            plans.insert(
                name.clone(),
                Arc::new(Plan {
                    name,
                    limits,
                    store,
                    max_keys,
                }),
            );
        }
        let redis = match &file.redis {
            None => None,
            Some(redis) => {
                let at = path.key("redis");
                let checked = check_redis(redis, &at, checker);
                if checked.is_none() {
                    ok = false;
                }
                checked
            }
        };
        ok.then_some(RateLimiting { plans, redis })
    }

    fn wants_text(path: &[Seg]) -> bool {
        matches!(path, [Seg::Key(redis), Seg::Key(url)] if redis == "redis" && url == "url")
    }

    /// A Redis URL can carry a password.
    fn redact_dump(value: &mut Value) {
        if let Some(url) = value
            .get_mut("redis")
            .and_then(|redis| redis.get_mut("url"))
        {
            if let Some(text) = url.as_str() {
                if text.contains('@') {
                    *url = Value::String(REDACTED.to_string());
                }
            }
        }
    }
}

fn check_redis(file: &RedisFile, at: &KeyPath, checker: &mut Checker<'_>) -> Option<RedisSettings> {
    let url_ok = match redis::Client::open(file.url.as_str()) {
        Ok(_)
            if file.url.starts_with("redis://")
                || file.url.starts_with("redis+unix://")
                || file.url.starts_with("unix://") =>
        {
            true
        }
        Ok(_) => {
            checker.report(
                &at.key("url"),
                "only redis:// and unix:// URLs are supported (no TLS to Redis in this build)",
            );
            false
        }
        Err(error) => {
            checker.report(&at.key("url"), format!("not a Redis URL: {error}"));
            false
        }
    };
    let timeout = checker.duration(
        &at.key("timeout"),
        file.timeout.as_deref(),
        DEFAULT_REDIS_TIMEOUT,
        false,
    );
    let connect_timeout = checker.duration(
        &at.key("connect_timeout"),
        file.connect_timeout.as_deref(),
        DEFAULT_REDIS_CONNECT_TIMEOUT,
        false,
    );
    let prefix = file.key_prefix.as_deref().unwrap_or("portico");
    let prefix_ok = !prefix.is_empty()
        && prefix.len() <= 64
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    if !prefix_ok {
        checker.report(
            &at.key("key_prefix"),
            format!("{prefix:?} is not a key prefix: letters, digits, `-_.:` (64 at most)"),
        );
    }
    if !url_ok || !prefix_ok {
        return None;
    }
    Some(RedisSettings {
        url: file.url.clone(),
        timeout: timeout?,
        connect_timeout: connect_timeout?,
        on_error: file.on_error.unwrap_or_default(),
        key_prefix: Arc::from(prefix),
    })
}

#[cfg(test)]
mod tests {
    use crate::middleware::test_support::route_problems;

    fn problems(text: &str) -> Vec<String> {
        match crate::config::load_str(text, "t.yaml") {
            Ok(_) => Vec::new(),
            Err(crate::ConfigError::Invalid { problems, .. }) => {
                problems.iter().map(ToString::to_string).collect()
            }
            Err(other) => vec![other.to_string()],
        }
    }

    const PLANS: &str = "listeners: [{ name: l, address: \"127.0.0.1:0\" }]\n\
        clusters: [{ name: b, endpoints: [\"127.0.0.1:1\"] }]\n\
        consumers: [{ id: acme, plan: gold }, { id: tiny, plan: bronze }]\n\
        auth_providers: [{ name: k, api_key: {} }]\n";

    #[test]
    fn a_route_that_applies_plans_needs_every_consumers_plan_declared() {
        let text = format!(
            "{PLANS}rate_limiting: {{ plans: [{{ name: gold, limits: [{{ quota: 5/month }}] }}] }}\n\
             routes: [{{ cluster: b, auth: {{ providers: [k] }}, rate_limit: {{ plan: true }} }}]\n"
        );
        let found = problems(&text);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].contains("routes[0].rate_limit.plan"), "{found:?}");
        assert!(found[0].contains("`tiny` has plan `bronze`"), "{found:?}");
        // Declared, it loads; a route without plans does not care.
        let text = text.replace(
            "limits: [{ quota: 5/month }] }]",
            "limits: [{ quota: 5/month }] }, { name: bronze, limits: [{ rate: 1/s }] }]",
        );
        assert!(problems(&text).is_empty(), "{:?}", problems(&text));
        let text = format!(
            "{PLANS}routes: [{{ cluster: b, rate_limit: {{ limits: [{{ rate: 1/s }}] }} }}]\n"
        );
        assert!(problems(&text).is_empty());
    }

    #[test]
    fn impossible_sections_are_refused() {
        let found = problems(&format!(
            "{PLANS}rate_limiting:\n  plans:\n    - {{ name: x, limits: [] }}\n    - {{ name: gold, limits: [{{ rate: 1/s }}] }}\n    - {{ name: gold, limits: [{{ rate: 1/s }}] }}\n  redis: {{ url: \"http://nowhere\", timeout: 0s }}\nroutes: [{{ cluster: b }}]\n"
        ));
        let joined = found.join("\n");
        assert!(
            joined.contains("plans[0].limits: a plan needs at least one limit"),
            "{joined}"
        );
        assert!(
            joined.contains("plans[2].name: duplicate plan `gold`"),
            "{joined}"
        );
        assert!(joined.contains("redis.url"), "{joined}");
        assert!(
            joined.contains("redis.timeout: must be greater than 0s"),
            "{joined}"
        );
    }

    #[test]
    fn explain_names_the_limits_the_key_and_the_store() {
        use crate::config::check::{Description, RoutePolicy};
        let config = crate::config::load_str(
            "listeners: [{ name: l, address: \"127.0.0.1:0\" }]\n\
             clusters: [{ name: b, endpoints: [\"127.0.0.1:1\"] }]\n\
             auth_providers: [{ name: k, api_key: {} }]\n\
             routes: [{ cluster: b, auth: { providers: [k] }, rate_limit: { key: [consumer, header:x-tenant], limits: [{ name: burst, rate: 20/s, burst: 40 }, { quota: 1000000/month }] } }]\n",
            "t.yaml",
        )
        .expect("loads");
        let mut out = Description::default();
        config.routes[0].policies.rate_limit.describe("/", &mut out);
        let (label, text) = &out.lines[0];
        assert_eq!(*label, "rate limit");
        assert_eq!(
            text,
            "burst 20/s burst 40, 1000000-per-month 1000000/month (UTC calendar); key \
             consumer+header:x-tenant (without it: ip); store local; 429 rate_limited"
        );
    }

    #[test]
    fn keys_and_plans_that_need_auth_are_refused_on_a_route_without_it() {
        for (keys, at, part) in [
            (
                "rate_limit: { key: consumer, limits: [{ rate: 1/s }] }",
                "routes[0].rate_limit.key",
                "`consumer` comes from auth",
            ),
            (
                "rate_limit: { key: [ip, \"claim:tenant\"], limits: [{ rate: 1/s }] }",
                "routes[0].rate_limit.key",
                "`claim:tenant` comes from auth",
            ),
            (
                "concurrency_limit: { max: 2, key: consumer }",
                "routes[0].concurrency_limit.key",
                "`consumer` comes from auth",
            ),
        ] {
            let found = route_problems(keys);
            assert_eq!(found.len(), 1, "{keys}: {found:#?}");
            assert!(found[0].contains(at), "{found:?}");
            assert!(found[0].contains(part), "{found:?}");
        }
        let text = format!(
            "{PLANS}rate_limiting: {{ plans: [{{ name: gold, limits: [{{ quota: 5/month }}] }}, \
             {{ name: bronze, limits: [{{ rate: 1/s }}] }}] }}\n\
             routes: [{{ cluster: b, rate_limit: {{ plan: true }} }}]\n"
        );
        let found = problems(&text);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(found[0].contains("routes[0].rate_limit.plan"), "{found:?}");
        assert!(found[0].contains("no `auth`"), "{found:?}");
        // With auth, the same keys and plans load; without, keys auth does not make do, and
        // so does the default key (consumer, documented to fall back).
        let with_auth = text.replace(
            "{ cluster: b, rate_limit: { plan: true } }",
            "{ cluster: b, auth: { providers: [k] }, \
             rate_limit: { key: [consumer, \"claim:tenant\"], plan: true }, \
             concurrency_limit: { max: 2, key: consumer } }",
        );
        assert!(
            problems(&with_auth).is_empty(),
            "{:?}",
            problems(&with_auth)
        );
        assert!(route_problems(
            "rate_limit: { key: [ip, header:x-tenant], limits: [{ rate: 1/s }] }"
        )
        .is_empty());
        assert!(route_problems("rate_limit: { limits: [{ rate: 1/s }] }").is_empty());
    }

    #[test]
    fn route_limits_are_checked_at_their_keys() {
        assert!(route_problems(
            "rate_limit: { limits: [{ rate: 20/s, burst: 40 }, { quota: 1000/month }] }"
        )
        .is_empty());
        let problems = route_problems(
            "rate_limit: { key: [consumer, nobody], limits: [{ rate: 20/fortnight }, { quota: 5/week, burst: 3 }] }",
        );
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(problems[0].contains("rate_limit.key"), "{problems:?}");
        assert!(
            problems[1].contains("rate_limit.limits[0].rate"),
            "{problems:?}"
        );
        assert!(
            problems[2].contains("rate_limit.limits[1].burst"),
            "{problems:?}"
        );
        let problems =
            route_problems("rate_limit: { fallback_key: consumer, limits: [{ rate: 1/s }] }");
        assert!(problems[0].contains("can be missing too"), "{problems:?}");
        let problems = route_problems("rate_limit: {}");
        assert!(problems[0].contains("limits nothing"), "{problems:?}");
        let problems = route_problems("rate_limit: { store: redis, limits: [{ rate: 1/s }] }");
        assert!(
            problems[0].contains("needs rate_limiting.redis"),
            "{problems:?}"
        );
        let problems = route_problems(
            "rate_limit: { limits: [{ rate: 1/s, name: a }, { rate: 2/min, name: a }] }",
        );
        assert!(
            problems[0].contains("two limits are called `a`"),
            "{problems:?}"
        );
    }
}
