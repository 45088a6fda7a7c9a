//! The HTTP/1.1 client side of one keep-alive connection to an instance, written for the
//! proxy's one job: send a request, read the answer's head, stream its body, and hand the
//! connection back to its pool when the body has been read.
//!
//! It takes the place of hyper's client connection (see bench/README.md, issue 21,
//! eleventh and twelfth passes). hyper drives each connection from a task of its own: the
//! request goes to that task through a channel, the head comes back through a oneshot,
//! and the body through another channel, so every request wakes two tasks and crosses
//! three queues. Here the request's own future reads the socket, and writes it too but
//! for the common case (a request all in its buffer), whose write waits for the end of the
//! worker's turn so that the turn's requests go out together (`crate::batch`); an answer
//! whose body came with its head (the common case) is handed on as one buffer, and its
//! connection is back in the pool before the gateway has even looked at it.
//!
//! What it reads is checked as strictly as hyper checks it (RFC 9112): a malformed head,
//! a `Content-Length` that is not one number, bad chunking, or a connection closed inside
//! a message is an error, never a guess; `Transfer-Encoding` wins over `Content-Length`;
//! an answer framed by the connection's end, an `HTTP/1.0` one, one with
//! `Connection: close`, or one followed by bytes nobody asked for, leaves the connection
//! closed rather than reused.

use crate::body::{ProxyBody, RequestBodyError};
use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use hyper_util::rt::TokioIo;
use std::{
    io,
    mem::MaybeUninit,
    pin::Pin,
    task::{Context, Poll, ready},
};
use tokio::io::AsyncWrite;

/// The socket of a connection to an instance: TCP, or TLS over it.
pub(crate) type Io = TokioIo<hyper_rustls::MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>>;

/// Most header fields an answer may have (hyper's default is 100).
const MAX_HEADERS: usize = 100;
/// Longest head an answer may have (hyper's default read buffer is about 400 KB; an
/// instance's head is a few hundred bytes).
const MAX_HEAD: usize = 64 * 1024;
/// Longest chunk-size line, or trailer section, of a chunked body.
const MAX_CHUNK_LINE: usize = 4 * 1024;
const MAX_TRAILERS: usize = 16 * 1024;
/// How many fields the gateway may add to an answer before the client gets it.
const ADDED_ANSWER_FIELDS: usize = 6;
/// Write buffer room reserved for a request head's fields (a larger head grows it).
const HEAD_ROOM: usize = 1024;
/// Read buffer: what a read asks the socket for at least.
const READ_SPARE: usize = 8 * 1024;

/// The name of an answer's field. The ones instances send on nearly every answer are
/// recognised by their length and a case-blind comparison (about 30 instructions);
/// `HeaderName::from_bytes` lowercases a name through a table and then matches it
/// against every standard name of its length (about 140).
fn field_name(name: &[u8]) -> Option<HeaderName> {
    use http::header;
    let is = |known: &[u8]| name.eq_ignore_ascii_case(known);
    Some(match name.len() {
        4 if is(b"date") => header::DATE,
        4 if is(b"etag") => header::ETAG,
        4 if is(b"vary") => header::VARY,
        6 if is(b"server") => header::SERVER,
        10 if is(b"connection") => header::CONNECTION,
        12 if is(b"content-type") => header::CONTENT_TYPE,
        13 if is(b"cache-control") => header::CACHE_CONTROL,
        13 if is(b"last-modified") => header::LAST_MODIFIED,
        14 if is(b"content-length") => header::CONTENT_LENGTH,
        17 if is(b"transfer-encoding") => header::TRANSFER_ENCODING,
        _ => return HeaderName::from_bytes(name).ok(),
    })
}

/// Writes one of a request's field lines, but for the body's framing (the connection's
/// to say); whether it was `Host`.
#[inline(always)]
fn put_field(w: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) -> bool {
    if name == http::header::CONTENT_LENGTH || name == http::header::TRANSFER_ENCODING {
        return false;
    }
    field(w, name.as_str().as_bytes(), value.as_bytes());
    name == http::header::HOST
}

