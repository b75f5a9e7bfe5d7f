//! A deadline for request bodies that keyward reads itself (admin API, token endpoints,
//! `/v1/verify`): a client that sends its headers and then drips the body (or stops sending it)
//! would otherwise hold a connection slot and a task for as long as it likes.
//!
//! [`serve::connection`](crate::serve::connection) stamps every request with a [`BodyDeadline`]
//! (`gateway.body_read_timeout` after its head arrived); the [`deadline`] middleware, layered on
//! the routers that buffer bodies, makes the body fail with [`BodyTimedOut`] once the deadline
//! passes. The extractors turn that into 408 (see [`timed_out`]). Bodies streamed to the
//! upstream are not cut: a large upload may legitimately take longer, and the upstream's own
//! `gateway.upstream_timeout` bounds how long keyward waits for it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// When the body of this request must have arrived: a request extension.
#[derive(Debug, Clone, Copy)]
pub struct BodyDeadline(pub Instant);

/// The error a body yields once its [`BodyDeadline`] has passed.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within the body read timeout")]
pub struct BodyTimedOut;

/// Used when a request carries no [`BodyDeadline`] (a router served outside
/// [`serve::connection`](crate::serve::connection), as in tests).
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Middleware: the request's body fails with [`BodyTimedOut`] after its deadline. Whatever the
/// handler answers then, the connection is closed after it (`Connection: close`): the rest of
/// the body may still be on its way, and the stream would not be at a request boundary.
pub async fn deadline(req: Request, next: Next) -> Response {
    let at = req
        .extensions()
        .get::<BodyDeadline>()
        .map(|d| d.0)
        .unwrap_or_else(|| Instant::now() + DEFAULT_BODY_READ_TIMEOUT);
    let expired = Arc::new(AtomicBool::new(false));
    let body = |body| Body::new(Deadlined::new(body, at, expired.clone()));
    let mut resp = next.run(req.map(body)).await;
    if expired.load(Ordering::Relaxed) {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// Whether `e`, or an error it was caused by, is [`BodyTimedOut`].
pub fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<BodyTimedOut>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Why a buffered body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFailure {
    /// Longer than the endpoint accepts: 413.
    TooLarge,
    /// Not complete before the deadline: 408.
    TimedOut,
    /// Broken framing or a reset connection: 400.
    Invalid,
}

/// Classifies axum's rejection of a `Bytes` extraction.
pub fn failure(r: &axum::extract::rejection::BytesRejection) -> BodyFailure {
    use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
    match r {
        BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => BodyFailure::TooLarge,
        BytesRejection::FailedToBufferBody(FailedToBufferBody::UnknownBodyError(e)) if timed_out(e) => {
            BodyFailure::TimedOut
        }
        _ => BodyFailure::Invalid,
    }
}

/// A body that yields [`BodyTimedOut`] when `sleep` fires before it has ended.
struct Deadlined {
    inner: Body,
    sleep: Pin<Box<Sleep>>,
    /// Set once the deadline has passed (read by [`deadline`] after the handler).
    expired: Arc<AtomicBool>,
}

impl Deadlined {
    fn new(inner: Body, at: Instant, expired: Arc<AtomicBool>) -> Self {
        Deadlined {
            inner,
            sleep: Box::pin(tokio::time::sleep_until(at)),
            expired,
        }
    }
}

impl HttpBody for Deadlined {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if self.expired.load(Ordering::Relaxed) {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.expired.store(true, Ordering::Relaxed);
                Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.expired.load(Ordering::Relaxed) || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::FromRequest;

    /// A body that yields `first` (data, or an error), then waits forever.
    struct Stalled(Option<Result<Bytes, std::io::Error>>);

    impl HttpBody for Stalled {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            match self.0.take() {
                Some(r) => Poll::Ready(Some(r.map(Frame::data))),
                None => Poll::Pending,
            }
        }
    }

    async fn read(body: Body, at: Instant) -> Result<Bytes, BodyFailure> {
        let req = Request::new(Body::new(Deadlined::new(body, at, Arc::default())));
        Bytes::from_request(req, &()).await.map_err(|r| failure(&r))
    }

    #[tokio::test]
    async fn a_body_that_never_ends_times_out_at_the_deadline() {
        let start = Instant::now();
        let body = Body::new(Stalled(Some(Ok(Bytes::from_static(b"{\"a\":")))));
        let got = read(body, start + Duration::from_millis(200)).await;
        assert_eq!(got, Err(BodyFailure::TimedOut));
        assert!(start.elapsed() >= Duration::from_millis(200));
    }

    #[tokio::test]
    async fn a_complete_body_before_the_deadline_is_read_whole() {
        let at = Instant::now() + Duration::from_secs(5);
        let got = read(Body::from("{\"a\":1}"), at).await;
        assert_eq!(got.as_deref(), Ok(&b"{\"a\":1}"[..]));
    }

    #[tokio::test]
    async fn other_body_errors_are_not_timeouts() {
        let body = Body::new(Stalled(Some(Err(std::io::Error::other("connection reset")))));
        let got = read(body, Instant::now() + Duration::from_secs(60)).await;
        assert_eq!(got, Err(BodyFailure::Invalid));
        assert!(!timed_out(&std::io::Error::other("x")));
        assert!(timed_out(&axum::Error::new(BodyTimedOut)));
    }

    #[tokio::test]
    async fn the_middleware_applies_the_stamped_deadline() {
        use axum::routing::post;
        use tower::ServiceExt;
        let app = axum::Router::new()
            .route(
                "/",
                post(
                    |b: Result<Bytes, axum::extract::rejection::BytesRejection>| async move {
                        match b {
                            Ok(_) => "read".to_owned(),
                            Err(r) => format!("{:?}", failure(&r)),
                        }
                    },
                ),
            )
            .layer(axum::middleware::from_fn(deadline));
        let mut req = Request::new(Body::new(Stalled(Some(Ok(Bytes::from_static(b"x"))))));
        req.extensions_mut()
            .insert(BodyDeadline(Instant::now() + Duration::from_millis(50)));
        *req.method_mut() = http::Method::POST;
        let resp = app.oneshot(req).await.unwrap();
        assert_eq!(resp.headers()[header::CONNECTION], "close");
        let text = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
        assert_eq!(&text[..], b"TimedOut");
    }
}
