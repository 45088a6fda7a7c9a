//! Request-smuggling defence below hyper: an inspector on each client connection that
//! follows HTTP/1 message framing byte by byte and flags the connection when a request
//! head is ambiguous.
//!
//! hyper resolves ambiguity itself (with both `Content-Length` and `Transfer-Encoding`
//! it drops `Content-Length`, decodes chunked and closes the connection afterwards; of
//! equal duplicate `Content-Length`s it keeps one), so by the time a request reaches the
//! edge's layers the evidence is gone. A proxy should refuse such requests outright
//! (RFC 9112 6.3): they are how smuggling is attempted, and no honest client sends
//! them. So the inspector reads the same bytes hyper reads — heads, fixed-length bodies,
//! chunked bodies with their size lines and trailers — counts `Content-Length` and
//! `Transfer-Encoding` lines per head, and on an ambiguous head raises the connection's
//! [`Flag`]. The shield refuses every request of a flagged connection with 400 and
//! closes it, so neither the request nor anything smuggled behind it reaches a service.
//!
//! The inspector never changes bytes. It stops following (and never flags) on HTTP/2,
//! on upgrades, and on input it cannot frame, which hyper refuses by itself anyway.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Raised when a request head on the connection had ambiguous framing.
#[derive(Debug, Clone, Default)]
pub struct Flag(Arc<AtomicBool>);

impl Flag {
    /// Whether an ambiguous head was seen.
    pub fn is_raised(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn raise(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Where the inspector is in the byte stream.
#[derive(Debug)]
enum State {
    /// Collecting a request head (bounded by `max_head`).
    Head(Vec<u8>),
    /// Skipping this many body bytes.
    Fixed(u64),
    /// Reading a chunk-size line.
    ChunkSize(Vec<u8>),
    /// Skipping chunk data plus its CRLF.
    ChunkData(u64),
    /// Reading trailer lines after the last chunk; holds the current line.
    Trailers(Vec<u8>),
    /// Not following any more (HTTP/2, upgrade, unframeable input, or flagged).
    Done,
}

/// The framing of one head.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    Ambiguous,
    NoBody,
    Fixed(u64),
    Chunked,
    /// Stop following: HTTP/2 preface, upgrade, CONNECT, or something hyper will refuse.
    Stop,
}

fn parse_head(head: &[u8]) -> Head {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split('\n').map(|l| l.trim_end_matches('\r'));
    let request_line = lines.next().unwrap_or("");
    if request_line.starts_with("PRI ") || request_line.starts_with("CONNECT ") {
        return Head::Stop;
    }
    let (mut cl, mut te, mut len, mut chunked, mut upgrade) = (0, 0, None, false, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        let value = value.trim();
        match name.as_str() {
            "content-length" => {
                cl += 1;
                len = value.parse::<u64>().ok();
            }
            "transfer-encoding" => {
                te += 1;
                chunked = value.eq_ignore_ascii_case("chunked");
            }
            "upgrade" => upgrade = true,
            _ => {}
        }
    }
    if (cl > 0 && te > 0) || cl > 1 || te > 1 {
        return Head::Ambiguous;
    }
    if upgrade {
        return Head::Stop;
    }
    match (te, cl, len, chunked) {
        (1, _, _, true) => Head::Chunked,
        (1, _, _, false) => Head::Stop,
        (0, 1, Some(0), _) => Head::NoBody,
        (0, 1, Some(n), _) => Head::Fixed(n),
        (0, 1, None, _) => Head::Stop,
        _ => Head::NoBody,
    }
}

/// Follows the framing of the bytes read from a client.
#[derive(Debug)]
pub struct Inspector {
    state: State,
    max_head: usize,
    flag: Flag,
}

impl Inspector {
    /// An inspector raising `flag`; heads longer than `max_head` are left to hyper.
    pub fn new(flag: Flag, max_head: usize) -> Self {
        Inspector {
            state: State::Head(Vec::new()),
            max_head,
            flag,
        }
    }

    /// Feeds the next bytes of the stream.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Done => return,
                State::Head(buf) => {
                    // Empty lines between messages are allowed (RFC 9112 2.2).
                    if buf.is_empty() {
                        let skip = bytes
                            .iter()
                            .position(|b| *b != b'\r' && *b != b'\n')
                            .unwrap_or(bytes.len());
                        bytes = &bytes[skip..];
                        if bytes.is_empty() {
                            return;
                        }
                    }
                    let Some(end) = find_head_end(buf, bytes) else {
                        buf.extend_from_slice(bytes);
                        if buf.len() > self.max_head {
                            self.state = State::Done;
                        }
                        return;
                    };
                    buf.extend_from_slice(&bytes[..end]);
                    bytes = &bytes[end..];
                    self.state = match parse_head(buf) {
                        Head::Ambiguous => {
                            self.flag.raise();
                            State::Done
                        }
                        Head::NoBody => State::Head(Vec::new()),
                        Head::Fixed(n) => State::Fixed(n),
                        Head::Chunked => State::ChunkSize(Vec::new()),
                        Head::Stop => State::Done,
                    };
                }
                State::Fixed(n) => {
                    let take = (*n).min(bytes.len() as u64);
                    *n -= take;
                    bytes = &bytes[take as usize..];
                    if *n == 0 {
                        self.state = State::Head(Vec::new());
                    }
                }
                State::ChunkSize(line) => {
                    let Some(nl) = bytes.iter().position(|b| *b == b'\n') else {
                        line.extend_from_slice(bytes);
                        if line.len() > 1024 {
                            self.state = State::Done;
                        }
                        return;
                    };
                    line.extend_from_slice(&bytes[..nl]);
                    bytes = &bytes[nl + 1..];
                    let text = String::from_utf8_lossy(line);
                    let size = text.split(';').next().unwrap_or("").trim();
                    self.state = match u64::from_str_radix(size, 16) {
                        Ok(0) => State::Trailers(Vec::new()),
                        // The data, then its CRLF.
                        Ok(n) if n < u64::MAX / 2 => State::ChunkData(n + 2),
                        _ => State::Done,
                    };
                }
                State::ChunkData(n) => {
                    let take = (*n).min(bytes.len() as u64);
                    *n -= take;
                    bytes = &bytes[take as usize..];
                    if *n == 0 {
                        self.state = State::ChunkSize(Vec::new());
                    }
                }
                State::Trailers(line) => {
                    let Some(nl) = bytes.iter().position(|b| *b == b'\n') else {
                        line.extend_from_slice(bytes);
                        if line.len() > self.max_head {
                            self.state = State::Done;
                        }
                        return;
                    };
                    let empty = line.iter().chain(&bytes[..nl]).all(|b| *b == b'\r');
                    bytes = &bytes[nl + 1..];
                    self.state = if empty {
                        State::Head(Vec::new())
                    } else {
                        State::Trailers(Vec::new())
                    };
                }
            }
        }
    }
}

