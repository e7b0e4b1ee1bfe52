//! Bodies on their way through the proxy. [`ProxyBody`] is the response: the app's body
//! streamed frame by frame (never buffered), or a short text for errors pillion answers itself;
//! it counts the bytes it passes, and when hyper drops it (body sent, or client gone) it runs
//! the request's [`Completion`], which records the metrics, ends the span and writes the access
//! log. [`ClientBody`] is the request body on its way to the app; it notes whether the client
//! finished it or broke it, so a client's fault is not booked as the app's.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// How a response body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEnd {
    /// Every byte was passed on.
    Complete,
    /// The app's side failed mid-body.
    Failed,
    /// Dropped before its end: the client went away.
    Abandoned,
}

/// What to do once a response has been sent (or abandoned).
pub trait Completion: Send {
    /// `body_bytes`: response body bytes passed to the client.
    fn complete(self: Box<Self>, body_bytes: u64, end: BodyEnd);
}

/// A proxied or pillion-made response body.
pub struct ProxyBody {
    inner: Inner,
    bytes: u64,
    failed: bool,
    completion: Option<Box<dyn Completion>>,
}

enum Inner {
    Upstream(Incoming),
    Boxed(UnsyncBoxBody<Bytes, hyper::Error>),
    Text(Option<Bytes>),
}

impl ProxyBody {
    pub fn upstream(body: Incoming) -> ProxyBody {
        ProxyBody { inner: Inner::Upstream(body), bytes: 0, failed: false, completion: None }
    }

    pub fn boxed<B>(body: B) -> ProxyBody
    where
        B: Body<Data = Bytes, Error = hyper::Error> + Send + 'static,
    {
        ProxyBody { inner: Inner::Boxed(body.boxed_unsync()), bytes: 0, failed: false, completion: None }
    }

    pub fn text(text: &'static str) -> ProxyBody {
        ProxyBody {
            inner: Inner::Text(Some(Bytes::from_static(text.as_bytes()))),
            bytes: 0,
            failed: false,
            completion: None,
        }
    }

    pub fn empty() -> ProxyBody {
        ProxyBody { inner: Inner::Text(None), bytes: 0, failed: false, completion: None }
    }

    /// Runs `completion` when this body is done.
    pub fn on_complete(mut self, completion: Box<dyn Completion>) -> ProxyBody {
        self.completion = Some(completion);
        self
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        if let Some(completion) = self.completion.take() {
            let end = if self.failed {
                BodyEnd::Failed
            } else if self.is_end_stream() {
                BodyEnd::Complete
            } else {
                BodyEnd::Abandoned
            };
            completion.complete(self.bytes, end);
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let frame = match &mut this.inner {
            Inner::Upstream(body) => ready!(Pin::new(body).poll_frame(cx)),
            Inner::Boxed(body) => ready!(Pin::new(body).poll_frame(cx)),
            Inner::Text(text) => text.take().map(|bytes| Ok(Frame::data(bytes))),
        };
        match &frame {
            Some(Ok(frame)) => this.bytes += frame.data_ref().map_or(0, |d| d.len() as u64),
            Some(Err(_)) => this.failed = true,
            None => this.inner = Inner::Text(None),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Upstream(body) => body.is_end_stream(),
            Inner::Boxed(body) => body.is_end_stream(),
            Inner::Text(text) => text.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(body) => body.size_hint(),
            Inner::Boxed(body) => body.size_hint(),
            Inner::Text(text) => SizeHint::with_exact(text.as_ref().map_or(0, |t| t.len() as u64)),
        }
    }
}

/// The request body as the client sends it, watched on its way to the app.
pub struct ClientBody {
    inner: Incoming,
    state: Arc<BodyState>,
}

/// What became of a request body; shared between the body and the request path.
#[derive(Debug)]
pub struct BodyState(AtomicU8);

impl Default for BodyState {
    fn default() -> Self {
        BodyState(AtomicU8::new(BODY_PENDING))
    }
}

const BODY_PENDING: u8 = 0;
const BODY_DONE: u8 = 1;
const BODY_BROKEN: u8 = 2;

impl BodyState {
    /// The client sent the whole body.
    pub fn is_done(&self) -> bool {
        self.0.load(Ordering::Relaxed) == BODY_DONE
    }

    /// The client's body was malformed or cut short (bad chunking, early close).
    pub fn is_broken(&self) -> bool {
        self.0.load(Ordering::Relaxed) == BODY_BROKEN
    }
}

impl ClientBody {
    pub fn new(inner: Incoming) -> (ClientBody, Arc<BodyState>) {
        let state = Arc::new(BodyState::default());
        if inner.is_end_stream() {
            state.0.store(BODY_DONE, Ordering::Relaxed);
        }
        (ClientBody { inner, state: Arc::clone(&state) }, state)
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            Some(Err(_)) => self.state.0.store(BODY_BROKEN, Ordering::Relaxed),
            None => self.state.0.store(BODY_DONE, Ordering::Relaxed),
            Some(Ok(_)) if self.inner.is_end_stream() => self.state.0.store(BODY_DONE, Ordering::Relaxed),
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    struct Recorder(Arc<AtomicU64>);

    impl Completion for Recorder {
        fn complete(self: Box<Self>, body_bytes: u64, end: BodyEnd) {
            assert_eq!(end, BodyEnd::Complete);
            self.0.store(body_bytes + 1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn completion_runs_once_with_the_bytes_sent() {
        let seen = Arc::new(AtomicU64::new(0));
        let body = ProxyBody::text("bad gateway\n").on_complete(Box::new(Recorder(Arc::clone(&seen))));
        let collected = body.collect().await.expect("collect").to_bytes();
        assert_eq!(&collected[..], b"bad gateway\n");
        assert_eq!(seen.load(Ordering::SeqCst), 13);
    }
}
