//! One problem found in a config file: where (key path, line:column) and what.
//!
//! Every stage of config loading reports into a list of these; the loader sorts them by
//! position and returns them all at once.

use super::source::{KeyPath, Pos};
use std::fmt;

/// One thing wrong with the file, at a key path and a 1-based line:column. The position
/// points at the offending value, at the enclosing mapping for a missing key, and at the key
/// itself for an unknown key. `path` is empty for problems with the file as a whole (YAML
/// syntax errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key path, like `routes[2].match.path_prefix`.
    pub path: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong, in the file's words.
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
