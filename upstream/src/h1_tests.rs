#![allow(clippy::unwrap_used)]
use super::*;

use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc as tmpsc, oneshot};
use tokio::task::JoinHandle;

// ---------------------------------------------------------------------------------------
// The client side.

/// Hands the connection back to the test.
struct Back(Sender<Conn>);

impl Reuse for Back {
    fn reuse(self, conn: Conn) {
        let _ = self.0.send(conn);
    }
}

fn back() -> (Back, Receiver<Conn>) {
    let (tx, rx) = mpsc::channel();
    (Back(tx), rx)
}

/// The connection came back (exactly once).
fn reused(rx: &Receiver<Conn>) -> Conn {
    match rx.try_recv() {
        Ok(conn) => conn,
        Err(e) => panic!("the connection was not handed back: {e:?}"),
    }
}

/// The connection did not come back, and cannot any more (the `Back` was dropped).
fn not_reused(rx: &Receiver<Conn>) {
    match rx.try_recv() {
        Err(TryRecvError::Disconnected) => {}
        Ok(_) => panic!("the connection was handed back"),
        Err(TryRecvError::Empty) => panic!("the connection is still held by a body"),
    }
}

/// Not handed back yet.
fn not_yet(rx: &Receiver<Conn>) {
    assert!(
        matches!(rx.try_recv(), Err(TryRecvError::Empty)),
        "the connection was handed back (or dropped) before the body's end"
    );
}

async fn connect(addr: SocketAddr) -> Conn {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let io = TokioIo::new(hyper_rustls::MaybeHttpsStream::Http(TokioIo::new(tcp)));
    Conn::new(io)
}

fn request(method: Method, uri: &str, body: ProxyBody) -> http::Request<ProxyBody> {
    http::Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "upstream.test")
        .body(body)
        .unwrap()
}

fn get(uri: &str) -> http::Request<ProxyBody> {
    request(Method::GET, uri, ProxyBody::empty())
}

async fn read_all(res: Response<AnswerBody>) -> Result<Bytes, AnswerError> {
    res.into_body()
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
}

/// The TCP socket under a body that is still streamed from its connection.
fn stream_tcp(body: &AnswerBody) -> Option<&TcpStream> {
    let Inner::Stream(s) = &body.0 else {
        return None;
    };
    match s.conn.io.inner() {
        hyper_rustls::MaybeHttpsStream::Http(tcp) => Some(tcp.inner()),
        hyper_rustls::MaybeHttpsStream::Https(_) => panic!("the tests use plain TCP"),
    }
}

/// Waits until the socket under `body` has bytes to read (without reading them), so that
/// the next poll of the body reads what the server wrote last, and only that.
async fn wait_readable(body: &AnswerBody) {
    if let Some(tcp) = stream_tcp(body) {
        let mut b = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(5), tcp.peek(&mut b))
            .await
            .expect("the server's bytes never arrived")
            .unwrap();
    }
}

/// Reads `body` until `got` holds at least `want` bytes (or the body ends), waiting for
/// the socket only when what is buffered is not enough: `true` if it ended.
async fn read_until(
    body: &mut AnswerBody,
    got: &mut Vec<u8>,
    want: usize,
) -> Result<bool, AnswerError> {
    loop {
        let ended = drain_ready(body, got).await?;
        if ended || got.len() >= want {
            return Ok(ended);
        }
        wait_readable(body).await;
    }
}

/// Polls `body` until it has nothing more to give right now: `true` once it ended.
async fn drain_ready(body: &mut AnswerBody, out: &mut Vec<u8>) -> Result<bool, AnswerError> {
    std::future::poll_fn(|cx| {
        loop {
            match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(d) = frame.into_data() {
                        out.extend_from_slice(&d);
                    }
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => return Poll::Ready(Ok(true)),
                Poll::Pending => return Poll::Ready(Ok(false)),
            }
        }
    })
    .await
}

// ---------------------------------------------------------------------------------------
// The scripted server side.

/// Reads the rest of `body` (unless it has `ended`) after `got`, checks the whole is
/// `whole` and that the connection then came back, and sends one more request (`path`) on
/// it, whose answer must be `answer`.
async fn read_to_end_then_reuse(
    mut body: AnswerBody,
    mut got: Vec<u8>,
    mut ended: bool,
    whole: &[u8],
    rx: &Receiver<Conn>,
    path: &str,
    answer: &str,
) {
    while !ended {
        wait_readable(&body).await;
        ended = drain_ready(&mut body, &mut got).await.unwrap();
    }
    assert_eq!(got, whole);
    assert!(body.is_end_stream());
    let conn = reused(rx);
    drop(body);

    let (reuse, rx) = back();
    let res = conn.send(get(path), reuse).await.unwrap();
    assert_eq!(read_all(res).await.unwrap(), answer);
    drop(reused(&rx));
}

async fn listen() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

/// A request as the server received it.
#[derive(Debug)]
struct Req {
    /// The exact bytes up to and including the blank line.
    head: Vec<u8>,
    method: String,
    path: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

/// The server's end of one connection.
struct Peer {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Peer {
    async fn accept(l: &TcpListener) -> Peer {
        let (s, _) = l.accept().await.unwrap();
        Peer { s, buf: Vec::new() }
    }

    async fn fill(&mut self) -> usize {
        let mut b = [0u8; 16 * 1024];
        let n = self.s.read(&mut b).await.unwrap();
        self.buf.extend_from_slice(&b[..n]);
        n
    }

