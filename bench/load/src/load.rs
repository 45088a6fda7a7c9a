//! The load itself: a fixed number of keep-alive HTTP/1.1 connections, each sending one
//! request after another (like wrk), recording every request's start, latency, status
//! and the `X-Upstream` header that says which upstream served it.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpStream, time::Instant};

/// Status recorded for a request that got no HTTP response (connection refused, reset,
/// closed mid-response).
pub const STATUS_TRANSPORT: u16 = 0;
/// Status recorded for a request still unanswered when the run's grace period ended.
pub const STATUS_UNFINISHED: u16 = 1;

/// One finished (or abandoned) request.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// When it was sent, in microseconds since the load started.
    pub start_us: u64,
    /// How long until its body was read completely, in microseconds.
    pub latency_us: u64,
    /// HTTP status, or [`STATUS_TRANSPORT`] / [`STATUS_UNFINISHED`].
    pub status: u16,
    /// The upstream number from an `X-Upstream: uN` header, 0 when absent.
    pub upstream: u8,
}

impl Sample {
    /// When the request finished, in microseconds since the load started.
    pub fn end_us(&self) -> u64 {
        self.start_us + self.latency_us
    }

    /// A request counts as an error unless it got a 2xx answer.
    pub fn is_error(&self) -> bool {
        !(200..300).contains(&self.status)
    }
}

/// Where to send the load.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port` to connect to (and to send as `Host`).
    pub authority: String,
    /// Path and query of every request.
    pub path: String,
    /// Extra headers sent with every request (an API key, for instance).
    pub headers: Vec<(header::HeaderName, header::HeaderValue)>,
}

impl Target {
    /// Parses `http://host:port/path?query`; only plain HTTP is supported.
    pub fn parse(url: &str) -> Result<Self, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("bad url {url:?}: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!("url {url:?} must start with http://"));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("url {url:?} has no host"))?
            .to_string();
        let path = uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        Ok(Self {
            authority,
            path,
            headers: Vec::new(),
        })
    }
}

/// How long and how hard to load.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// Keep-alive connections, each with one request in flight.
    pub connections: usize,
    /// No request is started after this long.
    pub duration: Duration,
    /// Requests still unanswered this long after `duration` are abandoned.
    pub grace: Duration,
}

/// Runs the load and returns every request, in no particular order.
///
/// `t0` is the instant that sample times are measured from; the caller shares it with
/// whatever injects failures so that both use one clock.
pub async fn run(target: &Target, plan: &LoadPlan, t0: Instant) -> Vec<Sample> {
    let end = t0 + plan.duration;
    let hard_end = end + plan.grace;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..plan.connections {
        let target = target.clone();
        workers.spawn(async move { connection_loop(target, t0, end, hard_end).await });
    }
    let mut all = Vec::new();
    while let Some(joined) = workers.join_next().await {
        // A worker never panics on its own; if one did, its samples are lost, and the
        // loss shows up as lower throughput rather than silently wrong latencies.
        if let Ok(samples) = joined {
            all.extend(samples);
        }
    }
    all
}

/// One connection's life: connect, send requests back to back, reconnect after an error.
async fn connection_loop(
    target: Target,
    t0: Instant,
    end: Instant,
    hard_end: Instant,
) -> Vec<Sample> {
    let mut samples = Vec::with_capacity(1 << 16);
    let mut sender: Option<SendRequest<Empty<Bytes>>> = None;
    while Instant::now() < end {
        let start = Instant::now();
        let send = match sender.as_mut() {
            Some(s) => s,
            None => match tokio::time::timeout_at(hard_end, connect(&target.authority)).await {
                Ok(Ok(s)) => sender.insert(s),
                Ok(Err(_)) => {
                    samples.push(sample(t0, start, STATUS_TRANSPORT, 0));
                    // Refused connects return at once; pausing keeps a dead proxy from
                    // turning this loop into a busy spin that skews the error count.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                Err(_) => {
                    samples.push(sample(t0, start, STATUS_UNFINISHED, 0));
                    break;
                }
            },
        };
        match tokio::time::timeout_at(hard_end, exchange(send, &target)).await {
            Ok(Ok((status, upstream))) => samples.push(sample(t0, start, status, upstream)),
            Ok(Err(_)) => {
                samples.push(sample(t0, start, STATUS_TRANSPORT, 0));
                sender = None;
            }
            Err(_) => {
                samples.push(sample(t0, start, STATUS_UNFINISHED, 0));
                break;
            }
        }
    }
    samples
}

