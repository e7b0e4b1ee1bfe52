//! The response body the proxy sends: the app's body streamed frame by frame (never
//! buffered), or a short text for errors pillion answers itself. It counts the bytes it
//! passes, and when hyper drops it (body sent, or client gone) it runs the request's
//! [`Completion`], which records the metrics, ends the span and writes the access log.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// What to do once a response has been sent (or abandoned).
pub trait Completion: Send {
    /// `body_bytes`: response body bytes passed to the client.
    fn complete(self: Box<Self>, body_bytes: u64);
}

/// A proxied or pillion-made response body.
pub struct ProxyBody {
    inner: Inner,
    bytes: u64,
    completion: Option<Box<dyn Completion>>,
}

enum Inner {
    Upstream(Incoming),
    Boxed(UnsyncBoxBody<Bytes, hyper::Error>),
    Text(Option<Bytes>),
}

impl ProxyBody {
    pub fn upstream(body: Incoming) -> ProxyBody {
        ProxyBody { inner: Inner::Upstream(body), bytes: 0, completion: None }
    }

    pub fn boxed<B>(body: B) -> ProxyBody
    where
        B: Body<Data = Bytes, Error = hyper::Error> + Send + 'static,
    {
        ProxyBody { inner: Inner::Boxed(body.boxed_unsync()), bytes: 0, completion: None }
    }

    pub fn text(text: &'static str) -> ProxyBody {
        ProxyBody { inner: Inner::Text(Some(Bytes::from_static(text.as_bytes()))), bytes: 0, completion: None }
    }

    pub fn empty() -> ProxyBody {
        ProxyBody { inner: Inner::Text(None), bytes: 0, completion: None }
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
            completion.complete(self.bytes);
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
        if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(Frame::data_ref)) {
            this.bytes += data.map_or(0, |d| d.len() as u64);
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    struct Recorder(Arc<AtomicU64>);

    impl Completion for Recorder {
        fn complete(self: Box<Self>, body_bytes: u64) {
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
