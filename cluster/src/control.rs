//! The control channel between `hotel kill|stop|pause|resume|start|scale` and the
//! `hotel up` that owns the children: a small HTTP API on loopback, guarded by a bearer
//! token written to `cluster.json` (readable only by whoever can read the data directory).

use crate::{
    clusterfile::{ClusterFile, pid_alive},
    settings::Role,
    supervisor::{ControlError, InstanceView, Supervisor},
};
use axum::{
    Json, Router,
    extract::{Path, Request, State},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use hotel_common::{Problem, fault::FaultSpec};
use serde::{Deserialize, Serialize};
use std::{path::Path as FsPath, sync::Arc, time::Duration};
use subtle::ConstantTimeEq;

/// Body of `POST /v1/services/{service}/scale`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    /// Wanted number of live replicas.
    pub replicas: u32,
    /// Allow 0 (stopping every instance of the service).
    #[serde(default)]
    pub force: bool,
}

/// Answer of every control call that changes or lists instances.
#[derive(Debug, Serialize, Deserialize)]
pub struct InstancesResponse {
    /// The instances the call concerned (all of them for the listing).
    pub instances: Vec<InstanceView>,
}

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        let (status, kind) = match &self {
            ControlError::UnknownInstance { .. } => (StatusCode::NOT_FOUND, "unknown-instance"),
            ControlError::NotRunning { .. }
            | ControlError::AlreadyRunning(_)
            | ControlError::WouldRemoveAll { .. } => (StatusCode::CONFLICT, "conflict"),
            ControlError::NotScalable(_) | ControlError::BadCount(_) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "validation-failed")
            }
            ControlError::StartFailed(_) => (StatusCode::BAD_GATEWAY, "start-failed"),
            ControlError::NoFaultSwitch(_) => (StatusCode::CONFLICT, "conflict"),
            ControlError::FaultFailed { .. } => (StatusCode::BAD_GATEWAY, "fault-failed"),
            ControlError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting-down"),
        };
        Problem::new(status, kind, self.to_string()).into_response()
    }
}

fn role_of(service: &str) -> Result<Role, Box<Problem>> {
    service
        .parse::<Role>()
        .map_err(|why| Box::new(Problem::invalid_field("service", why)))
}

/// The control API router (without the token check; see [`router`]).
fn routes() -> Router<Arc<Supervisor>> {
    Router::new()
        .route(
            "/v1/instances",
            get(|State(s): State<Arc<Supervisor>>| async move {
                Json(InstancesResponse {
                    instances: s.instances(),
                })
            }),
        )
        .route("/v1/instances/{name}/{action}", post(instance_action))
        .route(
            "/v1/instances/{name}/fault",
            axum::routing::put(set_fault).delete(clear_fault),
        )
        .route("/v1/services/{service}/start", post(start))
        .route("/v1/services/{service}/scale", post(scale))
}

/// The control API with its credentials check: the bearer token (the CLI), or with
/// `dashboard` the page's session cookie together with its CSRF header (see
/// [`crate::dashboard`]).
pub fn router(
    sup: Arc<Supervisor>,
    token: String,
    dashboard: Option<crate::dashboard::DashboardAuth>,
) -> Router {
    let token: Arc<str> = token.into();
    routes()
        .fallback(|| async { Problem::new(StatusCode::NOT_FOUND, "no-route", "no such route") })
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            let token = Arc::clone(&token);
            let dashboard = dashboard.clone();
            async move {
                let presented = req
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "));
                if let Some(given) = presented
                    && bool::from(given.as_bytes().ct_eq(token.as_bytes()))
                {
                    return next.run(req).await;
                }
                let verdict = match &dashboard {
                    Some(d) if presented.is_none() => d.allows_control(req.headers()),
                    _ => Err(Box::new(Problem::unauthorized(
                        "the control API needs the control_token from cluster.json",
                    ))),
                };
                match verdict {
                    Ok(()) => next.run(req).await,
                    Err(p) => p.into_response(),
                }
            }
        }))
        .with_state(sup)
}

