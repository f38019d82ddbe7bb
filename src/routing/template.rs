//! Path templates in the `google.api.http` style: `/v1/{name=shelves/*}/books/{book}`, `/files/**`.
//!
//! Syntax: the template starts with `/` and is a `/`-separated list of segments, each one of
//! - a literal (`users`),
//! - `*`: exactly one non-empty segment,
//! - `**`: zero or more remaining segments, only as the last segment,
//! - `{name}` / `{name=*}`: one segment, captured,
//! - `{name=**}`: the rest of the path, captured (last only),
//! - `{name=lit/*/...}`: a sub-pattern of literals and `*` (and a final `**`), captured as the
//!   joined text.
//!
//! Variable names are `[A-Za-z_][A-Za-z0-9_.]*` and unique. The template `/` alone matches only
//! the root path. (The `:verb` suffix of `google.api.http` is not part of this syntax; a literal
//! may contain `:`, so `/v1/things:batchGet` is an ordinary literal segment.)
//!
//! Parsing flattens the template into a list of [`Element`]s, one per path segment, and records
//! each variable as a range of elements; matching is then a single left-to-right walk over the
//! path's segments with no allocation. Literals are canonicalised like request paths
//! (`%7e` → `~`, `%2f` → `%2F`) so they compare equal to normalised requests.
//!
//! Trailing slashes: `/users/5/` has the segments `users`, `5` and an empty one, and `*` never
//! matches an empty segment, so `/users/{id}` does NOT match `/users/5/`. A final `**` absorbs
//! the trailing slash: `/users/**` matches `/users/5/` and captures `5/`.
//!
//! Captured values are returned as raw slices of the path: percent-escapes are left as they
//! are (decoding is the consumer's decision; gRPC transcoding, for instance, decodes differently
//! for `*` and `**` captures).

use std::fmt;

use super::normalize::{canonicalize_escapes, PathError};

/// One segment of a flattened template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Element {
    /// Matches exactly this (escape-canonical) text.
    Literal(Box<str>),
    /// Matches any one non-empty segment.
    Star,
    /// Matches all remaining segments (possibly none); always the last element.
    DoubleStar,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Variable {
    name: Box<str>,
    /// Element range `start..end` this variable captures (never empty).
    start: usize,
    end: usize,
}

/// A parsed path template; see the module docs for the syntax and matching rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PathTemplate {
    source: Box<str>,
    elements: Vec<Element>,
    variables: Vec<Variable>,
    literal_count: usize,
}

/// What is wrong with a template and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TemplateError {
    /// What went wrong.
    pub kind: TemplateErrorKind,
    /// Byte offset in the template text where the problem was found.
    pub offset: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TemplateErrorKind {
    /// The template does not start with `/`.
    MissingLeadingSlash,
    /// `//`, a trailing `/`, `{}`, `{x=}` or `{x=a//b}`.
    EmptySegment,
    /// `{` without a matching `}`.
    UnclosedBrace,
    /// `}` without a matching `{`.
    UnexpectedCloseBrace,
    /// `{` inside `{...}`.
    NestedBraces,
    /// `**` (or `{x=**}`) followed by more segments.
    DoubleStarNotLast,
    /// The same variable name twice.
    DuplicateVariable(String),
    /// A name not matching `[A-Za-z_][A-Za-z0-9_.]*`.
    BadVariableName(String),
    /// A wildcard or variable sharing a segment with other text (`a*`, `x{id}`, `{id}.json`).
    PartialSegment,
    /// A literal that no normalised request path could contain (bad `%` escape, `\`, control
    /// character).
    InvalidLiteral(PathError),
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid path template at byte {}: ", self.offset)?;
        match &self.kind {
            TemplateErrorKind::MissingLeadingSlash => f.write_str("must start with '/'"),
            TemplateErrorKind::EmptySegment => f.write_str("empty segment"),
            TemplateErrorKind::UnclosedBrace => f.write_str("'{' is never closed"),
            TemplateErrorKind::UnexpectedCloseBrace => f.write_str("'}' without a matching '{'"),
            TemplateErrorKind::NestedBraces => f.write_str("nested '{' inside a variable"),
            TemplateErrorKind::DoubleStarNotLast => {
                f.write_str("'**' may only be the last segment")
            }
            TemplateErrorKind::DuplicateVariable(name) => {
                write!(f, "variable '{name}' appears more than once")
            }
            TemplateErrorKind::BadVariableName(name) => write!(
                f,
                "bad variable name '{name}' (expected [A-Za-z_][A-Za-z0-9_.]*)"
            ),
            TemplateErrorKind::PartialSegment => {
                f.write_str("a wildcard or variable must be a whole segment")
            }
            TemplateErrorKind::InvalidLiteral(e) => write!(f, "invalid literal: {e}"),
        }
    }
}