    /// Reads a request's head (not its body).
    async fn head(&mut self) -> Req {
        loop {
            let mut fields = [httparse::EMPTY_HEADER; 32];
            let mut r = httparse::Request::new(&mut fields);
            if let httparse::Status::Complete(len) = r.parse(&self.buf).unwrap() {
                let req = Req {
                    head: self.buf[..len].to_vec(),
                    method: r.method.unwrap().to_owned(),
                    path: r.path.unwrap().to_owned(),
                    headers: r
                        .headers
                        .iter()
                        .map(|h| (h.name.to_owned(), h.value.to_vec()))
                        .collect(),
                    body: Vec::new(),
                };
                self.buf.drain(..len);
                return req;
            }
            assert!(
                self.fill().await > 0,
                "the client closed inside a request head"
            );
        }
    }

    /// Reads a whole request (its body framed by `content-length`, or none).
    async fn request(&mut self) -> Req {
        let mut req = self.head().await;
        let len: usize = req
            .header("content-length")
            .map_or(0, |v| std::str::from_utf8(v).unwrap().parse().unwrap());
        while self.buf.len() < len {
            assert!(
                self.fill().await > 0,
                "the client closed inside a request body"
            );
        }
        req.body = self.buf.drain(..len).collect();
        req
    }

    async fn write(&mut self, b: &[u8]) {
        self.s.write_all(b).await.unwrap();
    }
}

/// A server that reads one request, writes `answer`, and then closes the connection
/// (`close`) or holds it open until the returned sender is dropped or fired.
fn answer_once(
    l: TcpListener,
    answer: Vec<u8>,
    close: bool,
) -> (JoinHandle<Req>, oneshot::Sender<()>) {
    let (hold_tx, hold_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let mut p = Peer::accept(&l).await;
        let req = p.request().await;
        p.write(&answer).await;
        if !close {
            let _ = hold_rx.await;
        }
        req
    });
    (server, hold_tx)
}

const OK_EMPTY: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";

/// A server that reads `n` requests on one connection, answering each with [`OK_EMPTY`],
/// and returns them; nothing may follow the last one's body.
fn answer_each(l: TcpListener, n: usize) -> JoinHandle<Vec<Req>> {
    tokio::spawn(async move {
        let mut p = Peer::accept(&l).await;
        let mut seen = Vec::new();
        for _ in 0..n {
            seen.push(p.request().await);
            p.write(OK_EMPTY).await;
        }
        assert!(p.buf.is_empty(), "bytes after the last request's body");
        seen
    })
}

/// Sends one GET to a server that answers `answer` (and then closes, or holds the
/// connection open until the test ends). Returns the result, the reuse receiver, and the
/// server to finish with [`finish`].
async fn one(
    answer: &[u8],
    close: bool,
) -> (
    Result<Response<AnswerBody>, AnswerError>,
    Receiver<Conn>,
    (JoinHandle<Req>, oneshot::Sender<()>),
) {
    let (l, addr) = listen().await;
    let server = answer_once(l, answer.to_vec(), close);
    let conn = connect(addr).await;
    let (reuse, rx) = back();
    let res = conn.send(get("/one"), reuse).await;
    (res, rx, server)
}

async fn finish(server: (JoinHandle<Req>, oneshot::Sender<()>)) -> Req {
    let (handle, hold) = server;
    drop(hold);
    handle.await.unwrap()
}

/// A server that answers one request with `head`, then writes `pieces` one at a time,
/// each when the returned sender says so, then answers one more request on the same
/// connection with `again`; it returns that request's path.
fn paced(
    l: TcpListener,
    head: &'static [u8],
    pieces: &'static [&'static [u8]],
    again: &'static [u8],
) -> (JoinHandle<String>, tmpsc::UnboundedSender<()>) {
    let (next_tx, mut next_rx) = tmpsc::unbounded_channel::<()>();
    let server = tokio::spawn(async move {
        let mut p = Peer::accept(&l).await;
        p.request().await;
        p.write(head).await;
        for piece in pieces {
            next_rx.recv().await.unwrap();
            p.write(piece).await;
        }
        let next = p.request().await;
        p.write(again).await;
        next.path
    });
    (server, next_tx)
}

/// One GET answered `answer` (the server holding the connection open): its body reads
/// whole as `body`, and the connection comes back if `kept`, else never.
async fn read_whole(answer: &[u8], body: &str, kept: bool) {
    let (res, rx, server) = one(answer, false).await;
    assert_eq!(read_all(res.unwrap()).await.unwrap(), body);
    if kept {
        drop(reused(&rx));
    } else {
        not_reused(&rx);
    }
    finish(server).await;
}

// ---------------------------------------------------------------------------------------
// 1. The request on the wire.

