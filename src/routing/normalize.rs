//! Request-path normalisation: turns the path of a request target, as received, into the one
//! canonical form that is used both for route matching and for forwarding upstream.
//!
//! Matching and forwarding must see the *same* string: if the router matched `/api/x` but the
//! backend later resolved the forwarded path to `/admin`, a `Prefix("/api")` route would be a
//! door into every other path of that backend. So the rules below remove or reject everything a
//! backend might resolve differently from us:
//!
//! 1. origin-form only (`/...`); `*` and absolute-form are rejected;
//! 2. percent-escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded, every other
//!    escape is kept with its hex digits uppercased, malformed escapes are rejected;
//! 3. backslashes (raw or `%5C`) and control characters (raw or `%00`-`%1F`, `%7F`) are
//!    rejected: some backends treat `\` as a separator, and control bytes have no business in a
//!    path;
//! 4. `//` is merged into `/`;
//! 5. dot segments are removed per RFC 3986 §5.2.4 *after* step 2 (so `%2e%2e` is `..`),
//!    clamped at the root; a trailing slash survives;
//! 6. segments a backend might still resolve as dot segments are rejected: `..;x` / `.;x`
//!    (Tomcat strips `;` parameters before resolving dots; `%3B` is treated like `;` because
//!    some frameworks decode before stripping) and `..` hidden behind an encoded slash
//!    (`x%2F..%2Fadmin`, resolved by backends configured to decode `%2F`).
//!
//! The common case — an already-canonical path — is recognised in one byte scan and returned
//! borrowed, without allocating.

use std::borrow::Cow;
use std::fmt;

/// Why a request path was refused. The messages end up in a 400 JSON body, so they say what
/// is wrong without echoing the path back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PathError {
    /// The path does not start with `/` (absolute-form, authority-form, `*`, empty).
    NotOriginForm,
    /// A `%` not followed by two hex digits.
    BadPercentEncoding,
    /// A raw `\` or `%5C`.
    Backslash,
    /// A raw or percent-encoded control character (`0x00`-`0x1F`, `0x7F`).
    ControlCharacter,
    /// A `.` or `..` segment carrying `;` parameters (`..;x`), which Tomcat-style backends
    /// resolve as a dot segment.
    DotSegmentParameters,
    /// A `.` or `..` segment hidden behind an encoded slash (`a%2F..%2Fb`), which backends
    /// that decode `%2F` resolve as a dot segment.
    EncodedSlashDotSegment,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::NotOriginForm => "request path must start with '/'",
            PathError::BadPercentEncoding => {
                "request path contains a '%' that is not followed by two hex digits"
            }
            PathError::Backslash => "request path contains a backslash",
            PathError::ControlCharacter => "request path contains a control character",
            PathError::DotSegmentParameters => {
                "request path contains a '.' or '..' segment with ';' parameters"
            }
            PathError::EncodedSlashDotSegment => {
                "request path contains a '.' or '..' segment next to an encoded slash (%2F)"
            }
        })
    }
}

impl std::error::Error for PathError {}

/// Normalise the path part (no query) of a request target. See the module docs for the rules.
///
/// Returns `Cow::Borrowed(raw)` without allocating when `raw` is already canonical.
pub(crate) fn normalize_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotOriginForm);
    }
    if is_canonical(raw.as_bytes()) {
        return Ok(Cow::Borrowed(raw));
    }
    let decoded = canonicalize_escapes(raw)?;
    remove_dot_segments(&decoded).map(Cow::Owned)
}

