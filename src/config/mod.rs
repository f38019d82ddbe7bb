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

pub mod file;
pub mod model;
pub mod units;

mod env;
pub mod reload;
mod source;
mod structure;
mod validate;

pub use model::*;

use source::{KeyPath, Pos};
use std::fmt;
use std::path::{Path, PathBuf};

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid config. `problems` is never empty and is sorted
    /// by line, then column.
    #[error("{}", render_problems(origin, problems))]
    Invalid {
        origin: String,
        problems: Vec<Problem>,
    },
}

/// One thing wrong with the file, at a key path and a 1-based line:column. The position
/// points at the offending value, at the enclosing mapping for a missing key, and at the key
/// itself for an unknown key. `path` is empty for problems with the file as a whole (YAML
/// syntax errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl Problem {
    pub(crate) fn new(path: &KeyPath, pos: Pos, message: impl Into<String>) -> Problem {
        Problem {
            path: path.to_string(),
            line: pos.line,
            column: pos.column,
            message: message.into(),
        }
    }

    /// `{origin}:{line}:{column}: {path}: {message}`, the form editors and CI logs link to.
    pub fn with_origin<'a>(&'a self, origin: &'a str) -> impl fmt::Display + 'a {
        struct WithOrigin<'a>(&'a Problem, &'a str);
        impl fmt::Display for WithOrigin<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}:{}", self.1, self.0)
            }
        }
        WithOrigin(self, origin)
    }
}

/// `{line}:{column}: {path}: {message}`; the path part is left out when it is empty.
impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.line, self.column)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
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
pub fn load_file_text(text: &str, path: &Path) -> Result<Config, ConfigError> {
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
pub fn load_str_in(
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
    let converted = source::to_json(root.as_ref(), env, &structure::wants_text);
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

/// `path` is `ancestor` or below it (`routes[0]` is under `routes`, `routes0` is not).
fn is_under(path: &str, ancestor: &str) -> bool {
    match path.strip_prefix(ancestor) {
        Some(rest) => rest.is_empty() || rest.starts_with('.') || rest.starts_with('['),
        None => false,
    }
}

#[cfg(test)]
mod tests;