#[tokio::test]
async fn the_request_is_written_in_origin_form_with_the_connections_own_framing() {
    let (l, addr) = listen().await;
    let server = answer_each(l, 4);

    let mut conn = connect(addr).await;
    // GET, no body: no framing at all, even though the caller put some in.
    let mut req = get("http://ignored.example/path?q=1");
    req.headers_mut()
        .insert("x-trace", HeaderValue::from_static("abc"));
    req.headers_mut()
        .insert("content-length", HeaderValue::from_static("99"));
    req.headers_mut()
        .insert("transfer-encoding", HeaderValue::from_static("chunked"));
    let reqs = vec![
        req,
        // POST, empty body: content-length: 0.
        request(Method::POST, "/submit", ProxyBody::empty()),
        // POST, buffered body: its real length, whatever the caller said.
        {
            let mut r = request(
                Method::POST,
                "/submit?x=1",
                ProxyBody::Buffered(Some(Bytes::from_static(b"hello"))),
            );
            r.headers_mut()
                .insert("content-length", HeaderValue::from_static("3"));
            r.headers_mut().insert(
                "transfer-encoding",
                HeaderValue::from_static("gzip, chunked"),
            );
            r
        },
        // DELETE, empty body: no content-length.
        request(Method::DELETE, "/item/7", ProxyBody::empty()),
    ];
    for r in reqs {
        let (reuse, rx) = back();
        let res = conn.send(r, reuse).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(read_all(res).await.unwrap().is_empty());
        conn = reused(&rx);
    }
    drop(conn);

    let seen = server.await.unwrap();
    assert_eq!(
        seen[0].head,
        b"GET /path?q=1 HTTP/1.1\r\nhost: upstream.test\r\nx-trace: abc\r\n\r\n"
    );
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].path, "/path?q=1");
    assert_eq!(seen[0].header("content-length"), None);
    assert_eq!(seen[0].header("transfer-encoding"), None);
    assert!(seen[0].body.is_empty());

    assert_eq!(
        seen[1].head,
        b"POST /submit HTTP/1.1\r\nhost: upstream.test\r\ncontent-length: 0\r\n\r\n"
    );
    assert_eq!(seen[1].header("content-length"), Some(&b"0"[..]));

    assert_eq!(
        seen[2].head,
        b"POST /submit?x=1 HTTP/1.1\r\nhost: upstream.test\r\ncontent-length: 5\r\n\r\n"
    );
    assert_eq!(seen[2].header("transfer-encoding"), None);
    assert_eq!(seen[2].body, b"hello");

    assert_eq!(
        seen[3].head,
        b"DELETE /item/7 HTTP/1.1\r\nhost: upstream.test\r\n\r\n"
    );
}

#[test]
fn answer_field_names_are_read_as_header_name_reads_them() {
    let mut names: Vec<String> = [
        "Date",
        "date",
        "DATE",
        "ETag",
        "Vary",
        "Server",
        "Connection",
        "Content-Type",
        "Cache-Control",
        "Last-Modified",
        "Content-Length",
        "Transfer-Encoding",
        "X-Upstream",
        "x-request-id",
        "Dat3",
        "Cont\u{e9}nt-Type",
        "content type",
        "",
        "Set-Cookie",
        "Location",
        "Age",
    ]
    .map(str::to_owned)
    .to_vec();
    // Every name of a recognised length with one byte changed, case and all.
    for base in [
        "date",
        "etag",
        "server",
        "content-length",
        "transfer-encoding",
    ] {
        for i in 0..base.len() {
            for b in [b'A', b'z', b'-', b' ', 0xff] {
                let mut v = base.as_bytes().to_vec();
                v[i] = b;
                names.push(String::from_utf8_lossy(&v).into_owned());
            }
        }
    }
    for n in &names {
        assert_eq!(
            field_name(n.as_bytes()),
            HeaderName::from_bytes(n.as_bytes()).ok(),
            "{n:?}"
        );
    }
}

#[tokio::test]
async fn a_replayed_request_goes_out_with_its_replays_fields_and_its_own_and_a_host() {
    let (l, addr) = listen().await;
    let server = answer_each(l, 2);
    let mut conn = connect(addr)
        .await
        .with_host(Bytes::from_static(b"10.0.0.7:8081"));
    // As `RouteUpstream::send` makes it: the client's fields move into the replay, and
    // the attempt adds its own (a `traceparent` that replaces the client's).
    let mut first = request(Method::GET, "/rooms/1", ProxyBody::empty());
    first.headers_mut().remove("host");
    for (n, v) in [
        ("traceparent", "00-client"),
        ("accept", "application/json"),
        ("x-forwarded-for", "192.0.2.1"),
    ] {
        first.headers_mut().append(n, HeaderValue::from_static(v));
    }
    let replay = crate::retry::Replay::of(
        &mut first,
        &std::sync::Arc::new(crate::endpoint::Attempts::default()),
        crate::timeout::TryTimeout(Duration::from_secs(1)),
        crate::retry::Deadline(tokio::time::Instant::now() + Duration::from_secs(3)),
    )
    .unwrap();
    assert!(
        first.headers().is_empty(),
        "the fields were copied, not moved"
    );
    first.extensions_mut().insert(replay.clone());
    // A retry made from the replay, whose client sent its own `Host`.
    let mut again = replay.request();
    again
        .headers_mut()
        .insert("traceparent", HeaderValue::from_static("00-retry"));
    first
        .headers_mut()
        .insert("traceparent", HeaderValue::from_static("00-first"));
    for r in [first, again] {
        let (reuse, rx) = back();
        let res = conn.send(r, reuse).await.unwrap();
        assert!(read_all(res).await.unwrap().is_empty());
        conn = reused(&rx);
    }
    drop(conn);
    let seen = server.await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&seen[0].head),
        "GET /rooms/1 HTTP/1.1\r\ntraceparent: 00-first\r\naccept: application/json\r\n\
         x-forwarded-for: 192.0.2.1\r\nhost: 10.0.0.7:8081\r\n\r\n"
    );
    assert_eq!(
        String::from_utf8_lossy(&seen[1].head),
        "GET /rooms/1 HTTP/1.1\r\ntraceparent: 00-retry\r\naccept: application/json\r\n\
         x-forwarded-for: 192.0.2.1\r\nhost: 10.0.0.7:8081\r\n\r\n"
    );
}

