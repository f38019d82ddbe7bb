//! Environment substitution inside config scalars: `${NAME}`, `${NAME:-default}` and `$$`.
//!
//! Part of config loading (read → parse with positions → **env substitution** → structural
//! deserialise → semantic validation → typed `Config`). `source.rs` calls [`substitute`] on
//! every scalar value while it converts the YAML tree, because only there are the key path
//! (to remember which values are secrets) and the scalar's style (to decide its type) known.
//!
//! Rules, chosen so that the text of a config file never changes meaning by accident:
//! - `${NAME}` is the variable's value; unset is an error (a silent empty string would turn a
//!   missing token into an unauthenticated request).
//! - `${NAME:-default}` uses `default` when the variable is unset *or empty*, like the shell.
//!   The default is taken literally (no nested `${...}`) and runs to the first `}`.
//! - `$$` is a literal `$`, so `$${NAME}` is the text `${NAME}`.
//! - A `$` followed by anything else is kept as is, so regular expressions and prices need
//!   no escaping.
//! - `NAME` is `[A-Za-z_][A-Za-z0-9_]*`; anything else between `${` and `}` is an error rather
//!   than a guess.

/// The outcome of substituting one scalar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Substituted {
    pub text: String,
    /// The scalar contained at least one `${...}`: its value is treated as a secret.
    pub has_reference: bool,
    /// The scalar was exactly one `${...}` and nothing else, so (when plain) its type is
    /// resolved from the substituted text: `workers: ${N}` can be a number.
    pub whole_reference: bool,
}

/// Why a scalar could not be substituted. Each one becomes a `Problem` at the scalar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum EnvError {
    #[error("environment variable {name} is not set")]
    Unset { name: String },
    #[error("malformed `${{...}}` in {text:?}: {reason}")]
    Malformed { text: String, reason: &'static str },
}

/// Replace every reference in `text`, looking variables up with `env`. All problems in the
/// scalar are reported, not only the first, so one run shows every missing variable.
pub(crate) fn substitute(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Substituted, Vec<EnvError>> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    let mut references = 0usize;
    let mut literal_text = false;
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        literal_text |= dollar > 0;
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            literal_text = true;
            rest = tail;
        } else if let Some(body_and_tail) = after.strip_prefix('{') {
            references += 1;
            let Some(close) = body_and_tail.find('}') else {
                errors.push(malformed(text, "no closing `}`"));
                rest = "";
                break;
            };
            let body = &body_and_tail[..close];
            rest = &body_and_tail[close + 1..];
            match expand(body, env) {
                Ok(value) => out.push_str(&value),
                Err(Expansion::Unset(name)) => errors.push(EnvError::Unset { name }),
                Err(Expansion::Malformed(reason)) => errors.push(malformed(text, reason)),
            }
        } else {
            out.push('$');
            literal_text = true;
            rest = after;
        }
    }
    out.push_str(rest);
    literal_text |= !rest.is_empty();
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Substituted {
        text: out,
        has_reference: references > 0,
        whole_reference: references == 1 && !literal_text,
    })
}

enum Expansion {
    Unset(String),
    Malformed(&'static str),
}

/// Expand the inside of one `${...}`.
fn expand(body: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, Expansion> {
    let (name, default) = match body.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (body, None),
    };
    if name.is_empty() {
        return Err(Expansion::Malformed("missing variable name"));
    }
    if !is_variable_name(name) {
        return Err(Expansion::Malformed(
            "expected ${NAME} or ${NAME:-default}, NAME made of letters, digits and _",
        ));
    }
    match (env(name), default) {
        (Some(value), Some(default)) if value.is_empty() => Ok(default.to_string()),
        (Some(value), _) => Ok(value),
        (None, Some(default)) => Ok(default.to_string()),
        (None, None) => Err(Expansion::Unset(name.to_string())),
    }
}

fn is_variable_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn malformed(text: &str, reason: &'static str) -> EnvError {
    EnvError::Malformed {
        text: text.to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("s3cret".into()),
            "EMPTY" => Some(String::new()),
            "N" => Some("4".into()),
            _ => None,
        }
    }

    fn sub(text: &str) -> Result<Substituted, Vec<EnvError>> {
        substitute(text, &env)
    }

    #[test]
    fn plain_text_is_untouched() {
        for text in ["", "hello", "price: 5$", "^/v1/.*$", "a $ b", "$x"] {
            let s = sub(text).expect(text);
            assert_eq!(s.text, text);
            assert!(!s.has_reference && !s.whole_reference, "{text}");
        }
    }

    #[test]
    fn references_are_replaced() {
        let s = sub("${TOKEN}").unwrap();
        assert_eq!(s.text, "s3cret");
        assert!(s.has_reference && s.whole_reference);

        let s = sub("Bearer ${TOKEN}").unwrap();
        assert_eq!(s.text, "Bearer s3cret");
        assert!(s.has_reference && !s.whole_reference);

        let s = sub("${N}${N}").unwrap();
        assert_eq!(s.text, "44");
        assert!(!s.whole_reference);
    }

    #[test]
    fn defaults_apply_when_unset_or_empty() {
        assert_eq!(sub("${MISSING:-dev}").unwrap().text, "dev");
        assert_eq!(sub("${EMPTY:-dev}").unwrap().text, "dev");
        assert_eq!(sub("${TOKEN:-dev}").unwrap().text, "s3cret");
        assert_eq!(sub("${MISSING:-}").unwrap().text, "");
        assert_eq!(sub("${MISSING:-a:b-c}").unwrap().text, "a:b-c");
        // Without a default an empty variable is still "set": its value is used.
        assert_eq!(sub("x${EMPTY}y").unwrap().text, "xy");
    }

    #[test]
    fn double_dollar_is_a_literal_dollar() {
        let s = sub("$$").unwrap();
        assert_eq!(s.text, "$");
        assert!(!s.has_reference);
        let s = sub("$${TOKEN}").unwrap();
        assert_eq!(s.text, "${TOKEN}");
        assert!(!s.has_reference);
        assert_eq!(sub("$$$${N}").unwrap().text, "$${N}");
        assert_eq!(sub("$$${N}").unwrap().text, "$4");
    }

    #[test]
    fn missing_variables_are_all_reported() {
        assert_eq!(
            sub("${A}-${TOKEN}-${B}"),
            Err(vec![
                EnvError::Unset { name: "A".into() },
                EnvError::Unset { name: "B".into() }
            ])
        );
        assert_eq!(
            sub("${FOO}").unwrap_err()[0].to_string(),
            "environment variable FOO is not set"
        );
    }

    #[test]
    fn malformed_references_are_errors() {
        for text in [
            "${",
            "${TOKEN",
            "abc ${}",
            "${1X}",
            "${A B}",
            "${A:default}",
            "${-x}",
        ] {
            let errors = sub(text).expect_err(text);
            assert!(
                matches!(errors[..], [EnvError::Malformed { .. }]),
                "{text}: {errors:?}"
            );
        }
        assert_eq!(
            sub("${TOKEN").unwrap_err()[0].to_string(),
            r#"malformed `${...}` in "${TOKEN": no closing `}`"#
        );
    }
}
