//! `portico explain`: which route a request would take, why, and what applies to it.
//!
//! Runs the same normalisation and the same router as the request path, on a request
//! described on the command line, and prints every route in precedence order with its
//! verdict, then the selected route's cluster and every policy that applies to it (each
//! concern describes its own). Refusals are named by the error table the gateway answers
//! with.

use crate::config::model::PathMatch;
use crate::config::Config;
use crate::error::GatewayError;
use crate::routing::{normalize_path, Outcome, RequestView, Router};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use std::fmt::Write as _;

/// Why a request could not be explained.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// Not an HTTP method token.
    #[error("invalid method {0:?}")]
    Method(String),
    /// Neither `http://host/path` nor `/path`.
    #[error("invalid URL {0:?}: give http://host/path or /path")]
    Url(String),
    /// Not `Name: value`.
    #[error("invalid header {0:?}: expected `Name: value`")]
    Header(String),
}

/// The status and error code the gateway answers `error` with, as `explain` prints it.
fn refusal(error: &GatewayError) -> String {
    let class = error.class();
    format!("{} {}", class.status.as_u16(), class.code)
}

/// Explain how the gateway would handle `method url` with `headers` (`Name: value` lines).
pub fn explain(
    config: &Config,
    method: &str,
    url: &str,
    headers: &[String],
) -> Result<String, ExplainError> {
    let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| ExplainError::Method(method.into()))?;
    let uri: Uri = url.parse().map_err(|_| ExplainError::Url(url.into()))?;
    let mut map = HeaderMap::new();
    for line in headers {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| ExplainError::Header(line.clone()))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| ExplainError::Header(line.clone()))?;
        let value =
            HeaderValue::from_str(value.trim()).map_err(|_| ExplainError::Header(line.clone()))?;
        map.append(name, value);
    }
    let host = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            map.get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();

    let mut out = String::new();
    let _ = writeln!(out, "request: {method} {url}");
    let _ = writeln!(
        out,
        "host:    {}",
        if host.is_empty() { "(none)" } else { &host }
    );
    let path = match normalize_path(uri.path()) {
        Ok(path) => path,
        Err(error) => {
            let _ = writeln!(
                out,
                "result:  {} — {error}",
                refusal(&GatewayError::BadPath(error))
            );
            return Ok(out);
        }
    };
    if path != uri.path() {
        let _ = writeln!(out, "path:    {} (normalised from {})", path, uri.path());
    } else {
        let _ = writeln!(out, "path:    {path}");
    }

    let matchers: Vec<_> = config.routes.iter().map(|r| r.matcher.clone()).collect();
    let router = Router::new(&matchers);
    let view = RequestView {
        host: &host,
        path: &path,
        query: uri.query(),
        method: &method,
        headers: &map,
    };
    let mut verdicts = router.explain(&view);
    // A CORS preflight goes to the route that serves the method it asks about, when that
    // route answers preflights (as `admission.rs` routes it).
    let asked = (method == Method::OPTIONS)
        .then(|| map.get(http::header::ACCESS_CONTROL_REQUEST_METHOD))
        .flatten()
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok());
    if let Some(asked) = asked {
        let asked_verdicts = router.explain(&RequestView {
            method: &asked,
            ..view
        });
        let answered = asked_verdicts.iter().any(|v| {
            v.outcome == Outcome::Selected
                && config.routes[v.route].policies.cors.settings.is_some()
        });
        if answered {
            let _ = writeln!(
                out,
                "preflight: CORS preflight for {asked}: routed as {asked}, answered by the gateway"
            );
            verdicts = asked_verdicts;
        }
    }

    let _ = writeln!(out, "\nroutes, most specific first:");
    let mut selected = None;
    for verdict in &verdicts {
        let route = &config.routes[verdict.route];
        let outcome = match &verdict.outcome {
            Outcome::Selected => {
                selected = Some(verdict);
                "SELECTED".to_string()
            }
            Outcome::MatchedButShadowed => "matches, but a more specific route wins".into(),
            Outcome::HostMismatch => "host does not match".into(),
            Outcome::PathMismatch => "path does not match".into(),
            Outcome::MethodMismatch => format!("method {method} not allowed"),
            Outcome::HeaderMismatch(name) => format!("header condition on {name} not met"),
            Outcome::QueryMismatch(name) => format!("query condition on {name} not met"),
        };
        let _ = writeln!(
            out,
            "  {:<24} {:<48} {}",
            route.name, outcome, verdict.rank_note
        );
    }

    let Some(verdict) = selected else {
        let allowed: Vec<String> = verdicts
            .iter()
            .filter(|v| v.outcome == Outcome::MethodMismatch)
            .flat_map(|v| {
                config.routes[v.route]
                    .matcher
                    .methods
                    .iter()
                    .map(|m| m.to_string())
            })
            .collect();
        if allowed.is_empty() {
            let _ = writeln!(out, "\nresult:  {}", refusal(&GatewayError::NoRoute));
        } else {
            let error = GatewayError::MethodNotAllowed {
                method: method.clone(),
                allow: Vec::new(),
            };
            let _ = writeln!(
                out,
                "\nresult:  {} (allowed: {})",
                refusal(&error),
                allowed.join(", ")
            );
        }
        return Ok(out);
    };

    let route = &config.routes[verdict.route];
    let Some(cluster) = route.cluster_index.map(|index| &config.clusters[index]) else {
        let how = if route.policies.chooses_cluster() {
            "splits its traffic between clusters"
        } else {
            "answers by itself"
        };
        let _ = writeln!(out, "\nresult:  route {} ({how})", route.name);
        for (label, text) in route.policies.describe(&path).lines {
            let _ = writeln!(out, "  {:<19} {text}", format!("{label}:"));
        }
        return Ok(out);
    };
    let _ = writeln!(
        out,
        "\nresult:  route {} -> cluster {}",
        route.name, cluster.name
    );
    if !verdict.captures.is_empty() {
        let vars: Vec<String> = verdict
            .captures
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(out, "  template variables: {}", vars.join(", "));
    }
    let endpoints: Vec<String> = cluster.endpoints.iter().map(|e| e.to_string()).collect();
    let _ = writeln!(
        out,
        "  endpoints:          {} ({:?}, connect timeout {:?})",
        endpoints.join(", "),
        cluster.protocol,
        cluster.connect_timeout
    );
    for (label, text) in crate::upstream::policy::describe(cluster) {
        let _ = writeln!(out, "  {:<19} {text}", format!("{label}:"));
    }
    if let PathMatch::Template(t) = &route.matcher.path {
        let _ = writeln!(out, "  path template:      {t}");
    }
    for (label, text) in route.policies.describe(&path).lines {
        let _ = writeln!(out, "  {:<19} {text}", format!("{label}:"));
    }
    Ok(out)
}