#[tokio::test]
async fn the_clients_host_goes_out_rather_than_the_connections() {
    let (l, addr) = listen().await;
    let server = answer_once(l, OK_EMPTY.to_vec(), false);
    let conn = connect(addr)
        .await
        .with_host(Bytes::from_static(b"10.0.0.7:8081"));
    let (reuse, _rx) = back();
    let res = conn.send(get("/one"), reuse).await.unwrap();
    assert!(read_all(res).await.unwrap().is_empty());
    let seen = finish(server).await;
    assert_eq!(
        seen.head,
        b"GET /one HTTP/1.1\r\nhost: upstream.test\r\n\r\n"
    );
}

// ---------------------------------------------------------------------------------------
// 2. and 3. Content-Length bodies.

#[tokio::test]
async fn a_content_length_body_that_came_with_the_head_hands_the_connection_back_at_once() {
    let (l, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut p = Peer::accept(&l).await;
        let first = p.request().await;
        p.write(b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\nx-a: 1\r\n\r\nhello world")
            .await;
        let second = p.request().await;
        p.write(b"HTTP/1.1 201 Created\r\ncontent-length: 6\r\n\r\nsecond")
            .await;
        (first.path, second.path)
    });

    let conn = connect(addr).await;
    let (reuse, rx) = back();
    let res = conn.send(get("/first"), reuse).await.unwrap();
    // One write on loopback arrives in one read: the connection is back before the body
    // is even looked at.
    let conn = reused(&rx);
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.version(), Version::HTTP_11);
    assert_eq!(res.headers()["x-a"], "1");
    assert_eq!(res.body().size_hint().exact(), Some(11));
    assert_eq!(read_all(res).await.unwrap(), "hello world");

    let (reuse, rx) = back();
    let res = conn.send(get("/second"), reuse).await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(read_all(res).await.unwrap(), "second");
    drop(reused(&rx));

    let paths = server.await.unwrap();
    assert_eq!(paths, ("/first".to_owned(), "/second".to_owned()));
}

#[tokio::test]
async fn a_content_length_body_in_several_writes_is_read_whole_and_the_connection_returned_only_at_its_end()
 {
    let (l, addr) = listen().await;
    let (server, next_tx) = paced(
        l,
        b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n",
        &[b"abcd", b"efgh", b"ijkl"],
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    );

    let conn = connect(addr).await;
    let (reuse, rx) = back();
    let res = conn.send(get("/parts"), reuse).await.unwrap();
    let mut body = res.into_body();
    assert_eq!(body.size_hint().exact(), Some(12));
    assert!(!body.is_end_stream());
    not_yet(&rx);

    let mut got = Vec::new();
    for want in [4, 8] {
        next_tx.send(()).unwrap();
        while got.len() < want {
            wait_readable(&body).await;
            assert!(!drain_ready(&mut body, &mut got).await.unwrap());
        }
        assert_eq!(got.len(), want);
        not_yet(&rx);
    }
    next_tx.send(()).unwrap();
    read_to_end_then_reuse(body, got, false, b"abcdefghijkl", &rx, "/again", "ok").await;
    assert_eq!(server.await.unwrap(), "/again");
}

#[tokio::test]
async fn content_length_with_equal_repeated_values_is_accepted() {
    read_whole(
        b"HTTP/1.1 200 OK\r\ncontent-length: 7, 7\r\n\r\nabcdefg",
        "abcdefg",
        true,
    )
    .await;
}

// ---------------------------------------------------------------------------------------
// 4. Chunked bodies.

#[tokio::test]
async fn a_chunked_body_split_across_reads_is_decoded_and_the_connection_reused() {
    // Each piece is its own write, and is read on its own before the next is written.
    const PIECES: &[&[u8]] = &[
        b"1",                     // inside the size line
        b"a;foo=bar\r",           // the rest of it, its extension, and a lone CR
        b"\nabcdefghij",          // its LF, then part of the chunk's data
        b"klmnopqrstuvwxyz",      // the rest of the data, without its CRLF
        b"\r",                    // between data and CRLF: CR ...
        b"\n5\r\nhello",          // ... LF, and a whole chunk but its CRLF
        b"\r\n0\r\nx-trailer: y", // the last chunk, inside a trailer field
        b"es\r\n\r",              // the end of the trailers but the final LF
        b"\n",
    ];
    let (l, addr) = listen().await;
    let (server, next_tx) = paced(
        l,
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
        PIECES,
        b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nnext",
    );

    let conn = connect(addr).await;
    let (reuse, rx) = back();
    let res = conn.send(get("/chunked"), reuse).await.unwrap();
    // The framing field stays with the connection; the body is decoded.
    assert!(!res.headers().contains_key("transfer-encoding"));
    let mut body = res.into_body();
    assert_eq!(body.size_hint().exact(), None);
    let mut got = Vec::new();
    let mut ended = false;
    for (i, _) in PIECES.iter().enumerate() {
        not_yet(&rx);
        assert!(!ended, "the body ended before its last piece");
        next_tx.send(()).unwrap();
        wait_readable(&body).await;
        ended = drain_ready(&mut body, &mut got).await.unwrap();
        if i == 2 {
            assert_eq!(got, b"abcdefghij", "data is passed on as it comes");
        }
    }
    read_to_end_then_reuse(
        body,
        got,
        ended,
        b"abcdefghijklmnopqrstuvwxyzhello",
        &rx,
        "/after",
        "next",
    )
    .await;
    assert_eq!(server.await.unwrap(), "/after");
}

