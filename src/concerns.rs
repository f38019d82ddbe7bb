//! The list of concerns: every part of the config that is not core routing.
//!
//! Off the request path: used while a config is loaded, and by `portico explain`. The core of
//! the file — `runtime`, `admin`, `listeners`, `clusters`, and each route's `name`, `match`
//! and `cluster` — is checked by `config/validate.rs`. Everything else belongs to a concern
//! and is listed here once:
//! - a **route policy** owns some keys of every route and implements
//!   [`RoutePolicy`](crate::config::check::RoutePolicy) in its own module; its layer goes into
//!   the route stack in `stack.rs`;
//! - a **section** owns a top-level key and implements
//!   [`Section`](crate::config::check::Section).
//!
//! Adding a concern: its module, one line in the list below, and (for a policy) one layer in
//! `stack.rs`. The file's structure stage, the unknown-key messages, the config dump and
//! `explain` all follow from the list.

use crate::access_log::AccessLogSettings;
use crate::client_ip::TrustedProxies;
use crate::config::check::{Checker, Description, RouteCheck, RoutePolicy, Section, SectionLookup};
use crate::config::deserialize::deserialize;
use crate::config::source::{KeyPath, Seg, SourceMap};
use crate::config::Problem;
use crate::grpc::GrpcPolicy;
use crate::middleware::auth::consumers::ConsumersSection;
use crate::middleware::auth::providers::AuthProviders;
use crate::middleware::auth::AuthPolicy;
use crate::middleware::body_limit::BodyLimitPolicy;
use crate::middleware::compression::CompressionPolicy;
use crate::middleware::cors::CorsPolicy;
use crate::middleware::direct::DirectPolicy;
use crate::middleware::fault::FaultPolicy;
use crate::middleware::ip_rules::IpRulesPolicy;
use crate::middleware::mirror::MirrorPolicy;
use crate::middleware::rate_limit::{ConcurrencyPolicy, RateLimitPolicy, RateLimiting};
use crate::middleware::retry::RetryPolicy;
use crate::middleware::split::SplitPolicy;
use crate::middleware::timeout::TimeoutPolicy;
use crate::middleware::transform::TransformPolicy;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use std::any::{Any, TypeId};

