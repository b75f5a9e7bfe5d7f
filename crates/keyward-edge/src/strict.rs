//! Strict request extractors shared by the admin API and the verify API: a JSON body of the
//! right type and size with unknown fields refused ([`StrictJson`]), and a query string whose
//! type refuses unknown parameters ([`StrictQuery`]). Their refusals are problem documents.

use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

use crate::body::BodyFailure;
use crate::problem::{self, Problem};

/// Largest admin (and verify API) request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// A JSON body: `application/json`, at most [`MAX_BODY`] bytes, unknown fields refused.
pub struct StrictJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for StrictJson<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let ct_ok = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                let essence = v.split(';').next().unwrap_or("").trim();
                essence.eq_ignore_ascii_case("application/json")
            })
            .unwrap_or(false);
        if !ct_ok {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Unsupported Media Type",
            )
            .detail("send the body as application/json"));
        }
        // A declared length over the limit is refused before a byte of the body is read.
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BODY as u64) {
            return Err(
                Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "Payload Too Large")
                    .detail(format!("the body must be at most {MAX_BODY} bytes")),
            );
        }
        let bytes = match axum::body::Bytes::from_request(req, state).await {
            Ok(b) => b,
            Err(r) => {
                return Err(match crate::body::failure(&r) {
                    BodyFailure::TooLarge => {
                        Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "Payload Too Large")
                            .detail(format!("the body must be at most {MAX_BODY} bytes"))
                    }
                    BodyFailure::TimedOut => problem::body_timeout(),
                    BodyFailure::Invalid => {
                        Problem::new(StatusCode::BAD_REQUEST, "invalid_body", "Invalid Request Body")
                            .detail("the request body could not be read")
                    }
                })
            }
        };
        serde_json::from_slice(&bytes).map(StrictJson).map_err(|e| {
            let status = if e.is_data() {
                StatusCode::UNPROCESSABLE_ENTITY
            } else {
                StatusCode::BAD_REQUEST
            };
            let msg = e.to_string();
            // serde messages name fields and types; cap them so nothing large is echoed back.
            let msg: String = msg.chars().take(200).collect();
            Problem::new(status, "invalid_body", "Invalid Request Body").detail(msg)
        })
    }
}

/// A query string parsed into `T` (whose `deny_unknown_fields` refuses unknown parameters):
/// a refusal is `400 invalid_query` naming what is wrong.
pub struct StrictQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for StrictQuery<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| StrictQuery(q))
            .map_err(|e| Problem::bad_request("invalid_query", e.body_text()))
    }
}