async fn instance_action(
    State(sup): State<Arc<Supervisor>>,
    Path((name, action)): Path<(String, String)>,
) -> Result<Json<InstancesResponse>, Response> {
    let view = match action.as_str() {
        "kill" => sup.kill(&name).await,
        "stop" => sup.stop(&name).await,
        "pause" => sup.pause(&name),
        "resume" => sup.resume(&name),
        other => {
            return Err(Problem::invalid_field(
                "action",
                format!("unknown action {other:?}; expected kill, stop, pause or resume"),
            )
            .into_response());
        }
    }
    .map_err(IntoResponse::into_response)?;
    Ok(Json(InstancesResponse {
        instances: vec![view],
    }))
}

/// `PUT /v1/instances/{name}/fault` with a `FaultSpec`: checked here (422 naming the
/// field), then set through the instance's own fault control endpoint.
async fn set_fault(
    State(sup): State<Arc<Supervisor>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<InstancesResponse>, Response> {
    let spec: FaultSpec =
        hotel_common::extract::parse_json(&body).map_err(IntoResponse::into_response)?;
    spec.validate()
        .map_err(|(field, why)| Problem::invalid_field(field, why).into_response())?;
    let view = sup
        .fault(&name, Some(spec))
        .await
        .map_err(IntoResponse::into_response)?;
    Ok(Json(InstancesResponse {
        instances: vec![view],
    }))
}

/// `DELETE /v1/instances/{name}/fault`.
async fn clear_fault(
    State(sup): State<Arc<Supervisor>>,
    Path(name): Path<String>,
) -> Result<Json<InstancesResponse>, Response> {
    let view = sup
        .fault(&name, None)
        .await
        .map_err(IntoResponse::into_response)?;
    Ok(Json(InstancesResponse {
        instances: vec![view],
    }))
}

async fn start(
    State(sup): State<Arc<Supervisor>>,
    Path(service): Path<String>,
) -> Result<Json<InstancesResponse>, Response> {
    let role = role_of(&service).map_err(|p| p.into_response())?;
    let view = sup.start(role).await.map_err(IntoResponse::into_response)?;
    Ok(Json(InstancesResponse {
        instances: vec![view],
    }))
}

async fn scale(
    State(sup): State<Arc<Supervisor>>,
    Path(service): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<InstancesResponse>, Response> {
    let role = role_of(&service).map_err(|p| p.into_response())?;
    let req: ScaleRequest =
        hotel_common::extract::parse_json(&body).map_err(IntoResponse::into_response)?;
    let views = sup
        .scale(role, req.replicas, req.force)
        .await
        .map_err(IntoResponse::into_response)?;
    Ok(Json(InstancesResponse { instances: views }))
}

/// Why a control command failed on the client side; shown to the user as is.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Reading `cluster.json` failed.
    #[error(transparent)]
    File(#[from] crate::clusterfile::FileError),
    /// The supervisor is gone.
    #[error(
        "the cluster in {dir} is not running (hotel up, pid {pid}, has exited); start it with `hotel up --data-dir {dir}`"
    )]
    NotRunning {
        /// The data directory.
        dir: String,
        /// The supervisor's pid.
        pid: u32,
    },
    /// The supervisor answered with a problem.
    #[error("{0}")]
    Refused(String),
    /// Transport failure.
    #[error("cannot reach hotel up at {url}: {why}")]
    Unreachable {
        /// The control URL.
        url: String,
        /// The error.
        why: String,
    },
}

/// A connection to the supervisor of the cluster in one data directory.
pub struct ControlClient {
    /// What `cluster.json` says.
    pub file: ClusterFile,
    http: reqwest::Client,
}