/// Writes one field line.
#[inline(always)]
fn field(w: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    w.extend_from_slice(name);
    w.push(b':');
    w.push(b' ');
    w.extend_from_slice(value);
    w.push(b'\r');
    w.push(b'\n');
}

/// Why a request on a connection failed, or an answer's body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    /// Writing the request (head or body) failed: the instance closed or reset the
    /// connection while it was being sent.
    #[error("error writing the request to the instance")]
    Write(#[source] io::Error),
    /// Reading the answer failed.
    #[error("error reading the instance's answer")]
    Read(#[source] io::Error),
    /// The instance closed the connection before it answered.
    #[error("the instance closed the connection before answering")]
    Closed,
    /// The answer breaks HTTP/1.1 framing or syntax.
    #[error("the instance's answer is malformed: {0}")]
    Malformed(&'static str),
    /// The client's request body failed while it was being sent.
    #[error("the request body failed")]
    RequestBody(#[source] RequestBodyError),
}

/// One connection: its socket, and what has been read from it but not yet consumed.
pub(crate) struct Conn {
    /// Boxed: a TLS session makes the socket over a kilobyte, and a connection moves
    /// from the pool into each request and back.
    io: Box<Io>,
    read: BytesMut,
    write: Vec<u8>,
    /// The `Host` a request without one is sent with: the instance's `host[:port]`.
    host: Option<Bytes>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("buffered", &self.read.len())
            .finish_non_exhaustive()
    }
}

/// Where a connection goes once the answer it carried has been read whole and it can
/// take the next request.
pub(crate) trait Reuse: Send + 'static {
    /// Takes back `conn`.
    fn reuse(self, conn: Conn);
}

/// How the request's body is framed on the wire.
enum Outgoing {
    /// Nothing more to send after the head (no body, or a buffered one written with it).
    Done,
    /// Streamed: with `Content-Length` (the bytes still due), or chunked (`None`).
    Stream { body: ProxyBody, due: Option<u64> },
}

/// How the answer's body is framed.
#[derive(Debug, Clone, Copy)]
enum Framing {
    /// This many bytes are still due.
    Length(u64),
    /// Chunked, in the given state.
    Chunked(Chunk),
    /// Everything until the instance closes the connection.
    Eof,
}

#[derive(Debug, Clone, Copy)]
enum Chunk {
    /// A chunk-size line is next.
    Size,
    /// This many bytes of the chunk's data are still due.
    Data(u64),
    /// The CRLF after a chunk's data is next.
    DataEnd,
    /// Trailer fields (ignored) until an empty line; this many bytes of them read.
    Trailers(usize),
}

/// An answer's head, as parsed.
pub(crate) struct Head {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    framing: Option<Framing>,
    /// Whether the framing leaves the connection unusable after the body (framed by
    /// its end, or by both `Transfer-Encoding` and `Content-Length`).
    framing_closes: bool,
    /// Whether the instance keeps the connection open (HTTP/1.1 without
    /// `Connection: close`, or HTTP/1.0 with `Connection: keep-alive`).
    keep_alive: bool,
}

impl Conn {
    pub(crate) fn new(io: Io) -> Conn {
        Conn {
            io: Box::new(io),
            read: BytesMut::with_capacity(READ_SPARE),
            write: Vec::with_capacity(HEAD_ROOM),
            host: None,
        }
    }

    /// The same connection sending `host` as the `Host` of every request that has none.
    pub(crate) fn with_host(mut self, host: Bytes) -> Conn {
        self.host = Some(host);
        self
    }

    /// Whether the connection can take a request: the instance has not closed it, and
    /// sent nothing while it sat idle. Does not wait; usually no system call (the
    /// runtime knows the socket has had no event since it was last read to the end).
    pub(crate) fn is_reusable(&mut self) -> bool {
        if !self.read.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        self.poll_fill(&mut cx).is_pending()
    }

    /// Reads what the socket has into the buffer: the count read (0 at the end).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.read.capacity() - self.read.len() < READ_SPARE / 8 {
            self.read.reserve(READ_SPARE);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut *self.io), cx, &mut self.read)
    }

    /// Sends `req` (origin form, `Host` set) and reads the answer's head; the body
    /// streams on, and `reuse` gets the connection once it has been read.
    pub(crate) async fn send<R: Reuse>(
        mut self,
        req: http::Request<ProxyBody>,
        reuse: R,
    ) -> Result<Response<AnswerBody>, AnswerError> {
        let (parts, body) = req.into_parts();
        let mut outgoing = self.encode(&parts, body);
        let (mut this, head) = match outgoing {
            // All of it is in the write buffer: written with the worker's other requests
            // (see `batch`).
            Outgoing::Done => crate::batch::Exchange::new(self).await?,
            Outgoing::Stream { .. } => {
                let head =
                    match std::future::poll_fn(|cx| self.poll_send(cx, &mut outgoing)).await? {
                        Some(early) => early,
                        None => std::future::poll_fn(|cx| self.poll_head(cx)).await?,
                    };
                (self, head)
            }
        };
        // Answered before the request was all sent: the rest will not be, so the
        // connection is in no state for another request.
        let sent = matches!(outgoing, Outgoing::Done) && this.write.is_empty();
        // An answer to HEAD has no body, whatever its head says about one.
        let (framing, framing_closes) = if parts.method == Method::HEAD {
            (None, false)
        } else {
            (head.framing, head.framing_closes)
        };
        let mut res = Response::new(AnswerBody::empty());
        *res.status_mut() = head.status;
        *res.version_mut() = head.version;
        *res.headers_mut() = head.headers;
        let keep = head.keep_alive && !framing_closes && sent;
        *res.body_mut() = match framing {
            None => {
                this.finish(keep, reuse);
                AnswerBody::empty()
            }
            // The whole body came with the head: one buffer, and the connection is free.
            Some(Framing::Length(n)) if this.read.len() as u64 >= n => {
                let body = this.read.split_to(n as usize).freeze();
                this.finish(keep, reuse);
                AnswerBody::full(body)
            }
            Some(framing) => AnswerBody(Inner::Stream(Box::new(Stream {
                conn: this,
                framing,
                keep,
                reuse: Box::new(reuse),
            }))),
        };
        Ok(res)
    }

    /// The answer was read whole: the connection goes back if it can take another
    /// request (kept alive, nothing unread), else it closes here.
    fn finish<R: Reuse>(self, keep: bool, reuse: R) {
        if keep && self.read.is_empty() {
            reuse.reuse(self);
        }
    }

    /// Writes the request's head (and a buffered body) into the write buffer: its
    /// fields as [`crate::retry::Fields`] gives them, and the connection's `Host` when
    /// they have none.
    fn encode(&mut self, parts: &http::request::Parts, body: ProxyBody) -> Outgoing {
        let w = &mut self.write;
        w.clear();
        let target = parts
            .uri
            .path_and_query()
            .map_or("/", http::uri::PathAndQuery::as_str);
        let fields = crate::retry::Fields::of(&parts.headers, &parts.extensions);
        // Room for a usual head at once (the buffer is the connection's, so after its
        // first request this is only a check); a larger one grows it.
        w.reserve(target.len() + HEAD_ROOM);
        w.extend_from_slice(parts.method.as_str().as_bytes());
        w.push(b' ');
        w.extend_from_slice(target.as_bytes());
        w.extend_from_slice(b" HTTP/1.1\r\n");
        // Plain loops over the two maps: through a closure (`Fields::for_each`) each
        // field cost about 60 instructions more.
        let mut has_host = false;
        for (name, value) in fields.own() {
            has_host |= put_field(w, name, value);
        }
        if let Some(replayed) = fields.replayed() {
            let own = fields.own();
            for (name, value) in replayed {
                if own.is_empty() || !crate::retry::replaced(own, name) {
                    has_host |= put_field(w, name, value);
                }
            }
        }
        if !has_host && let Some(host) = &self.host {
            field(w, b"host", host);
        }
        match body {
            ProxyBody::Buffered(None) => {
                if expects_body(&parts.method) {
                    w.extend_from_slice(b"content-length: 0\r\n");
                }
                w.extend_from_slice(b"\r\n");
                Outgoing::Done
            }
            ProxyBody::Buffered(Some(b)) => {
                content_length(w, b.len() as u64);
                w.extend_from_slice(&b);
                Outgoing::Done
            }
            body @ ProxyBody::Streaming { .. } => {
                let due = body.size_hint().exact();
                match due {
                    Some(n) => content_length(w, n),
                    None => w.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n"),
                }
                Outgoing::Stream { body, due }
            }
        }
    }

    /// Writes the request out, streaming its body. Ready with `None` once all of it is
    /// sent; with the answer's head if the instance answered before that (it refused
    /// the body, say); with an error if the connection broke while sending.
    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        outgoing: &mut Outgoing,
    ) -> Poll<Result<Option<Head>, AnswerError>> {
        let mut at = 0;
        loop {
            if at < self.write.len() {
                match Pin::new(&mut *self.io).poll_write(cx, &self.write[at..]) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(AnswerError::Write(
                            io::ErrorKind::WriteZero.into(),
                        )));
                    }
                    Poll::Ready(Ok(n)) => {
                        at += n;
                        continue;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(AnswerError::Write(e))),
                    Poll::Pending => {
                        self.write.drain(..at);
                        return self.poll_early(cx);
                    }
                }
            }
            self.write.clear();
            at = 0;
            let Outgoing::Stream { body, due } = outgoing else {
                // TLS holds what it has encrypted until flushed; TCP flushes at once.
                return match Pin::new(&mut *self.io).poll_flush(cx) {
                    Poll::Ready(Ok(())) => Poll::Ready(Ok(None)),
                    Poll::Ready(Err(e)) => Poll::Ready(Err(AnswerError::Write(e))),
                    Poll::Pending => self.poll_early(cx),
                };
            };
            match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue; // trailers are not forwarded
                    };
                    if data.is_empty() {
                        continue;
                    }
                    match due {
                        Some(left) => {
                            let n = data.len() as u64;
                            if n > *left {
                                return Poll::Ready(Err(AnswerError::RequestBody(
                                    RequestBodyError::Length,
                                )));
                            }
                            *left -= n;
                        }
                        None => {
                            use std::io::Write;
                            let _ = write!(self.write, "{:x}\r\n", data.len());
                        }
                    }
                    self.write.extend_from_slice(&data);
                    if due.is_none() {
                        self.write.extend_from_slice(b"\r\n");
                    }
                }
                Poll::Ready(None) => {
                    match due {
                        Some(0) => {}
                        Some(_) => {
                            return Poll::Ready(Err(AnswerError::RequestBody(
                                RequestBodyError::Length,
                            )));
                        }
                        None => self.write.extend_from_slice(b"0\r\n\r\n"),
                    }
                    *outgoing = Outgoing::Done;
                }
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Err(AnswerError::RequestBody(e)));
                }
                Poll::Pending => return self.poll_early(cx),
            }
        }
    }

    /// Writes a request that is all in the write buffer, then reads its answer's head
    /// (an early one if it comes while the request is being written). `written` says
    /// the request is out, across calls.
    pub(crate) fn poll_exchange(
        &mut self,
        cx: &mut Context<'_>,
        written: &mut bool,
    ) -> Poll<Result<Head, AnswerError>> {
        if !*written {
            match ready!(self.poll_send(cx, &mut Outgoing::Done))? {
                Some(early) => return Poll::Ready(Ok(early)),
                None => *written = true,
            }
        }
        self.poll_head(cx)
    }

    /// While the request cannot be sent further: an answer that arrived early, or the
    /// connection's end (reported as the write failing: the instance stopped reading).
    fn poll_early(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Head>, AnswerError>> {
        match ready!(self.poll_head(cx)) {
            Ok(head) => Poll::Ready(Ok(Some(head))),
            Err(AnswerError::Closed) => {
                Poll::Ready(Err(AnswerError::Write(io::ErrorKind::BrokenPipe.into())))
            }
            Err(AnswerError::Read(e)) => Poll::Ready(Err(AnswerError::Write(e))),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    /// Reads until a final answer's head is complete (interim 1xx answers are skipped).
    fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<Result<Head, AnswerError>> {
        loop {
            if !self.read.is_empty() {
                match self.parse_head()? {
                    Some(head) if head.status.is_informational() => {
                        if head.status == StatusCode::SWITCHING_PROTOCOLS {
                            return Poll::Ready(Err(AnswerError::Malformed(
                                "switching protocols was not asked for",
                            )));
                        }
                        continue;
                    }
                    Some(head) => return Poll::Ready(Ok(head)),
                    None if self.read.len() >= MAX_HEAD => {
                        return Poll::Ready(Err(AnswerError::Malformed("the head is too large")));
                    }
                    None => {}
                }
            }
            let empty = self.read.is_empty();
            match ready!(self.poll_fill(cx)) {
                Ok(0) if empty => return Poll::Ready(Err(AnswerError::Closed)),
                Ok(0) => {
                    return Poll::Ready(Err(AnswerError::Malformed(
                        "the connection closed inside the head",
                    )));
                }
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(AnswerError::Read(e))),
            }
        }
    }

    /// Parses a complete head off the front of the buffer, or `None` if it is not all
    /// there yet.
    fn parse_head(&mut self) -> Result<Option<Head>, AnswerError> {
        // Where each field's name and value sit in the head, to slice them out of it
        // once it is split off the buffer (the values are not copied).
        let mut at = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
        let (len, code, version, fields) = {
            let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
            let mut res = httparse::Response::new(&mut []);
            let buf = &self.read[..];
            let len = match httparse::ParserConfig::default()
                .parse_response_with_uninit_headers(&mut res, buf, &mut slots)
            {
                Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => {
                    return Err(AnswerError::Malformed("the head is too large"));
                }
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(httparse::Error::TooManyHeaders) => {
                    return Err(AnswerError::Malformed("too many header fields"));
                }
                Err(_) => return Err(AnswerError::Malformed("the head is not HTTP/1.1")),
            };
            let base = buf.as_ptr() as usize;
            for (slot, h) in at.iter_mut().zip(res.headers.iter()) {
                let n = h.name.as_ptr() as usize - base;
                let v = h.value.as_ptr() as usize - base;
                *slot = (
                    n as u32,
                    (n + h.name.len()) as u32,
                    v as u32,
                    (v + h.value.len()) as u32,
                );
            }
            (
                len,
                res.code.unwrap_or(0),
                res.version.unwrap_or(1),
                res.headers.len(),
            )
        };
        let head = self.read.split_to(len).freeze();
        let status =
            StatusCode::from_u16(code).map_err(|_| AnswerError::Malformed("bad status code"))?;
        // Room for what the gateway adds to an answer on its way to the client (request
        // and trace ids, the cache's fields), so the map is not grown and rehashed.
        let mut headers = HeaderMap::with_capacity(fields + ADDED_ANSWER_FIELDS);
        let mut length: Option<u64> = None;
        let mut chunked = None;
        let mut close = version == 0;
        // `Connection` values that name other fields of the head (rare).
        let mut named = Vec::new();
        for &(n0, n1, v0, v1) in &at[..fields] {
            let name = &head[n0 as usize..n1 as usize];
            let value = &head[v0 as usize..v1 as usize];
            let name = field_name(name).ok_or(AnswerError::Malformed("bad header field name"))?;
            if name == http::header::CONTENT_LENGTH {
                let n = parse_length(value)?;
                if length.is_some_and(|l| l != n) {
                    return Err(AnswerError::Malformed("conflicting Content-Length values"));
                }
                length = Some(n);
            } else if name == http::header::TRANSFER_ENCODING {
                // Only the last coding says how the message ends.
                chunked = Some(last_token_is(value, b"chunked"));
            } else if name == http::header::CONNECTION {
                if has_token(value, b"close") {
                    close = true;
                } else if version == 0 && has_token(value, b"keep-alive") {
                    close = false;
                }
                if tokens(value).any(|t| {
                    !t.eq_ignore_ascii_case(b"close") && !t.eq_ignore_ascii_case(b"keep-alive")
                }) {
                    named.push((v0, v1));
                }
            }
            // Fields about this connection (RFC 9110, 7.6.1) are read here and never
            // passed on.
            if HOP_BY_HOP.contains(&name) {
                continue;
            }
            // A slice of the head: the value is not copied.
            let value = HeaderValue::from_maybe_shared(head.slice(v0 as usize..v1 as usize))
                .map_err(|_| AnswerError::Malformed("bad header field value"))?;
            headers.append(name, value);
        }
        for (v0, v1) in named {
            for token in tokens(&head[v0 as usize..v1 as usize]) {
                if let Ok(token) = std::str::from_utf8(token) {
                    headers.remove(token);
                }
            }
        }
        let mut framing_closes = false;
        let framing = if status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            None
        } else {
            match (chunked, length) {
                (Some(true), None) => Some(Framing::Chunked(Chunk::Size)),
                // Both: Transfer-Encoding wins, and the connection may not be reused.
                (Some(true), Some(_)) => {
                    framing_closes = true;
                    Some(Framing::Chunked(Chunk::Size))
                }
                (Some(false), _) | (None, None) => {
                    framing_closes = true;
                    Some(Framing::Eof)
                }
                (None, Some(n)) => Some(Framing::Length(n)),
            }
        };
        Ok(Some(Head {
            status,
            version: if version == 0 {
                Version::HTTP_10
            } else {
                Version::HTTP_11
            },
            headers,
            framing,
            framing_closes,
            keep_alive: !close,
        }))
    }
}

