//! Requests to instances written at the end of the worker's turn (see
//! `hotel_common::turn`): a request hands its connection to the turn's queue and waits;
//! the queue's task writes it with the request's own waker, so that the answer's arrival
//! wakes the request itself and the queue's task is not involved again.
//!
//! hyper's client connection batched these writes for free (each connection had a task
//! of its own, woken behind the requests already queued), at the price of a task, two
//! channels and two wake-ups per request (bench/README.md, issue 21, twelfth pass).

use crate::h1::{AnswerError, Conn, Head};
use hotel_common::turn::{Turn, defer, lock};
use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll, Waker},
};

/// A request whose bytes are all in its connection's write buffer, from the queue to
/// its answer's head.
pub(crate) enum Exchange {
    /// Not polled yet.
    Start(Conn),
    /// Handed to the worker's queue (or being written and read by the request itself).
    Queued(Arc<Slot>),
    /// No queue here: the request writes its own connection.
    Direct { conn: Option<Conn>, written: bool },
}

/// What the request and the queue's task share.
pub(crate) struct Slot(Mutex<State>);

struct State {
    conn: Option<Conn>,
    /// The request's waker, for the queue's task to write and read with.
    waker: Option<Waker>,
    /// Whether the request has been started, by the queue's task or by the request
    /// itself (polled before the queue's turn came): the other then leaves it alone.
    started: bool,
    written: bool,
    /// The head, or the failure, if the queue's task got that far.
    result: Option<Result<Head, AnswerError>>,
}

impl Exchange {
    pub(crate) fn new(conn: Conn) -> Exchange {
        Exchange::Start(conn)
    }
}

impl Future for Exchange {
    /// The connection, and the answer's head (an early one, if the instance answered
    /// before the request was all written).
    type Output = Result<(Conn, Head), AnswerError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Exchange::Start(_) = this {
            let Exchange::Start(conn) = std::mem::replace(
                this,
                Exchange::Direct {
                    conn: None,
                    written: false,
                },
            ) else {
                unreachable!()
            };
            let slot = Arc::new(Slot(Mutex::new(State {
                conn: Some(conn),
                waker: Some(cx.waker().clone()),
                started: false,
                written: false,
                result: None,
            })));
            match defer(slot.clone()) {
                Ok(()) => {
                    *this = Exchange::Queued(slot);
                    return Poll::Pending;
                }
                Err(_) => {
                    let conn = lock(&slot.0).conn.take();
                    *this = Exchange::Direct {
                        conn,
                        written: false,
                    };
                }
            }
        }
        match this {
            Exchange::Start(_) => unreachable!(),
            Exchange::Direct { conn, written } => {
                let c = conn.as_mut().expect("Exchange polled after completion");
                let head = std::task::ready!(c.poll_exchange(cx, written));
                let conn = conn.take().expect("Exchange polled after completion");
                Poll::Ready(head.map(|h| (conn, h)))
            }
            Exchange::Queued(slot) => {
                let mut s = lock(&slot.0);
                let State {
                    conn,
                    waker,
                    started,
                    written,
                    result,
                } = &mut *s;
                let head = match result.take() {
                    Some(r) => r,
                    None if !*started => {
                        // Polled again before the queue's turn (woken by a timer of its
                        // own): the queue's task gets this waker if the request still
                        // waits for it when that task runs.
                        if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                            *waker = Some(cx.waker().clone());
                        }
                        return Poll::Pending;
                    }
                    None => {
                        let c = conn.as_mut().expect("Exchange polled after completion");
                        std::task::ready!(c.poll_exchange(cx, written))
                    }
                };
                let conn = conn.take().expect("Exchange polled after completion");
                Poll::Ready(head.map(|h| (conn, h)))
            }
        }
    }
}

impl Turn for Slot {
    /// Writes the request and reads as far as the socket allows, with the request's
    /// waker, which the socket then holds; wakes the request only if there is nothing
    /// more to wait for (its head came, or it failed). A request dropped before its
    /// turn is not written.
    fn run(&self, orphaned: bool) {
        let mut s = lock(&self.0);
        if s.started || orphaned {
            return;
        }
        s.started = true;
        let Some(waker) = s.waker.take() else {
            return;
        };
        let State {
            conn,
            written,
            result,
            ..
        } = &mut *s;
        let Some(c) = conn.as_mut() else {
            return;
        };
        if let Poll::Ready(r) = c.poll_exchange(&mut Context::from_waker(&waker), written) {
            *result = Some(r);
            drop(s);
            waker.wake();
        }
    }
}