/// The fast-path test: true when `bytes` (starting with `/`) contains nothing any rule could
/// change or reject: no `\`, control byte, `//`, no segment that is `.` or `..` (possibly
/// followed by `;` / `%3B`), and only escapes that are already canonical.
///
/// Deliberately narrower than "contains `%`, `/.` or `;`", so that common canonical paths
/// do not allocate: `/.well-known/...`, matrix parameters like `/a;v=1` and escaped UTF-8 like
/// `/caf%C3%A9` pass. A `;` can only matter in a dot segment, which this scan catches. `%2F`
/// always takes the slow path, which looks for dot segments hidden behind it.
fn is_canonical(bytes: &[u8]) -> bool {
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'%' => {
                let value = match (bytes.get(i + 1), bytes.get(i + 2)) {
                    (Some(&hi), Some(&lo)) => upper_hex_value(hi).zip(upper_hex_value(lo)),
                    _ => None,
                };
                let canonical = value.is_some_and(|(hi, lo)| {
                    let v = (hi << 4) | lo;
                    v >= 0x20 && v != 0x7F && v != b'\\' && v != b'/' && !is_unreserved(v)
                });
                if !canonical {
                    return false;
                }
            }
            b'\\' | 0x00..=0x1F | 0x7F => return false,
            b'/' => match bytes.get(i + 1) {
                Some(b'/') => return false,
                Some(b'.') if starts_dot_segment(&bytes[i + 1..]) => return false,
                _ => {}
            },
            _ => {}
        }
    }
    true
}

/// `rest` starts with `.`: is that the start of a `.`/`..` segment, bare or with `;` params?
fn starts_dot_segment(rest: &[u8]) -> bool {
    let after_dots = if rest.starts_with(b"..") {
        &rest[2..]
    } else {
        &rest[1..]
    };
    matches!(after_dots.first(), None | Some(b'/') | Some(b';')) || after_dots.starts_with(b"%3B")
}

/// Like [`hex_value`], but only the uppercase digits of a canonical escape.
fn upper_hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' | b'A'..=b'F' => hex_value(b),
        _ => None,
    }
}

/// Rule 2 and 3: decode unreserved escapes, uppercase the others, reject malformed escapes,
/// backslashes and control characters. Allocates only if an escape actually changes.
///
/// Shared with `template.rs`, which canonicalises template literals the same way so that a
/// literal written `%7euser` matches the normalised request segment `~user`.
pub(crate) fn canonicalize_escapes(raw: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = raw.as_bytes();
    let mut out: Option<String> = None;
    // Bytes of `raw` before this offset are already in `out`.
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => return Err(PathError::Backslash),
            0x00..=0x1F | 0x7F => return Err(PathError::ControlCharacter),
            b'%' => {
                let (hi, lo) = match (bytes.get(i + 1), bytes.get(i + 2)) {
                    (Some(&hi), Some(&lo)) => (hi, lo),
                    _ => return Err(PathError::BadPercentEncoding),
                };
                let (Some(hv), Some(lv)) = (hex_value(hi), hex_value(lo)) else {
                    return Err(PathError::BadPercentEncoding);
                };
                let value = (hv << 4) | lv;
                if value == b'\\' {
                    return Err(PathError::Backslash);
                }
                if value < 0x20 || value == 0x7F {
                    return Err(PathError::ControlCharacter);
                }
                let decode = is_unreserved(value);
                if decode || hi.is_ascii_lowercase() || lo.is_ascii_lowercase() {
                    let o = out.get_or_insert_with(|| String::with_capacity(raw.len()));
                    // `i` indexes an ASCII `%`, so it is a char boundary.
                    o.push_str(&raw[copied..i]);
                    if decode {
                        o.push(char::from(value));
                    } else {
                        o.push('%');
                        o.push(char::from(HEX_UPPER[usize::from(value >> 4)]));
                        o.push(char::from(HEX_UPPER[usize::from(value & 0x0F)]));
                    }
                    copied = i + 3;
                }
                i += 3;
            }
            _ => i += 1,
        }
    }
    Ok(match out {
        None => Cow::Borrowed(raw),
        Some(mut o) => {
            o.push_str(&raw[copied..]);
            Cow::Owned(o)
        }
    })
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

