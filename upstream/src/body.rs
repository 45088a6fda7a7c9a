//! The request body sent to instances: buffered, so it can be replayed by retries and
//! hedges, or streamed once; never longer than the route's body limit.
//!
//! A body that fails on the client's side (longer than the limit, or cut off) fails with
//! a [`RequestBodyError`]. It travels through the client as the cause of the attempt's
//! error, so the stack can tell it apart from a failure of the instance: such an attempt
//! is not retried, not counted by the breaker, and answered 413 (or 400).

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::{
    pin::Pin,
    task::{Context, Poll},
};

/// Why a client's request body could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    /// It is longer than the route's body limit.
    #[error("the request body is larger than {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// Reading it from the client failed (cut off, malformed chunking).
    #[error("the request body could not be read")]
    Read(#[source] hyper::Error),
    /// It ended before, or went on after, the length its `Content-Length` announced.
    #[error("the request body's length is not the length it announced")]
    Length,
}

/// A request body on its way to an instance.
#[derive(Debug)]
pub enum ProxyBody {
    /// Fully buffered: cheap to clone, so the request can be retried or hedged.
    Buffered(Option<Bytes>),
    /// Larger than the replay buffer: what was read so far, then the rest of the
    /// client's stream. Sent once, never retried; fails with
    /// [`RequestBodyError::TooLarge`] as soon as it passes `limit`.
    Streaming {
        /// Bytes read while trying to buffer.
        prefix: Option<Bytes>,
        /// The rest.
        rest: Incoming,
        /// Bytes of `rest` passed on so far, `prefix` included.
        seen: u64,
        /// The route's body limit.
        limit: u64,
    },
}

impl ProxyBody {
    /// An empty, replayable body.
    pub fn empty() -> Self {
        ProxyBody::Buffered(None)
    }

    /// A copy for another attempt, when the body is buffered.
    pub fn try_clone(&self) -> Option<ProxyBody> {
        match self {
            ProxyBody::Buffered(b) => Some(ProxyBody::Buffered(b.clone())),
            ProxyBody::Streaming { .. } => None,
        }
    }

    /// Reads `incoming` into memory when it fits in `cap` bytes; otherwise returns a
    /// streaming body that first replays what was read. A body longer than `limit`
    /// (announced by `Content-Length`, or found while buffering) is
    /// [`RequestBodyError::TooLarge`] before anything is sent; a streamed one fails
    /// with it when it passes `limit`.
    pub async fn buffer(
        mut incoming: Incoming,
        cap: usize,
        limit: u64,
    ) -> Result<ProxyBody, RequestBodyError> {
        if incoming.is_end_stream() {
            return Ok(ProxyBody::empty());
        }
        let lower = incoming.size_hint().lower();
        if lower > limit {
            return Err(RequestBodyError::TooLarge { limit });
        }
        if lower as usize > cap {
            return Ok(ProxyBody::Streaming {
                prefix: None,
                rest: incoming,
                seen: 0,
                limit,
            });
        }
        let mut buf: Option<bytes::BytesMut> = None;
        let mut first: Option<Bytes> = None;
        loop {
            match incoming.frame().await {
                None => break,
                Some(Err(e)) => return Err(RequestBodyError::Read(e)),
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    let held =
                        first.as_ref().map_or(0, Bytes::len) + buf.as_ref().map_or(0, |b| b.len());
                    if (held + data.len()) as u64 > limit {
                        return Err(RequestBodyError::TooLarge { limit });
                    }
                    if held + data.len() > cap {
                        let mut all = bytes::BytesMut::with_capacity(held + data.len());
                        if let Some(f) = first.take() {
                            all.extend_from_slice(&f);
                        }
                        if let Some(b) = buf.take() {
                            all.extend_from_slice(&b);
                        }
                        all.extend_from_slice(&data);
                        return Ok(ProxyBody::Streaming {
                            seen: all.len() as u64,
                            prefix: Some(all.freeze()),
                            rest: incoming,
                            limit,
                        });
                    }
                    // Most bodies arrive in one frame: keep it without copying.
                    match (&mut first, &mut buf) {
                        (None, None) => first = Some(data),
                        (Some(f), None) => {
                            let mut b = bytes::BytesMut::with_capacity(f.len() + data.len());
                            b.extend_from_slice(f);
                            b.extend_from_slice(&data);
                            first = None;
                            buf = Some(b);
                        }
                        (_, Some(b)) => b.extend_from_slice(&data),
                    }
                }
            }
        }
        Ok(ProxyBody::Buffered(
            first.or_else(|| buf.map(bytes::BytesMut::freeze)),
        ))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        match self.get_mut() {
            ProxyBody::Buffered(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Streaming {
                prefix,
                rest,
                seen,
                limit,
            } => {
                if let Some(p) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(p))));
                }
                let frame = std::task::ready!(Pin::new(rest).poll_frame(cx));
                Poll::Ready(frame.map(|f| {
                    let f = f.map_err(RequestBodyError::Read)?;
                    if let Some(d) = f.data_ref() {
                        *seen += d.len() as u64;
                        if *seen > *limit {
                            return Err(RequestBodyError::TooLarge { limit: *limit });
                        }
                    }
                    Ok(f)
                }))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Buffered(b) => b.is_none(),
            ProxyBody::Streaming { prefix, rest, .. } => prefix.is_none() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Buffered(b) => {
                SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64))
            }
            ProxyBody::Streaming { prefix, rest, .. } => {
                let p = prefix.as_ref().map_or(0, |b| b.len() as u64);
                let r = rest.size_hint();
                let mut h = SizeHint::new();
                h.set_lower(r.lower() + p);
                if let Some(u) = r.upper() {
                    h.set_upper(u + p);
                }
                h
            }
        }
    }
}
