//! HTTP/1.1 spoken byte for byte, for tests of what a server does with heads a client
//! library would never send (no `Host`, too many header lines, smuggling shapes).

use std::{net::SocketAddr, time::Duration};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Writes `bytes` on a fresh connection to `addr` while reading, until the server closes
/// it (or 10 s); what the server answered, as text. Write errors are ignored: a server may
/// answer and stop reading before the request is all out, and its answer is what counts.
///
/// # Panics
/// When the connection cannot be opened.
pub async fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = match tokio::net::TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => panic!("connect to {addr}: {e}"),
    };
    let (mut r, mut w) = s.split();
    let mut out = Vec::new();
    let read = async {
        let _ = tokio::time::timeout(Duration::from_secs(10), r.read_to_end(&mut out)).await;
    };
    let write = async {
        let _ = w.write_all(bytes).await;
    };
    tokio::join!(read, write);
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of a raw answer's status line; 0 when there is none.
pub fn status_of(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Asserts a raw answer is a `status` problem+json of type `/problems/{kind}` that
/// carries the request id in its head and its body.
///
/// # Panics
/// When it is not (that is the assertion).
pub fn assert_problem(answer: &str, status: u16, kind: &str) {
    assert_eq!(status_of(answer), status, "{answer}");
    let lower = answer.to_ascii_lowercase();
    assert!(
        lower.contains("content-type: application/problem+json"),
        "{answer}"
    );
    assert!(lower.contains("x-request-id: "), "{answer}");
    assert!(answer.contains(&format!("/problems/{kind}")), "{answer}");
    assert!(answer.contains("\"request_id\""), "{answer}");
}

/// A `GET path` head to `host` with `lines` header lines in all (`Host` and
/// `Connection: close` included), plus one `x-pad` line of `pad` bytes when `pad > 0`.
pub fn head_with(path: &str, host: &str, lines: usize, pad: usize) -> Vec<u8> {
    let mut r = format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n");
    for i in 0..lines.saturating_sub(2) {
        r.push_str(&format!("x-h-{i}: v\r\n"));
    }
    if pad > 0 {
        r.push_str(&format!("x-pad: {}\r\n", "p".repeat(pad)));
    }
    r.push_str("\r\n");
    r.into_bytes()
}