pub(crate) fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 §2.3 unreserved characters: escaping them never changes meaning, so their escaped
/// and plain forms must compare equal.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Rules 4-6 on an escape-canonical path starting with `/`. Builds the output segment by
/// segment; `..` truncates back to the previous `/`, which clamps at the root for free.
fn remove_dot_segments(path: &str) -> Result<String, PathError> {
    let mut out = String::with_capacity(path.len());
    // Whether the output ends with `/`: true when the last input segment was empty (`/a/`),
    // `.` or `..` (RFC 3986: `/a/b/.` -> `/a/b/`, `/a/b/..` -> `/a/`).
    let mut trailing_slash = false;
    for segment in path[1..].split('/') {
        match segment {
            // An empty segment is a `//` (merged) or the final trailing slash.
            "" | "." => trailing_slash = true,
            ".." => {
                if let Some(cut) = out.rfind('/') {
                    out.truncate(cut);
                }
                trailing_slash = true;
            }
            _ => {
                if is_dot_with_parameters(segment) {
                    return Err(PathError::DotSegmentParameters);
                }
                if segment.contains("%2F")
                    && segment
                        .split("%2F")
                        .any(|piece| piece == "." || piece == ".." || is_dot_with_parameters(piece))
                {
                    return Err(PathError::EncodedSlashDotSegment);
                }
                out.push('/');
                out.push_str(segment);
                trailing_slash = false;
            }
        }
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(out)
}

/// `..;x`, `.;x`, `..%3Bx` (escapes are already uppercased here).
fn is_dot_with_parameters(segment: &str) -> bool {
    let rest = segment
        .strip_prefix("..")
        .or_else(|| segment.strip_prefix('.'));
    rest.is_some_and(|r| r.starts_with(';') || r.starts_with("%3B"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn norm(s: &str) -> Result<String, PathError> {
        normalize_path(s).map(Cow::into_owned)
    }

    #[test]
    fn canonical_paths_are_borrowed() {
        for p in [
            "/",
            "/a",
            "/a/b/",
            "/v1/users/42",
            "/.well-known/acme",
            "/a/.hidden",
            "/a/..b",
            "/a/b.json",
            "/a;v=1/b",
            "/a/b;jsessionid=1",
            "/caf\u{e9}",
            "/caf%C3%A9",
            "/a%3Fb/100%25",
        ] {
            assert!(
                matches!(normalize_path(p), Ok(Cow::Borrowed(s)) if s == p),
                "{p} should be borrowed unchanged"
            );
        }
    }

    #[test]
    fn rejects_non_origin_form() {
        for p in ["", "*", "a/b", "http://x/a", "example.com:80"] {
            assert_eq!(norm(p), Err(PathError::NotOriginForm), "{p}");
        }
    }

    #[test]
    fn decodes_unreserved_escapes() {
        assert_eq!(norm("/%41%62%2D%2e%5F%7e%30").unwrap(), "/Ab-._~0");
        assert_eq!(norm("/a%2Eb").unwrap(), "/a.b");
    }

    #[test]
    fn keeps_reserved_escapes_uppercased() {
        assert_eq!(norm("/a%2fb").unwrap(), "/a%2Fb");
        assert_eq!(norm("/a%2Fb").unwrap(), "/a%2Fb");
        assert_eq!(norm("/%c3%a9").unwrap(), "/%C3%A9");
        assert_eq!(norm("/100%25").unwrap(), "/100%25");
        assert_eq!(norm("/a%3fb%3Bc").unwrap(), "/a%3Fb%3Bc");
        // `%25` stays an escaped percent: never double-decoded into `%2e`.
        assert_eq!(norm("/%252e%252e/x").unwrap(), "/%252e%252e/x");
    }

    #[test]
    fn rejects_bad_escapes() {
        for p in ["/%zz", "/%4", "/a%", "/%g1", "/%1g", "/a/%%41"] {
            assert_eq!(norm(p), Err(PathError::BadPercentEncoding), "{p}");
        }
    }

    #[test]
    fn rejects_backslashes() {
        for p in ["/a\\b", "/%5c", "/%5C..", "/api\\..\\admin"] {
            assert_eq!(norm(p), Err(PathError::Backslash), "{p}");
        }
    }

    #[test]
    fn rejects_control_characters() {
        for p in [
            "/a\0", "/a\tb", "/a\x7f", "/%00", "/%0a", "/%1F", "/%7f", "/a\r\n",
        ] {
            assert_eq!(norm(p), Err(PathError::ControlCharacter), "{p}");
        }
    }

    #[test]
    fn merges_slashes() {
        assert_eq!(norm("//a///b//").unwrap(), "/a/b/");
        assert_eq!(norm("//").unwrap(), "/");
        assert_eq!(norm("/a//").unwrap(), "/a/");
    }

    #[test]
    fn removes_dot_segments() {
        let cases = [
            ("/a/./b", "/a/b"),
            ("/a/b/../c", "/a/c"),
            ("/a/b/..", "/a/"),
            ("/a/..", "/"),
            ("/..", "/"),
            ("/../a", "/a"),
            ("/../../a/../../b", "/b"),
            ("/a/b/.", "/a/b/"),
            ("/a/b/", "/a/b/"),
            ("/.", "/"),
            ("/a/%2e%2e/b", "/b"),
            ("/a/%2E%2e/b", "/b"),
            ("/a/.%2e/b", "/b"),
            ("/a/%2e/b", "/a/b"),
            ("/a/...", "/a/..."),
            ("/a/..b/c", "/a/..b/c"),
        ];
        for (input, want) in cases {
            assert_eq!(norm(input).unwrap(), want, "{input}");
        }
    }

    #[test]
    fn rejects_dot_segments_with_parameters() {
        for p in [
            "/api/..;/admin",
            "/api/..;foo/admin",
            "/a/.;x",
            "/a/%2e%2e;/b",
            "/a/..%3b/b",
            "/a/.%3Bx",
        ] {
            assert_eq!(norm(p), Err(PathError::DotSegmentParameters), "{p}");
        }
        // Parameters on ordinary segments are fine.
        assert_eq!(norm("/a;x/b").unwrap(), "/a;x/b");
        assert_eq!(norm("/a/...;x").unwrap(), "/a/...;x");
    }

    #[test]
    fn rejects_dot_segments_behind_encoded_slashes() {
        for p in [
            "/api/x%2F..%2Fadmin",
            "/api/..%2fadmin",
            "/api/x%2F.",
            "/api/x%2F..;",
        ] {
            assert_eq!(norm(p), Err(PathError::EncodedSlashDotSegment), "{p}");
        }
        assert_eq!(norm("/a%2F..b").unwrap(), "/a%2F..b");
    }

    #[test]
    fn errors_have_messages() {
        let e: Box<dyn std::error::Error> = Box::new(PathError::Backslash);
        assert_eq!(e.to_string(), "request path contains a backslash");
    }

    /// Pieces that exercise every rule, so random concatenations hit the interesting cases far
    /// more often than arbitrary strings would.
    fn piece() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "/", "/", "/", "a", "b", "api", ".", "..", "%2e", "%2E", "%2e%2E", ";", ";x", "%3b",
            "%2f", "%2F", "%41", "%7e", "%25", "%zz", "%4", "\\", "%5c", "\t", "%00", "~", "-",
            "\u{e9}",
        ])
    }

    fn path_like() -> impl Strategy<Value = String> {
        prop::collection::vec(piece(), 0..16).prop_map(|v| format!("/{}", v.concat()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn idempotent(input in path_like()) {
            if let Ok(once) = normalize_path(&input) {
                let twice = normalize_path(&once).expect("normal form re-normalises");
                prop_assert_eq!(&*twice, &*once);
                // And the second pass takes the fast path (all but `%2F`, which is always
                // re-checked for hidden dot segments): normal requests do not allocate.
                if !once.contains("%2F") {
                    prop_assert!(matches!(twice, Cow::Borrowed(_)), "{}", once);
                }
            }
        }

        #[test]
        fn no_dot_segments_or_double_slashes(input in path_like()) {
            if let Ok(out) = normalize_path(&input) {
                prop_assert!(out.starts_with('/'));
                prop_assert!(!out.contains("//"), "{}", out);
                for segment in out.split('/') {
                    prop_assert!(segment != "." && segment != "..", "{}", out);
                }
            }
        }

        #[test]
        fn api_prefix_cannot_be_escaped(tail in path_like()) {
            let input = format!("/api{tail}");
            if let Ok(out) = normalize_path(&input) {
                if out.starts_with("/api/") {
                    prop_assert_eq!(&*normalize_path(&out).expect("re-normalises"), &*out);
                    // Decoding reserved escapes as a lenient backend might (`%2F` -> `/`)
                    // still leaves no segment that climbs.
                    let lenient = out.replace("%2F", "/").replace("%3B", ";");
                    for segment in lenient.split('/') {
                        let bare = segment.split(';').next().unwrap_or("");
                        prop_assert!(bare != "." && bare != "..", "{} -> {}", input, out);
                    }
                }
            }
        }
    }

    /// What every path `normalize_path` accepts looks like afterwards.
    fn check_normal_form(input: &str, out: &str) -> Result<(), TestCaseError> {
        prop_assert!(out.starts_with('/'), "{:?} -> {:?}", input, out);
        for bad in ["//", "/./", "/../", "\\"] {
            prop_assert!(!out.contains(bad), "{:?} -> {:?} has {:?}", input, out, bad);
        }
        prop_assert!(
            !out.ends_with("/.") && !out.ends_with("/.."),
            "{:?} -> {:?}",
            input,
            out
        );
        prop_assert!(
            !out.chars().any(|c| c.is_ascii_control()),
            "{:?} -> {:?}",
            input,
            out
        );
        // Every escape is canonical: two uppercase hex digits for something that must stay
        // escaped, so never an encoded dot (or any unreserved character), control or `\`.
        let bytes = out.as_bytes();
        for (i, _) in out.match_indices('%') {
            let hex = bytes.get(i + 1..i + 3).unwrap_or_default();
            let value = match hex {
                [hi, lo] => upper_hex_value(*hi)
                    .zip(upper_hex_value(*lo))
                    .map(|(h, l)| h << 4 | l),
                _ => None,
            };
            prop_assert!(
                value.is_some_and(|v| v >= 0x20 && v != 0x7F && v != b'\\' && !is_unreserved(v)),
                "{:?} -> {:?}: escape at {}",
                input,
                out,
                i
            );
        }
        let again = normalize_path(out).map(Cow::into_owned);
        prop_assert_eq!(again, Ok(out.to_string()), "{:?} is not idempotent", input);
        Ok(())
    }

    /// Rule pieces mixed with arbitrary characters.
    fn mixed_path() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                3 => piece().prop_map(String::from),
                1 => any::<char>().prop_map(String::from),
            ],
            0..24,
        )
        .prop_map(|v| format!("/{}", v.concat()))
    }

    /// A prefix segment as a route would name it: no escapes, never `.` or `..`.
    fn prefix_segment() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_~.-]{1,8}".prop_filter("not a dot segment", |s| s != "." && s != "..")
    }

    /// A request segment that is not a dot segment however it is decoded: it holds a letter.
    /// Around the letter, anything from the rules (dots, escapes, parameters, `%2F`).
    fn tail_segment() -> impl Strategy<Value = String> {
        let around = || {
            prop::collection::vec(
                prop::sample::select(vec![
                    ".", "..", "%2e", "%2E", "%41", "%7e", ";", ";x", "%3b", "%2F", "%2f", "%25",
                    "~", "-", "\u{e9}", ":", "@", "a",
                ]),
                0..4,
            )
            .prop_map(|v| v.concat())
        };
        (around(), "[a-z]", around()).prop_map(|(a, letter, b)| format!("{a}{letter}{b}"))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_input_never_panics_and_comes_out_normal(
            input in prop_oneof![any::<String>(), any::<String>().prop_map(|s| format!("/{s}")), mixed_path(), path_like()],
        ) {
            match normalize_path(&input) {
                Ok(out) => check_normal_form(&input, &out)?,
                Err(PathError::NotOriginForm) => prop_assert!(!input.starts_with('/')),
                Err(_) => {}
            }
        }

        #[test]
        fn a_path_without_dot_segments_stays_under_its_prefix(
            prefix in prop::collection::vec(prefix_segment(), 1..4),
            tail in prop::collection::vec((tail_segment(), prop::sample::select(vec!["/", "/", "//"])), 0..5),
            trailing_slash in any::<bool>(),
        ) {
            let prefix = format!("/{}", prefix.join("/"));
            let mut input = prefix.clone();
            for (segment, separator) in &tail {
                input.push_str(separator);
                input.push_str(segment);
            }
            if trailing_slash {
                input.push('/');
            }
            if let Ok(out) = normalize_path(&input) {
                check_normal_form(&input, &out)?;
                prop_assert!(
                    *out == prefix || out.starts_with(&format!("{prefix}/")),
                    "{:?} -> {:?} left {:?}", input, out, prefix
                );
            }
        }
    }
}
