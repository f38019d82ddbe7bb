//! Deserialising one part of the config file with every mistake reported.
//!
//! Part of config loading (read → parse with positions → env substitution → **structural
//! deserialise** → semantic validation). Used for each section and list element of the file
//! (`structure.rs`) and for each concern's part of a route (`check.rs`). serde stops at the
//! first error, so the offending key is set aside and the value deserialised again: every
//! structural mistake is reported, and a value that deserialises without its bad keys still
//! gets its semantic checks (the file is rejected either way).
//!
//! serde's messages are rewritten into the file's vocabulary ("mapping", "list", "whole
//! number") and misspelt keys get a "did you mean".

use super::problem::Problem;
use super::source::{KeyPath, Seg, SourceMap};
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_path_to_error::Segment;
use std::borrow::Cow;

/// Mistakes reported per element before giving up on it (each retry removes one key).
const MAX_RETRIES: usize = 32;

/// Keys whose value is a duration string; a bare number there gets a message about units.
const DURATION_KEYS: [&str; 9] = [
    "handshake_timeout",
    "max_age",
    "drain_timeout",
    "watch_interval",
    "header_read_timeout",
    "request_body_timeout",
    "idle_timeout",
    "connect_timeout",
    "timeout",
];

/// Deserialise one section or element. After an error, the offending key is removed
/// and deserialisation retried, so an element with three mistakes shows three problems
/// and, once what is left deserialises, its remaining fields still get semantic checks.
/// A missing required key, or a wrong type for the element as a whole, ends the retries.
pub(crate) fn deserialize<T: DeserializeOwned>(
    value: &Value,
    base: &KeyPath,
    map: &SourceMap,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    let mut value = Cow::Borrowed(value);
    let mut removed: Vec<Vec<Seg>> = Vec::new();
    for _ in 0..MAX_RETRIES {
        let err = match serde_path_to_error::deserialize::<_, T>(value.as_ref()) {
            Ok(parsed) => return Some(parsed),
            Err(err) => err,
        };
        let mut inner = Vec::new();
        for segment in err.path().iter() {
            match segment {
                Segment::Seq { index } => inner.push(Seg::Index(*index)),
                Segment::Map { key } => inner.push(Seg::Key(key.clone())),
                Segment::Enum { variant } => inner.push(Seg::Key(variant.clone())),
                Segment::Unknown => {}
            }
        }
        let mut path = base.clone();
        for seg in &inner {
            path.push(seg.clone());
        }
        let raw = err.inner().to_string();
        if let Some(field) = missing_field(&raw) {
            // A required key we removed for having the wrong type: already reported.
            let mut missing = inner.clone();
            missing.push(Seg::Key(field.to_string()));
            if removed.contains(&missing) {
                return None;
            }
        }
        let problem = match parse_unknown_field(&raw) {
            // serde_path_to_error's path already ends with the unknown key.
            Some((key, expected)) => {
                let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
                let message = unknown_key_message(&key, &expected);
                Problem::new(&path, map.locate_key(&path), message)
            }
            None => {
                let message = humanize(&raw, &path);
                Problem::new(&path, map.locate(&path), message)
            }
        };
        problems.push(problem);
        if missing_field(&raw).is_some() {
            return None;
        }
        match remove_key(value.to_mut(), &inner) {
            Some(key_path) => removed.push(key_path),
            None => return None,
        }
    }
    None
}

/// Remove the mapping entry that holds the value at `path` (for a list item, the whole list:
/// removing one item would renumber the rest and misplace later problems). Returns the path
/// of the removed entry, `None` when there is no such entry.
fn remove_key(value: &mut Value, path: &[Seg]) -> Option<Vec<Seg>> {
    let last_key = path.iter().rposition(|seg| matches!(seg, Seg::Key(_)))?;
    let mut parent = Some(value);
    for seg in &path[..last_key] {
        parent = match (parent, seg) {
            (Some(Value::Object(object)), Seg::Key(key)) => object.get_mut(key),
            (Some(Value::Array(items)), Seg::Index(index)) => items.get_mut(*index),
            _ => None,
        };
    }
    match (parent, &path[last_key]) {
        (Some(Value::Object(object)), Seg::Key(key)) => {
            object.remove(key)?;
            Some(path[..=last_key].to_vec())
        }
        _ => None,
    }
}

