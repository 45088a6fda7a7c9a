//! Answers to clients written at the end of the worker's turn (see
//! `hotel_common::turn`): hyper's writes to a cleartext client connection are held, and
//! its flush hands them to the turn's queue, so the answers that one turn completed go
//! out together rather than each as it is made (bench/README.md, issue 21, twelfth pass).
//!
//! Held bytes never wait longer than the turn: the queue's task writes them with the
//! connection's waker, so when the client cannot take them all, the socket wakes the
//! connection's task, whose next read, write, flush or shutdown writes the rest itself.
//! A write that fails fails the connection's next read or write. Past `HOLD` bytes (a
//! large streamed answer) the connection writes itself, as if nothing were held.

use hotel_common::turn::{Turn, defer, lock};
use std::{
    io,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll, Waker},
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most bytes held for the end of the turn.
const HOLD: usize = 64 * 1024;
/// Buffer capacity kept between answers (more is given back once written).
const KEEP: usize = 16 * 1024;

/// A client connection whose writes are held until the end of the turn.
pub(crate) struct WriteBehind<T>(Arc<Shared<T>>);

struct Shared<T>(Mutex<State<T>>);

struct State<T> {
    io: T,
    /// Written by hyper, not yet by us.
    out: Vec<u8>,
    /// Handed to the turn's queue, which has not run it yet.
    queued: bool,
    /// The connection's task, for the queue's task to write with.
    waker: Option<Waker>,
    /// What a held write failed with: the connection's next read or write fails too.
    failed: Option<io::ErrorKind>,
}

impl<T> WriteBehind<T> {
    pub(crate) fn new(io: T) -> Self {
        WriteBehind(Arc::new(Shared(Mutex::new(State {
            io,
            out: Vec::new(),
            queued: false,
            waker: None,
            failed: None,
        }))))
    }
}

impl<T: AsyncWrite + Unpin> State<T> {
    fn check(&self) -> io::Result<()> {
        match self.failed {
            Some(kind) => Err(kind.into()),
            None => Ok(()),
        }
    }

    /// Writes out what is held, as far as the socket takes it.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut at = 0;
        let res = loop {
            if at == self.out.len() {
                break Poll::Ready(Ok(()));
            }
            match Pin::new(&mut self.io).poll_write(cx, &self.out[at..]) {
                Poll::Ready(Ok(0)) => break Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => at += n,
                Poll::Ready(Err(e)) => break Poll::Ready(Err(e)),
                Poll::Pending => break Poll::Pending,
            }
        };
        if at == self.out.len() {
            self.out.clear();
            if self.out.capacity() > KEEP {
                self.out = Vec::new();
            }
        } else {
            self.out.drain(..at);
        }
        if let Poll::Ready(Err(e)) = &res {
            self.failed = Some(e.kind());
        }
        res
    }

    /// Makes room for `len` more bytes: writes out what is held first if they would not
    /// fit. `true` when they should go straight to the socket (too many to hold).
    fn poll_room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<bool>> {
        self.check()?;
        if self.out.len() + len > HOLD {
            std::task::ready!(self.poll_drain(cx))?;
        }
        Poll::Ready(Ok(len > HOLD))
    }
}