fn sample(t0: Instant, start: Instant, status: u16, upstream: u8) -> Sample {
    let now = Instant::now();
    Sample {
        start_us: micros(start.duration_since(t0)),
        latency_us: micros(now.duration_since(start)),
        status,
        upstream,
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Opens one HTTP/1.1 connection; its driver task ends when the sender is dropped.
async fn connect(
    authority: &str,
) -> Result<SendRequest<Empty<Bytes>>, Box<dyn std::error::Error + Send + Sync>> {
    let stream = TcpStream::connect(authority).await?;
    // Small requests and responses: Nagle would add delayed-ACK stalls to each one.
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // The error (peer closed, reset) is seen again by the next send, which records it.
        let _ = conn.await;
    });
    Ok(sender)
}

/// Sends one GET and reads the whole body; returns the status and the upstream number.
async fn exchange(
    sender: &mut SendRequest<Empty<Bytes>>,
    target: &Target,
) -> Result<(u16, u8), Box<dyn std::error::Error + Send + Sync>> {
    sender.ready().await?;
    let mut req = Request::get(target.path.as_str())
        .header(header::HOST, target.authority.as_str())
        .body(Empty::<Bytes>::new())?;
    for (name, value) in &target.headers {
        req.headers_mut().append(name.clone(), value.clone());
    }
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let upstream = resp
        .headers()
        .get("x-upstream")
        .and_then(|v| v.to_str().ok())
        .map_or(0, parse_upstream);
    resp.into_body().collect().await?;
    Ok((status, upstream))
}

/// Sends one request on a fresh connection; returns its status.
pub async fn probe(target: &Target, timeout: Duration) -> Result<u16, String> {
    let attempt = async {
        let mut sender = connect(&target.authority)
            .await
            .map_err(|e| e.to_string())?;
        exchange(&mut sender, target)
            .await
            .map_err(|e| e.to_string())
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok((status, _))) => Ok(status),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// `u2` -> 2; anything else -> 0 (unknown).
pub fn parse_upstream(label: &str) -> u8 {
    label
        .trim()
        .strip_prefix('u')
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_labels_parse_to_their_number_and_anything_else_to_zero() {
        assert_eq!(parse_upstream("u1"), 1);
        assert_eq!(parse_upstream(" u3 "), 3);
        assert_eq!(parse_upstream("x1"), 0);
        assert_eq!(parse_upstream("u"), 0);
        assert_eq!(parse_upstream("u999"), 0);
    }

    #[test]
    fn target_parse_keeps_path_and_query_and_rejects_https() {
        let t = Target::parse("http://127.0.0.1:8080/api/rooms?x=1").expect("valid url");
        assert_eq!(t.authority, "127.0.0.1:8080");
        assert_eq!(t.path, "/api/rooms?x=1");
        assert!(Target::parse("https://127.0.0.1:1/").is_err());
        assert!(Target::parse("not a url").is_err());
    }

    #[test]
    fn only_2xx_answers_count_as_success() {
        let s = |status| Sample {
            start_us: 0,
            latency_us: 1,
            status,
            upstream: 1,
        };
        assert!(!s(200).is_error());
        assert!(s(502).is_error());
        assert!(s(STATUS_TRANSPORT).is_error());
        assert!(s(STATUS_UNFINISHED).is_error());
    }
}
