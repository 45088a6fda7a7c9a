//! [`Breaker`]: the readiness gate. `poll_ready` follows the state machine (`Pending`
//! while open or while the half-open probe is out, never `Err`); `call` counts the
//! attempt in and returns a [`BreakerFuture`] that records its outcome.

use super::{
    BreakerShared, BreakerState,
    future::{BreakerFuture, Recorder},
    stall::{AttemptEnd, STALL_CONFIRM},
    state::State,
};
use crate::error::{BoxError, FailureKind};
use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};
use tokio::time::{Instant, Sleep};

/// The gate service.
#[derive(Debug)]
pub(crate) struct Breaker<S> {
    inner: S,
    shared: Arc<BreakerShared>,
    /// Wakes the gate when the open period ends.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<S> Breaker<S> {
    /// The gate of the breaker `shared` in front of `inner`.
    pub(super) fn new(inner: S, shared: Arc<BreakerShared>) -> Self {
        Breaker {
            inner,
            shared,
            sleep: None,
        }
    }
}

/// The instance's load, divided by its slow-start weight while it ramps up after
/// returning from an ejection: p2c then prefers the others, less and less.
impl<S: crate::balance::LoadAt> crate::balance::LoadAt for Breaker<S> {
    fn load_at(&self, now: tokio::time::Instant) -> f64 {
        let load = self.inner.load_at(now);
        let weight = self.shared.weight();
        if weight < 1.0 { load / weight } else { load }
    }
}

/// Whether a response counts as a failure: 5xx does, and errors that say something about
/// the instance (not a client's broken body, nor the instance refusing a body past its
/// own limit).
pub(crate) trait Outcome {
    /// The failure this result represents, if any.
    fn failure(&self) -> Option<FailureKind>;
}

impl<B> Outcome for Result<http::Response<B>, BoxError> {
    fn failure(&self) -> Option<FailureKind> {
        match self {
            Ok(r) if r.status().is_server_error() => Some(FailureKind::Transport),
            Ok(_) => None,
            Err(e) => Some(FailureKind::of(e.as_ref())).filter(|k| k.is_instance_failure()),
        }
    }
}

impl<S, Req> tower::Service<Req> for Breaker<S>
where
    S: tower::Service<Req, Error = BoxError>,
    Result<S::Response, BoxError>: Outcome,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BreakerFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        loop {
            let mut g = self.shared.lock();
            match g.state {
                State::Closed { .. } => {
                    match (g.suspect_since, self.shared.stalled_for()) {
                        // Silent, and its health probe unanswered for long enough.
                        (Some(t), Some(silent))
                            if t.elapsed() >= STALL_CONFIRM
                                && self.shared.eject_stalled(&mut g, silent) =>
                        {
                            g.waiter = Some(cx.waker().clone());
                            return Poll::Pending;
                        }
                        (None, Some(silent)) => self.shared.suspect(&mut g, silent),
                        _ => {}
                    }
                    break;
                }
                State::HalfOpen { probing: false } => break,
                State::HalfOpen { probing: true } | State::Probing => {
                    g.waiter = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                State::Open { until } => {
                    if Instant::now() >= until {
                        g.state = State::HalfOpen { probing: false };
                        tracing::info!(
                            service = %self.shared.service,
                            instance = %self.shared.instance,
                            "breaker half-open: sending one probe"
                        );
                        self.shared.sink.transition(BreakerState::HalfOpen);
                        continue;
                    }
                    drop(g);
                    let sleep = match &mut self.sleep {
                        Some(s) => {
                            if s.deadline() != until {
                                s.as_mut().reset(until);
                            }
                            s
                        }
                        None => self.sleep.insert(Box::pin(tokio::time::sleep_until(until))),
                    };
                    if sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let probe = {
            let mut g = self.shared.lock();
            if let State::HalfOpen { probing: false } = g.state {
                g.state = State::HalfOpen { probing: true };
                true
            } else {
                false
            }
        };
        self.shared.started();
        BreakerFuture::new(
            self.inner.call(req),
            Recorder {
                shared: self.shared.clone(),
                probe,
                end: AttemptEnd::Dropped,
                at: None,
            },
        )
    }
}
