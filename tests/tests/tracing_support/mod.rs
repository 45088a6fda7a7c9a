//! An OTLP trace receiver inside the test process, speaking both OTLP/gRPC and
//! OTLP/HTTP protobuf on 127.0.0.1 ephemeral ports, that keeps every span it is sent
//! (flattened, with its resource) for exact assertions.

#![allow(dead_code)] // each test file uses a different part

use anyhow::{Context, Result, bail};
use hotel_tests::{TempDir, UP_EPHEMERAL_PORTS, hotel_bin, signal_pid, wait_exit};
use nix::sys::signal::Signal;
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, KeyValue, any_value::Value as OtlpValue},
};
use prost::Message;
use serde_json::Value;
use std::{
    collections::HashMap,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// One received span with its resource, ids as lowercase hex.
#[derive(Debug, Clone)]
pub struct RSpan {
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    /// OTLP span kind: 1 internal, 2 server, 3 client.
    pub kind: i32,
    pub attributes: HashMap<String, String>,
    /// The attributes that were sent as integers.
    pub int_attributes: HashMap<String, i64>,
    /// OTLP status code: 0 unset, 1 ok, 2 error.
    pub status_code: i32,
    pub status_message: String,
    pub resource: HashMap<String, String>,
}

impl RSpan {
    /// An attribute's value as a string, or "" when absent.
    pub fn attr(&self, key: &str) -> &str {
        self.attributes.get(key).map_or("", String::as_str)
    }

    /// An attribute sent as an integer (`None` when absent or of another type).
    pub fn int_attr(&self, key: &str) -> Option<i64> {
        self.int_attributes.get(key).copied()
    }

    /// The resource's `service.name`.
    pub fn service(&self) -> &str {
        self.resource.get("service.name").map_or("", String::as_str)
    }
}

pub const KIND_SERVER: i32 = 2;
pub const KIND_CLIENT: i32 = 3;
pub const STATUS_ERROR: i32 = 2;

/// The running receiver; its servers stop when it is dropped.
pub struct Receiver {
    /// `http://127.0.0.1:PORT` of the gRPC endpoint.
    pub grpc_url: String,
    /// `http://127.0.0.1:PORT` of the HTTP endpoint (spans are posted to `/v1/traces`).
    pub http_url: String,
    spans: Arc<Mutex<Vec<RSpan>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[derive(Clone)]
struct Sink(Arc<Mutex<Vec<RSpan>>>);

impl Sink {
    fn take(&self, req: ExportTraceServiceRequest) {
        let mut out = self.0.lock().expect("receiver lock");
        for rs in req.resource_spans {
            let resource = rs
                .resource
                .map(|r| attrs(&r.attributes))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    let status = s.status.unwrap_or_default();
                    out.push(RSpan {
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent_span_id: hex(&s.parent_span_id),
                        name: s.name,
                        kind: s.kind,
                        attributes: attrs(&s.attributes),
                        int_attributes: ints(&s.attributes),
                        status_code: status.code,
                        status_message: status.message,
                        resource: resource.clone(),
                    });
                }
            }
        }
    }
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.take(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn value(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(OtlpValue::StringValue(s)) => s.clone(),
        Some(OtlpValue::IntValue(i)) => i.to_string(),
        Some(OtlpValue::BoolValue(b)) => b.to_string(),
        Some(OtlpValue::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn ints(kvs: &[KeyValue]) -> HashMap<String, i64> {
    kvs.iter()
        .filter_map(
            |kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(OtlpValue::IntValue(i)) => Some((kv.key.clone(), *i)),
                _ => None,
            },
        )
        .collect()
}

fn attrs(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), value(&kv.value)))
        .collect()
}

impl Receiver {
    /// Starts both endpoints on 127.0.0.1 ephemeral ports.
    pub async fn start() -> Receiver {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let sink = Sink(spans.clone());

        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind grpc");
        let grpc_url = format!("http://{}", grpc.local_addr().expect("grpc addr"));
        let grpc_sink = sink.clone();
        let grpc_task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(grpc_sink))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(grpc))
                .await;
        });

        let http = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind http");
        let http_url = format!("http://{}", http.local_addr().expect("http addr"));
        let http_sink = sink.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| {
                let sink = http_sink.clone();
                async move {
                    match ExportTraceServiceRequest::decode(body) {
                        Ok(req) => {
                            sink.take(req);
                            let body = ExportTraceServiceResponse {
                                partial_success: None,
                            }
                            .encode_to_vec();
                            (
                                http::StatusCode::OK,
                                [(http::header::CONTENT_TYPE, "application/x-protobuf")],
                                body,
                            )
                        }
                        Err(_) => (
                            http::StatusCode::BAD_REQUEST,
                            [(http::header::CONTENT_TYPE, "text/plain")],
                            b"not an ExportTraceServiceRequest".to_vec(),
                        ),
                    }
                }
            }),
        );
        let http_task = tokio::spawn(async move {
            let _ = axum::serve(http, app).await;
        });

        Receiver {
            grpc_url,
            http_url,
            spans,
            tasks: vec![grpc_task, http_task],
        }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<RSpan> {
        self.spans.lock().expect("receiver lock").clone()
    }

    /// Spans of one trace.
    pub fn trace(&self, trace_id: &str) -> Vec<RSpan> {
        self.spans()
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect()
    }

    /// Polls until `done` holds for the received spans, or fails after `within` with
    /// what arrived.
    pub async fn wait_until(
        &self,
        within: Duration,
        what: &str,
        done: impl Fn(&[RSpan]) -> bool,
    ) -> Vec<RSpan> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "timed out after {within:?} waiting for {what}; received:\n{}",
                    dump(&spans)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// One line per span, for failure messages.
