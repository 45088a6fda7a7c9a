//! Prometheus `/metrics` of every service instance and the registry, the one way they
//! all do it ([`InstanceMetrics`], a `Registry` per process object, so several apps can
//! share a test process): requests by route, method and status and their latency
//! (recorded by [`InstanceMetrics::layer`] in `crate::http::finish_instance`), injected
//! faults by kind, database query latency by operation and table ([`DbTimingLayer`],
//! fed by the `db` spans of `crate::db::span`), and whatever the instance adds
//! ([`InstanceMetrics::register`]: database pool use, the event bus, booking's upstream
//! client). Everything is under the `hotel_` prefix; the buckets are the gateway's
//! (`hotel_upstream::latency_histogram` has the same ones).

use crate::fault::Faults;
use axum::{
    Router,
    extract::{MatchedPath, State},
    response::IntoResponse,
    routing::get,
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::time::Instant;

/// Labels of a served request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The matched route (`/rooms/{id}`), or `none`.
    pub route: String,
    /// HTTP method.
    pub method: String,
    /// Response status.
    pub status: u16,
}

/// Labels naming a route.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The matched route, or `none`.
    pub route: String,
}

/// Labels of a database query.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DbLabels {
    /// SELECT, INSERT, UPDATE, DELETE, ...
    pub operation: String,
    /// The table.
    pub table: String,
}

/// Labels of an injected fault.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// error, abort or latency.
    pub kind: &'static str,
}

/// The buckets of every latency histogram: 0.5 ms doubling to about 16 s.
pub fn latency_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0005, 2.0, 16,
    ))
}

type Hook = Box<dyn Fn() + Send + Sync>;

type DbFamily = Family<DbLabels, Histogram, fn() -> Histogram>;

/// The metrics of one instance, served at `/metrics`.
pub struct InstanceMetrics {
    /// Every family; locked to add one and to encode.
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// Run before each encoding, to refresh gauges read from elsewhere (pool use).
    hooks: Mutex<Vec<Hook>>,
    /// More text expositions appended (families that keep their own registry).
    extra: Mutex<Vec<Box<dyn Fn() -> String + Send + Sync>>>,
}

impl std::fmt::Debug for InstanceMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InstanceMetrics")
    }
}

/// Database query latency, process-wide: the `db` spans that feed it carry no handle to
/// an instance, and a process runs one instance (tests without a telemetry subscriber
/// record nothing).
fn db_queries() -> &'static DbFamily {
    static F: OnceLock<DbFamily> = OnceLock::new();
    F.get_or_init(|| Family::new_with_constructor(latency_histogram))
}

impl InstanceMetrics {
    /// The request families, the fault counters of `faults` and the database query
    /// latency, registered under `hotel_`.
    pub fn new(faults: &Faults) -> Arc<Self> {
        let mut registry = Registry::with_prefix("hotel");
        let requests = Family::<RequestLabels, Counter>::default();
        let duration = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "http_requests",
            "Requests served, by route, method and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to the response head, by route",
            duration.clone(),
        );
        registry.register(
            "faults_injected",
            "Faults injected into this instance's requests (hotel fault), by kind",
            faults.counters().family.clone(),
        );
        registry.register(
            "db_query_duration_seconds",
            "Database query latency, by operation and table",
            db_queries().clone(),
        );
        Arc::new(InstanceMetrics {
            registry: Mutex::new(registry),
            requests,
            duration,
            hooks: Mutex::new(Vec::new()),
            extra: Mutex::new(Vec::new()),
        })
    }

    /// Adds families (`register` gets the `hotel_`-prefixed registry).
    pub fn register(&self, register: impl FnOnce(&mut Registry)) {
        register(&mut self.registry.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Runs `hook` before every scrape (to set gauges read from elsewhere).
    pub fn on_scrape(&self, hook: impl Fn() + Send + Sync + 'static) {
        self.hooks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(hook));
    }

    /// Appends another text exposition (a part with a registry of its own).
    pub fn append(&self, encode: impl Fn() -> String + Send + Sync + 'static) {
        self.extra
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(encode));
    }

    /// The OpenMetrics text of every family.
    pub fn encode(&self) -> String {
        for hook in self.hooks.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            hook();
        }
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if prometheus_client::encoding::text::encode_registry(&mut out, &registry).is_err() {
            tracing::error!("metrics could not be encoded");
        }
        drop(registry);
        for extra in self.extra.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            for line in extra().lines().filter(|l| *l != "# EOF") {
                out.push_str(line);
                out.push('\n');
            }
        }
        out.push_str("# EOF\n");
        out
    }

    /// `GET /metrics`.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/metrics", get(scrape))
            .with_state(self.clone())
    }

    /// Counts and times every request of a router (a `from_fn` layer inside the server
    /// span, where the matched route is known).
    pub async fn layer(
        State(m): State<Arc<InstanceMetrics>>,
        req: axum::extract::Request,
        next: axum::middleware::Next,
    ) -> axum::response::Response {
        let route = req
            .extensions()
            .get::<MatchedPath>()
            .map_or_else(|| "none".to_owned(), |p| p.as_str().to_owned());
        let method = req.method().as_str().to_owned();
        let start = Instant::now();
        let res = next.run(req).await;
        m.duration
            .get_or_create(&RouteLabels {
                route: route.clone(),
            })
            .observe(start.elapsed().as_secs_f64());
        m.requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status: res.status().as_u16(),
            })
            .inc();
        res
    }
}

async fn scrape(State(m): State<Arc<InstanceMetrics>>) -> impl IntoResponse {
    (
        [(
            http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
}

/// Times the `db` spans of `crate::db::span` into `hotel_db_query_duration_seconds`.
#[derive(Debug, Default, Clone, Copy)]
pub struct DbTimingLayer;

/// What a `db` span carries for its timing.
struct DbTiming {
    start: Instant,
    labels: DbLabels,
}

#[derive(Default)]
struct DbFields {
    operation: String,
    table: String,
}

impl tracing::field::Visit for DbFields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "db.operation.name" => self.operation = value.to_owned(),
            "db.collection.name" => self.table = value.to_owned(),
            _ => {}
        }
    }

    fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
}

impl<S> tracing_subscriber::Layer<S> for DbTimingLayer
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    /// The `db` spans are at INFO; without a hint this layer would raise the process's
    /// maximum level to TRACE (see `IdsLayer`'s).
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::INFO)
    }

    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if attrs.metadata().name() != "db" {
            return;
        }
        let mut f = DbFields::default();
        attrs.record(&mut f);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(DbTiming {
                start: Instant::now(),
                labels: DbLabels {
                    operation: f.operation,
                    table: f.table,
                },
            });
        }
    }

    fn on_close(&self, id: tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        if let Some(t) = span.extensions_mut().remove::<DbTiming>() {
            db_queries()
                .get_or_create(&t.labels)
                .observe(t.start.elapsed().as_secs_f64());
        }
    }
}
