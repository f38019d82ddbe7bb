//! Where a credential travels in a request — a header (with or without an auth scheme such as
//! `Bearer`), a cookie, a query parameter — how it is read, and how it is removed before the
//! request goes upstream.
//!
//! On the request path, in the auth layer: each provider of a route looks in its sources in
//! order. A credential larger than the provider accepts is refused before anything parses it;
//! the same source twice (two `Authorization` headers, `?api_key=a&api_key=b`) is refused as
//! malformed rather than guessed at.

use http::header::{HeaderName, AUTHORIZATION, COOKIE};
use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Uri};
use std::borrow::Cow;

/// One place a credential is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CredentialSource {
    /// A header. With a `scheme`, only a value `<scheme> <credential>` counts (the scheme
    /// matched without regard to case, RFC 9110 §11.1); a value with another scheme is left
    /// for other providers.
    Header {
        name: HeaderName,
        scheme: Option<Box<str>>,
    },
    Cookie(Box<str>),
    Query(Box<str>),
}

/// What a source found in one request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Found<'r> {
    Nothing,
    Credential(Cow<'r, str>),
    /// Longer than the provider's limit; not looked at further.
    Oversized,
    /// Present more than once, or not text.
    Malformed,
}

impl CredentialSource {
    /// `Authorization: Bearer <token>`.
    pub(crate) fn bearer() -> CredentialSource {
        CredentialSource::Header {
            name: AUTHORIZATION,
            scheme: Some("Bearer".into()),
        }
    }

    /// Look for the credential in `req`; at most `limit` bytes are accepted.
    pub(crate) fn find<'r, B>(&self, req: &'r Request<B>, limit: usize) -> Found<'r> {
        match self {
            CredentialSource::Header { name, scheme } => {
                let mut values = req.headers().get_all(name).iter();
                let Some(value) = values.next() else {
                    return Found::Nothing;
                };
                let Some(credential) = strip_scheme(value.as_bytes(), scheme.as_deref()) else {
                    return Found::Nothing;
                };
                if values.next().is_some() {
                    return Found::Malformed;
                }
                checked(credential, limit).map_or_else(|found| found, Found::Credential)
            }
            CredentialSource::Cookie(cookie) => {
                let mut found = None;
                for value in req.headers().get_all(COOKIE) {
                    for pair in value.as_bytes().split(|b| *b == b';') {
                        let pair = pair.trim_ascii();
                        let Some((name, credential)) = split_pair(pair) else {
                            continue;
                        };
                        if name == cookie.as_bytes() {
                            if found.is_some() {
                                return Found::Malformed;
                            }
                            found = Some(credential);
                        }
                    }
                }
                match found {
                    None => Found::Nothing,
                    Some(credential) => {
                        checked(credential, limit).map_or_else(|found| found, Found::Credential)
                    }
                }
            }
            CredentialSource::Query(parameter) => {
                let Some(query) = req.uri().query() else {
                    return Found::Nothing;
                };
                let mut found = None;
                for pair in query.split('&') {
                    let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                    if name == &**parameter {
                        if found.is_some() {
                            return Found::Malformed;
                        }
                        found = Some(value);
                    }
                }
                let Some(raw) = found else {
                    return Found::Nothing;
                };
                if raw.len() > limit.saturating_mul(3) {
                    return Found::Oversized;
                }
                match percent_decode(raw) {
                    Some(decoded) if decoded.len() > limit => Found::Oversized,
                    Some(decoded) if decoded.is_empty() => Found::Nothing,
                    Some(decoded) => Found::Credential(decoded),
                    None => Found::Malformed,
                }
            }
        }
    }

    /// Remove the credential from `req`, so that it does not travel upstream.
    pub(crate) fn remove<B>(&self, req: &mut Request<B>) {
        match self {
            CredentialSource::Header { name, .. } => {
                req.headers_mut().remove(name);
            }
            CredentialSource::Cookie(cookie) => {
                let kept: Vec<Vec<u8>> = req
                    .headers()
                    .get_all(COOKIE)
                    .iter()
                    .flat_map(|value| value.as_bytes().split(|b| *b == b';'))
                    .map(<[u8]>::trim_ascii)
                    .filter(|pair| {
                        !pair.is_empty()
                            && split_pair(pair).is_none_or(|(name, _)| name != cookie.as_bytes())
                    })
                    .map(<[u8]>::to_vec)
                    .collect();
                let headers = req.headers_mut();
                headers.remove(COOKIE);
                if !kept.is_empty() {
                    if let Ok(value) = HeaderValue::from_bytes(&kept.join(&b"; "[..])) {
                        headers.insert(COOKIE, value);
                    }
                }
            }
            CredentialSource::Query(parameter) => {
                let Some(query) = req.uri().query() else {
                    return;
                };
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|pair| {
                        pair.split_once('=').map_or(*pair, |(name, _)| name) != &**parameter
                    })
                    .collect();
                let path = req.uri().path();
                let target = if kept.is_empty() {
                    path.to_string()
                } else {
                    format!("{path}?{}", kept.join("&"))
                };
                let mut parts = req.uri().clone().into_parts();
                if let Ok(target) = PathAndQuery::try_from(target) {
                    parts.path_and_query = Some(target);
                    if let Ok(uri) = Uri::from_parts(parts) {
                        *req.uri_mut() = uri;
                    }
                }
            }
        }
    }

    /// Where the source is, as a challenge names it: (`header`, `x-api-key`).
    pub(crate) fn place(&self) -> (&'static str, &str) {
        match self {
            CredentialSource::Header { name, .. } => ("header", name.as_str()),
            CredentialSource::Cookie(name) => ("cookie", name),
            CredentialSource::Query(name) => ("query", name),
        }
    }

    /// For `portico explain`.
    pub(crate) fn describe(&self) -> String {
        match self {
            CredentialSource::Header {
                name,
                scheme: Some(scheme),
            } => format!("{name}: {scheme} …"),
            CredentialSource::Header { name, scheme: None } => format!("header {name}"),
            CredentialSource::Cookie(name) => format!("cookie {name}"),
            CredentialSource::Query(name) => format!("query ?{name}="),
        }
    }
}

