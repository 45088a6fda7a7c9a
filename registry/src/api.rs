//! The registry's HTTP API: routes, bearer-token check and handlers.
//!
//! | method | path | what |
//! | --- | --- | --- |
//! | `PUT` | `/v1/instances/{service}/{instance}` | register (body `{url, metadata?, lease?, status?, reason?}`): 201 new, 200 renewed |
//! | `PUT` | `/v1/instances/{service}/{instance}/heartbeat` | renew the lease and report readiness (optional body `{status: "passing" \| "critical", reason?}`; none = passing); 404 if unknown |
//! | `DELETE` | `/v1/instances/{service}/{instance}` | deregister: 204; 404 if unknown |
//! | `GET` | `/v1/services` | services with instance counts and indexes |
//! | `GET` | `/v1/services/{service}?index=N&wait=30s` | instances; blocks while the index is `N` |
//! | `GET` | `/` | plain-text table for people with curl |
//! | `GET` | `/healthz`, `/readyz` | liveness and readiness, no token needed |
//!
//! Every other endpoint needs `Authorization: Bearer <token>` when a token is configured.
//!
//! Health follows Consul: each instance runs its own readiness check (the one its
//! `/readyz` answers) before every heartbeat and reports `passing` or `critical` with a
//! reason. Instances carry `status` (and `reason` when critical) in every answer; a
//! change of status moves the service's index, so blocking watches wake at once. The
//! lists show every instance; the client's `Watcher` publishes only passing ones, so a
//! critical instance keeps its registration (and its lease) but gets no traffic.

use crate::{
    error::RegistryError,
    model::{HealthReport, INDEX_HEADER, Instance, RegisterRequest, ServiceList},
    settings::Settings,
    store::{Outcome, Store},
};
use axum::{
    Router,
    body::Bytes,
    extract::{Request, State},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, put},
};
use hotel_common::extract::{Json, Path, Query};
use http::{HeaderValue, StatusCode, header};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::{fmt::Write as _, sync::Arc, time::Duration};
use subtle::ConstantTimeEq;

/// What the handlers share.
#[derive(Clone)]
struct AppState {
    store: Store,
    default_wait: Duration,
    max_wait: Duration,
}

/// The expected token, kept only as its SHA-256 digest: comparing digests in constant
/// time hides both the token's bytes and its length from timing.
struct Auth {
    digest: Option<[u8; 32]>,
}

/// The registry's routes with the shared layers (health, problem+json fallbacks, body
/// limit, request context, server span).
pub fn router(store: Store, settings: &Settings) -> Router {
    let state = AppState {
        store,
        default_wait: settings.default_wait,
        max_wait: settings.max_wait,
    };
    let auth = Arc::new(Auth {
        digest: settings
            .token
            .as_deref()
            .map(|t| Sha256::digest(t.as_bytes()).into()),
    });
    let routes = Router::new()
        .route("/", get(listing))
        .route("/v1/services", get(list_services))
        .route("/v1/services/{service}", get(service_instances))
        .route(
            "/v1/instances/{service}/{instance}",
            put(register).delete(deregister),
        )
        .route(
            "/v1/instances/{service}/{instance}/heartbeat",
            put(heartbeat),
        )
        .route_layer(middleware::from_fn_with_state(auth, require_token))
        .with_state(state);
    let faults =
        hotel_common::fault::Faults::new(&settings.instance, settings.fault_token.as_deref());
    hotel_common::http::finish_instance(
        "registry",
        routes,
        hotel_common::health::always_ready(),
        settings.body_limit,
        &faults,
        &hotel_common::metrics::InstanceMetrics::new(&faults),
    )
}