#[tokio::test]
async fn a_chunked_body_that_came_with_the_head_is_decoded_and_the_connection_reused() {
    read_whole(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n\
          3;a=b;c\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nx-t: 1\r\nx-u: 2\r\n\r\n",
        "abc0123456789abcdef",
        true,
    )
    .await;
}

// ---------------------------------------------------------------------------------------
// 5. and 6. Answers after which the connection closes.

#[tokio::test]
async fn a_body_delimited_by_the_connections_end_is_read_whole_and_the_connection_not_reused() {
    let (l, addr) = listen().await;
    let (next_tx, mut next_rx) = tmpsc::unbounded_channel::<()>();
    let server = tokio::spawn(async move {
        let mut p = Peer::accept(&l).await;
        p.request().await;
        p.write(b"HTTP/1.1 200 OK\r\nx-a: 1\r\n\r\nfirst ").await;
        next_rx.recv().await.unwrap();
        p.write(b"second ").await;
        next_rx.recv().await.unwrap();
        p.write(b"third").await;
        // and closes
    });

    let conn = connect(addr).await;
    let (reuse, rx) = back();
    let res = conn.send(get("/eof"), reuse).await.unwrap();
    let mut body = res.into_body();
    let mut got = Vec::new();
    for want in [6, 13] {
        assert!(!read_until(&mut body, &mut got, want).await.unwrap());
        assert_eq!(got.len(), want);
        not_yet(&rx);
        next_tx.send(()).unwrap();
    }
    body.collect()
        .await
        .unwrap()
        .to_bytes()
        .iter()
        .for_each(|&b| got.push(b));
    assert_eq!(got, b"first second third");
    not_reused(&rx);
    server.await.unwrap();
}

#[tokio::test]
async fn an_answer_with_connection_close_is_read_and_the_connection_not_reused() {
    read_whole(
        b"HTTP/1.1 200 OK\r\nconnection: keep-alive, Close\r\ncontent-length: 3\r\n\r\nbye",
        "bye",
        false,
    )
    .await;
}

#[tokio::test]
async fn an_http_1_0_answer_is_read_and_the_connection_not_reused() {
    let (res, rx, server) = one(b"HTTP/1.0 200 OK\r\ncontent-length: 3\r\n\r\nold", false).await;
    let res = res.unwrap();
    assert_eq!(res.version(), Version::HTTP_10);
    assert_eq!(read_all(res).await.unwrap(), "old");
    not_reused(&rx);
    finish(server).await;
}

#[tokio::test]
async fn an_http_1_0_answer_with_keep_alive_is_reused() {
    read_whole(
        b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 3\r\n\r\nold",
        "old",
        true,
    )
    .await;
}

// ---------------------------------------------------------------------------------------
// 7. Answers without a body.

#[tokio::test]
async fn head_204_and_304_answers_have_no_body_and_the_connection_is_reused() {
    let (l, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut p = Peer::accept(&l).await;
        let mut methods = Vec::new();
        for answer in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"[..],
            // No framing at all: to a HEAD that is no body, not one framed by the end.
            b"HTTP/1.1 200 OK\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\netag: \"x\"\r\n\r\n",
            // Framing still lines up after them.
            b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nlast",
        ] {
            methods.push(p.request().await.method);
            p.write(answer).await;
        }
        methods
    });

    let mut conn = connect(addr).await;
    let cases = [
        (Method::HEAD, StatusCode::OK, ""),
        (Method::HEAD, StatusCode::OK, ""),
        (Method::GET, StatusCode::NO_CONTENT, ""),
        (Method::GET, StatusCode::NOT_MODIFIED, ""),
        (Method::GET, StatusCode::OK, "last"),
    ];
    for (method, status, want) in cases {
        let (reuse, rx) = back();
        let res = conn
            .send(request(method, "/x", ProxyBody::empty()), reuse)
            .await
            .unwrap();
        assert_eq!(res.status(), status);
        if want.is_empty() {
            assert!(res.body().is_end_stream());
            // The connection is back before the (empty) body is read.
            conn = reused(&rx);
            assert!(read_all(res).await.unwrap().is_empty());
        } else {
            assert_eq!(read_all(res).await.unwrap(), want);
            conn = reused(&rx);
        }
    }
    drop(conn);
    assert_eq!(server.await.unwrap(), ["HEAD", "HEAD", "GET", "GET", "GET"]);
}

// ---------------------------------------------------------------------------------------
// 8. Interim answers.

#[tokio::test]
async fn interim_1xx_answers_before_the_final_one_are_skipped() {
    let (l, addr) = listen().await;
    let (next_tx, next_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let mut p = Peer::accept(&l).await;
        p.request().await;
        p.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n")
            .await;
        next_rx.await.unwrap();
        p.write(b"HTTP/1.1 100 Continue\r\n\r\n").await;
        p.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfinal")
            .await;
        p.request().await.path
    });

    let conn = connect(addr).await;
    let (reuse, rx) = back();
    let send = tokio::spawn(conn.send(
        request(
            Method::POST,
            "/form",
            ProxyBody::Buffered(Some(Bytes::from_static(b"data"))),
        ),
        reuse,
    ));
    // The interim answers alone do not finish the request.
    tokio::task::yield_now().await;
    assert!(!send.is_finished());
    next_tx.send(()).unwrap();
    let res = send.await.unwrap().unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().get("link").is_none());
    assert_eq!(read_all(res).await.unwrap(), "final");
    let conn = reused(&rx);

    let (reuse, rx) = back();
    let res = conn.send(get("/next"), reuse).await;
    // The server stops after reading it: the connection closes unanswered.
    assert!(matches!(res, Err(AnswerError::Closed)), "{res:?}");
    not_reused(&rx);
    assert_eq!(server.await.unwrap(), "/next");
}