/// The fields that describe one connection, not the message, and are never forwarded
/// (RFC 9110, 7.6.1), besides those a `Connection` field names: an instance's answer
/// loses them here, a client's request at the gateway's edge.
pub const HOP_BY_HOP: [HeaderName; 6] = [
    http::header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    http::header::PROXY_AUTHORIZATION,
    http::header::TE,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
];

/// Methods whose empty body is still said to be empty (`Content-Length: 0`), as
/// hyper and browsers do: an instance may wait for a body on them otherwise.
fn expects_body(m: &Method) -> bool {
    !matches!(
        *m,
        Method::GET
            | Method::HEAD
            | Method::DELETE
            | Method::OPTIONS
            | Method::TRACE
            | Method::CONNECT
    )
}

fn content_length(w: &mut Vec<u8>, n: u64) {
    use std::io::Write;
    let _ = write!(w, "content-length: {n}\r\n\r\n");
}

fn parse_length(v: &[u8]) -> Result<u64, AnswerError> {
    const BAD: AnswerError = AnswerError::Malformed("bad Content-Length");
    // A list of equal values ("42, 42") is allowed (RFC 9110, 8.6).
    let mut out = None;
    for part in v.split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return Err(BAD);
        }
        let n = part.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        if out.is_some_and(|o| o != n) {
            return Err(BAD);
        }
        out = Some(n);
    }
    out.ok_or(BAD)
}

fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

fn has_token(v: &[u8], token: &[u8]) -> bool {
    tokens(v).any(|t| t.eq_ignore_ascii_case(token))
}

fn last_token_is(v: &[u8], token: &[u8]) -> bool {
    tokens(v)
        .last()
        .is_some_and(|t| t.eq_ignore_ascii_case(token))
}

/// An instance's answer body: whole (it came with the head), or streamed from its
/// connection, which goes back to its pool once the body has been read to the end.
pub struct AnswerBody(Inner);

enum Inner {
    Full(Option<Bytes>),
    Stream(Box<Stream>),
}

impl std::fmt::Debug for AnswerBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Inner::Full(b) => f
                .debug_tuple("AnswerBody::Full")
                .field(&b.as_ref().map_or(0, Bytes::len))
                .finish(),
            Inner::Stream(s) => f
                .debug_tuple("AnswerBody::Stream")
                .field(&s.framing)
                .finish(),
        }
    }
}

impl AnswerBody {
    /// An empty body.
    pub fn empty() -> AnswerBody {
        AnswerBody(Inner::Full(None))
    }

    /// A body of these bytes.
    pub fn full(b: impl Into<Bytes>) -> AnswerBody {
        let b = b.into();
        AnswerBody(Inner::Full((!b.is_empty()).then_some(b)))
    }
}