impl<T: AsyncWrite + Unpin + Send + 'static> Turn for Shared<T> {
    fn run(&self, _orphaned: bool) {
        let mut s = lock(&self.0);
        if !s.queued {
            return;
        }
        s.queued = false;
        let waker = s.waker.clone().unwrap_or_else(|| Waker::noop().clone());
        if let Poll::Ready(Err(_)) = s.poll_drain(&mut Context::from_waker(&waker)) {
            drop(s);
            // Its next read or write reports it.
            waker.wake();
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for WriteBehind<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut s = lock(&self.0.0);
        s.check()?;
        // Left over by the queue's task (the client was not taking it): ours to write.
        if !s.queued
            && !s.out.is_empty()
            && let Poll::Ready(Err(e)) = s.poll_drain(cx)
        {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut s.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin + Send + 'static> AsyncWrite for WriteBehind<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut s = lock(&self.0.0);
        if std::task::ready!(s.poll_room(cx, buf.len()))? {
            return Pin::new(&mut s.io).poll_write(cx, buf);
        }
        s.out.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len = bufs.iter().map(|b| b.len()).sum();
        let mut s = lock(&self.0.0);
        if std::task::ready!(s.poll_room(cx, len))? {
            return Pin::new(&mut s.io).poll_write_vectored(cx, bufs);
        }
        s.out.reserve(len);
        for b in bufs {
            s.out.extend_from_slice(b);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// Hands what is held to the end of the turn (or writes it at once where there is
    /// no turn to wait for).
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut s = lock(&self.0.0);
        s.check()?;
        if s.out.is_empty() {
            return Pin::new(&mut s.io).poll_flush(cx);
        }
        if s.queued {
            return Poll::Ready(Ok(()));
        }
        if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            s.waker = Some(cx.waker().clone());
        }
        s.queued = true;
        drop(s);
        let shared: Arc<dyn Turn> = self.0.clone();
        if defer(shared).is_ok() {
            return Poll::Ready(Ok(()));
        }
        let mut s = lock(&self.0.0);
        s.queued = false;
        std::task::ready!(s.poll_drain(cx))?;
        Pin::new(&mut s.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut s = lock(&self.0.0);
        s.check()?;
        std::task::ready!(s.poll_drain(cx))?;
        Pin::new(&mut s.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// A connected pair: the client's end, and the server's end behind `WriteBehind`.
    async fn pair() -> (TcpStream, WriteBehind<TcpStream>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (client, server) = tokio::join!(TcpStream::connect(addr), l.accept());
        (client.unwrap(), WriteBehind::new(server.unwrap().0))
    }

    /// Whether the client has bytes waiting, without waiting.
    fn has_bytes(c: &TcpStream) -> bool {
        let mut b = [0u8; 16];
        match c.try_read(&mut b) {
            Ok(n) => n > 0,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(e) => panic!("{e}"),
        }
    }

    async fn read_n(c: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut b = vec![0u8; n];
        tokio::time::timeout(Duration::from_secs(10), c.read_exact(&mut b))
            .await
            .expect("the held bytes never came")
            .unwrap();
        b
    }

    #[tokio::test]
    async fn answers_made_in_one_turn_are_written_after_that_turn() {
        let (mut ca, mut a) = pair().await;
        let (mut cb, mut b) = pair().await;
        std::future::poll_fn(|cx| {
            for (w, text) in [(&mut a, &b"answer a"[..]), (&mut b, &b"answer b"[..])] {
                assert!(matches!(
                    Pin::new(&mut *w).poll_write(cx, text),
                    Poll::Ready(Ok(8))
                ));
                assert!(matches!(
                    Pin::new(&mut *w).poll_flush(cx),
                    Poll::Ready(Ok(()))
                ));
            }
            Poll::Ready(())
        })
        .await;
        // Loopback writes land at once: an answer written at its flush would be there.
        assert!(
            !has_bytes(&ca) && !has_bytes(&cb),
            "written before the turn ended"
        );
        assert_eq!(read_n(&mut ca, 8).await, b"answer a");
        assert_eq!(read_n(&mut cb, 8).await, b"answer b");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn without_a_turn_to_wait_for_a_flush_writes_at_once() {
        let (mut c, mut w) = pair().await;
        w.write_all(b"now").await.unwrap();
        w.flush().await.unwrap();
        assert!(lock(&w.0.0).out.is_empty(), "held after the flush");
        assert_eq!(read_n(&mut c, 3).await, b"now");
    }

    #[tokio::test]
    async fn a_shutdown_writes_what_is_held_first() {
        let (mut c, mut w) = pair().await;
        w.write_all(b"last words").await.unwrap();
        w.flush().await.unwrap();
        // Before the turn's end: the shutdown must not overtake the held bytes.
        w.shutdown().await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, b"last words");
    }

    #[tokio::test]
    async fn everything_arrives_in_order_when_the_client_reads_slower_than_it_is_written() {
        const TOTAL: usize = 8 * 1024 * 1024;
        let (mut c, mut w) = pair().await;
        let pattern = |i: usize| (i % 251) as u8;
        let writer = tokio::spawn(async move {
            let mut at = 0;
            // Pieces of several sizes: below and above what is held, each flushed.
            for size in [100, 5_000, 40_000, HOLD + 1].into_iter().cycle() {
                if at == TOTAL {
                    break;
                }
                let n = size.min(TOTAL - at);
                let piece: Vec<u8> = (at..at + n).map(pattern).collect();
                w.write_all(&piece).await.unwrap();
                w.flush().await.unwrap();
                at += n;
            }
            w.shutdown().await.unwrap();
        });
        let mut got = Vec::with_capacity(TOTAL);
        let mut b = vec![0u8; 4096];
        loop {
            let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut b))
                .await
                .expect("the writes stalled")
                .unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&b[..n]);
            // A slow reader: the socket fills, and held writes are left over.
            tokio::task::yield_now().await;
        }
        writer.await.unwrap();
        assert_eq!(got.len(), TOTAL);
        assert!(
            got.iter().enumerate().all(|(i, &x)| x == pattern(i)),
            "bytes out of order"
        );
    }

    #[tokio::test]
    async fn what_the_client_could_not_take_is_written_while_the_connection_waits_to_read() {
        let (mut c, mut w) = pair().await;
        let probe = w.0.clone();
        // Fill the socket first (straight writes, past what is held), so that the turn's
        // write finds no room.
        let big = vec![7u8; 2 * HOLD];
        let mut filled = 0;
        std::future::poll_fn(|cx| {
            loop {
                match Pin::new(&mut w).poll_write(cx, &big) {
                    Poll::Ready(Ok(n)) => filled += n,
                    Poll::Ready(Err(e)) => panic!("{e}"),
                    Poll::Pending => return Poll::Ready(()),
                }
            }
        })
        .await;
        const LEN: usize = 60 * 1024;
        let answer: Vec<u8> = (0..LEN).map(|i| (i % 253) as u8).collect();
        let sent = answer.clone();
        let (flushed_tx, flushed) = tokio::sync::oneshot::channel();
        // As hyper does: the answer, its flush, then a read for the next request.
        let conn = tokio::spawn(async move {
            w.write_all(&sent).await.unwrap();
            w.flush().await.unwrap();
            flushed_tx.send(()).unwrap();
            let mut b = [0u8; 16];
            w.read(&mut b).await.unwrap()
        });
        flushed.await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while lock(&probe.0).queued {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the turn never came"
            );
            tokio::task::yield_now().await;
        }
        assert!(
            !lock(&probe.0).out.is_empty(),
            "the full socket took the answer"
        );
        let got = read_n(&mut c, filled + LEN).await;
        assert!(got[filled..] == answer[..], "the answer came wrong");
        c.write_all(b"next").await.unwrap();
        assert_eq!(conn.await.unwrap(), 4);
    }
}
