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
//! It also counts the bytes of chunked bodies, whose size no header announces: past
//! `max_body` the connection reads as ended (hyper fails the body) and the flag says why, so the shield
//! answers 413 instead of letting an endless upload stream through.
//!
//! The inspector never changes bytes. It stops following (and never flags) on HTTP/2,
//! on upgrades, and on input it cannot frame, which hyper refuses by itself anyway.

use std::future::Future;
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

/// What the inspector found on a connection, shared with the requests read from it.
#[derive(Debug, Clone, Default)]
pub struct Flag(Arc<(AtomicBool, AtomicBool)>);

impl Flag {
    /// Whether an ambiguous head was seen.
    pub fn is_raised(&self) -> bool {
        self.0.0.load(Ordering::Acquire)
    }

    /// Whether a chunked body ran past the body limit.
    pub fn body_too_large(&self) -> bool {
        self.0.1.load(Ordering::Acquire)
    }

    fn raise(&self) {
        self.0.0.store(true, Ordering::Release);
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
    // On the bytes: no copy, no lowercased names, line ends and colons found by memchr
    // (this runs for every request).
    let mut rest = head;
    let mut lines = std::iter::from_fn(|| {
        if rest.is_empty() {
            return None;
        }
        let (line, after) = match memchr::memchr(b'\n', rest) {
            Some(n) => (&rest[..n], &rest[n + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = after;
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    });
    let request_line = lines.next().unwrap_or_default();
    if request_line.starts_with(b"PRI ") || request_line.starts_with(b"CONNECT ") {
        return Head::Stop;
    }
    let (mut cl, mut te, mut len, mut chunked, mut upgrade) = (0, 0, None, false, false);
    for line in lines {
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let name = line[..colon].trim_ascii();
        let value = line[colon + 1..].trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            cl += 1;
            len = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<u64>().ok());
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            te += 1;
            chunked = value.eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade = true;
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
    max_body: u64,
    /// Chunk data of the current chunked body so far.
    body: u64,
    flag: Flag,
}

impl Inspector {
    /// An inspector raising `flag`; heads longer than `max_head` are left to hyper;
    /// chunked bodies longer than `max_body` fail the read.
    pub fn new(flag: Flag, max_head: usize, max_body: u64) -> Self {
        Inspector {
            state: State::Head(Vec::new()),
            max_head,
            max_body,
            body: 0,
            flag,
        }
    }

    /// Where the current request stands: between requests, in its head, in its body.
    pub fn phase(&self) -> Phase {
        match &self.state {
            State::Head(buf) if !buf.is_empty() => Phase::Head,
            State::Head(_) | State::Done => Phase::Idle,
            State::Fixed(_) | State::ChunkSize(_) | State::ChunkData(_) | State::Trailers(_) => {
                Phase::Body
            }
        }
    }

    /// Feeds the next bytes of the stream; when a chunked body passes the limit, `Err`
    /// with how many of `bytes` came before the chunk that passed it.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), BodyTooLarge> {
        if self.flag.body_too_large() {
            return Err(BodyTooLarge(0));
        }
        match self.follow(bytes) {
            Some(kept) => Err(BodyTooLarge(kept)),
            None => Ok(()),
        }
    }

    /// Follows `bytes`; `Some(offset)` when a chunk at `offset` passed the body limit.
    fn follow(&mut self, mut bytes: &[u8]) -> Option<usize> {
        let total = bytes.len();
        while !bytes.is_empty() {
            match &mut self.state {
                State::Done => return None,
                State::Head(buf) => {
                    // Empty lines between messages are allowed (RFC 9112 2.2).
                    if buf.is_empty() {
                        let skip = bytes
                            .iter()
                            .position(|b| *b != b'\r' && *b != b'\n')
                            .unwrap_or(bytes.len());
                        bytes = &bytes[skip..];
                        if bytes.is_empty() {
                            return None;
                        }
                    }
                    let Some(end) = find_head_end(buf, bytes) else {
                        buf.extend_from_slice(bytes);
                        if buf.len() > self.max_head {
                            self.state = State::Done;
                        }
                        return None;
                    };
                    // A head that arrived in one read (nearly all) is parsed where it
                    // lies; only one split across reads was collected.
                    let head = if buf.is_empty() {
                        parse_head(&bytes[..end])
                    } else {
                        buf.extend_from_slice(&bytes[..end]);
                        parse_head(buf)
                    };
                    bytes = &bytes[end..];
                    self.state = match head {
                        Head::Ambiguous => {
                            self.flag.raise();
                            State::Done
                        }
                        Head::NoBody => State::Head(Vec::new()),
                        Head::Fixed(n) => State::Fixed(n),
                        Head::Chunked => {
                            self.body = 0;
                            State::ChunkSize(Vec::new())
                        }
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
                        return None;
                    };
                    line.extend_from_slice(&bytes[..nl]);
                    bytes = &bytes[nl + 1..];
                    let text = String::from_utf8_lossy(line);
                    let size = text.split(';').next().unwrap_or("").trim();
                    self.state = match u64::from_str_radix(size, 16) {
                        Ok(0) => State::Trailers(Vec::new()),
                        // The data, then its CRLF.
                        Ok(n) if n < u64::MAX / 2 => {
                            self.body = self.body.saturating_add(n);
                            if self.body > self.max_body {
                                self.flag.0.1.store(true, Ordering::Release);
                                self.state = State::Done;
                                return Some(total - bytes.len());
                            }
                            State::ChunkData(n + 2)
                        }
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
                        return None;
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
        None
    }
}

/// A chunked request body passed the body limit; the bytes of the read to keep (what
/// came before the offending chunk's data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTooLarge(pub usize);

/// The index in `next` just past the blank line that ends a head (`\n\n` or `\n\r\n`),
/// looking across the boundary with what `buf` already holds.
fn find_head_end(buf: &[u8], next: &[u8]) -> Option<usize> {
    let tail = &buf[buf.len().saturating_sub(2)..];
    // The byte `back` places before `next[i]`, reaching into `tail`.
    let before = |i: usize, back: usize| -> Option<u8> {
        match i.checked_sub(back) {
            Some(j) => Some(next[j]),
            None => tail.len().checked_sub(back - i).map(|j| tail[j]),
        }
    };
    memchr::memchr_iter(b'\n', next)
        .find(|&i| {
            before(i, 1) == Some(b'\n')
                || (before(i, 1) == Some(b'\r') && before(i, 2) == Some(b'\n'))
        })
        .map(|i| i + 1)
}

/// Where a request stands in the byte stream, for the read deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Between requests (or no longer followed).
    Idle,
    /// Part of a head has arrived.
    Head,
    /// The head is complete and the body is arriving.
    Body,
}

/// How long a request's head and body may take to arrive.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// From a head's first byte to its blank line.
    pub head: std::time::Duration,
    /// From the end of the head to the end of the body.
    pub body: std::time::Duration,
}

/// Makes the answer that replaces hyper's own bare 431 (see [`Inspected::refusing`]):
/// the whole response, head and problem+json body.
#[derive(Clone)]
pub struct BareRefusal(pub Arc<RefusalFn>);

/// Given hyper's answer head, the whole replacement answer.
pub type RefusalFn = dyn Fn(&[u8]) -> Vec<u8> + Send + Sync;

impl std::fmt::Debug for BareRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BareRefusal")
    }
}

/// A client connection whose reads pass through an [`Inspector`].
#[derive(Debug)]
pub struct Inspected<T> {
    io: T,
    inspector: Inspector,
    deadlines: Deadlines,
    /// Armed while a head or body is in progress (one allocation per connection, then
    /// reset).
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The phase the deadline was armed for.
    armed: Phase,
    /// Replaces a bare 431 from hyper, when set.
    refusal: Option<BareRefusal>,
    /// The replacement being written, and how much of it is out.
    pending: Option<(Vec<u8>, usize)>,
    /// A replacement was made: everything hyper writes after it is dropped (it closes
    /// the connection after its error answer anyway).
    swallow: bool,
}

/// Whether `head` starts hyper's own 431: the answer it writes itself, with no body, for
/// a head past its header-line or buffer limit. Every 431 of ours carries a
/// problem+json body, so never `content-length: 0`.
fn is_bare_431(head: &[u8]) -> bool {
    (head.starts_with(b"HTTP/1.1 431 ") || head.starts_with(b"HTTP/1.0 431 "))
        && head
            .windows(b"\r\ncontent-length: 0\r\n".len())
            .any(|w| w == b"\r\ncontent-length: 0\r\n")
}

impl<T> Inspected<T> {
    /// Wraps `io`. A request head must arrive within `deadlines.head` of its first byte
    /// and its body within `deadlines.body` of the head, or reads fail with `TimedOut`
    /// (hyper then drops the connection): the bounds on slow-loris heads and slow-POST
    /// bodies. Idle time between requests is bounded separately (hyper's header timer,
    /// `limits.idle_timeout`).
    pub fn new(io: T, inspector: Inspector, deadlines: Deadlines) -> Self {
        Inspected {
            io,
            inspector,
            deadlines,
            deadline: None,
            armed: Phase::Idle,
            refusal: None,
            pending: None,
            swallow: false,
        }
    }

    /// The same connection, with hyper's own bare 431 (a head past hyper's limits, which
    /// it answers before any layer of ours sees the request) replaced by what `refusal`
    /// makes of it. hyper's limits are kept at its inline sizes for speed (no heap
    /// arrays per request), so this is how a head with more lines than hyper holds still
    /// gets problem+json.
    pub fn refusing(mut self, refusal: BareRefusal) -> Self {
        self.refusal = Some(refusal);
        self
    }
}

impl<T: AsyncWrite + Unpin> Inspected<T> {
    /// Writes out the pending replacement.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, at)) = &mut self.pending {
            if *at >= bytes.len() {
                self.pending = None;
                break;
            }
            let n = std::task::ready!(Pin::new(&mut self.io).poll_write(cx, &bytes[*at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *at += n;
        }
        Poll::Ready(Ok(()))
    }

    /// For a write of `len` bytes starting with `head`: `Some` when it is taken over (a
    /// bare 431 replaced, or anything after one), `None` to pass it through.
    fn take_over(
        &mut self,
        cx: &mut Context<'_>,
        head: &[u8],
        len: usize,
    ) -> Option<Poll<io::Result<usize>>> {
        if !self.swallow {
            let refusal = self.refusal.as_ref().filter(|_| is_bare_431(head))?;
            self.pending = Some(((refusal.0)(head), 0));
            self.swallow = true;
        }
        Some(self.drain(cx).map_ok(|()| len))
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
        if this.inspector.flag.body_too_large() {
            // The client sees the end of its input: hyper ends the body with an error and
            // can still write the 413.
            return Poll::Ready(Ok(()));
        }
        let res = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &res
            && let Err(BodyTooLarge(kept)) = this.inspector.feed(&buf.filled()[before..])
        {
            buf.set_filled(before + kept);
        }
        let phase = this.inspector.phase();
        if phase != this.armed {
            let limit = match phase {
                Phase::Head => Some(this.deadlines.head),
                Phase::Body => Some(this.deadlines.body),
                Phase::Idle => None,
            };
            if let Some(limit) = limit {
                let at = tokio::time::Instant::now() + limit;
                match &mut this.deadline {
                    Some(d) => d.as_mut().reset(at),
                    None => this.deadline = Some(Box::pin(tokio::time::sleep_until(at))),
                }
            }
            this.armed = phase;
        }
        if res.is_pending()
            && this.armed != Phase::Idle
            && let Some(d) = &mut this.deadline
            && d.as_mut().poll(cx).is_ready()
        {
            let what = match this.armed {
                Phase::Body => "request body not received within the body timeout",
                _ => "request head not received within the header timeout",
            };
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)));
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
        let this = &mut *self;
        if this.refusal.is_some()
            && let Some(p) = this.take_over(cx, buf, buf.len())
        {
            return p;
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.drain(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.drain(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.refusal.is_some() {
            let head = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &b[..]);
            let len = bufs.iter().map(|b| b.len()).sum();
            if let Some(p) = this.take_over(cx, head, len) {
                return p;
            }
        }
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn flagged(chunks: &[&[u8]]) -> bool {
        let flag = Flag::default();
        let mut i = Inspector::new(flag.clone(), 64 * 1024, 1 << 20);
        for c in chunks {
            let _ = i.feed(c);
        }
        flag.is_raised()
    }

    #[test]
    fn only_hypers_own_bodyless_431_is_taken_for_a_bare_refusal() {
        assert!(is_bare_431(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n"
        ));
        assert!(!is_bare_431(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 181\r\n\r\n{}"
        ));
        assert!(!is_bare_431(
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
        ));
    }

    #[tokio::test]
    async fn a_bare_431_is_replaced_whole_and_what_follows_it_is_dropped() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (a, mut b) = tokio::io::duplex(64);
        let io = Inspected::new(
            a,
            Inspector::new(Flag::default(), 1024, 1024),
            Deadlines {
                head: std::time::Duration::from_secs(5),
                body: std::time::Duration::from_secs(5),
            },
        )
        .refusing(BareRefusal(Arc::new(|_: &[u8]| vec![b'r'; 300])));
        let writer = tokio::spawn(async move {
            let mut io = io;
            io.write_all(b"HTTP/1.1 431 Too Large\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
            io.write_all(b"more").await.unwrap();
            io.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got, vec![b'r'; 300]);
    }

    #[test]
    fn a_head_end_is_found_wherever_the_reads_split_it() {
        for (head, end) in [
            (&b"GET / HTTP/1.1\r\nhost: a\r\n\r\nGET"[..], 27),
            (b"GET / HTTP/1.1\nhost: a\n\nGET", 24),
            (b"GET / HTTP/1.1\r\nhost: a\n\r\nGET", 26),
        ] {
            assert_eq!(find_head_end(b"", head), Some(end), "{head:?} whole");
            for at in 1..end {
                let (buf, next) = head.split_at(at);
                assert_eq!(
                    find_head_end(&buf[..at], next),
                    Some(end - at),
                    "{head:?} at {at}"
                );
                assert_eq!(
                    find_head_end(b"", &head[..at]),
                    None,
                    "{head:?} cut at {at}"
                );
            }
        }
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n", b"\r\n"), Some(2));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r", b"\n\r\n"), Some(3));
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
    fn a_chunked_body_past_the_limit_fails_the_read_and_says_so() {
        let flag = Flag::default();
        let mut i = Inspector::new(flag.clone(), 64 * 1024, 10);
        let ok: &[u8] = b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n";
        assert_eq!(i.feed(ok), Ok(()));
        // The count starts again with each body.
        assert_eq!(i.feed(ok), Ok(()));
        let over: &[u8] =
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\nworld!\r\n";
        // Kept: the head, the first chunk and the size line of the one past the limit.
        let kept = over.len() - b"world!\r\n".len();
        assert_eq!(i.feed(over), Err(BodyTooLarge(kept)));
        assert!(flag.body_too_large() && !flag.is_raised());
        assert_eq!(i.feed(b"0\r\n\r\n"), Err(BodyTooLarge(0)));
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
