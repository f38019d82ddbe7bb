//! Text with `{name}` placeholders filled from a route's path-template captures: the form of
//! `path_rewrite` and of a `redirect`'s location.
//!
//! Off the request path when parsed (at config load, against the route's `path_template`,
//! so a name the template does not capture is a config problem); on it when expanded, in the
//! request transform and direct-answer layers, from the captures of the request's
//! (normalised) path. Captured values are raw path text (escapes kept), so a rewritten path
//! never gains a segment its capture did not have.

use crate::routing::PathTemplate;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    /// Index into the template's captures.
    Capture(usize),
}

/// A text with placeholders, and the route template whose captures fill them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CaptureTemplate {
    pieces: Vec<Piece>,
    /// `None` when the text has no placeholder.
    template: Option<Arc<PathTemplate>>,
}

impl CaptureTemplate {
    /// Parse `text` against the route's `path_template` (if it has one). `{{` and `}}` are
    /// literal braces.
    pub(crate) fn parse(
        text: &str,
        route_template: Option<&str>,
    ) -> Result<CaptureTemplate, String> {
        let template = route_template
            .map(PathTemplate::parse)
            .transpose()
            .map_err(|e| format!("the route's path_template does not parse: {e}"))?;
        let names: Vec<String> = template
            .as_ref()
            .map(|t| t.variable_names().map(str::to_string).collect())
            .unwrap_or_default();
        let mut pieces = Vec::new();
        let mut text_piece = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    text_piece.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    text_piece.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => return Err(format!("{text:?}: `{{{name}` is not closed")),
                        }
                    }
                    let Some(index) = names.iter().position(|n| *n == name) else {
                        return Err(if names.is_empty() {
                            format!(
                                "{text:?} uses {{{name}}}, but the route's match has no \
                                 path_template to capture it"
                            )
                        } else {
                            format!(
                                "{text:?} uses {{{name}}}, which the route's path_template does \
                                 not capture (it captures: {})",
                                names.join(", ")
                            )
                        });
                    };
                    if !text_piece.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text_piece)));
                    }
                    pieces.push(Piece::Capture(index));
                }
                '}' => return Err(format!("{text:?}: a lone `}}` (write `}}}}` for a brace)")),
                c => text_piece.push(c),
            }
        }
        if !text_piece.is_empty() {
            pieces.push(Piece::Text(text_piece));
        }
        let uses_captures = pieces.iter().any(|p| matches!(p, Piece::Capture(_)));
        Ok(CaptureTemplate {
            pieces,
            template: template.filter(|_| uses_captures).map(Arc::new),
        })
    }

    /// The text for a request with this (normalised) path; `None` if the path does not match
    /// the route's template (it always does for a request the route took).
    pub(crate) fn expand(&self, path: &str) -> Option<String> {
        let captures = match &self.template {
            Some(template) => template.captures(path)?,
            None => Vec::new(),
        };
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Capture(index) => out.push_str(captures.get(*index)?.1),
            }
        }
        Some(out)
    }

    /// The text without its placeholders.
    pub(crate) fn literal_text(&self) -> String {
        self.expand_with("")
    }

    /// The text with `stand_in` for every placeholder (to check what it makes).
    pub(crate) fn expand_with(&self, stand_in: &str) -> String {
        self.pieces
            .iter()
            .map(|piece| match piece {
                Piece::Text(text) => text.as_str(),
                Piece::Capture(_) => stand_in,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_from_the_routes_captures() {
        let t = CaptureTemplate::parse("/users/{id}/files/{rest}", Some("/v1/u/{id}/{rest=**}"))
            .expect("parses");
        assert_eq!(
            t.expand("/v1/u/42/a/b%2Fc").as_deref(),
            Some("/users/42/files/a/b%2Fc")
        );
        assert_eq!(t.expand("/other"), None);
        let plain = CaptureTemplate::parse("/static/{{x}}", None).expect("parses");
        assert_eq!(plain.expand("/anything").as_deref(), Some("/static/{x}"));
    }

    #[test]
    fn unknown_or_unclosed_placeholders_are_errors() {
        assert!(CaptureTemplate::parse("/u/{nope}", Some("/v1/{id}"))
            .unwrap_err()
            .contains("captures: id"));
        assert!(CaptureTemplate::parse("/u/{id}", None)
            .unwrap_err()
            .contains("no path_template"));
        assert!(CaptureTemplate::parse("/u/{id", Some("/v1/{id}")).is_err());
        assert!(CaptureTemplate::parse("/u/}", None).is_err());
    }
}