/// `missing field `x`` → `x`.
fn missing_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
}

/// `unknown field `x`, expected one of `a`, `b`` → (`x`, [`a`, `b`]).
fn parse_unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (key, rest) = rest.split_once('`')?;
    // The expected names are the backquoted words that follow.
    let expected = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    Some((key.to_string(), expected))
}

/// "unknown key `timout`, did you mean `timeout`? (expected one of ...)".
pub(crate) fn unknown_key_message(key: &str, expected: &[&str]) -> String {
    let listed = expected
        .iter()
        .map(|name| format!("`{name}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let known = if expected.is_empty() {
        String::from("no keys are allowed here")
    } else {
        format!("expected one of {listed}")
    };
    match closest(key, expected.iter().copied()) {
        Some(suggestion) => format!("unknown key `{key}`, did you mean `{suggestion}`? ({known})"),
        None => format!("unknown key `{key}` ({known})"),
    }
}

/// The candidate nearest to `word` by edit distance, if it is near enough to be a typo.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .map(|candidate| (edit_distance(word, candidate), candidate))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Edit distance counting a swap of neighbours as one edit (optimal string alignment), so
/// `valeu` is one step from `value`; case-insensitive, since a key in the wrong case is
/// still a typo.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    // rows[i][j]: distance between a[..i] and b[..j].
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

/// Rewrite one of serde's messages in the words of the file.
fn humanize(message: &str, path: &KeyPath) -> String {
    if let Some(field) = missing_field(message) {
        return format!("missing required key `{field}`");
    }
    if let Some(rest) = message.strip_prefix("invalid length ") {
        // serde_json offers a list to a struct as a sequence of fields.
        if rest.contains("expected struct") {
            return String::from("expected a mapping (`key: value` lines), found a list");
        }
    }
    let body = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "));
    if let Some((found, expected)) = body.and_then(|body| body.split_once(", expected ")) {
        let found = describe_found(found);
        let is_number = found.starts_with("the number");
        if is_number && path.last_key().is_some_and(|k| DURATION_KEYS.contains(&k)) {
            return format!(
                "expected a duration like \"250ms\" or \"5s\", found {found} (a unit is required)"
            );
        }
        return format!("expected {}, found {found}", describe_expected(expected));
    }
    message.to_string()
}

fn describe_expected(expected: &str) -> String {
    match expected {
        "usize" | "u64" => String::from("a whole number (0 or more)"),
        "u32" => format!("a whole number from 0 to {}", u32::MAX),
        "u16" => format!("a whole number from 0 to {}", u16::MAX),
        "a boolean" => String::from("true or false"),
        "a sequence" => String::from("a list"),
        "a map" => String::from("a mapping"),
        other if other.starts_with("struct ") => String::from("a mapping (`key: value` lines)"),
        other => other.to_string(),
    }
}

/// serde's `Unexpected` rendering → plain words.
fn describe_found(found: &str) -> String {
    let quoted = |prefix: &str| {
        found
            .strip_prefix(prefix)
            .map(|rest| rest.trim_matches('`').to_string())
    };
    if let Some(number) = quoted("integer ").or_else(|| quoted("floating point ")) {
        return format!("the number {number}");
    }
    if let Some(boolean) = quoted("boolean ") {
        return format!("the boolean {boolean}");
    }
    if let Some(text) = found.strip_prefix("string ") {
        return format!("the string {text}");
    }
    match found {
        "map" => String::from("a mapping"),
        "sequence" => String::from("a list"),
        "null" | "unit value" => String::from("an empty value"),
        other => other.to_string(),
    }
}

pub(crate) fn describe_value(value: &Value) -> String {
    match value {
        Value::Null => String::from("an empty value"),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => String::from("a list"),
        Value::Object(_) => String::from("a mapping"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typo_suggestions() {
        assert_eq!(
            closest("timout", ["timeout", "name"].into_iter()),
            Some("timeout")
        );
        assert_eq!(
            closest("Name", ["timeout", "name"].into_iter()),
            Some("name")
        );
        assert_eq!(closest("zzz", ["timeout", "name"].into_iter()), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("valeu", "value"), 1);
        assert_eq!(edit_distance("abc", ""), 3);
    }
}