/// The index in `next` just past the blank line that ends a head (`\n\n` or `\n\r\n`),
/// looking across the boundary with what `buf` already holds.
fn find_head_end(buf: &[u8], next: &[u8]) -> Option<usize> {
    let tail = &buf[buf.len().saturating_sub(2)..];
    let at = |i: isize| -> Option<u8> {
        if i < 0 {
            let j = tail.len() as isize + i;
            (j >= 0).then(|| tail[j as usize])
        } else {
            next.get(i as usize).copied()
        }
    };
    for i in 0..next.len() as isize {
        if next[i as usize] != b'\n' {
            continue;
        }
        if at(i - 1) == Some(b'\n') || (at(i - 1) == Some(b'\r') && at(i - 2) == Some(b'\n')) {
            return Some(i as usize + 1);
        }
    }
    None
}

/// A client connection whose reads pass through an [`Inspector`].
#[derive(Debug)]
pub struct Inspected<T> {
    io: T,
    inspector: Inspector,
}

impl<T> Inspected<T> {
    /// Wraps `io`.
    pub fn new(io: T, inspector: Inspector) -> Self {
        Inspected { io, inspector }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Inspected<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let res = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &res {
            this.inspector.feed(&buf.filled()[before..]);
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Inspected<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flagged(chunks: &[&[u8]]) -> bool {
        let flag = Flag::default();
        let mut i = Inspector::new(flag.clone(), 64 * 1024);
        for c in chunks {
            i.feed(c);
        }
        flag.is_raised()
    }

    #[test]
    fn ambiguous_heads_raise_the_flag() {
        assert!(flagged(&[
            b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        ]));
        assert!(flagged(&[
            b"POST / HTTP/1.1\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\nhello"
        ]));
        assert!(flagged(&[
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n"
        ]));
    }

    #[test]
    fn well_framed_pipelined_requests_and_bodies_that_look_like_heads_do_not() {
        // The bodies contain header-like text; framing says they are bodies.
        let msg: &[u8] = b"POST / HTTP/1.1\r\ncontent-length: 46\r\n\r\nx\r\ncontent-length: 1\r\ntransfer-encoding: x\r\n\r\nGET / HTTP/1.1\r\nhost: a\r\n\r\nPOST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n2e;ext=1\r\nx\r\ncontent-length: 1\r\ntransfer-encoding: x\r\n\r\n\r\n0\r\nx-trailer: 1\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        assert!(!flagged(&[msg]));
        // The same bytes one at a time.
        let singles: Vec<&[u8]> = msg.chunks(1).collect();
        assert!(!flagged(&singles));
        // ...and an ambiguous head after them is still seen.
        let mut all = msg.to_vec();
        all.extend_from_slice(
            b"POST / HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 1\r\n\r\nx",
        );
        assert!(flagged(&[&all]));
    }

    #[test]
    fn http2_and_upgrades_stop_the_inspection() {
        assert!(!flagged(&[
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"content-length: 1\r\ncontent-length: 1\r\n\r\n"
        ]));
        assert!(!flagged(&[
            b"GET / HTTP/1.1\r\nupgrade: websocket\r\n\r\n",
            b"POST / HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 1\r\n\r\n"
        ]));
    }
}