impl From<Bytes> for AnswerBody {
    fn from(b: Bytes) -> Self {
        AnswerBody::full(b)
    }
}

/// [`Reuse`] behind a box (`FnOnce(self)` cannot be called through `dyn`).
pub(crate) trait ReuseDyn: Send {
    fn reuse_boxed(self: Box<Self>, conn: Conn);
}

impl<R: Reuse> ReuseDyn for R {
    fn reuse_boxed(self: Box<Self>, conn: Conn) {
        (*self).reuse(conn);
    }
}

impl Reuse for Box<dyn ReuseDyn> {
    fn reuse(self, conn: Conn) {
        self.reuse_boxed(conn);
    }
}

struct Stream {
    conn: Conn,
    framing: Framing,
    /// Whether the connection may take another request once the body is read.
    keep: bool,
    reuse: Box<dyn ReuseDyn>,
}

impl Stream {
    /// Whether the body has been read to its end.
    fn ended(&self) -> bool {
        matches!(self.framing, Framing::Length(0))
    }

    /// The body was read to its end: the connection goes back, or closes.
    fn finish(self) {
        let Stream {
            conn, keep, reuse, ..
        } = self;
        conn.finish(keep, reuse);
    }

    /// The next piece of the body; `None` at its end, or at the connection's end when
    /// that is what frames it.
    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, AnswerError>>> {
        loop {
            let buffered = self.conn.read.len();
            match &mut self.framing {
                Framing::Length(0) => return Poll::Ready(None),
                Framing::Length(left) if buffered > 0 => {
                    let n = (*left).min(buffered as u64);
                    *left -= n;
                    return Poll::Ready(Some(Ok(self.conn.read.split_to(n as usize).freeze())));
                }
                Framing::Eof if buffered > 0 => {
                    return Poll::Ready(Some(Ok(self.conn.read.split().freeze())));
                }
                Framing::Chunked(state) => match step(state, &mut self.conn.read)? {
                    Step::Data(d) => return Poll::Ready(Some(Ok(d))),
                    Step::Again => continue,
                    Step::End => {
                        self.framing = Framing::Length(0);
                        continue;
                    }
                    Step::More => {}
                },
                Framing::Length(_) | Framing::Eof => {}
            }
            match ready!(self.conn.poll_fill(cx)) {
                Ok(0) if matches!(self.framing, Framing::Eof) => {
                    // The end that frames the body; `keep` is false for it.
                    self.framing = Framing::Length(0);
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    return Poll::Ready(Some(Err(AnswerError::Malformed(
                        "the connection closed inside the body",
                    ))));
                }
                Ok(_) => {}
                Err(e) => return Poll::Ready(Some(Err(AnswerError::Read(e)))),
            }
        }
    }
}

