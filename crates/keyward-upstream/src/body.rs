//! The request body the pools send (one concrete type, so that a pooled connection can carry any
//! request) and the response body handed back (the upstream's stream, trailers included, which
//! returns its HTTP/1.1 connection to the pool once read to the end).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::pool::{self, Target};

/// Errors of request bodies (the client's body failing mid-stream, for example).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body towards an upstream: nothing, one buffer, a client's streamed body, or any
/// other body (boxed).
#[derive(Default)]
pub enum RequestBody {
    #[default]
    Empty,
    Full(Option<Bytes>),
    Incoming(Incoming),
    Boxed(UnsyncBoxBody<Bytes, BoxError>),
}

impl RequestBody {
    /// Any body with `Bytes` frames (boxed: one allocation).
    pub fn boxed<B>(body: B) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        RequestBody::Boxed(body.map_err(Into::into).boxed_unsync())
    }
}

impl From<Incoming> for RequestBody {
    fn from(b: Incoming) -> Self {
        RequestBody::Incoming(b)
    }
}
impl From<Bytes> for RequestBody {
    fn from(b: Bytes) -> Self {
        if b.is_empty() {
            RequestBody::Empty
        } else {
            RequestBody::Full(Some(b))
        }
    }
}
impl From<Full<Bytes>> for RequestBody {
    fn from(b: Full<Bytes>) -> Self {
        RequestBody::boxed(b)
    }
}
impl From<Empty<Bytes>> for RequestBody {
    fn from(_: Empty<Bytes>) -> Self {
        RequestBody::Empty
    }
}
impl From<()> for RequestBody {
    fn from(_: ()) -> Self {
        RequestBody::Empty
    }
}
impl From<&'static str> for RequestBody {
    fn from(s: &'static str) -> Self {
        Bytes::from_static(s.as_bytes()).into()
    }
}
impl From<String> for RequestBody {
    fn from(s: String) -> Self {
        Bytes::from(s).into()
    }
}
impl From<Vec<u8>> for RequestBody {
    fn from(v: Vec<u8>) -> Self {
        Bytes::from(v).into()
    }
}

impl std::fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RequestBody::Empty => "RequestBody::Empty",
            RequestBody::Full(_) => "RequestBody::Full",
            RequestBody::Incoming(_) => "RequestBody::Incoming",
            RequestBody::Boxed(_) => "RequestBody::Boxed",
        })
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            RequestBody::Incoming(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            RequestBody::Boxed(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Full(b) => b.is_none(),
            RequestBody::Incoming(b) => b.is_end_stream(),
            RequestBody::Boxed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            RequestBody::Incoming(b) => b.size_hint(),
            RequestBody::Boxed(b) => b.size_hint(),
        }
    }
}

/// An upstream's response body: its frames (data and trailers) as they come. While it lives the
/// request counts as in flight on its target; an HTTP/1.1 connection read to the end goes back
/// to the target's idle pool.
pub struct ResponseBody {
    inner: Incoming,
    target: Arc<Target>,
    h1: Option<hyper::client::conn::http1::SendRequest<RequestBody>>,
}

impl ResponseBody {
    pub(crate) fn new(
        inner: Incoming,
        target: Arc<Target>,
        h1: Option<hyper::client::conn::http1::SendRequest<RequestBody>>,
    ) -> Self {
        let mut b = ResponseBody { inner, target, h1 };
        if b.inner.is_end_stream() {
            b.release();
        }
        b
    }

    /// The response carried no body or its body was read to the end: the connection can carry
    /// the next request.
    fn release(&mut self) {
        if let Some(conn) = self.h1.take() {
            pool::put_idle(&self.target, conn);
        }
    }
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("target", &self.target.url)
            .finish_non_exhaustive()
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.release(),
            Poll::Ready(Some(Err(_))) => this.h1 = None,
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if self.inner.is_end_stream() {
            self.release();
        }
        self.target.finish_request();
    }
}