impl std::error::Error for TemplateError {}

impl PathTemplate {
    /// Parse a template; see the module docs for the syntax.
    pub(crate) fn parse(s: &str) -> Result<PathTemplate, TemplateError> {
        let bytes = s.as_bytes();
        if bytes.first() != Some(&b'/') {
            return Err(error(TemplateErrorKind::MissingLeadingSlash, 0));
        }
        let mut parser = Parser::default();
        // `/` alone is the root template: no segments.
        let mut pos = 1;
        while s.len() > 1 {
            if bytes.get(pos) == Some(&b'{') {
                pos = parser.variable(s, pos)?;
            } else {
                let end = s[pos..].find('/').map_or(s.len(), |k| pos + k);
                parser.segment(&s[pos..end], pos, true)?;
                pos = end;
            }
            match bytes.get(pos) {
                None => break,
                // The next iteration reports an empty segment if the template ends here.
                Some(b'/') => pos += 1,
                Some(_) => return Err(error(TemplateErrorKind::PartialSegment, pos)),
            }
        }
        if let Some(i) = parser.elements[..parser.elements.len().saturating_sub(1)]
            .iter()
            .position(|e| *e == Element::DoubleStar)
        {
            return Err(error(
                TemplateErrorKind::DoubleStarNotLast,
                parser.offsets[i],
            ));
        }
        let literal_count = parser
            .elements
            .iter()
            .filter(|e| matches!(e, Element::Literal(_)))
            .count();
        Ok(PathTemplate {
            source: s.into(),
            elements: parser.elements,
            variables: parser.variables,
            literal_count,
        })
    }

    /// Whether `path` matches the whole template. Does not allocate.
    pub(crate) fn matches(&self, path: &str) -> bool {
        self.walk(path, |_, _, _| {})
    }

    /// The captured variables, in template order, as `(name, raw value)`, or `None` if `path`
    /// does not match.
    pub(crate) fn captures<'p>(&self, path: &'p str) -> Option<Vec<(&str, &'p str)>> {
        if self.variables.is_empty() {
            return self.matches(path).then(Vec::new);
        }
        let mut spans = vec![(0, 0); self.elements.len()];
        if !self.walk(path, |i, start, end| spans[i] = (start, end)) {
            return None;
        }
        Some(
            self.variables
                .iter()
                .map(|v| {
                    let value = &path[spans[v.start].0..spans[v.end - 1].1];
                    (&*v.name, value)
                })
                .collect(),
        )
    }

    /// Number of literal segments (including those inside variable sub-patterns). More literals
    /// = more specific.
    pub(crate) fn literal_count(&self) -> usize {
        self.literal_count
    }

    /// Number of fixed segments: literals and single-segment wildcards. A final `**` is not
    /// counted (it may match zero segments), so `/a/*` counts 2 and outranks `/a/**` (1).
    pub(crate) fn segment_count(&self) -> usize {
        self.elements.len() - usize::from(self.has_rest())
    }

    /// The variables' names, in template order (for configs that refer to captures).
    pub(crate) fn variable_names(&self) -> impl Iterator<Item = &str> {
        self.variables.iter().map(|v| &*v.name)
    }

    /// The template as written.
    pub(crate) fn as_str(&self) -> &str {
        &self.source
    }

    /// The flattened segments, for the router's trie.
    pub(crate) fn elements(&self) -> &[Element] {
        &self.elements
    }

    fn has_rest(&self) -> bool {
        self.elements.last() == Some(&Element::DoubleStar)
    }

    /// Match `path` element by element, reporting each element's byte span in `path`.
    ///
    /// `next` is the byte offset where the next path segment starts, `None` once all segments
    /// are consumed. `/` has no segments; `/a/` has `a` and an empty one.
    fn walk(&self, path: &str, mut span: impl FnMut(usize, usize, usize)) -> bool {
        if !path.starts_with('/') {
            return false;
        }
        let mut next = (path.len() > 1).then_some(1);
        for (i, element) in self.elements.iter().enumerate() {
            if *element == Element::DoubleStar {
                span(i, next.unwrap_or(path.len()), path.len());
                return true;
            }
            let Some(start) = next else {
                return false;
            };
            let end = path[start..].find('/').map_or(path.len(), |k| start + k);
            let segment = &path[start..end];
            let ok = match element {
                Element::Literal(lit) => segment == &**lit,
                Element::Star => !segment.is_empty(),
                Element::DoubleStar => true,
            };
            if !ok {
                return false;
            }
            span(i, start, end);
            next = (end < path.len()).then_some(end + 1);
        }
        next.is_none()
    }
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn error(kind: TemplateErrorKind, offset: usize) -> TemplateError {
    TemplateError { kind, offset }
}

