//! Log lines that carry the trace: wraps tracing-subscriber's text or JSON formatter and
//! adds the `trace_id` and `span_id` of the span the event happened in, so a log line can
//! be found in Jaeger and a trace's log lines found with grep.

use opentelemetry::trace::{SpanId, TraceId};
use std::{
    fmt,
    sync::{Arc, OnceLock},
};
use tracing::{Event, Subscriber, dispatcher::WeakDispatch};
use tracing_subscriber::{
    Registry,
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    registry::LookupSpan,
};

/// A formatter that delegates to `inner` and adds the ids of the event's span.
pub(crate) struct WithTraceIds<F> {
    pub(crate) inner: F,
    /// Whether `inner` writes one JSON object per line (ids go in as keys) or text (ids
    /// are appended as `key=value`).
    pub(crate) json: bool,
    /// The whole subscriber, to find the event's spans that the log layer's own filter
    /// leaves out (the gateway's request span at the default level).
    pub(crate) whole: Unfiltered,
}

/// The finished subscriber, set once it is built (the log layer is made before it).
/// Holds it weakly: the subscriber owns the layer that owns this.
#[derive(Clone, Default)]
pub(crate) struct Unfiltered(Arc<OnceLock<WeakDispatch>>);

impl Unfiltered {
    pub(crate) fn set(&self, dispatch: WeakDispatch) {
        let _ = self.0.set(dispatch);
    }

    /// The ids of the innermost span around `event` that has them, among all the
    /// subscriber's spans; `None` when the subscriber is not known (or not a
    /// [`Registry`] underneath), or no span around the event has ids.
    ///
    /// Inside an event callback the thread's current dispatcher is not reachable (the
    /// dispatch is in progress), hence the handle; the registry's span stack is its own.
    fn ids_of_event(&self, event: &Event<'_>) -> Option<Option<(TraceId, SpanId)>> {
        let dispatch = self.0.get()?.upgrade()?;
        let registry = dispatch.downcast_ref::<Registry>()?;
        let id = if event.is_contextual() {
            registry.current_span().id().cloned()
        } else {
            event.parent().cloned()
        };
        let Some(span) = id.and_then(|id| registry.span(&id)) else {
            return Some(None);
        };
        // Walk outwards: a span filtered out of the OpenTelemetry layer has no context
        // of its own, but its nearest traced ancestor does.
        Some(span.scope().find_map(|span| {
            let fallback = span.extensions().get::<super::ids::Ids>().copied();
            super::ids_of_span_id(&span.id(), fallback)
        }))
    }
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::with_capacity(256);
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let ids = self.whole.ids_of_event(event).unwrap_or_else(|| {
            // Without the whole subscriber: the spans this layer sees, innermost first.
            ctx.event_scope().and_then(|scope| {
                scope.into_iter().find_map(|span| {
                    let fallback = span.extensions().get::<super::ids::Ids>().copied();
                    super::ids_of_span_id(&span.id(), fallback)
                })
            })
        });
        // No span with ids around the event: a request without a span of its own still
        // names its ids in its context.
        let Some((trace_id, span_id)) = ids.or_else(crate::context::log_ids) else {
            return writer.write_str(&line);
        };
        if self.json {
            match line.strip_prefix('{') {
                Some(rest) => write!(
                    writer,
                    "{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\",{rest}"
                ),
                None => writer.write_str(&line),
            }
        } else {
            let body = line.strip_suffix('\n').unwrap_or(&line);
            writeln!(writer, "{body} trace_id={trace_id} span_id={span_id}")
        }
    }
}