async fn require_token(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Response {
    let Some(expected) = auth.digest else {
        return next.run(req).await;
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    match presented {
        None => RegistryError::MissingToken.into_response(),
        Some(token) => {
            let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            if bool::from(digest.ct_eq(&expected)) {
                next.run(req).await
            } else {
                RegistryError::WrongToken.into_response()
            }
        }
    }
}

fn with_index(index: u64, mut res: Response) -> Response {
    res.headers_mut()
        .insert(INDEX_HEADER, HeaderValue::from(index));
    res
}

async fn register(
    State(state): State<AppState>,
    Path((service, instance)): Path<(String, String)>,
    Json(body): Json<RegisterRequest>,
) -> Result<Response, RegistryError> {
    let (registered, outcome) = state.store.register(&service, &instance, body)?;
    let status = match outcome {
        Outcome::Created => StatusCode::CREATED,
        Outcome::Updated => StatusCode::OK,
    };
    let index = registered.index;
    Ok(with_index(
        index,
        (status, Json(registered)).into_response(),
    ))
}

async fn heartbeat(
    State(state): State<AppState>,
    Path((service, instance)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    // No body is a plain lease renewal from a client that reports no status: passing.
    let report = if body.iter().all(u8::is_ascii_whitespace) {
        HealthReport::passing()
    } else {
        match hotel_common::extract::parse_json::<HealthReport>(&body) {
            Ok(report) => report,
            Err(problem) => return problem.into_response(),
        }
    };
    match state.store.heartbeat(&service, &instance, report) {
        Ok(renewed) => with_index(renewed.index, Json(renewed).into_response()),
        Err(e) => e.into_response(),
    }
}

async fn deregister(
    State(state): State<AppState>,
    Path((service, instance)): Path<(String, String)>,
) -> Result<Response, RegistryError> {
    let index = state.store.deregister(&service, &instance)?;
    Ok(with_index(index, StatusCode::NO_CONTENT.into_response()))
}

async fn list_services(State(state): State<AppState>) -> Response {
    let list: ServiceList = state.store.services();
    let index = list.index;
    with_index(index, Json(list).into_response())
}

/// Query of `GET /v1/services/{service}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WatchQuery {
    /// Block while the service's index is still this.
    index: Option<u64>,
    /// How long to block at most ("30s", "5m"); the registry's default when absent.
    wait: Option<String>,
}

async fn service_instances(
    State(state): State<AppState>,
    Path(service): Path<String>,
    Query(q): Query<WatchQuery>,
) -> Result<Response, RegistryError> {
    let wait = match q.wait.as_deref() {
        None => state.default_wait,
        Some(raw) => humantime::parse_duration(raw).map_err(|e| RegistryError::BadQuery {
            field: "wait",
            message: format!("{e} (write a duration such as 30s or 5m)"),
        })?,
    };
    let wait = wait.min(state.max_wait);
    // Like Consul, add up to wait/16 so watchers started together do not all come back
    // in the same instant.
    let jitter = wait.mul_f64(rand::random::<f64>() / 16.0);
    let found = state.store.watch(&service, q.index, wait + jitter).await?;
    let index = found.index;
    Ok(with_index(index, Json(found).into_response()))
}

async fn listing(State(state): State<AppState>) -> Response {
    let (index, instances) = state.store.all_instances();
    let services = state.store.services();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "hotel registry: {} services, {} instances, index {index}\n",
        services.services.len(),
        instances.len()
    );
    out.push_str(&table(&instances));
    for s in services.services.iter().filter(|s| s.instances == 0) {
        let _ = writeln!(out, "{}: no instances", s.service);
    }
    let mut res = out.into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    with_index(index, res)
}

/// A padded table, one instance a line.
fn table(instances: &[Instance]) -> String {
    let header = [
        "SERVICE",
        "INSTANCE",
        "URL",
        "HEARTBEAT",
        "LEASE",
        "STATUS",
        "REGISTERED",
        "METADATA",
    ];
    let rows: Vec<[String; 8]> = instances
        .iter()
        .map(|i| {
            // Whole seconds: the table is for reading, the JSON keeps full precision.
            let registered = i
                .registered_at
                .replace_nanosecond(0)
                .unwrap_or(i.registered_at)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            let metadata: Vec<String> =
                i.metadata.iter().map(|(k, v)| format!("{k}={v}")).collect();
            [
                i.service.clone(),
                i.instance.clone(),
                i.url.clone(),
                format!("{:.1}s ago", i.last_heartbeat_age_ms as f64 / 1000.0),
                humantime::format_duration(Duration::from_millis(i.lease_ms)).to_string(),
                match &i.reason {
                    Some(why) => format!("{} ({why})", i.status.as_str()),
                    None => i.status.as_str().to_owned(),
                },
                registered,
                metadata.join(" "),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut l = String::new();
        for (cell, w) in cells.iter().zip(widths) {
            let _ = write!(l, "{cell:<w$}  ");
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&cells);
    }
    out
}