impl ControlClient {
    /// Reads `<data_dir>/cluster.json` and checks that its `hotel up` is alive.
    pub fn open(data_dir: &FsPath) -> Result<ControlClient, ClientError> {
        let file = ClusterFile::read(data_dir)?;
        if !pid_alive(file.supervisor_pid) {
            return Err(ClientError::NotRunning {
                dir: data_dir.display().to_string(),
                pid: file.supervisor_pid,
            });
        }
        let http = hotel_common::tls::internal::reqwest_client()
            // Generous: `stop` waits for a drain and `start` for readiness.
            .timeout(Duration::from_secs(120))
            .no_proxy()
            .build()
            .map_err(|e| ClientError::Unreachable {
                url: file.control_url.clone(),
                why: e.to_string(),
            })?;
        Ok(ControlClient { file, http })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<InstancesResponse, ClientError> {
        let url = format!("{}{path}", self.file.control_url);
        let mut req = self
            .http
            .request(method, &url)
            .bearer_auth(&self.file.control_token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let unreachable = |e: reqwest::Error| ClientError::Unreachable {
            url: url.clone(),
            why: e.to_string(),
        };
        let res = req.send().await.map_err(unreachable)?;
        let status = res.status();
        let bytes = res.bytes().await.map_err(unreachable)?;
        if !status.is_success() {
            let detail = serde_json::from_slice::<Problem>(&bytes)
                .map(|p| p.detail)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            return Err(ClientError::Refused(detail));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Refused(format!("unexpected answer from hotel up: {e}")))
    }

    /// Every instance the supervisor knows, live or not.
    pub async fn instances(&self) -> Result<Vec<InstanceView>, ClientError> {
        Ok(self
            .call(reqwest::Method::GET, "/v1/instances", None)
            .await?
            .instances)
    }

    /// `kill`, `stop`, `pause` or `resume` one instance.
    pub async fn act(&self, name: &str, action: &str) -> Result<Vec<InstanceView>, ClientError> {
        let path = format!("/v1/instances/{}/{action}", encode(name));
        Ok(self
            .call(reqwest::Method::POST, &path, None)
            .await?
            .instances)
    }

    /// Sets (`Some`) or clears (`None`) the fault of instance `name`.
    pub async fn fault(
        &self,
        name: &str,
        spec: Option<&FaultSpec>,
    ) -> Result<Vec<InstanceView>, ClientError> {
        let path = format!("/v1/instances/{}/fault", encode(name));
        let (method, body) = match spec {
            Some(s) => (
                reqwest::Method::PUT,
                Some(serde_json::to_value(s).map_err(|e| ClientError::Refused(e.to_string()))?),
            ),
            None => (reqwest::Method::DELETE, None),
        };
        Ok(self.call(method, &path, body).await?.instances)
    }

    /// One more replica of `service`.
    pub async fn start(&self, service: &str) -> Result<Vec<InstanceView>, ClientError> {
        let path = format!("/v1/services/{}/start", encode(service));
        Ok(self
            .call(reqwest::Method::POST, &path, None)
            .await?
            .instances)
    }

    /// Exactly `replicas` live replicas of `service` (0 only with `force`).
    pub async fn scale(
        &self,
        service: &str,
        replicas: u32,
        force: bool,
    ) -> Result<Vec<InstanceView>, ClientError> {
        let path = format!("/v1/services/{}/scale", encode(service));
        let body = serde_json::json!({ "replicas": replicas, "force": force });
        Ok(self
            .call(reqwest::Method::POST, &path, Some(body))
            .await?
            .instances)
    }
}

/// Percent-encodes a path segment (instance names are user input).
fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{settings::UpSettings, supervisor::UpConfig};
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode("room-2"), "room-2");
        assert_eq!(encode("a/b c"), "a%2Fb%20c");
    }

    /// A control API over a supervisor that has started nothing.
    fn app() -> Router {
        let cfg = UpConfig {
            settings: UpSettings::default(),
            data_dir: std::env::temp_dir(),
            exe: "/nonexistent/hotel".into(),
            otlp_endpoint: None,
            databases: Default::default(),
            events_url: None,
            registry_token: "r".into(),
            admin_token: "a".into(),
            api_key: "k".into(),
            control_token: "secret".into(),
            fault_token: "f".into(),
            gateway_config: None,
            tls: None,
            internal_tls: None,
        };
        router(
            Supervisor::new(cfg, "http://127.0.0.1:1".into(), None),
            "secret".into(),
            Some(crate::dashboard::DashboardAuth::new(
                "dsh_login".into(),
                "session".into(),
            )),
        )
    }

    async fn call(
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (StatusCode, serde_json::Value) {
        let mut req = axum::http::Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let res = app()
            .oneshot(req.body(Body::from(body.to_owned())).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    #[tokio::test]
    async fn every_call_needs_the_control_token() {
        assert_eq!(
            call("GET", "/v1/instances", None, "").await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            call("GET", "/v1/instances", Some("guess"), "").await.0,
            StatusCode::UNAUTHORIZED
        );
        let (status, body) = call("GET", "/v1/instances", Some("secret"), "").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["instances"], serde_json::json!([]));
    }

    /// `GET /v1/instances` with the given headers.
    async fn list_with(headers: &[(&str, &str)]) -> (StatusCode, serde_json::Value) {
        let mut req = axum::http::Request::builder().uri("/v1/instances");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = app()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn the_dashboard_calls_with_its_cookie_and_csrf_header_from_a_loopback_host_only() {
        let cookie = ("cookie", "other=1; hotel_dashboard=session");
        let csrf = ("x-hotel-dashboard", "1");
        let host = ("host", "127.0.0.1:4000");
        assert_eq!(list_with(&[cookie, csrf, host]).await.0, StatusCode::OK);
        assert_eq!(
            list_with(&[cookie, csrf, ("host", "localhost:4000")])
                .await
                .0,
            StatusCode::OK
        );
        // No CSRF header: what a cross-site form could send.
        let (status, body) = list_with(&[cookie, host]).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("x-hotel-dashboard")
        );
        // A rebound name.
        let (status, body) = list_with(&[cookie, csrf, ("host", "evil.example:4000")]).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        // The header without the cookie, a wrong cookie, or the login token as cookie.
        assert_eq!(list_with(&[csrf, host]).await.0, StatusCode::UNAUTHORIZED);
        for wrong in [
            "hotel_dashboard=sessio",
            "hotel_dashboard=dsh_login",
            "x_hotel_dashboard=session",
        ] {
            assert_eq!(
                list_with(&[("cookie", wrong), csrf, host]).await.0,
                StatusCode::UNAUTHORIZED,
                "{wrong}"
            );
        }
        // A wrong bearer token does not fall back to the cookie.
        assert_eq!(
            list_with(&[cookie, csrf, host, ("authorization", "Bearer guess")])
                .await
                .0,
            StatusCode::UNAUTHORIZED
        );
    }

    #[tokio::test]
    async fn unknown_instances_services_and_actions_are_named_in_the_problem() {
        let (status, body) = call("POST", "/v1/instances/room-9/kill", Some("secret"), "").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(
            body["detail"].as_str().unwrap().contains("room-9"),
            "{body}"
        );
        let (status, body) = call("POST", "/v1/instances/room-9/explode", Some("secret"), "").await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["errors"][0]["field"], "action");
        let (status, body) = call("POST", "/v1/services/spa/start", Some("secret"), "").await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["errors"][0]["field"], "service");
    }

    #[tokio::test]
    async fn scale_bodies_are_checked_before_anything_starts() {
        let (status, body) = call(
            "POST",
            "/v1/services/gateway/scale",
            Some("secret"),
            r#"{"replicas":2}"#,
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            body["detail"].as_str().unwrap().contains("exactly one"),
            "{body}"
        );
        let (status, body) = call(
            "POST",
            "/v1/services/room/scale",
            Some("secret"),
            r#"{"replicas":99}"#,
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let (status, body) = call(
            "POST",
            "/v1/services/room/scale",
            Some("secret"),
            r#"{"replicas":"two"}"#,
        )
        .await;
        assert!(status.is_client_error(), "{status} {body}");
        assert!(body.to_string().contains("replicas"), "{body}");
        let (status, _) = call(
            "POST",
            "/v1/services/room/scale",
            Some("secret"),
            r#"{"replicas":1,"x":1}"#,
        )
        .await;
        assert!(status.is_client_error());
    }
}
