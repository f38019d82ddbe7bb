//! A gRPC call's status as an HTTP/JSON caller sees it.
//!
//! On the request path of transcoding routes, after the upstream has answered: the status
//! comes from the trailers, or from the headers of a trailers-only answer. Its code becomes an
//! HTTP status by the standard table ([`http_status`]: NOT_FOUND 404, RESOURCE_EXHAUSTED 429,
//! UNAUTHENTICATED 401, UNAVAILABLE 503, DEADLINE_EXCEEDED 504, …), `grpc-message` is
//! percent-decoded, and the body is the JSON form of a `google.rpc.Status`, its `details`
//! decoded from `grpc-status-details-bin` through the descriptors (which always hold
//! `google/rpc/error_details.proto`). A detail of a type the descriptors do not know cannot be
//! shown faithfully, so then the body carries the code and message only.
//!
//! This renders the *upstream's* answer: errors the gateway makes itself are `error.rs`'s.

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage};
use serde_json::{json, Value as Json};

pub(crate) const GRPC_STATUS: &str = "grpc-status";
pub(crate) const GRPC_MESSAGE: &str = "grpc-message";
pub(crate) const GRPC_STATUS_DETAILS: &str = "grpc-status-details-bin";

/// What the upstream said about the call.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GrpcStatus {
    pub(crate) code: i32,
    pub(crate) message: String,
    /// `grpc-status-details-bin`, decoded from base64: an encoded `google.rpc.Status`.
    pub(crate) details: Option<Bytes>,
}

impl GrpcStatus {
    /// The status in `headers` (trailers, or a trailers-only answer's headers), if there is
    /// one. A `grpc-status` that is not a number counts as UNKNOWN.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Option<GrpcStatus> {
        let code = headers.get(GRPC_STATUS)?;
        let code = std::str::from_utf8(code.as_bytes())
            .ok()
            .and_then(|text| text.trim().parse::<i32>().ok())
            .unwrap_or(2);
        let message = headers
            .get(GRPC_MESSAGE)
            .map(|value| percent_decode(value.as_bytes()))
            .unwrap_or_default();
        let details = headers
            .get(GRPC_STATUS_DETAILS)
            .and_then(|value| decode_base64(value.as_bytes()))
            .map(Bytes::from);
        Some(GrpcStatus {
            code,
            message,
            details,
        })
    }

    pub(crate) fn is_ok(&self) -> bool {
        self.code == 0
    }

    /// A status the gateway states about the upstream's answer (UNKNOWN, INTERNAL…).
    pub(crate) fn new(code: i32, message: impl Into<String>) -> GrpcStatus {
        GrpcStatus {
            code,
            message: message.into(),
            details: None,
        }
    }

    /// The code of a call whose answer came with HTTP status `status` instead of 200
    /// (gRPC's "HTTP to gRPC status code mapping").
    pub(crate) fn code_of_http_status(status: StatusCode) -> i32 {
        match status.as_u16() {
            // INTERNAL
            400 => 13,
            // UNAUTHENTICATED
            401 => 16,
            // PERMISSION_DENIED
            403 => 7,
            // UNIMPLEMENTED
            404 => 12,
            // UNAVAILABLE
            429 | 502 | 503 | 504 => 14,
            // UNKNOWN
            _ => 2,
        }
    }

    /// The HTTP status for this code.
    pub(crate) fn http_status(&self) -> StatusCode {
        http_status(self.code)
    }

    /// `{"code":…,"message":…,"details":[…]}`: the JSON form of `google.rpc.Status`.
    pub(crate) fn to_json(&self, pool: &DescriptorPool) -> Json {
        let details = self
            .details
            .as_ref()
            .and_then(|bytes| details_json(pool, bytes))
            .unwrap_or_default();
        json!({ "code": self.code, "message": self.message, "details": details })
    }
}

/// The details of an encoded `google.rpc.Status`, each as JSON with its `@type`; `None` when
/// one of them cannot be decoded or its type is unknown.
fn details_json(pool: &DescriptorPool, bytes: &[u8]) -> Option<Vec<Json>> {
    let status = pool.get_message_by_name("google.rpc.Status")?;
    let any = pool.get_message_by_name("google.protobuf.Any")?;
    let decoded = DynamicMessage::decode(status, bytes).ok()?;
    let list = decoded.get_field_by_name("details")?;
    let prost_reflect::Value::List(items) = list.as_ref() else {
        return Some(Vec::new());
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let prost_reflect::Value::Message(message) = item else {
            return None;
        };
        // Re-decode through `Any` so that serialisation resolves the type URL in this pool.
        let message =
            DynamicMessage::decode(any.clone(), message.encode_to_vec().as_slice()).ok()?;
        out.push(serde_json::to_value(&message).ok()?);
    }
    Some(out)
}

/// The standard mapping of gRPC codes to HTTP statuses (`google.rpc.Code`).
pub(crate) fn http_status(code: i32) -> StatusCode {
    match code {
        0 => StatusCode::OK,
        // CANCELLED: the client closed the request (nginx's 499).
        1 => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        3 | 9 | 11 => StatusCode::BAD_REQUEST,
        4 => StatusCode::GATEWAY_TIMEOUT,
        5 => StatusCode::NOT_FOUND,
        6 | 10 => StatusCode::CONFLICT,
        7 => StatusCode::FORBIDDEN,
        8 => StatusCode::TOO_MANY_REQUESTS,
        12 => StatusCode::NOT_IMPLEMENTED,
        14 => StatusCode::SERVICE_UNAVAILABLE,
        16 => StatusCode::UNAUTHORIZED,
        // UNKNOWN, INTERNAL, DATA_LOSS and codes beyond the table.
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2 §Responses); a bad escape is kept as
/// it is, and bytes that are not UTF-8 are replaced.
pub(crate) fn percent_decode(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(high << 4 | low);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn hex(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// gRPC's binary metadata is base64, padded or not.
pub(crate) fn decode_base64(text: &[u8]) -> Option<Vec<u8>> {
    let trimmed: Vec<u8> = text.iter().copied().filter(|b| *b != b'=').collect();
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(&trimmed)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn codes_map_to_the_standard_http_statuses() {
        for (code, status) in [
            (0, 200),
            (1, 499),
            (2, 500),
            (3, 400),
            (4, 504),
            (5, 404),
            (6, 409),
            (7, 403),
            (8, 429),
            (9, 400),
            (10, 409),
            (11, 400),
            (12, 501),
            (13, 500),
            (14, 503),
            (15, 500),
            (16, 401),
            (99, 500),
        ] {
            assert_eq!(http_status(code).as_u16(), status, "code {code}");
        }
    }

    #[test]
    fn http_statuses_map_to_codes_by_grpcs_table() {
        for (status, code) in [
            (400, 13),
            (401, 16),
            (403, 7),
            (404, 12),
            (429, 14),
            (502, 14),
            (503, 14),
            (504, 14),
            (500, 2),
            (301, 2),
        ] {
            let status = StatusCode::from_u16(status).expect("status");
            assert_eq!(GrpcStatus::code_of_http_status(status), code, "{status}");
        }
    }

    #[test]
    fn the_message_is_percent_decoded() {
        let mut headers = HeaderMap::new();
        headers.insert(GRPC_STATUS, HeaderValue::from_static("5"));
        headers.insert(
            GRPC_MESSAGE,
            HeaderValue::from_static("book %22x%22 not found %E2%9C%93 100%"),
        );
        let status = GrpcStatus::from_headers(&headers).expect("status");
        assert_eq!(status.code, 5);
        assert_eq!(status.message, "book \"x\" not found ✓ 100%");
    }
}