/// What one step of chunked decoding found.
enum Step {
    /// Some of a chunk's data.
    Data(Bytes),
    /// A part of the framing was consumed: go on.
    Again,
    /// The body ended (the last chunk and the trailers were read).
    End,
    /// More bytes are needed.
    More,
}

/// One step of decoding a chunked body from the front of `buf`.
fn step(state: &mut Chunk, buf: &mut BytesMut) -> Result<Step, AnswerError> {
    match *state {
        Chunk::Size => {
            let Some((line, eol)) = crlf_line(
                buf,
                buf.len() > MAX_CHUNK_LINE,
                "chunk-size line too long",
                "chunk-size line without CRLF",
            )?
            else {
                return Ok(Step::More);
            };
            let digits = line
                .iter()
                .position(|&b| !b.is_ascii_hexdigit())
                .unwrap_or(line.len());
            let rest = line[digits..].trim_ascii_start();
            if digits == 0 || digits > 16 || !(rest.is_empty() || rest[0] == b';') {
                return Err(AnswerError::Malformed("bad chunk size"));
            }
            let size = line[..digits].iter().fold(0u64, |n, &d| {
                n << 4 | u64::from((d as char).to_digit(16).unwrap_or(0))
            });
            buf.advance(eol + 1);
            *state = if size == 0 {
                Chunk::Trailers(0)
            } else {
                Chunk::Data(size)
            };
            Ok(Step::Again)
        }
        Chunk::Data(left) => {
            if buf.is_empty() {
                return Ok(Step::More);
            }
            let n = left.min(buf.len() as u64);
            let data = buf.split_to(n as usize).freeze();
            *state = if n == left {
                Chunk::DataEnd
            } else {
                Chunk::Data(left - n)
            };
            Ok(Step::Data(data))
        }
        Chunk::DataEnd => {
            if buf.len() < 2 {
                return Ok(Step::More);
            }
            if &buf[..2] != b"\r\n" {
                return Err(AnswerError::Malformed("chunk data not followed by CRLF"));
            }
            buf.advance(2);
            *state = Chunk::Size;
            Ok(Step::Again)
        }
        Chunk::Trailers(read) => {
            let Some((line, eol)) = crlf_line(
                buf,
                read + buf.len() > MAX_TRAILERS,
                "trailer section too long",
                "trailer line without CRLF",
            )?
            else {
                return Ok(Step::More);
            };
            let last = line.is_empty();
            buf.advance(eol + 1);
            if last {
                return Ok(Step::End);
            }
            *state = Chunk::Trailers(read + eol + 1);
            if read + eol + 1 > MAX_TRAILERS {
                return Err(AnswerError::Malformed("trailer section too long"));
            }
            Ok(Step::Again)
        }
    }
}