/// `value` without `<scheme> ` in front (any case); `None` when it has another scheme.
fn strip_scheme<'v>(value: &'v [u8], scheme: Option<&str>) -> Option<&'v [u8]> {
    let Some(scheme) = scheme else {
        return Some(value.trim_ascii());
    };
    let (head, rest) = value.split_at_checked(scheme.len())?;
    if !head.eq_ignore_ascii_case(scheme.as_bytes()) || rest.first() != Some(&b' ') {
        return None;
    }
    Some(rest.trim_ascii())
}

fn split_pair(pair: &[u8]) -> Option<(&[u8], &[u8])> {
    let equals = pair.iter().position(|b| *b == b'=')?;
    Some((pair[..equals].trim_ascii(), pair[equals + 1..].trim_ascii()))
}

/// A credential that is text and within `limit` bytes.
fn checked(credential: &[u8], limit: usize) -> Result<Cow<'_, str>, Found<'static>> {
    if credential.len() > limit {
        return Err(Found::Oversized);
    }
    if credential.is_empty() {
        return Err(Found::Nothing);
    }
    std::str::from_utf8(credential)
        .map(Cow::Borrowed)
        .map_err(|_| Found::Malformed)
}

/// Percent-decode a query value (`+` is a space in form encoding); `None` if the result is
/// not UTF-8 or an escape is broken.
pub(crate) fn percent_decode(raw: &str) -> Option<Cow<'_, str>> {
    if !raw.contains(['%', '+']) {
        return Some(Cow::Borrowed(raw));
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let text = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(text, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(target: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder().uri(target);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).expect("request")
    }

    #[test]
    fn bearer_tokens_are_read_whatever_the_scheme_case() {
        let bearer = CredentialSource::bearer();
        for value in ["Bearer abc", "bearer abc", "BEARER  abc "] {
            let req = request("/", &[("authorization", value)]);
            assert_eq!(bearer.find(&req, 100), Found::Credential("abc".into()));
        }
        let basic = request("/", &[("authorization", "Basic dXNlcjpwYXNz")]);
        assert_eq!(bearer.find(&basic, 100), Found::Nothing);
        let glued = request("/", &[("authorization", "Bearerabc")]);
        assert_eq!(bearer.find(&glued, 100), Found::Nothing);
        let twice = request(
            "/",
            &[("authorization", "Bearer a"), ("authorization", "Bearer b")],
        );
        assert_eq!(bearer.find(&twice, 100), Found::Malformed);
        let long = request("/", &[("authorization", "Bearer abcdef")]);
        assert_eq!(bearer.find(&long, 5), Found::Oversized);
    }

    #[test]
    fn query_parameters_are_decoded_and_removed() {
        let source = CredentialSource::Query("api_key".into());
        let mut req = request("/p?x=1&api_key=a%2Bb&y=2", &[]);
        assert_eq!(source.find(&req, 100), Found::Credential("a+b".into()));
        source.remove(&mut req);
        assert_eq!(req.uri(), "/p?x=1&y=2");
        let mut only = request("/p?api_key=k", &[]);
        source.remove(&mut only);
        assert_eq!(only.uri(), "/p");
        let twice = request("/p?api_key=a&api_key=b", &[]);
        assert_eq!(source.find(&twice, 100), Found::Malformed);
        let broken = request("/p?api_key=%zz", &[]);
        assert_eq!(source.find(&broken, 100), Found::Malformed);
    }

    #[test]
    fn cookies_are_read_and_removed_leaving_the_others() {
        let source = CredentialSource::Cookie("session".into());
        let mut req = request("/", &[("cookie", "a=1; session=tok; b=2")]);
        assert_eq!(source.find(&req, 100), Found::Credential("tok".into()));
        source.remove(&mut req);
        assert_eq!(req.headers()[COOKIE], "a=1; b=2");
        let mut alone = request("/", &[("cookie", "session=tok")]);
        source.remove(&mut alone);
        assert!(alone.headers().get(COOKIE).is_none());
    }
}
