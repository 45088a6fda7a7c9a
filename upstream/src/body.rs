//! The request body sent to instances: buffered, so it can be replayed by retries and
//! hedges, or streamed once.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::{
    pin::Pin,
    task::{Context, Poll},
};

/// A request body on its way to an instance.
#[derive(Debug)]
pub enum ProxyBody {
    /// Fully buffered: cheap to clone, so the request can be retried or hedged.
    Buffered(Option<Bytes>),
    /// Larger than the replay buffer: what was read so far, then the rest of the
    /// client's stream. Sent once, never retried.
    Streaming {
        /// Bytes read while trying to buffer.
        prefix: Option<Bytes>,
        /// The rest.
        rest: Incoming,
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
    /// streaming body that first replays what was read.
    pub async fn buffer(mut incoming: Incoming, cap: usize) -> Result<ProxyBody, hyper::Error> {
        if incoming.is_end_stream() {
            return Ok(ProxyBody::empty());
        }
        if incoming.size_hint().lower() as usize > cap {
            return Ok(ProxyBody::Streaming {
                prefix: None,
                rest: incoming,
            });
        }
        let mut buf: Option<bytes::BytesMut> = None;
        let mut first: Option<Bytes> = None;
        loop {
            match incoming.frame().await {
                None => break,
                Some(Err(e)) => return Err(e),
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    let held =
                        first.as_ref().map_or(0, Bytes::len) + buf.as_ref().map_or(0, |b| b.len());
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
                            prefix: Some(all.freeze()),
                            rest: incoming,
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
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Buffered(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Streaming { prefix, rest } => {
                if let Some(p) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(p))));
                }
                Pin::new(rest).poll_frame(cx)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Buffered(b) => b.is_none(),
            ProxyBody::Streaming { prefix, rest } => prefix.is_none() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Buffered(b) => {
                SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64))
            }
            ProxyBody::Streaming { prefix, rest } => {
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
