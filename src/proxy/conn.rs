//! Per-connection timeouts that mean what they say. `header_read` bounds the time from accept
//! (and, on a kept-alive connection, from the first byte of the next request) until a request
//! head is complete; `idle` bounds the quiet time between the end of one response and the next
//! request's first byte. Requests in flight are the request timeout's business, not these.
//!
//! The connection's reads go through [`Watched`], which notes the first byte of a new head;
//! [`Activity`] counts requests in flight; [`watch`] resolves when the connection must close.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// The two connection timeouts.
#[derive(Debug, Clone, Copy)]
pub struct ConnTimeouts {
    pub header_read: Duration,
    pub idle: Duration,
}

/// What a connection is doing, for its timeouts.
#[derive(Debug)]
pub struct Activity {
    epoch: Instant,
    /// Milliseconds since `epoch` when the last response ended (0: none yet, since accept).
    last_end_ms: AtomicU64,
    /// Milliseconds since `epoch` when the first byte of the next head arrived.
    head_start_ms: AtomicU64,
    /// Bytes of a new head have arrived since the last response ended.
    head_started: AtomicBool,
    /// At least one request head has been complete on this connection.
    served: AtomicBool,
    in_flight: AtomicUsize,
}

/// Why a connection's timeouts closed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// A request head took longer than `header_read`.
    HeaderRead,
    /// Nothing happened for `idle` after a response.
    Idle,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            epoch: Instant::now(),
            last_end_ms: AtomicU64::new(0),
            head_start_ms: AtomicU64::new(0),
            head_started: AtomicBool::new(false),
            served: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// A request head is complete and its request is being served.
    pub fn request_started(&self) {
        self.served.store(true, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// A request's response is over (sent, failed or abandoned).
    pub fn request_finished(&self) {
        self.last_end_ms.store(self.now_ms(), Ordering::Relaxed);
        self.head_started.store(false, Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Bytes arrived from the client: with nothing in flight they start the next head.
    fn bytes_read(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0 && !self.head_started.load(Ordering::Relaxed) {
            self.head_start_ms.store(self.now_ms(), Ordering::Relaxed);
            self.head_started.store(true, Ordering::Relaxed);
        }
    }

    /// `Err` when the connection has run out of time; else when to look again.
    fn deadline(&self, timeouts: ConnTimeouts) -> Result<Instant, Expired> {
        let now = Instant::now();
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Ok(now + timeouts.header_read.min(timeouts.idle));
        }
        let at = |ms: u64| self.epoch + Duration::from_millis(ms);
        let (deadline, why) = if !self.served.load(Ordering::Relaxed) {
            // The first head: from accept.
            (self.epoch + timeouts.header_read, Expired::HeaderRead)
        } else if self.head_started.load(Ordering::Relaxed) {
            (at(self.head_start_ms.load(Ordering::Relaxed)) + timeouts.header_read, Expired::HeaderRead)
        } else {
            (at(self.last_end_ms.load(Ordering::Relaxed)) + timeouts.idle, Expired::Idle)
        };
        if deadline > now { Ok(deadline) } else { Err(why) }
    }
}

/// Resolves when the connection has outlived its header-read or idle timeout.
pub async fn watch(activity: &Activity, timeouts: ConnTimeouts) -> Expired {
    loop {
        match activity.deadline(timeouts) {
            Ok(next) => tokio::time::sleep_until(next).await,
            Err(why) => return why,
        }
    }
}

/// A connection's IO, noting in its [`Activity`] when a new request head begins.
pub struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> Watched<T> {
    pub fn new(inner: T, activity: Arc<Activity>) -> Watched<T> {
        Watched { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.bytes_read();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUTS: ConnTimeouts = ConnTimeouts { header_read: Duration::from_secs(2), idle: Duration::from_secs(90) };

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_closes_at_header_read() {
        let activity = Activity::new();
        let started = Instant::now();
        assert_eq!(watch(&activity, TIMEOUTS).await, Expired::HeaderRead);
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn kept_alive_connections_wait_for_idle_then_header_read_from_the_first_byte() {
        let activity = Activity::new();
        activity.bytes_read();
        activity.request_started();
        tokio::time::advance(Duration::from_secs(5)).await;
        activity.request_finished();
        // Quiet for longer than header_read: still open.
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(activity.deadline(TIMEOUTS).is_ok());
        // A head starts and never completes: closed header_read later.
        activity.bytes_read();
        let started = Instant::now();
        assert_eq!(watch(&activity, TIMEOUTS).await, Expired::HeaderRead);
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_applies_between_requests() {
        let activity = Activity::new();
        activity.request_started();
        activity.request_finished();
        let started = Instant::now();
        assert_eq!(watch(&activity, TIMEOUTS).await, Expired::Idle);
        assert_eq!(started.elapsed(), Duration::from_secs(90));
    }
}