pub fn dump(spans: &[RSpan]) -> String {
    spans
        .iter()
        .map(|s| {
            format!(
                "  [{}] {} trace={} span={} parent={} kind={} status={} {:?}",
                s.service(),
                s.name,
                s.trace_id,
                s.span_id,
                s.parent_span_id,
                s.kind,
                s.status_code,
                s.attributes
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A fresh W3C trace id and span id for a caller span that only the test knows.
pub fn new_caller() -> (String, String) {
    let t = uuid::Uuid::new_v4().simple().to_string();
    let s = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    (t, s)
}

/// A span as far as its place in the tree goes, whoever received it (this receiver or
/// Jaeger).
pub trait SpanLink {
    /// Its span id.
    fn id(&self) -> &str;
    /// Its parent's span id; empty for a root span.
    fn parent_id(&self) -> &str;
}

impl SpanLink for RSpan {
    fn id(&self) -> &str {
        &self.span_id
    }

    fn parent_id(&self) -> &str {
        &self.parent_span_id
    }
}

/// Whether `span` descends from `ancestor_id` within `spans`.
pub fn descends_from<S: SpanLink>(spans: &[S], span: &S, ancestor_id: &str) -> bool {
    let mut parent = span.parent_id();
    // Bounded: a malformed trace with a cycle must fail the check, not hang the test.
    for _ in 0..64 {
        if parent.is_empty() {
            return false;
        }
        if parent == ancestor_id {
            return true;
        }
        match spans.iter().find(|s| s.id() == parent) {
            Some(p) => parent = p.parent_id(),
            None => return false,
        }
    }
    false
}

/// A running `hotel up`. On drop: SIGTERM (children drain and flush their spans), then
/// SIGKILL for it and for every instance it listed, so nothing outlives the test.
pub struct Cluster {
    child: Child,
    dir: TempDir,
    /// `http://127.0.0.1:PORT` of the gateway.
    pub gateway: String,
    /// The development API key.
    pub api_key: String,
}

impl Cluster {
    /// Starts `hotel up` (customer=1, room=2, booking=1) exporting over OTLP/gRPC to
    /// `otlp`, and waits until `cluster.json` says it is ready.
    pub async fn up(otlp: &str, test: &str) -> Result<Cluster> {
        let dir = TempDir::new(test);
        let log = std::fs::File::create(dir.path().join("up.log"))?;
        let child = Command::new(hotel_bin())
            .args(["up", "--data-dir"])
            .arg(dir.path())
            .args(["--replicas", "customer=1,room=2,booking=1"])
            .args(UP_EPHEMERAL_PORTS)
            .args(["--otlp-endpoint", otlp])
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
            // Short batches: spans reach Jaeger within a fraction of a second.
            .env("OTEL_BSP_SCHEDULE_DELAY", "200")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .env_remove("OTEL_TRACES_SAMPLER")
            .env_remove("OTEL_SERVICE_NAME")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("spawn hotel up")?;
        let mut cluster = Cluster {
            child,
            dir,
            gateway: String::new(),
            api_key: String::new(),
        };
        let file = cluster.dir.path().join("cluster.json");
        let deadline = Instant::now() + Duration::from_secs(120);
        let ready = loop {
            let v: Option<Value> = std::fs::read_to_string(&file)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok());
            if let Some(v) = v.filter(|v| v["ready"] == true && v["gateway_url"].is_string()) {
                break v;
            }
            if let Ok(Some(status)) = cluster.child.try_wait() {
                bail!(
                    "hotel up exited ({status}) before its cluster was ready; log:\n{}",
                    cluster.log()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "cluster not ready within 120 s; hotel up log:\n{}",
                    cluster.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        cluster.gateway = ready["gateway_url"]
            .as_str()
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_owned();
        cluster.api_key = ready["api_key"].as_str().unwrap_or_default().to_owned();
        Ok(cluster)
    }

    /// The supervisor's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("up.log")).unwrap_or_default()
    }

    /// (name, service, pid) of every instance in `cluster.json`.
    pub fn instances(&self) -> Vec<(String, String, u32)> {
        let text =
            std::fs::read_to_string(self.dir.path().join("cluster.json")).unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        v["instances"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|i| {
                        Some((
                            i["name"].as_str()?.to_owned(),
                            i["service"].as_str()?.to_owned(),
                            u32::try_from(i["pid"].as_u64()?).ok()?,
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A request to the gateway with the API key.
    pub fn request(
        &self,
        client: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        client
            .request(method, format!("{}{path}", self.gateway))
            .bearer_auth(&self.api_key)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let instances = self.instances();
        signal_pid(self.child.id(), Signal::SIGTERM);
        wait_exit(&mut self.child, Duration::from_secs(30));
        let _ = self.child.kill();
        let _ = self.child.wait();
        for (_, _, pid) in instances {
            signal_pid(pid, Signal::SIGKILL);
        }
    }
}
