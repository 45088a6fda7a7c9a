//! Log lines that carry the trace: wraps tracing-subscriber's text or JSON formatter and
//! adds the `trace_id` and `span_id` of the span the event happened in, so a log line can
//! be found in Jaeger and a trace's log lines found with grep.

use std::fmt;
use tracing::{Event, Subscriber};
use tracing_subscriber::{
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    registry::LookupSpan,
};

/// A formatter that delegates to `inner` and adds the ids of the event's span.
pub(crate) struct WithTraceIds<F> {
    pub(crate) inner: F,
    /// Whether `inner` writes one JSON object per line (ids go in as keys) or text (ids
    /// are appended as `key=value`).
    pub(crate) json: bool,
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
        // Walk outwards: a span filtered out of the OpenTelemetry layer has no context of
        // its own, but its nearest traced ancestor does.
        let ids = ctx.event_scope().and_then(|scope| {
            scope.into_iter().find_map(|span| {
                let fallback = span.extensions().get::<super::ids::Ids>().copied();
                super::ids_of_span_id(&span.id(), fallback)
            })
        });
        let Some((trace_id, span_id)) = ids else {
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