#[tokio::test]
async fn a_101_answer_is_an_error() {
    let (res, rx, server) = one(
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
        false,
    )
    .await;
    assert!(matches!(res, Err(AnswerError::Malformed(_))), "{res:?}");
    not_reused(&rx);
    finish(server).await;
}

// ---------------------------------------------------------------------------------------
// 9. Errors.

#[tokio::test]
async fn the_server_closing_before_answering_is_closed() {
    let (res, rx, server) = one(b"", true).await;
    assert!(matches!(res, Err(AnswerError::Closed)), "{res:?}");
    not_reused(&rx);
    finish(server).await;
}

/// Each answer (the server closing after it when `close`) is refused at its head with
/// `Malformed`, and its connection not reused.
async fn head_malformed(answers: &[&[u8]], close: bool) {
    malformed(answers, close, false).await;
}

/// Each answer's head is taken, and its body then fails with `Malformed`; its connection
/// is not reused.
async fn body_malformed(answers: &[&[u8]], close: bool) {
    malformed(answers, close, true).await;
}

/// Each answer fails with `Malformed`, at its head or (`in_body`: the head taken) in its
/// body; its connection is not reused.
async fn malformed(answers: &[&[u8]], close: bool, in_body: bool) {
    for answer in answers {
        let (res, rx, server) = one(answer, close).await;
        let err = if in_body {
            read_all(res.unwrap()).await.err()
        } else {
            res.err()
        };
        assert!(
            matches!(err, Some(AnswerError::Malformed(_))),
            "{:?}: {err:?}",
            String::from_utf8_lossy(answer)
        );
        not_reused(&rx);
        finish(server).await;
    }
}

#[tokio::test]
async fn the_server_closing_inside_the_head_is_malformed() {
    head_malformed(&[b"HTTP/1.1 200 OK\r\ncontent-le"], true).await;
}