/// The line at the front of `buf` without its CRLF, and where its LF is; `None` while
/// it is not all there, unless `too_long` (then the error `long`); the error `bare` when
/// its LF comes without a CR.
fn crlf_line<'a>(
    buf: &'a [u8],
    too_long: bool,
    long: &'static str,
    bare: &'static str,
) -> Result<Option<(&'a [u8], usize)>, AnswerError> {
    let Some(eol) = buf.iter().position(|&b| b == b'\n') else {
        return if too_long {
            Err(AnswerError::Malformed(long))
        } else {
            Ok(None)
        };
    };
    let line = buf[..eol]
        .strip_suffix(b"\r")
        .ok_or(AnswerError::Malformed(bare))?;
    Ok(Some((line, eol)))
}

impl Body for AnswerBody {
    type Data = Bytes;
    type Error = AnswerError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, AnswerError>>> {
        let this = self.get_mut();
        let out = match &mut this.0 {
            Inner::Full(b) => return Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Inner::Stream(s) => {
                let out = ready!(s.poll_data(cx));
                if !s.ended() {
                    return Poll::Ready(out.map(|d| d.map(Frame::data)));
                }
                out
            }
        };
        // At the end, the connection goes back at once: a reader that sees
        // `is_end_stream` does not poll again.
        if let Inner::Stream(s) = std::mem::replace(&mut this.0, Inner::Full(None)) {
            s.finish();
        }
        Poll::Ready(out.map(|d| d.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Inner::Full(b) => b.is_none(),
            Inner::Stream(s) => s.ended(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Inner::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Inner::Stream(s) => match s.framing {
                Framing::Length(n) => SizeHint::with_exact(n),
                _ => SizeHint::default(),
            },
        }
    }
}

#[cfg(test)]
#[path = "h1_tests.rs"]
mod tests;
