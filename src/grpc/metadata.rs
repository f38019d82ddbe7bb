//! HTTP headers ↔ gRPC metadata for transcoded calls.
//!
//! On the request path of transcoding routes: the caller's headers become the gRPC request's
//! metadata (the gateway's forwarding headers and the identity headers auth sets included,
//! as for HTTP upstreams), and the upstream's response metadata — headers and trailers —
//! become the HTTP answer's headers. What describes the HTTP exchange itself (content type
//! and length, `accept`, `te`, `host`, which becomes `:authority`) does not travel, and
//! neither do the `grpc-*` names gRPC reserves for itself: a caller cannot set the deadline
//! or the encoding of the call. A `-bin` header carries base64, as binary metadata does on
//! the wire; one that is not base64 is dropped rather than forwarded broken.

use super::status::decode_base64;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Request headers that describe the HTTP exchange, not the call.
fn is_http_only(name: &HeaderName) -> bool {
    name == header::CONTENT_TYPE
        || name == header::CONTENT_LENGTH
        || name == header::ACCEPT
        || name == header::ACCEPT_ENCODING
        || name == header::TE
        || name == header::EXPECT
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING
        || name == header::CONNECTION
        || name == header::UPGRADE
}

/// The metadata of a transcoded call: the caller's `headers` less what does not travel,
/// removed in place (usually two or three names) rather than copying the rest. `host` stays:
/// the upstream client turns it into `:authority`.
pub(crate) fn into_request_metadata(mut headers: HeaderMap) -> HeaderMap {
    let unwanted: Vec<HeaderName> = headers
        .iter()
        .filter(|(name, value)| {
            is_http_only(name)
                || name.as_str().starts_with("grpc-")
                || (name.as_str().ends_with("-bin") && decode_base64(value.as_bytes()).is_none())
        })
        .map(|(name, _)| name.clone())
        .collect();
    for name in unwanted {
        headers.remove(name);
    }
    headers
}

/// Copy an answer's metadata (`from`: its headers or trailers) into the HTTP answer's
/// headers.
pub(crate) fn response_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        let text = name.as_str();
        if text.starts_with("grpc-")
            || name == header::CONTENT_TYPE
            || name == header::CONTENT_LENGTH
            || name == header::DATE
            || name == header::TRAILER
            || name == header::TE
            || name == header::TRANSFER_ENCODING
        {
            continue;
        }
        to.append(name.clone(), value.clone());
    }
}

/// `grpc-timeout` for a deadline: at most eight digits, in the coarsest unit that keeps
/// milliseconds (or whole seconds for very long ones).
pub(crate) fn grpc_timeout(timeout: std::time::Duration) -> HeaderValue {
    let millis = timeout.as_millis();
    let text = if millis < 100_000_000 {
        format!("{millis}m")
    } else {
        format!("{}S", timeout.as_secs().min(99_999_999))
    };
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("99999999S"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn reserved_and_http_only_headers_stay_behind() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("content-type", "application/json"),
            ("accept", "*/*"),
            ("grpc-timeout", "1n"),
            ("grpc-encoding", "gzip"),
            ("authorization", "Bearer x"),
            ("x-trace-bin", "AAEC"),
            ("x-broken-bin", "!!!"),
            ("host", "api.example.com"),
        ] {
            headers.append(name, HeaderValue::from_static(value));
        }
        let metadata = into_request_metadata(headers);
        let mut names: Vec<&str> = metadata.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["authorization", "host", "x-trace-bin"]);
    }

    #[test]
    fn deadlines_fit_eight_digits() {
        assert_eq!(grpc_timeout(Duration::from_secs(15)), "15000m");
        assert_eq!(grpc_timeout(Duration::from_secs(400_000)), "400000S");
    }
}
