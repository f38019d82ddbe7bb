//! Loading the config file into a validated [`Config`], reporting every problem at once.
//!
//! The pipeline, one module per step:
//! 1. read the file ([`load_file`]);
//! 2. parse the YAML with positions (`source.rs`: a spanned tree from yaml-rust2's event
//!    parser, duplicate keys and multiple documents rejected);
//! 3. substitute `${ENV}` references while converting the tree to JSON (`env.rs`), noting
//!    which values were secrets;
//! 4. deserialise into the serde mirror of the file ([`file`](mod@file)) section by section
//!    and element by element, so one typo does not hide the next (`structure.rs`);
//! 5. check meaning and cross-references and build the typed [`Config`] (`validate.rs`,
//!    with `units.rs` for durations and sizes).
//!
//! Each step adds [`Problem`]s with a key path and line:column; the caller gets either a
//! `Config` or all of them, sorted by position. The runtime (listeners, router, clusters) is
//! built from the `Config` by the caller; nothing here does I/O beyond reading the file.

pub(crate) mod check;
pub(crate) mod deserialize;
mod dump;
mod env;
pub(crate) mod file;
pub(crate) mod model;
mod problem;
mod share;
pub(crate) mod source;
mod structure;
pub(crate) mod units;
mod validate;

pub use problem::Problem;
pub(crate) use validate::parse_endpoint;
pub(crate) use validate::REDACTED;

use crate::concerns::{RoutePolicies, Sections};
pub(crate) use dump::ConfigDump;
use model::{AdminSettings, Cluster, Listener, RouteMatch, RuntimeSettings};
use source::{KeyPath, Pos};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A validated configuration: typed, defaulted and cross-checked, ready to build a runtime
/// from. Made only by the loaders in this module.
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) runtime: RuntimeSettings,
    pub(crate) admin: Option<AdminSettings>,
    pub(crate) listeners: Vec<Listener>,
    pub(crate) clusters: Vec<Cluster>,
    pub(crate) routes: Vec<Route>,
    /// The concerns' own top-level sections.
    pub(crate) sections: Sections,
    /// The effective config as JSON, secrets (values that came from `${ENV}`) redacted.
    pub(crate) redacted_dump: ConfigDump,
}

impl Config {
    /// How many listeners, clusters and routes the config has (for `portico validate`).
    pub fn summary(&self) -> String {
        format!(
            "{} listener(s), {} cluster(s), {} route(s)",
            self.listeners.len(),
            self.clusters.len(),
            self.routes.len()
        )
    }

    /// The worker threads the config asks for; `None` = one per CPU.
    pub fn workers(&self) -> Option<usize> {
        self.runtime.workers
    }
}

/// One route: what it matches, where it goes, and every concern's policy for it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Route {
    pub(crate) name: String,
    pub(crate) matcher: RouteMatch,
    /// Empty for a route that answers by itself.
    pub(crate) cluster: String,
    /// Index into `Config::clusters`; `None` for a route that answers by itself.
    pub(crate) cluster_index: Option<usize>,
    /// Shared by the routes whose policies are equal (`share.rs`).
    pub(crate) policies: Arc<RoutePolicies>,
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Io {
        /// The file, as given.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid config. `problems` is never empty and is sorted
    /// by line, then column.
    #[error("{}", render_problems(origin, problems))]
    Invalid {
        /// Where the text came from (a file path), as problems are reported against it.
        origin: String,
        /// Everything wrong with it.
        problems: Vec<Problem>,
    },
}

fn render_problems(origin: &str, problems: &[Problem]) -> String {
    let noun = if problems.len() == 1 {
        "problem"
    } else {
        "problems"
    };
    let mut out = format!("{origin}: {} {noun}", problems.len());
    for problem in problems {
        out.push('\n');
        out.push_str(&problem.with_origin(origin).to_string());
    }
    out
}

/// Read and load a config file. Problems are reported against the path as given; relative
/// file paths inside it (certificates, keys, CA bundles) are relative to its directory.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    load_file_text(&text, path)
}

/// Load text that was read from `path` (the reload reads the bytes itself).
pub(crate) fn load_file_text(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let base = path.parent().filter(|dir| !dir.as_os_str().is_empty());
    load_str_in(
        text,
        &path.display().to_string(),
        &|name| std::env::var(name).ok(),
        base,
    )
}

/// Load config text, taking `${ENV}` values from the process environment. A variable whose
/// value is not valid Unicode counts as unset.
pub fn load_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
    load_str_with_env(text, origin, &|name| std::env::var(name).ok())
}

/// Load config text, taking `${ENV}` values from `env` (tests and `portico validate` with a
/// given environment use this).
pub fn load_str_with_env(
    text: &str,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    load_str_in(text, origin, env, None)
}

/// The whole pipeline. Relative file paths in the config resolve against `base_dir`, or the
/// working directory when there is none (text that did not come from a file).
pub(crate) fn load_str_in(
    text: &str,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
    base_dir: Option<&Path>,
) -> Result<Config, ConfigError> {
    let invalid = |mut problems: Vec<Problem>| {
        // Stable, so problems at the same position keep the order the stages found them in.
        problems.sort_by_key(|p| (p.line, p.column));
        problems.dedup();
        ConfigError::Invalid {
            origin: origin.to_string(),
            problems,
        }
    };

    let root = source::parse_tree(text).map_err(|problem| invalid(vec![problem]))?;
    let converted = source::to_json(root, env, &structure::wants_text);
    let mut problems = converted.problems;
    let (parts, structural) = match structure::split(&converted.value, &converted.map) {
        Ok(split) => split,
        Err(problem) => {
            problems.push(problem);
            return Err(invalid(problems));
        }
    };
    let (config, semantic) = validate::validate(&parts, &converted.map, base_dir);

    // A value whose `${...}` failed holds placeholder text; anything later stages say about
    // it (or inside it) is noise next to "environment variable X is not set".
    let poisoned = &converted.poisoned;
    let later = structural.into_iter().chain(semantic);
    problems.extend(later.filter(|problem| {
        !poisoned
            .iter()
            .any(|bad| is_under(&problem.path, &bad.to_string()))
    }));

    match config {
        Some(config) if problems.is_empty() => Ok(config),
        _ if !problems.is_empty() => Err(invalid(problems)),
        // validate() only withholds a Config when some stage reported why; this keeps that
        // promise visible instead of returning an empty list.
        _ => Err(invalid(vec![Problem::new(
            &KeyPath::root(),
            Pos::START,
            "the configuration is incomplete",
        )])),
    }
}

/// A file that a section names (a consumers file), parsed as the config file is — YAML with
/// positions, JSON being YAML too — except that `${ENV}` references are not allowed: the value
/// and where each part of it is, for the section to deserialise and check with precise problems.
pub(crate) fn parse_side_file(
    text: &str,
) -> Result<(serde_json::Value, source::SourceMap), Vec<Problem>> {
    let root = source::parse_tree(text).map_err(|problem| vec![problem])?;
    let converted = source::to_json(root, &|_| None, &|_| false);
    if converted.problems.is_empty() {
        Ok((converted.value, converted.map))
    } else {
        Err(converted.problems)
    }
}

/// `path` is `ancestor` or below it (`routes[0]` is under `routes`, `routes0` is not).
fn is_under(path: &str, ancestor: &str) -> bool {
    match path.strip_prefix(ancestor) {
        Some(rest) => rest.is_empty() || rest.starts_with('.') || rest.starts_with('['),
        None => false,
    }
}

#[cfg(test)]
mod tests;
