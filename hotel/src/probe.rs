//! `hotel probe URL`: one HTTP/1.1 GET, exit 0 on a 2xx answer. Container healthchecks
//! run it inside the image, which has no shell and no curl (`FROM scratch`).

use std::time::Duration;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Options of `hotel probe`.
#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    /// What to GET: `http://HOST:PORT/PATH` (plain HTTP only), such as
    /// `http://127.0.0.1:7000/readyz`.
    pub url: String,
    /// Give up (and fail) after this long.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// Probes once; `Ok` with the status line when the answer is 2xx.
pub async fn run(args: &ProbeArgs) -> Result<String, String> {
    let (authority, path) = split(&args.url)?;
    let exchange = async {
        let mut stream = TcpStream::connect(authority)
            .await
            .map_err(|e| format!("connect {authority}: {e}"))?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: hotel-probe\r\nConnection: close\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("send: {e}"))?;
        // The status line is all we need; read until it is complete.
        let mut head = Vec::with_capacity(256);
        let mut buf = [0u8; 256];
        while !head.contains(&b'\n') && head.len() < 4096 {
            let n = stream
                .read(&mut buf)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, String>(head)
    };
    let head = tokio::time::timeout(args.timeout, exchange)
        .await
        .map_err(|_| format!("no answer within {:?}", args.timeout))??;
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or_default().trim().to_owned();
    match line.split(' ').nth(1) {
        Some(code) if code.len() == 3 && code.starts_with('2') && line.starts_with("HTTP/1.") => {
            Ok(line)
        }
        _ => Err(format!("answered {line:?}")),
    }
}

/// `http://authority/path` into its authority and path (`/` when none).
fn split(url: &str) -> Result<(&str, &str), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url:?}: only http:// URLs can be probed"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("{url:?}: no host"));
    }
    Ok((authority, path))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_authority_and_path() {
        assert_eq!(
            split("http://127.0.0.1:7000/readyz").unwrap(),
            ("127.0.0.1:7000", "/readyz")
        );
        assert_eq!(split("http://gateway:9901").unwrap(), ("gateway:9901", "/"));
        assert!(split("https://x/readyz").is_err());
        assert!(split("http:///readyz").is_err());
    }

    /// A one-shot server on loopback answering `status_line`; the probe's arguments.
    async fn answering(status_line: &'static str) -> ProbeArgs {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf).await;
            let _ = stream
                .write_all(format!("{status_line}\r\ncontent-length: 0\r\n\r\n").as_bytes())
                .await;
        });
        ProbeArgs {
            url: format!("http://{addr}/readyz"),
            timeout: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn a_2xx_answer_passes_and_anything_else_fails() {
        let ok = run(&answering("HTTP/1.1 200 OK").await).await.unwrap();
        assert_eq!(ok, "HTTP/1.1 200 OK");
        let err = run(&answering("HTTP/1.1 503 Service Unavailable").await)
            .await
            .unwrap_err();
        assert!(err.contains("503"), "{err}");
        // Nothing listening: a closed port fails at once.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let args = ProbeArgs {
            url: format!("http://{closed}/readyz"),
            timeout: Duration::from_secs(5),
        };
        assert!(run(&args).await.unwrap_err().contains("connect"));
    }
}