#[derive(Default)]
struct Parser {
    elements: Vec<Element>,
    /// Byte offset of each element in the template, for error messages.
    offsets: Vec<usize>,
    variables: Vec<Variable>,
}

impl Parser {
    /// One plain segment `text` found at byte `offset`. `top_level` is false inside `{...}`,
    /// where braces were already checked by [`Parser::variable`].
    fn segment(&mut self, text: &str, offset: usize, top_level: bool) -> Result<(), TemplateError> {
        let element = match text {
            "" => return Err(error(TemplateErrorKind::EmptySegment, offset)),
            "*" => Element::Star,
            "**" => Element::DoubleStar,
            _ => {
                if let Some(k) = text.find(['*', '{']) {
                    return Err(error(TemplateErrorKind::PartialSegment, offset + k));
                }
                if top_level {
                    if let Some(k) = text.find('}') {
                        return Err(error(TemplateErrorKind::UnexpectedCloseBrace, offset + k));
                    }
                }
                let literal = canonicalize_escapes(text)
                    .map_err(|e| error(TemplateErrorKind::InvalidLiteral(e), offset))?;
                Element::Literal(literal.into())
            }
        };
        self.elements.push(element);
        self.offsets.push(offset);
        Ok(())
    }

    /// A `{...}` starting at byte `open`; returns the offset just past the `}`.
    fn variable(&mut self, s: &str, open: usize) -> Result<usize, TemplateError> {
        let bytes = s.as_bytes();
        let mut close = None;
        for (i, &b) in bytes.iter().enumerate().skip(open + 1) {
            match b {
                b'{' => return Err(error(TemplateErrorKind::NestedBraces, i)),
                b'}' => {
                    close = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let close = close.ok_or_else(|| error(TemplateErrorKind::UnclosedBrace, open))?;
        let inner = &s[open + 1..close];
        let (name, pattern) = match inner.find('=') {
            Some(eq) => (&inner[..eq], Some((&inner[eq + 1..], open + 2 + eq))),
            None => (inner, None),
        };
        if !is_valid_name(name) {
            let kind = if name.is_empty() && pattern.is_none() {
                TemplateErrorKind::EmptySegment
            } else {
                TemplateErrorKind::BadVariableName(name.to_string())
            };
            return Err(error(kind, open + 1));
        }
        if self.variables.iter().any(|v| &*v.name == name) {
            return Err(error(
                TemplateErrorKind::DuplicateVariable(name.to_string()),
                open + 1,
            ));
        }
        let start = self.elements.len();
        match pattern {
            None => {
                self.elements.push(Element::Star);
                self.offsets.push(open);
            }
            Some((pattern, mut offset)) => {
                for part in pattern.split('/') {
                    self.segment(part, offset, false)?;
                    offset += part.len() + 1;
                }
            }
        }
        self.variables.push(Variable {
            name: name.into(),
            start,
            end: self.elements.len(),
        });
        Ok(close + 1)
    }
}

fn is_valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(s: &str) -> PathTemplate {
        PathTemplate::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn err(s: &str) -> TemplateError {
        PathTemplate::parse(s).expect_err(s)
    }

    #[test]
    fn literal_templates() {
        let tpl = t("/v1/users");
        assert!(tpl.matches("/v1/users"));
        assert!(!tpl.matches("/v1/users/"));
        assert!(!tpl.matches("/v1/user"));
        assert!(!tpl.matches("/v1/users/1"));
        assert!(!tpl.matches("/v1"));
        assert!(!tpl.matches("v1/users"));
        assert_eq!(tpl.literal_count(), 2);
        assert_eq!(tpl.segment_count(), 2);
        assert_eq!(tpl.as_str(), "/v1/users");
        assert_eq!(tpl.captures("/v1/users"), Some(vec![]));
    }

    #[test]
    fn root_template() {
        let tpl = t("/");
        assert!(tpl.matches("/"));
        assert!(!tpl.matches("/a"));
        assert_eq!(tpl.segment_count(), 0);
    }

    #[test]
    fn single_segment_variables() {
        let tpl = t("/users/{id}/posts/{post=*}");
        assert_eq!(
            tpl.captures("/users/42/posts/7"),
            Some(vec![("id", "42"), ("post", "7")])
        );
        assert!(!tpl.matches("/users//posts/7"));
        assert!(!tpl.matches("/users/42/posts"));
        assert_eq!(tpl.literal_count(), 2);
        assert_eq!(tpl.segment_count(), 4);
    }

    #[test]
    fn trailing_slash_does_not_match_single_segment() {
        let tpl = t("/users/{id}");
        assert!(tpl.matches("/users/5"));
        assert!(!tpl.matches("/users/5/"));
        assert!(!tpl.matches("/users/"));
        assert!(!t("/users/*").matches("/users/"));
    }

    #[test]
    fn double_star() {
        let tpl = t("/files/**");
        assert!(tpl.matches("/files"));
        assert!(tpl.matches("/files/"));
        assert!(tpl.matches("/files/a/b/c"));
        assert!(!tpl.matches("/filesx"));
        assert_eq!(tpl.segment_count(), 1);
        let tpl = t("/files/{rest=**}");
        assert_eq!(tpl.captures("/files/a/b/"), Some(vec![("rest", "a/b/")]));
        assert_eq!(tpl.captures("/files"), Some(vec![("rest", "")]));
        assert_eq!(tpl.captures("/files/"), Some(vec![("rest", "")]));
        assert!(t("/**").matches("/"));
        assert!(t("/**").matches("/x/y"));
    }

    #[test]
    fn colons_are_literal_text() {
        // No `:verb` syntax: a colon is ordinary literal text, and a variable must still end
        // its segment.
        assert!(t("/v1/things:batchGet").matches("/v1/things:batchGet"));
        assert_eq!(
            err("/v1/{name=things/*}:get").kind,
            TemplateErrorKind::PartialSegment
        );
    }

    #[test]
    fn sub_pattern_variables() {
        let tpl = t("/v1/{name=shelves/*/books/*}");
        assert_eq!(
            tpl.captures("/v1/shelves/s1/books/b2"),
            Some(vec![("name", "shelves/s1/books/b2")])
        );
        assert!(!tpl.matches("/v1/shelves/s1/book/b2"));
        assert_eq!(tpl.literal_count(), 3);
        assert_eq!(tpl.segment_count(), 5);
        let tpl = t("/{a.b_c=x/**}");
        assert_eq!(tpl.captures("/x"), Some(vec![("a.b_c", "x")]));
        assert_eq!(tpl.captures("/x/y/z"), Some(vec![("a.b_c", "x/y/z")]));
    }

    #[test]
    fn captures_are_raw() {
        let tpl = t("/users/{id}");
        assert_eq!(tpl.captures("/users/a%2Fb"), Some(vec![("id", "a%2Fb")]));
    }

    #[test]
    fn literals_are_escape_canonical() {
        let tpl = t("/%7euser/a%2fb");
        assert!(tpl.matches("/~user/a%2Fb"));
        assert_eq!(tpl.as_str(), "/%7euser/a%2fb");
    }

    #[test]
    fn parse_errors_with_offsets() {
        use TemplateErrorKind::*;
        let cases: &[(&str, TemplateErrorKind, usize)] = &[
            ("", MissingLeadingSlash, 0),
            ("users", MissingLeadingSlash, 0),
            ("/a//b", EmptySegment, 3),
            ("/a/", EmptySegment, 3),
            ("/{}", EmptySegment, 2),
            ("/{x=}", EmptySegment, 4),
            ("/{x=a//b}", EmptySegment, 6),
            ("/a/{id", UnclosedBrace, 3),
            ("/a}", UnexpectedCloseBrace, 2),
            ("/{a{b}}", NestedBraces, 3),
            ("/**/a", DoubleStarNotLast, 1),
            ("/{x=**}/a", DoubleStarNotLast, 4),
            ("/{x=a/**/b}", DoubleStarNotLast, 6),
            ("/{id}/{id}", DuplicateVariable("id".into()), 7),
            ("/{1x}", BadVariableName("1x".into()), 2),
            ("/{a-b}", BadVariableName("a-b".into()), 2),
            ("/{=*}", BadVariableName("".into()), 2),
            ("/a*", PartialSegment, 2),
            ("/x{id}", PartialSegment, 2),
            ("/{id}.json", PartialSegment, 5),
            ("/{x=a*}", PartialSegment, 5),
            ("/a%zz", InvalidLiteral(PathError::BadPercentEncoding), 1),
            ("/a\\b", InvalidLiteral(PathError::Backslash), 1),
        ];
        for (input, kind, offset) in cases {
            let e = err(input);
            assert_eq!((&e.kind, e.offset), (kind, *offset), "{input}: {e}");
        }
    }

    #[test]
    fn error_display_names_the_offset() {
        assert_eq!(
            err("/{id}/{id}").to_string(),
            "invalid path template at byte 7: variable 'id' appears more than once"
        );
        assert_eq!(
            err("/a/{id").to_string(),
            "invalid path template at byte 3: '{' is never closed"
        );
    }

    fn literal_segment() -> impl Strategy<Value = String> {
        "[A-Za-z0-9._~:@-]{1,8}".prop_filter("not a wildcard", |s| s != "*" && s != "**")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn literal_template_matches_its_path(segments in prop::collection::vec(literal_segment(), 1..8)) {
            let text = format!("/{}", segments.join("/"));
            let tpl = PathTemplate::parse(&text).expect("literal template parses");
            prop_assert!(tpl.matches(&text));
            prop_assert_eq!(tpl.literal_count(), segments.len());
            prop_assert_eq!(tpl.segment_count(), segments.len());
            // A trailing slash or an extra segment breaks the match.
            let with_slash = format!("{text}/");
            let with_extra = format!("{text}/x");
            prop_assert!(!tpl.matches(&with_slash));
            prop_assert!(!tpl.matches(&with_extra));
        }

        #[test]
        fn variables_capture_their_segments(
            segments in prop::collection::vec((literal_segment(), any::<bool>()), 1..8),
        ) {
            // Replace some segments by `{vN}`; each must capture the segment it replaced.
            let mut parts = Vec::new();
            let mut expected = Vec::new();
            for (i, (segment, capture)) in segments.iter().enumerate() {
                if *capture {
                    parts.push(format!("{{v{i}}}"));
                    expected.push((format!("v{i}"), segment.clone()));
                } else {
                    parts.push(segment.clone());
                }
            }
            let tpl = PathTemplate::parse(&format!("/{}", parts.join("/"))).expect("parses");
            let path = format!("/{}", segments.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>().join("/"));
            let got: Vec<(String, String)> = tpl
                .captures(&path)
                .expect("matches")
                .into_iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            prop_assert_eq!(got, expected);
        }
    }

    fn template_like() -> impl Strategy<Value = String> {
        let piece = prop::sample::select(vec![
            "/",
            "/",
            "{",
            "}",
            "=",
            "*",
            "**",
            "a",
            "id",
            "x.y",
            "_",
            "1",
            "%7e",
            "%zz",
            "%2F",
            "\\",
            ":",
            "\u{e9}",
            "\0",
            "{id}",
            "{rest=**}",
            "{n=a/*}",
            "{v=*}",
            "/{",
            "}/",
        ]);
        prop_oneof![
            any::<String>(),
            prop::collection::vec(piece, 0..12).prop_map(|v| v.concat()),
        ]
    }

    fn path_like() -> impl Strategy<Value = String> {
        let piece = prop::sample::select(vec![
            "/", "/", "a", "x", "id", "%2F", "~", "\u{e9}", "..", "b/c", "//", "*", "{id}",
        ]);
        prop_oneof![
            any::<String>(),
            prop::collection::vec(piece, 0..10).prop_map(|v| format!("/{}", v.concat())),
        ]
    }

    /// One segment of a generated template and what the path has in its place.
    #[derive(Debug, Clone)]
    enum Part {
        /// A literal as written in the template, and its canonical form (the path's text).
        Literal(String, String),
        /// `*`, `{vN}` or `{vN=*}`, and the segment in the path.
        Single(u8, String),
        /// `{vN=lit/*/...}`: `Some(written, canonical)` literals and `None` wildcards, and the
        /// segments the wildcards stand for.
        Sub(Vec<Option<(String, String)>>, Vec<String>),
    }

    /// Literal text with some characters written as escapes (`~` as `%7e` or `%7E`), as a
    /// template author may: `(written, canonical)`.
    fn literal() -> impl Strategy<Value = (String, String)> {
        let piece = (
            prop::sample::select(vec![
                "a", "Z", "0", "-", ".", "_", "~", ":", "@", "%2F", "%C3%A9",
            ]),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(canonical, escape, lower)| {
                // Only unreserved characters mean the same escaped; `%3A` stays `%3A`.
                let written = match canonical.as_bytes() {
                    [b] if escape && !matches!(b, b':' | b'@') => format!("%{b:02X}"),
                    _ => canonical.to_string(),
                };
                // Escapes may be written in lowercase hex.
                let written = if lower && written.starts_with('%') {
                    written.to_lowercase()
                } else {
                    written
                };
                (written, canonical.to_string())
            });
        prop::collection::vec(piece, 1..5)
            .prop_map(|pieces| pieces.into_iter().unzip::<_, _, String, String>())
            .prop_filter("not a dot segment", |(_, c)| c != "." && c != "..")
    }

    /// A non-empty path segment, as raw as a request can carry it.
    fn value_segment() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop::sample::select(vec![
                "a", "Z", "0", "-", ".", "_", "~", "%2F", "%C3%A9", ":", "@", "\u{e9}", "*",
            ]),
            1..5,
        )
        .prop_map(|v| v.concat())
    }

    fn part() -> impl Strategy<Value = Part> {
        prop_oneof![
            literal().prop_map(|(w, c)| Part::Literal(w, c)),
            (0..3u8, value_segment()).prop_map(|(style, value)| Part::Single(style, value)),
            prop::collection::vec(prop::option::weighted(0.5, literal()), 1..4).prop_flat_map(
                |items| {
                    let wildcards = items.iter().filter(|i| i.is_none()).count();
                    prop::collection::vec(value_segment(), wildcards)
                        .prop_map(move |values| Part::Sub(items.clone(), values))
                }
            ),
        ]
    }

    /// Build the template, the path that fills it in, the captures expected from it and
    /// the literal and fixed-segment counts.
    fn fill(
        parts: &[Part],
        rest: Option<(bool, Vec<String>)>,
    ) -> (String, String, Vec<(String, String)>, usize, usize) {
        let (mut template, mut path, mut expected) = (Vec::new(), Vec::new(), Vec::new());
        let (mut literals, mut segments) = (0, 0);
        for (i, part) in parts.iter().enumerate() {
            let name = format!("v{i}");
            match part {
                Part::Literal(written, canonical) => {
                    template.push(written.clone());
                    path.push(canonical.clone());
                    literals += 1;
                    segments += 1;
                }
                Part::Single(style, value) => {
                    template.push(match style {
                        0 => "*".to_string(),
                        1 => format!("{{{name}}}"),
                        _ => format!("{{{name}=*}}"),
                    });
                    path.push(value.clone());
                    if *style != 0 {
                        expected.push((name, value.clone()));
                    }
                    segments += 1;
                }
                Part::Sub(items, values) => {
                    let mut values = values.iter();
                    let (mut pattern, mut filled) = (Vec::new(), Vec::new());
                    for item in items {
                        match item {
                            Some((written, canonical)) => {
                                pattern.push(written.clone());
                                filled.push(canonical.clone());
                                literals += 1;
                            }
                            None => {
                                pattern.push("*".to_string());
                                filled.push(values.next().expect("a value per wildcard").clone());
                            }
                        }
                        segments += 1;
                    }
                    template.push(format!("{{{name}={}}}", pattern.join("/")));
                    let filled = filled.join("/");
                    path.push(filled.clone());
                    expected.push((name, filled));
                }
            }
        }
        if let Some((captured, rest)) = rest {
            template.push(if captured {
                "{rest=**}".to_string()
            } else {
                "**".to_string()
            });
            if captured {
                expected.push(("rest".to_string(), rest.join("/")));
            }
            path.extend(rest);
        }
        (
            format!("/{}", template.join("/")),
            format!("/{}", path.join("/")),
            expected,
            literals,
            segments,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_templates_and_paths_never_panic(template in template_like(), path in path_like()) {
            match PathTemplate::parse(&template) {
                Err(e) => {
                    prop_assert!(e.offset <= template.len(), "{:?}: {}", template, e);
                    prop_assert!(!e.to_string().is_empty());
                }
                Ok(tpl) => {
                    prop_assert_eq!(tpl.as_str(), template.as_str());
                    prop_assert!(tpl.literal_count() <= tpl.elements().len());
                    prop_assert!(tpl.segment_count() <= tpl.elements().len());
                    let captures = tpl.captures(&path);
                    prop_assert_eq!(captures.is_some(), tpl.matches(&path), "{:?} {:?}", template, path);
                    let mut names = std::collections::HashSet::new();
                    for (name, value) in captures.unwrap_or_default() {
                        prop_assert!(names.insert(name), "{} captured twice", name);
                        // A slice of the path itself.
                        let start = value.as_ptr() as usize - path.as_ptr() as usize;
                        prop_assert!(start + value.len() <= path.len());
                        prop_assert_eq!(&path[start..start + value.len()], value);
                    }
                }
            }
        }

        #[test]
        fn generated_templates_match_their_filled_in_paths(
            parts in prop::collection::vec(part(), 0..6),
            rest in prop::option::of((any::<bool>(), prop::collection::vec(value_segment(), 0..4))),
        ) {
            let has_rest = rest.is_some();
            let (template, path, expected, literals, segments) = fill(&parts, rest);
            let tpl = PathTemplate::parse(&template).unwrap_or_else(|e| panic!("{template}: {e}"));
            let got: Option<Vec<(String, String)>> = tpl
                .captures(&path)
                .map(|c| c.into_iter().map(|(n, v)| (n.to_string(), v.to_string())).collect());
            prop_assert_eq!(got, Some(expected), "{} against {}", template, path);
            prop_assert_eq!(tpl.literal_count(), literals);
            prop_assert_eq!(tpl.segment_count(), segments);
            if !has_rest && !parts.is_empty() {
                // Nothing may follow the last segment, not even a slash.
                let with_slash = format!("{path}/");
                prop_assert!(!tpl.matches(&with_slash), "{} matched {}", template, with_slash);
                let with_extra = format!("{path}/x");
                prop_assert!(!tpl.matches(&with_extra), "{} matched {}", template, with_extra);
            }
            // Without a final `**` to take the rest, a single-segment wildcard never matches
            // an empty segment nor one containing a slash.
            let single = parts.iter().position(|p| matches!(p, Part::Single(..)));
            if let (Some(i), false) = (single, has_rest) {
                for value in ["", "x/y"] {
                    let mut changed = parts.clone();
                    changed[i] = Part::Single(0, value.to_string());
                    let (_, path, ..) = fill(&changed, None);
                    prop_assert!(!tpl.matches(&path), "{} matched {}", template, path);
                }
            }
        }
    }
}
