//! Request parsing with the contract's errors: JSON bodies, query strings,
//! path ids, and the JSON shape for the framework's own error responses.

use std::future::Future;
use std::pin::Pin;

use actix_web::body::{BoxBody, EitherBody};
use actix_web::dev::{Payload, ServiceResponse};
use actix_web::error::{PathError, PayloadError, QueryPayloadError};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{web, FromRequest, HttpRequest};
use serde::de::DeserializeOwned;

use crate::error::{error_json, ApiError, ErrorCode};

/// Largest accepted body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A JSON body. An empty body reads as `{}`; unknown fields, wrong types and
/// bad syntax are 400 with a message naming the field, never a Rust type;
/// over 64 KiB is 413.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let too_large = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .is_some_and(|len| len > MAX_BODY_BYTES);
        let content_type_ok = match req.headers().get(header::CONTENT_TYPE) {
            None => true,
            Some(v) => v
                .to_str()
                .map(|v| {
                    let mime = v
                        .split(';')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .to_ascii_lowercase();
                    mime == "application/json" || mime.ends_with("+json")
                })
                .unwrap_or(false),
        };
        let bytes = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            if too_large {
                return Err(payload_too_large());
            }
            if !content_type_ok {
                return Err(ApiError::bad_request(
                    "the body must be JSON (Content-Type: application/json)",
                ));
            }
            let bytes = bytes
                .await
                .map_err(|e| match e.as_error::<PayloadError>() {
                    Some(PayloadError::Overflow) => payload_too_large(),
                    _ => ApiError::bad_request("the body could not be read"),
                })?;
            parse_json(&bytes).map(Json)
        })
    }
}

fn payload_too_large() -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        ErrorCode::PayloadTooLarge.default_message(),
    )
}

/// Parses a JSON body into `T`, with client-safe messages.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        json_error(&path, e.inner())
    })?;
    de.end().map_err(|_| {
        ApiError::bad_request("the body has trailing characters after the JSON value")
    })?;
    Ok(value)
}

fn json_error(path: &str, e: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            ApiError::bad_request("the body is not valid JSON")
        }
        Category::Data => {
            let msg = e.to_string();
            if msg.starts_with("unknown field `") {
                // The path ends with the unknown field itself.
                return ApiError::bad_request(format!("unknown field `{path}`"));
            }
            let expected = msg
                .split(", expected ")
                .nth(1)
                .map(|s| s.split(" at line").next().unwrap_or(s))
                .map(plain_type)
                .unwrap_or("another type");
            if path == "." || path.is_empty() {
                ApiError::bad_request(format!("the body must be {expected}"))
            } else {
                ApiError::bad_request(format!("`{path}` must be {expected}"))
            }
        }
    }
}

/// serde's expectation in JSON terms, never a Rust type name.
fn plain_type(expected: &str) -> &'static str {
    let e = expected.trim();
    if [
        "i8", "i16", "i32", "i64", "i128", "u8", "u16", "u32", "u64", "u128", "isize", "usize",
    ]
    .iter()
    .any(|t| e == *t || e.contains(&format!("{t} ")))
    {
        "an integer"
    } else if e.contains("f32") || e.contains("f64") {
        "a number"
    } else if e.contains("string") || e.contains("str") || e.contains("char") {
        "a string"
    } else if e.contains("bool") {
        "a boolean"
    } else if e.contains("sequence") || e.contains("array") || e.contains("Vec") {
        "an array"
    } else if e.contains("struct") || e.contains("map") {
        "a JSON object"
    } else {
        "another type"
    }
}

/// Query-string errors are 400 with the parser's message.
pub fn query_error(err: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let detail = match &err {
        QueryPayloadError::Deserialize(e) => e.to_string(),
        _ => String::from("unreadable"),
    };
    ApiError::bad_request(format!("bad query string: {detail}")).into()
}

/// A path segment that is not an id names no resource: 404.
pub fn path_error(_err: PathError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::new(ErrorCode::NotFound, "no such resource").into()
}

/// Parses a positive id from the path, 404 otherwise.
pub fn path_id<T>(raw: i64, parse: fn(i64) -> Option<T>, what: &str) -> Result<T, ApiError> {
    parse(raw).ok_or_else(|| ApiError::not_found(what))
}

/// Runs blocking work (Diesel) on the blocking thread pool.
pub async fn blocking<T, E>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, ApiError>
where
    T: Send + 'static,
    E: Into<ApiError> + Send + 'static,
{
    web::block(f)
        .await
        .map_err(ApiError::internal)?
        .map_err(Into::into)
}

/// Awaits a store's future for at most `limit`: a database that stopped
/// answering gives 503 within it. Dropped, the future's work is skipped by
/// the store if it has not started. A future that is ready at once (the
/// store answered from memory) arms no timer.
pub async fn bounded<T, E>(
    limit: std::time::Duration,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, ApiError>
where
    E: Into<ApiError>,
{
    let mut f = std::pin::pin!(f);
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(f.as_mut().poll(cx))).await;
    if let std::task::Poll::Ready(answer) = first {
        return answer.map_err(Into::into);
    }
    actix_web::rt::time::timeout(limit, f)
        .await
        .map_err(|_| {
            ApiError::from(tollgate_domain::StoreError::Unavailable(
                "the database did not answer in time".into(),
            ))
        })?
        .map_err(Into::into)
}

/// Gives an error response that is not already JSON (the framework's 404,
/// 405, 400 for unreadable requests...) the contract's error body.
pub fn json_error_fallback<B>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = res
        .response()
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let code = ErrorCode::for_status(status);
    let (req, mut response) = res.into_parts();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let response = response
        .set_body(BoxBody::new(error_json(code, code.default_message())))
        .map_body(|_, b| EitherBody::right(b));
    Ok(ErrorHandlerResponse::Response(ServiceResponse::new(
        req, response,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        name: Option<String>,
        usage_limit: Option<i64>,
    }

    #[test]
    fn messages_name_the_field_not_the_rust_type() {
        let e = parse_json::<Sample>(br#"{"usage_limit": "ten"}"#).expect_err("wrong type");
        assert_eq!(e.code(), ErrorCode::BadRequest);
        assert_eq!(e.message(), "`usage_limit` must be an integer");
        let e = parse_json::<Sample>(br#"{"nme": "x"}"#).expect_err("unknown field");
        assert_eq!(e.message(), "unknown field `nme`");
        let e = parse_json::<Sample>(br#"[1, 2]"#).expect_err("not an object");
        assert!(!e.message().contains("Sample"), "{}", e.message());
        let e = parse_json::<Sample>(br#"{"name": "#).expect_err("syntax");
        assert_eq!(e.message(), "the body is not valid JSON");
        assert!(parse_json::<Sample>(b"").is_ok());
        assert!(parse_json::<Sample>(br#"{} {}"#).is_err());
    }
}
