//! Trace ids without OpenTelemetry: when nothing is exported, this small layer still gives
//! every span a W3C trace id and span id, so logs, problem+json bodies and `x-trace-id`
//! keep naming the request and `traceparent` still flows to the next hop.
//!
//! A span inherits its parent's trace id and sampling flag; a root span gets a random
//! trace id, unsampled (nothing here records it). [`set_remote_parent`] adopts the trace
//! of an incoming `traceparent`. Costs one small extension per span and no allocation
//! beyond it.

use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
use tracing::{Subscriber, span};
use tracing_subscriber::{
    Registry,
    layer::{Context, Layer},
    registry::LookupSpan,
};

/// The ids this layer keeps in each span's extensions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ids {
    pub(crate) trace_id: TraceId,
    pub(crate) span_id: SpanId,
    pub(crate) flags: TraceFlags,
}

impl Ids {
    /// As an OpenTelemetry span context (for the propagator).
    pub(crate) fn span_context(&self) -> SpanContext {
        SpanContext::new(
            self.trace_id,
            self.span_id,
            self.flags,
            false,
            TraceState::NONE,
        )
    }
}

/// Assigns [`Ids`] to every new span.
pub(crate) struct IdsLayer;

impl<S> Layer<S> for IdsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    /// Spans up to INFO (the request spans), and whatever the other layers enable. An
    /// unfiltered layer without a hint would raise the process's maximum level to TRACE:
    /// every `debug!` and `trace!` on the request path (hyper-util's pool, the cache)
    /// would then be checked and dispatched to every layer, to be dropped by the log
    /// filter.
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::INFO)
    }

    fn on_new_span(&self, _attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        // `span.parent()` follows an explicit parent, or the current span for contextual
        // spans, as the registry resolved it.
        let inherited = span
            .parent()
            .and_then(|p| p.extensions().get::<Ids>().copied());
        let ids = match inherited {
            Some(parent) => Ids {
                span_id: random_span_id(),
                ..parent
            },
            None => Ids {
                trace_id: random_trace_id(),
                span_id: random_span_id(),
                flags: TraceFlags::default(),
            },
        };
        span.extensions_mut().insert(ids);
    }
}

/// The ids of `span`, when this layer is installed and the span is enabled.
pub(crate) fn ids_of(span: &tracing::Span) -> Option<Ids> {
    span.with_subscriber(|(id, d)| {
        let registry = d.downcast_ref::<Registry>()?;
        let data = registry.span(id)?;
        data.extensions().get::<Ids>().copied()
    })
    .flatten()
}

/// Moves `span` into the trace of a remote parent (keeps its own span id).
pub(crate) fn set_remote_parent(span: &tracing::Span, parent: &SpanContext) {
    span.with_subscriber(|(id, d)| {
        let Some(registry) = d.downcast_ref::<Registry>() else {
            return;
        };
        let Some(data) = registry.span(id) else {
            return;
        };
        let mut ext = data.extensions_mut();
        if let Some(ids) = ext.get_mut::<Ids>() {
            ids.trace_id = parent.trace_id();
            ids.flags = parent.trace_flags();
        }
    });
}

thread_local! {
    /// The generator of ids on this thread: small and fast, seeded from the operating
    /// system, as OpenTelemetry's SDK draws its ids (`RandomIdGenerator`). Ids need to be
    /// unique, not secret; `rand::random` would draw them from ChaCha12.
    static IDS: std::cell::RefCell<rand::rngs::SmallRng> =
        std::cell::RefCell::new(rand::SeedableRng::from_os_rng());
}

/// A random value for an id (trace, span, request): from this thread's fast generator.
/// Not for secrets (keys, tokens): those take `rand::random`.
pub fn random_id<T>() -> T
where
    rand::distr::StandardUniform: rand::distr::Distribution<T>,
{
    IDS.with(|r| rand::Rng::random(&mut *r.borrow_mut()))
}

pub(crate) fn random_trace_id() -> TraceId {
    // Zero is the invalid id; the chance is negligible but the retry is free.
    loop {
        let v: u128 = random_id();
        if v != 0 {
            return TraceId::from_bytes(v.to_be_bytes());
        }
    }
}

pub(crate) fn random_span_id() -> SpanId {
    loop {
        let v: u64 = random_id();
        if v != 0 {
            return SpanId::from_bytes(v.to_be_bytes());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn ids_drawn_on_several_threads_are_all_different() {
        // Each thread seeds its own generator: no two threads may draw the same series.
        let drawn: Vec<u64> = (0..4)
            .map(|_| {
                std::thread::spawn(|| (0..1000).map(|_| random_id::<u64>()).collect::<Vec<_>>())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let unique: std::collections::HashSet<_> = drawn.iter().collect();
        assert_eq!(unique.len(), drawn.len());
    }

    #[test]
    fn children_share_the_trace_id_of_their_parent_and_roots_differ() {
        let subscriber = tracing_subscriber::registry().with(IdsLayer);
        tracing::subscriber::with_default(subscriber, || {
            let root = tracing::info_span!("root");
            let child = root.in_scope(|| tracing::info_span!("child"));
            let other = tracing::info_span!(parent: None, "other");
            let (r, c, o) = (
                ids_of(&root).unwrap(),
                ids_of(&child).unwrap(),
                ids_of(&other).unwrap(),
            );
            assert_eq!(r.trace_id, c.trace_id);
            assert_ne!(r.span_id, c.span_id);
            assert_ne!(r.trace_id, o.trace_id);
        });
    }

    #[test]
    fn a_remote_parent_moves_the_span_and_its_later_children_into_that_trace() {
        let subscriber = tracing_subscriber::registry().with(IdsLayer);
        tracing::subscriber::with_default(subscriber, || {
            let remote = SpanContext::new(
                TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
                SpanId::from_hex("00f067aa0ba902b7").unwrap(),
                TraceFlags::SAMPLED,
                true,
                TraceState::NONE,
            );
            let server = tracing::info_span!("server");
            set_remote_parent(&server, &remote);
            let child = server.in_scope(|| tracing::info_span!("child"));
            let c = ids_of(&child).unwrap();
            assert_eq!(c.trace_id, remote.trace_id());
            assert!(c.flags.is_sampled());
        });
    }
}