#[tokio::test]
async fn the_server_closing_inside_a_content_length_body_is_malformed() {
    body_malformed(
        &[b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello"],
        true,
    )
    .await;
}

#[tokio::test]
async fn the_server_closing_inside_a_chunked_body_is_malformed() {
    body_malformed(
        &[
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n",
        ],
        true,
    )
    .await;
}

#[tokio::test]
async fn a_bad_status_line_is_malformed() {
    head_malformed(
        &[
            b"HTTP/1.1 2x0 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/2 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"ICY 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 099 Low\r\ncontent-length: 0\r\n\r\n",
            b"hello world\r\n\r\n",
        ],
        false,
    )
    .await;
}

#[tokio::test]
async fn conflicting_or_non_numeric_content_length_is_malformed() {
    head_malformed(
        &[
            b"HTTP/1.1 200 OK\r\ncontent-length: 12, 13\r\n\r\nhello world!!",
            b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\ncontent-length: 13\r\n\r\nhello world!!",
            b"HTTP/1.1 200 OK\r\ncontent-length: abc\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\ncontent-length: 5,\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\ncontent-length: \r\n\r\nhello",
        ],
        false,
    )
    .await;
}

#[tokio::test]
async fn bad_chunking_is_a_malformed_body() {
    body_malformed(
        &[
            // A chunk size that is not hex.
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5x\r\nhello\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\r\nhello\r\n0\r\n\r\n",
            // Chunk data not followed by CRLF.
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhelloXY0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n",
        ],
        false,
    )
    .await;
}

#[tokio::test]
async fn a_head_larger_than_64_kib_is_malformed_whether_or_not_it_ends() {
    for ends in [false, true] {
        let (l, addr) = listen().await;
        let (hold_tx, hold_rx) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let mut p = Peer::accept(&l).await;
            p.request().await;
            let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
            let value = "a".repeat(8000);
            // 80 KB of header fields (only 10 of them).
            for i in 0..10 {
                head.extend_from_slice(format!("x-pad-{i}: {value}\r\n").as_bytes());
            }
            if ends {
                head.extend_from_slice(b"content-length: 0\r\n\r\n");
            }
            // The client may close before it has read it all.
            let _ = p.s.write_all(&head).await;
            let _ = hold_rx.await;
        });

        let conn = connect(addr).await;
        let (reuse, rx) = back();
        let res = tokio::time::timeout(Duration::from_secs(10), conn.send(get("/big"), reuse))
            .await
            .expect("a head past the limit is refused, not waited for");
        assert!(
            matches!(res, Err(AnswerError::Malformed(_))),
            "ends: {ends}: {res:?}"
        );
        not_reused(&rx);
        drop(hold_tx);
        server.await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// 10. and 11. Framing that rules out reuse.

#[tokio::test]
async fn transfer_encoding_wins_over_content_length_and_the_connection_is_not_reused() {
    read_whole(
        b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n\
          5\r\nhello\r\n0\r\n\r\n",
        "hello",
        false,
    )
    .await;
}

#[tokio::test]
async fn bytes_after_a_complete_answer_keep_the_connection_from_reuse() {
    read_whole(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok\
          HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nextra",
        "ok",
        false,
    )
    .await;
}

#[tokio::test]
async fn bytes_after_a_streamed_content_length_body_keep_the_connection_from_reuse() {
    let (l, addr) = listen().await;
    let (next_tx, next_rx) = oneshot::channel::<()>();
    let (hold_tx, hold_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let mut p = Peer::accept(&l).await;
        p.request().await;
        p.write(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nabc")
            .await;
        next_rx.await.unwrap();
        p.write(b"defHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await;
        let _ = hold_rx.await;
    });

    let conn = connect(addr).await;
    let (reuse, rx) = back();
    let res = conn.send(get("/s"), reuse).await.unwrap();
    let mut body = res.into_body();
    let mut got = Vec::new();
    assert!(!read_until(&mut body, &mut got, 3).await.unwrap());
    assert_eq!(got, b"abc");
    not_yet(&rx);
    next_tx.send(()).unwrap();
    let rest = body.collect().await.unwrap().to_bytes();
    got.extend_from_slice(&rest);
    assert_eq!(got, b"abcdef");
    not_reused(&rx);
    drop(hold_tx);
    server.await.unwrap();
}

// ---------------------------------------------------------------------------------------
// 12. Idle connections.

#[tokio::test]
async fn an_idle_connection_is_reusable_until_the_server_closes_it() {
    let (l, addr) = listen().await;
    let (close_tx, close_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let mut p = Peer::accept(&l).await;
        let first = p.request().await;
        p.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi")
            .await;
        let second = p.request().await;
        p.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nho")
            .await;
        close_rx.await.unwrap();
        (first.path, second.path)
    });

    let mut conn = connect(addr).await;
    assert!(conn.is_reusable(), "a fresh connection");
    let (reuse, rx) = back();
    let res = conn.send(get("/a"), reuse).await.unwrap();
    assert_eq!(read_all(res).await.unwrap(), "hi");
    let mut conn = reused(&rx);
    assert!(conn.is_reusable(), "an idle one after an answer");
    // Asking does not spoil it.
    assert!(conn.is_reusable());
    let (reuse, rx) = back();
    let res = conn.send(get("/b"), reuse).await.unwrap();
    assert_eq!(read_all(res).await.unwrap(), "ho");
    let mut conn = reused(&rx);
    assert!(conn.is_reusable());

    close_tx.send(()).unwrap();
    assert_eq!(server.await.unwrap(), ("/a".to_owned(), "/b".to_owned()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while conn.is_reusable() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a connection the server closed still looks reusable"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // And it stays so.
    assert!(!conn.is_reusable());
}

#[tokio::test]
async fn an_idle_connection_the_server_wrote_to_is_not_reusable() {
    let (l, addr) = listen().await;
    let (hold_tx, hold_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let mut p = Peer::accept(&l).await;
        p.request().await;
        p.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi")
            .await;
        // Unasked.
        p.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n\r\n")
            .await;
        let _ = hold_rx.await;
    });

    let conn = connect(addr).await;
    let (reuse, rx) = back();
    let res = conn.send(get("/a"), reuse).await.unwrap();
    assert_eq!(read_all(res).await.unwrap(), "hi");
    // The 408 may or may not have come with the answer.
    if let Ok(mut conn) = rx.try_recv() {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while conn.is_reusable() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "a connection with unasked bytes on it still looks reusable"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    } else {
        not_reused(&rx);
    }
    drop(hold_tx);
    server.await.unwrap();
}

// ---------------------------------------------------------------------------------------
// 13. Early answers.

/// The instance answers (413, keep-alive framing) after reading only the head of a POST
/// whose body it never reads: most of the body is never sent, so the server would take
/// the next request on that connection as the rest of this one's body. The connection
/// must not go back to the pool (RFC 9112, sections 6.3 and 9.3; hyper closes it too).
#[tokio::test]
async fn an_answer_before_the_request_body_was_all_sent_keeps_the_connection_from_reuse() {
    // Far more than the loopback socket buffers hold, so the write blocks.
    const BODY: usize = 64 * 1024 * 1024;
    let (l, addr) = listen().await;
    let (hold_tx, hold_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let mut p = Peer::accept(&l).await;
        let req = p.head().await;
        p.write(b"HTTP/1.1 413 Content Too Large\r\ncontent-length: 0\r\n\r\n")
            .await;
        // Never read the body; hold the connection open.
        let _ = hold_rx.await;
        req.header("content-length").map(<[u8]>::to_vec)
    });

    let conn = connect(addr).await;
    let (reuse, rx) = back();
    let body = ProxyBody::Buffered(Some(Bytes::from(vec![b'x'; BODY])));
    let res = tokio::time::timeout(
        Duration::from_secs(20),
        conn.send(request(Method::POST, "/upload", body), reuse),
    )
    .await
    .expect("the early answer is seen while the body is blocked")
    .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(read_all(res).await.unwrap().is_empty());
    let handed_back = rx.try_recv();
    drop(hold_tx);
    assert_eq!(server.await.unwrap(), Some(BODY.to_string().into_bytes()));
    assert!(
        handed_back.is_err(),
        "the connection went back to the pool with its request body only partly sent"
    );
}

// ---------------------------------------------------------------------------------------
// Hop-by-hop fields stay with the connection.

#[tokio::test]
async fn hop_by_hop_fields_and_those_connection_names_never_leave_the_connection() {
    let (l, addr) = listen().await;
    let server = tokio::spawn(async move {
        let mut p = Peer::accept(&l).await;
        p.request().await;
        p.write(
            b"HTTP/1.1 200 OK\r\n\
              Connection: Keep-Alive, X-Hop-One\r\n\
              connection: x-hop-two\r\n\
              keep-alive: timeout=5\r\n\
              x-hop-one: 1\r\n\
              X-Hop-Two: 2\r\n\
              transfer-encoding: chunked\r\n\
              upgrade: h2c\r\n\
              te: trailers\r\n\
              proxy-authorization: secret\r\n\
              content-type: text/plain\r\n\
              x-kept: yes\r\n\r\n\
              5\r\nhello\r\n0\r\n\r\n",
        )
        .await;
        p.request().await.path
    });

    let conn = connect(addr).await;
    let (reuse, rx) = back();
    let res = conn.send(get("/hop"), reuse).await.unwrap();
    let mut names: Vec<&str> = res.headers().keys().map(HeaderName::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["content-type", "x-kept"]);
    // What the fields said still holds: chunked framing, kept alive.
    assert_eq!(read_all(res).await.unwrap(), "hello");
    let conn = reused(&rx);
    let (reuse, _rx) = back();
    let pending = tokio::spawn(conn.send(get("/again"), reuse));
    assert_eq!(server.await.unwrap(), "/again");
    pending.abort();
}

// ---------------------------------------------------------------------------------------
// 15. Requests written together (`crate::batch`).

/// Whether the server's end of a connection has bytes waiting, without waiting.
fn has_bytes(p: &Peer) -> bool {
    let mut b = [0u8; 64];
    match p.s.try_read(&mut b) {
        Ok(n) => n > 0,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn requests_made_ready_in_one_turn_are_written_after_that_turn() {
    let (l, addr) = listen().await;
    let (conn_a, mut pa) = tokio::join!(connect(addr), Peer::accept(&l));
    let (conn_b, mut pb) = tokio::join!(connect(addr), Peer::accept(&l));
    let (reuse_a, _ra) = back();
    let (reuse_b, _rb) = back();
    let mut a = Box::pin(conn_a.send(get("/a"), reuse_a));
    let mut b = Box::pin(conn_b.send(get("/b"), reuse_b));
    // Both requests are routed and encoded in this task's turn...
    std::future::poll_fn(|cx| {
        assert!(a.as_mut().poll(cx).is_pending());
        assert!(b.as_mut().poll(cx).is_pending());
        Poll::Ready(())
    })
    .await;
    // ...and nothing is on the wire before the turn ends (a write on loopback lands in
    // the peer's buffer at once, so a request written as it was routed would be there).
    assert!(
        !has_bytes(&pa) && !has_bytes(&pb),
        "written before the turn ended"
    );
    let server = async {
        for p in [&mut pa, &mut pb] {
            let req = p.request().await;
            p.write(
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{}",
                    req.path.len(),
                    req.path
                )
                .as_bytes(),
            )
            .await;
        }
    };
    let (ra, rb, ()) = tokio::join!(a, b, server);
    assert_eq!(read_all(ra.unwrap()).await.unwrap(), "/a");
    assert_eq!(read_all(rb.unwrap()).await.unwrap(), "/b");
}

#[tokio::test]
async fn a_request_dropped_before_its_turn_is_never_written() {
    let (l, addr) = listen().await;
    let (conn_a, mut pa) = tokio::join!(connect(addr), Peer::accept(&l));
    let (reuse_a, _ra) = back();
    let mut a = Box::pin(conn_a.send(get("/dropped"), reuse_a));
    std::future::poll_fn(|cx| {
        assert!(a.as_mut().poll(cx).is_pending());
        Poll::Ready(())
    })
    .await;
    drop(a);
    // A request after it goes through the same queue, so its answer means the queue's
    // task has had its turn.
    let (r, ()) = tokio::join!(
        async {
            let conn = connect(addr).await;
            let (reuse, _rx) = back();
            conn.send(get("/after"), reuse).await
        },
        async {
            let mut p = Peer::accept(&l).await;
            p.request().await;
            p.write(OK_EMPTY).await;
        }
    );
    r.unwrap();
    assert_eq!(
        pa.fill().await,
        0,
        "the dropped request reached the instance"
    );
    assert!(pa.buf.is_empty());
}

#[test]
fn each_runtime_on_a_thread_writes_with_a_queue_of_its_own() {
    let (l, addr) = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        (l, addr)
    };
    l.set_nonblocking(true).unwrap();
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = TcpListener::from_std(l).unwrap();
            for _ in 0..2 {
                let mut p = Peer::accept(&l).await;
                p.request().await;
                p.write(OK_EMPTY).await;
            }
        });
    });
    // Two runtimes on this thread, the first still alive (and idle) while the second
    // runs: the second must not hand its request to the first one's queue, whose task
    // would not run.
    let runtimes: Vec<_> = (0..2)
        .map(|_| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        })
        .collect();
    for (rt, path) in runtimes.iter().zip(["/first", "/second"]) {
        let res = rt.block_on(async {
            let conn = connect(addr).await;
            let (reuse, _rx) = back();
            tokio::time::timeout(Duration::from_secs(10), conn.send(get(path), reuse)).await
        });
        assert!(res.expect("the request was never written").is_ok());
    }
    server.join().unwrap();
}