/// Declares [`RoutePolicies`]: a field per policy, and the functions that run over all of
/// them in declaration order.
macro_rules! route_policies {
    ($($(#[$doc:meta])* $field:ident: $policy:ty,)*) => {
        /// Every concern's policy for one route, checked and typed.
        #[derive(Debug, Clone, PartialEq)]
        pub(crate) struct RoutePolicies {
            $($(#[$doc])* pub(crate) $field: $policy,)*
        }

        impl RoutePolicies {
            /// The route keys the policies own, in declaration order.
            pub(crate) fn keys() -> impl Iterator<Item = &'static str> {
                std::iter::empty()$(.chain(<$policy as RoutePolicy>::KEYS.iter().copied()))*
            }

            /// The structure stage for a route's policy keys (`raw`, found at `path`): each
            /// policy deserialises its own keys, reporting every mistake. The result holds
            /// what deserialised (bad keys set aside), as the policies read it; `None` when a
            /// policy's keys could not be used at all.
            pub(crate) fn structure(
                raw: &Map<String, Value>,
                path: &KeyPath,
                map: &SourceMap,
                problems: &mut Vec<Problem>,
            ) -> Option<Map<String, Value>> {
                let mut read = Some(Map::new());
                $(
                    let own = own_keys(raw, <$policy as RoutePolicy>::KEYS);
                    match reread::<<$policy as RoutePolicy>::File>(&own, path, map, problems) {
                        Some(fields) => if let Some(read) = read.as_mut() { read.extend(fields) },
                        None => read = None,
                    }
                )*
                read
            }

            /// Check each policy's keys in `raw` (a route's policy keys as the structure stage
            /// left them); every policy is checked even when an earlier one failed.
            pub(crate) fn check(
                raw: &Map<String, Value>,
                route: &mut RouteCheck<'_, '_>,
            ) -> Option<RoutePolicies> {
                $(let $field = route.policy::<$policy>(raw);)*
                Some(RoutePolicies { $($field: $field?,)* })
            }

            /// What `portico explain` prints for a request with this (normalised) path.
            pub(crate) fn describe(&self, request_path: &str) -> Description {
                let mut out = Description::default();
                $(self.$field.describe(request_path, &mut out);)*
                out
            }

            /// Whether a scalar at `path`, below a route, is text even where YAML reads a
            /// number or a boolean.
            pub(crate) fn wants_text(path: &[Seg]) -> bool {
                false $(|| <$policy as RoutePolicy>::wants_text(path))*
            }

            /// Whether the route answers every request by itself (and so needs no cluster).
            pub(crate) fn answers_itself(&self) -> bool {
                self.direct.answers_itself()
            }

            /// Whether the route names its clusters itself (a traffic split).
            pub(crate) fn chooses_cluster(&self) -> bool {
                self.split.chooses_cluster()
            }

            /// Whether a policy gives the route a layer beyond the lean stack's.
            pub(crate) fn adds_layers(&self) -> bool {
                false $(|| self.$field.adds_layer())*
            }

            /// Whether any policy's layer reads the request context.
            pub(crate) fn reads_context(&self) -> bool {
                false $(|| self.$field.reads_context())*
            }

            /// Whether any policy's layer reads the caller's identity.
            pub(crate) fn reads_identity(&self) -> bool {
                false $(|| self.$field.reads_identity())*
            }
        }
    };
}

route_policies! {
    /// `cors`.
    cors: CorsPolicy,
    /// `compression`, `request_decompression`.
    compression: CompressionPolicy,
    /// `ip_rules`.
    ip_rules: IpRulesPolicy,
    /// `direct_response`, `redirect`.
    direct: DirectPolicy,
    /// `fault`.
    fault: FaultPolicy,
    /// `traffic_split`.
    split: SplitPolicy,
    /// `mirror`.
    mirror: MirrorPolicy,
    /// `max_body_size`.
    body_limit: BodyLimitPolicy,
    /// `auth`, `require_client_cert`.
    auth: AuthPolicy,
    /// `rate_limit`.
    rate_limit: RateLimitPolicy,
    /// `concurrency_limit`.
    concurrency: ConcurrencyPolicy,
    /// `strip_prefix`, `host_rewrite`, `request_headers`, `response_headers`.
    transform: TransformPolicy,
    /// `timeout`.
    timeout: TimeoutPolicy,
    /// `retry`.
    retry: RetryPolicy,
    /// `grpc_transcode`, `grpc_web`.
    grpc: GrpcPolicy,
}

/// Declares [`Sections`]: a field per concern section, and the functions over all of them.
macro_rules! sections {
    ($($(#[$doc:meta])* $field:ident: $section:ty,)*) => {
        /// Every concern's top-level section, checked and typed.
        #[derive(Debug, Clone, PartialEq)]
        pub(crate) struct Sections {
            $($(#[$doc])* pub(crate) $field: $section,)*
        }

        impl Sections {
            /// The top-level keys the sections own, in declaration order.
            pub(crate) fn keys() -> impl Iterator<Item = &'static str> {
                [$(<$section as Section>::KEY),*].into_iter()
            }

            /// The structure stage for the sections in `file` (the whole file): each section
            /// found is deserialised, reporting every mistake, and kept as its concern reads
            /// it (bad keys set aside).
            pub(crate) fn structure(
                file: &Map<String, Value>,
                map: &SourceMap,
                problems: &mut Vec<Problem>,
            ) -> Map<String, Value> {
                let mut read = Map::new();
                $(
                    let key = <$section as Section>::KEY;
                    if let Some(value) = file.get(key).filter(|value| !value.is_null()) {
                        let path = KeyPath::root().key(key);
                        let file = deserialize::<<$section as Section>::File>(value, &path, map, problems);
                        if let Some(value) = file.and_then(|file| serde_json::to_value(&file).ok()) {
                            read.insert(key.to_string(), value);
                        }
                    }
                )*
                read
            }

            /// Check each section found in `raw` (as the structure stage left them; absent
            /// ones get their defaults); the sections as read go into `dump`.
            pub(crate) fn check(
                raw: &Map<String, Value>,
                checker: &mut Checker<'_>,
                dump: &mut Map<String, Value>,
            ) -> Option<Sections> {
                $(let $field = check_section::<$section>(raw, checker, dump);)*
                Some(Sections { $($field: $field?,)* })
            }

            /// Whether a scalar at `path` (from the top of the file) is text even where YAML
            /// reads a number or a boolean.
            pub(crate) fn wants_text(path: &[Seg]) -> bool {
                match path.split_first() {
                    Some((Seg::Key(key), rest)) => {
                        false $(|| (key == <$section as Section>::KEY
                            && <$section as Section>::wants_text(rest)))*
                    }
                    _ => false,
                }
            }
        }

        impl SectionLookup for Sections {
            fn find(&self, section: TypeId) -> Option<&dyn Any> {
                $(if section == TypeId::of::<$section>() {
                    return Some(&self.$field);
                })*
                None
            }
        }
    };
}

sections! {
    /// `access_log`.
    access_log: AccessLogSettings,
    /// `consumers`.
    consumers: ConsumersSection,
    /// `auth_providers`.
    auth_providers: AuthProviders,
    /// `trusted_proxies`.
    trusted_proxies: TrustedProxies,
    /// `rate_limiting`.
    rate_limiting: RateLimiting,
}

/// The entries of `raw` under `keys`.
fn own_keys(raw: &Map<String, Value>, keys: &[&str]) -> Map<String, Value> {
    keys.iter()
        .filter_map(|key| Some((key.to_string(), raw.get(*key)?.clone())))
        .collect()
}

/// Deserialise `own` (found at `path`) as `F`, reporting every mistake, and give back what
/// deserialised as JSON again: the keys as the concern reads them, bad ones set aside.
fn reread<F: DeserializeOwned + Serialize>(
    own: &Map<String, Value>,
    path: &KeyPath,
    map: &SourceMap,
    problems: &mut Vec<Problem>,
) -> Option<Map<String, Value>> {
    let file: F = deserialize(&Value::Object(own.clone()), path, map, problems)?;
    match serde_json::to_value(file) {
        Ok(Value::Object(fields)) => Some(fields),
        _ => None,
    }
}

fn check_section<S: Section>(
    raw: &Map<String, Value>,
    checker: &mut Checker<'_>,
    dump: &mut Map<String, Value>,
) -> Option<S> {
    let path = KeyPath::root().key(S::KEY);
    // `key:` with nothing after it counts as left out.
    let file = match raw.get(S::KEY) {
        None | Some(Value::Null) => S::File::default(),
        Some(value) => checker.deserialize(value, &path)?,
    };
    if let Ok(mut value) = serde_json::to_value(&file) {
        S::redact_dump(&mut value);
        dump.insert(S::KEY.to_string(), value);
    }
    S::check(&file, &path, checker)
}

/// Every key the concerns' file structs accept, at every level that their defaults show (for
/// the test that the reference config documents every key).
#[cfg(test)]
pub(crate) fn documented_keys() -> Vec<String> {
    fn collect(value: &Value, out: &mut Vec<String>) {
        if let Value::Object(fields) = value {
            for (key, value) in fields {
                out.push(key.clone());
                collect(value, out);
            }
        }
    }
    let mut out = Vec::new();
    let defaults = [
        serde_json::to_value(<BodyLimitPolicy as RoutePolicy>::File::default()),
        serde_json::to_value(<AuthPolicy as RoutePolicy>::File::default()),
        serde_json::to_value(<TransformPolicy as RoutePolicy>::File::default()),
        serde_json::to_value(<TimeoutPolicy as RoutePolicy>::File::default()),
        serde_json::to_value(<RetryPolicy as RoutePolicy>::File::default()),
        serde_json::to_value(<GrpcPolicy as RoutePolicy>::File::default()),
        serde_json::to_value(<AccessLogSettings as Section>::File::default()),
        serde_json::to_value(<AuthProviders as Section>::File::default()),
        serde_json::to_value(<CorsPolicy as RoutePolicy>::File::default()),
        serde_json::to_value(crate::middleware::cors::CorsFile::default()),
        serde_json::to_value(<CompressionPolicy as RoutePolicy>::File::default()),
        serde_json::to_value(crate::middleware::compression::CompressionFile::default()),
        serde_json::to_value(crate::middleware::compression::DecompressionFile::default()),
        serde_json::to_value(<IpRulesPolicy as RoutePolicy>::File::default()),
        serde_json::to_value(crate::middleware::ip_rules::IpRulesFile::default()),
        serde_json::to_value(<TrustedProxies as Section>::File::default()),
        serde_json::to_value(<RateLimitPolicy as RoutePolicy>::File::default()),
        serde_json::to_value(crate::middleware::rate_limit::policy::RateLimitFile::default()),
        serde_json::to_value(crate::middleware::rate_limit::limits::LimitFile::default()),
        serde_json::to_value(<ConcurrencyPolicy as RoutePolicy>::File::default()),
        serde_json::to_value(
            crate::middleware::rate_limit::concurrency::ConcurrencyFile::default(),
        ),
        serde_json::to_value(<RateLimiting as Section>::File::default()),
        serde_json::to_value(crate::middleware::rate_limit::policy::PlanFile::default()),
        serde_json::to_value(crate::middleware::rate_limit::policy::RedisFile::default()),
        serde_json::to_value(<DirectPolicy as RoutePolicy>::File::default()),
        serde_json::to_value(crate::middleware::direct::DirectResponseFile::default()),
        serde_json::to_value(crate::middleware::direct::RedirectFile::default()),
        serde_json::to_value(<FaultPolicy as RoutePolicy>::File::default()),
        serde_json::to_value(crate::middleware::fault::FaultFile::default()),
        serde_json::to_value(crate::middleware::fault::DelayFile::default()),
        serde_json::to_value(crate::middleware::fault::AbortFile::default()),
        serde_json::to_value(<SplitPolicy as RoutePolicy>::File::default()),
        serde_json::to_value(crate::middleware::split::SplitTargetFile::default()),
        serde_json::to_value(<MirrorPolicy as RoutePolicy>::File::default()),
        serde_json::to_value(crate::middleware::mirror::MirrorFile::default()),
    ];
    for value in defaults.into_iter().flatten() {
        collect(&value, &mut out);
    }
    out.extend(Sections::keys().map(str::to_string));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_key_has_one_owner() {
        let mut keys: Vec<&str> = RoutePolicies::keys().collect();
        let count = keys.len();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), count, "two policies claim the same key");
        for core in ["name", "match", "cluster"] {
            assert!(!keys.contains(&core), "{core} is a core key");
        }
    }
}
