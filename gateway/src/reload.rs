//! Live reconfiguration: `hotel reload`, `POST /admin/reload` and SIGHUP read the
//! gateway's configuration again, validate it whole and swap the built edge in
//! atomically.
//!
//! Everything a request needs (routes, upstream stacks of routes, key cell, rate-limit
//! buckets, in-flight counters, cache, the layered edge service) hangs off one
//! [`Generation`]. The listener calls [`LiveEdge`], which loads the current generation
//! once per request (an `ArcSwap` load: no lock) and hands the request to that
//! generation's stack. A request in flight holds its generation to the end, so it
//! finishes under the configuration it started with; the next request on the same
//! connection sees the new one. Connections are the listener's and never notice.
//!
//! Kept across a reload when their configuration is unchanged: each service's upstream
//! (balancer, breakers, latency estimates, discovery), the rate limiter and every
//! client's bucket, the global in-flight counter, the HTTP cache. The metrics registry
//! and the pooled client are kept always. Keys whose change needs a new socket or
//! runtime (`listen`, `admin_listen`, `worker_threads`, the connection-level `[limits]`,
//! the pooled client, the registry link, the admin token) are reported in
//! [`Reloaded::restart_required`] and keep their running value.

use crate::{
    Settings,
    body::GatewayBody,
    cache::HttpCache,
    docs, edge,
    metrics::{Metrics, ReloadLabels},
    routes::RouteTable,
    settings::{Config, ServiceConfig},
    shield::Protections,
};
use arc_swap::ArcSwap;
use futures::future::BoxFuture;
use hotel_common::process::BoxError;
use hotel_upstream::{HttpClient, ServiceUpstream, Source};
use http::{Request, Response};
use hyper::body::Incoming;
use serde::Serialize;
use std::{
    collections::BTreeMap,
    convert::Infallible,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
};
use time::OffsetDateTime;
use tower::Service;

/// What one call of the edge returns.
pub(crate) type EdgeFuture = BoxFuture<'static, Result<Response<GatewayBody>, Infallible>>;

/// The whole edge of one generation, as one call. Not a boxed `Service`: that is cloned
/// (a heap copy of the layer stack) for every request; this clones the stack's handles
/// on the stack frame and calls it (see [`edge_fn`]).
pub(crate) type EdgeService = Arc<dyn Fn(Request<Incoming>) -> EdgeFuture + Send + Sync>;

/// `svc` as an [`EdgeService`]: every layer of the edge is ready at once (none holds a
/// permit or a queue), so a call is a readiness check with a no-op waker and the call;
/// a layer that ever answered not-ready would be driven through `oneshot` instead.
fn edge_fn<S>(svc: S) -> EdgeService
where
    S: Service<
            Request<Incoming>,
            Response = Response<GatewayBody>,
            Error = Infallible,
            Future = EdgeFuture,
        > + Clone
        + Send
        + Sync
        + 'static,
{
    Arc::new(move |req| {
        let mut s = svc.clone();
        match s.poll_ready(&mut Context::from_waker(std::task::Waker::noop())) {
            Poll::Ready(Ok(())) => s.call(req),
            Poll::Pending => Box::pin(tower::ServiceExt::oneshot(s, req)),
        }
    })
}

/// Reads the configuration again (defaults < file < environment < command line).
pub type Loader = Box<dyn Fn() -> Result<Settings, BoxError> + Send + Sync>;

/// Picks the instance source of a service (the registry, static instances, or a test's).
pub(crate) type SourceFn = Box<dyn FnMut(&str, &ServiceConfig) -> Source + Send>;

/// One configuration and all the live state built from it.
pub(crate) struct Generation {
    /// 1 at startup, +1 per accepted reload.
    pub(crate) version: u64,
    pub(crate) loaded_at: OffsetDateTime,
    pub(crate) config: Config,
    /// The settings it was validated from, secrets redacted (`None` when the gateway was
    /// built from a `Config` alone, as tests do).
    pub(crate) settings: Option<serde_json::Value>,
    pub(crate) stack: EdgeService,
    pub(crate) gateway: Arc<edge::Gateway>,
    pub(crate) services: BTreeMap<String, Arc<ServiceUpstream>>,
    pub(crate) cache: Option<Arc<HttpCache>>,
    pub(crate) protections: Arc<Protections>,
}

/// What generations are built from and share.
pub(crate) struct Parts {
    pub(crate) client: HttpClient,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) docs: docs::ApiDocs,
    pub(crate) source: SourceFn,
}

impl Parts {
    /// Builds the live state of `config`, reusing from `before` what is unchanged.
    pub(crate) fn generation(
        &mut self,
        config: Config,
        settings: Option<&Settings>,
        before: Option<&Generation>,
    ) -> Generation {
        let mut services = BTreeMap::new();
        for (name, cfg) in &config.services {
            let kept = before.and_then(|b| {
                b.services
                    .get(name)
                    .filter(|_| b.config.services.get(name) == Some(cfg))
                    .cloned()
            });
            let s = kept.unwrap_or_else(|| {
                ServiceUpstream::new(
                    name,
                    &cfg.policy,
                    (self.source)(name, cfg),
                    self.client.clone(),
                    self.metrics.upstream.clone(),
                )
            });
            services.insert(name.clone(), s);
        }
        let upstreams = config
            .routes
            .iter()
            .map(|r| {
                services[&r.service].route(
                    &r.prefix,
                    r.policy.clone(),
                    self.metrics.upstream.clone(),
                )
            })
            .collect();
        let protections = Arc::new(Protections::build(
            &config.edge,
            &config.routes,
            before.map(|b| &*b.protections),
        ));
        let cache = match before {
            Some(b)
                if b.config.cache == config.cache
                    && b.config.edge.client_header == config.edge.client_header =>
            {
                b.cache.clone()
            }
            _ => HttpCache::new(
                &config.cache,
                self.metrics.clone(),
                config.edge.client_header.clone(),
            ),
        };
        let table = RouteTable::new(config.routes.clone());
        let api_docs = docs::Docs::build(&self.docs, &table);
        let gateway = Arc::new(
            edge::Gateway::new(
                table,
                upstreams,
                protections.clone(),
                self.metrics.clone(),
                config.retry_buffer_bytes,
            )
            .with_docs(api_docs)
            .with_cors(config.cors.clone())
            .with_cache(cache.clone()),
        );
        Generation {
            version: before.map_or(1, |b| b.version + 1),
            loaded_at: OffsetDateTime::now_utc(),
            settings: settings.map(redacted),
            stack: edge_fn(edge::stack(gateway.clone())),
            gateway,
            services,
            cache,
            protections,
            config,
        }
    }
}

/// The settings as JSON with every secret replaced by `"[redacted]"` (the dev key is
/// never serialized at all).
fn redacted(s: &Settings) -> serde_json::Value {
    let mut v = serde_json::to_value(s).unwrap_or(serde_json::Value::Null);
    let hide = |v: &mut serde_json::Value| {
        if !v.is_null() {
            *v = serde_json::Value::String("[redacted]".into());
        }
    };
    if let Some(t) = v.get_mut("admin_token") {
        hide(t);
    }
    if let Some(t) = v.pointer_mut("/registry/token") {
        hide(t);
    }
    if let Some(keys) = v.pointer_mut("/auth/keys").and_then(|k| k.as_array_mut()) {
        for k in keys {
            if let Some(h) = k.get_mut("sha256") {
                hide(h);
            }
        }
    }
    v
}

/// The answer to an accepted reload.
#[derive(Debug, Clone, Serialize)]
pub struct Reloaded {
    /// The version now running.
    pub version: u64,
    /// When it was loaded (RFC 3339).
    pub loaded_at: String,
    /// Top-level sections whose content changed (`routes`, `auth`, ...).
    pub changed: Vec<String>,
    /// Keys that changed in the file but need a restart; they keep their running value.
    pub restart_required: Vec<String>,
}

/// The version and load time of the running configuration.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigVersion {
    /// 1 at startup, +1 per accepted reload.
    pub version: u64,
    /// When it was loaded (RFC 3339).
    pub loaded_at: String,
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The running configuration of a gateway and the means to replace it.
pub struct Live {
    current: ArcSwap<Generation>,
    /// Held for a whole reload, so two reloads never interleave.
    parts: tokio::sync::Mutex<Parts>,
    /// Reads the configuration again; unset in gateways built from a `Config` alone.
    loader: OnceLock<Loader>,
    metrics: Arc<Metrics>,
}

impl Live {
    pub(crate) fn new(mut parts: Parts, config: Config) -> Arc<Live> {
        let first = parts.generation(config, None, None);
        let metrics = parts.metrics.clone();
        metrics.config_version.set(1);
        Arc::new(Live {
            current: ArcSwap::from_pointee(first),
            parts: tokio::sync::Mutex::new(parts),
            loader: OnceLock::new(),
            metrics,
        })
    }

    /// The gateway's metrics.
    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The running generation.
    pub(crate) fn current(&self) -> arc_swap::Guard<Arc<Generation>> {
        self.current.load()
    }

    /// Sets where reloads read the configuration from, and the settings the running one
    /// was built from (shown by `/admin/config`). Only the first call counts.
    pub fn set_loader(&self, running: &Settings, loader: Loader) {
        if self.loader.set(loader).is_ok() {
            let cur = self.current.load_full();
            self.current.store(Arc::new(Generation {
                settings: Some(redacted(running)),
                config: cur.config.clone(),
                stack: cur.stack.clone(),
                gateway: cur.gateway.clone(),
                services: cur.services.clone(),
                cache: cur.cache.clone(),
                protections: cur.protections.clone(),
                version: cur.version,
                loaded_at: cur.loaded_at,
            }));
        }
    }

    /// The version and load time of the running configuration.
    pub fn version(&self) -> ConfigVersion {
        let g = self.current.load();
        ConfigVersion {
            version: g.version,
            loaded_at: rfc3339(g.loaded_at),
        }
    }

    /// The running settings (secrets redacted) with their version.
    pub fn settings(&self) -> serde_json::Value {
        let g = self.current.load();
        serde_json::json!({
            "version": g.version,
            "loaded_at": rfc3339(g.loaded_at),
            "settings": g.settings,
        })
    }

    /// Reads the configuration again and, if it is valid as a whole, swaps it in.
    /// Refused (the running one stays) when it cannot be read or fails validation; the
    /// message names the key. Logged and counted either way.
    pub async fn reload(&self) -> Result<Reloaded, String> {
        let result = self.try_reload().await;
        let outcome = match &result {
            Ok(r) => {
                tracing::info!(
                    version = r.version,
                    changed = ?r.changed,
                    restart_required = ?r.restart_required,
                    "configuration reloaded"
                );
                if !r.restart_required.is_empty() {
                    tracing::warn!(
                        keys = ?r.restart_required,
                        "changed keys need a restart; their running values stay"
                    );
                }
                "accepted"
            }
            Err(e) => {
                tracing::error!(error = %e, "configuration not reloaded; the running one stays");
                "refused"
            }
        };
        self.metrics
            .config_reloads
            .get_or_create(&ReloadLabels { outcome })
            .inc();
        result
    }

    async fn try_reload(&self) -> Result<Reloaded, String> {
        let loader = self
            .loader
            .get()
            .ok_or("this gateway was not started from a configuration file")?;
        let settings = loader().map_err(|e| e.to_string())?;
        let config = Config::try_from(settings.clone()).map_err(|e| e.to_string())?;
        let mut parts = self.parts.lock().await;
        let before = self.current.load_full();
        if config.edge.keys.is_empty() && !before.config.edge.keys.is_empty() {
            return Err(
                "auth: the new configuration has no API key; refusing to turn \
                        authentication off (restart without keys to do that)"
                    .into(),
            );
        }
        let restart_required = restart_required(&before.config, &config);
        let changed = changed_sections(before.settings.as_ref(), &redacted(&settings));
        // The keys that need a restart keep their running values.
        let mut config = config;
        keep_running(&mut config, &before.config);
        let next = parts.generation(config, Some(&settings), Some(&before));
        let reloaded = Reloaded {
            version: next.version,
            loaded_at: rfc3339(next.loaded_at),
            changed,
            restart_required,
        };
        self.metrics
            .config_version
            .set(i64::try_from(next.version).unwrap_or(i64::MAX));
        self.current.store(Arc::new(next));
        Ok(reloaded)
    }

    /// Reloads on every SIGHUP (like `nginx -s reload`) until the task is aborted.
    pub(crate) fn reload_on_sighup(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let live = self.clone();
        tokio::spawn(async move {
            let Ok(mut hup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                tracing::warn!("SIGHUP handler unavailable: reload with `hotel reload`");
                return;
            };
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the configuration");
                let _ = live.reload().await;
            }
        })
    }
}

/// The top-level sections of the settings whose content differs.
fn changed_sections(before: Option<&serde_json::Value>, after: &serde_json::Value) -> Vec<String> {
    let Some(obj) = after.as_object() else {
        return Vec::new();
    };
    obj.iter()
        .filter(|(k, v)| before.and_then(|b| b.get(k.as_str())) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect()
}

/// The keys whose new value needs a new socket, runtime, client or admin server.
fn restart_required(before: &Config, after: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |key: &str, same: bool| {
        if !same {
            out.push(key.to_owned());
        }
    };
    check("listen", before.listen == after.listen);
    check("admin_listen", before.admin_listen == after.admin_listen);
    check("admin_token", before.admin_token == after.admin_token);
    check("instance", before.instance == after.instance);
    check(
        "worker_threads",
        before.worker_threads == after.worker_threads,
    );
    check(
        "shutdown_grace",
        before.shutdown_grace == after.shutdown_grace,
    );
    check(
        "connect_timeout",
        before.connect_timeout == after.connect_timeout,
    );
    check(
        "pool_idle_timeout",
        before.pool_idle_timeout == after.pool_idle_timeout,
    );
    check(
        "pool_max_idle_per_host",
        before.pool_max_idle_per_host == after.pool_max_idle_per_host,
    );
    check("registry", before.registry == after.registry);
    check("tls", before.tls == after.tls);
    let (b, a) = (&before.edge.limits, &after.edge.limits);
    check(
        "limits.max_connections",
        b.max_connections == a.max_connections,
    );
    check(
        "limits.header_timeout",
        b.header_timeout == a.header_timeout,
    );
    check("limits.body_timeout", b.body_timeout == a.body_timeout);
    check("limits.idle_timeout", b.idle_timeout == a.idle_timeout);
    check(
        "limits.max_header_bytes",
        b.max_header_bytes == a.max_header_bytes,
    );
    check("limits.max_headers", b.max_headers == a.max_headers);
    check(
        "limits.max_h2_streams",
        b.max_h2_streams == a.max_h2_streams,
    );
    out
}

/// Puts the running values of the restart-only keys back into `next`.
fn keep_running(next: &mut Config, running: &Config) {
    next.listen = running.listen;
    next.admin_listen = running.admin_listen;
    next.admin_token.clone_from(&running.admin_token);
    next.instance.clone_from(&running.instance);
    next.worker_threads = running.worker_threads;
    next.shutdown_grace = running.shutdown_grace;
    next.connect_timeout = running.connect_timeout;
    next.pool_idle_timeout = running.pool_idle_timeout;
    next.pool_max_idle_per_host = running.pool_max_idle_per_host;
    next.registry.clone_from(&running.registry);
    next.tls.clone_from(&running.tls);
    let (n, r) = (&mut next.edge.limits, &running.edge.limits);
    n.max_connections = r.max_connections;
    n.header_timeout = r.header_timeout;
    n.body_timeout = r.body_timeout;
    n.idle_timeout = r.idle_timeout;
    n.max_header_bytes = r.max_header_bytes;
    n.max_headers = r.max_headers;
    n.max_h2_streams = r.max_h2_streams;
}

/// The edge as the listener calls it: each request goes to the generation that is
/// current when it arrives.
#[derive(Clone)]
pub(crate) struct LiveEdge(pub(crate) Arc<Live>);

impl Service<Request<Incoming>> for LiveEdge {
    type Response = Response<GatewayBody>;
    type Error = Infallible;
    type Future = EdgeFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        (self.0.current.load().stack)(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_tokens_and_key_hashes_but_keeps_client_names() {
        let mut s = Settings {
            admin_token: Some("admin-secret-token-123".into()),
            ..Settings::default()
        };
        s.registry.token = Some("registry-secret".into());
        s.auth.keys.push(crate::auth::KeySettings {
            client: "web".into(),
            sha256: crate::auth::hash_key("k"),
            revoked: false,
        });
        let v = redacted(&s).to_string();
        assert!(!v.contains("admin-secret-token-123"), "{v}");
        assert!(!v.contains("registry-secret"), "{v}");
        assert!(!v.contains(&crate::auth::hash_key("k")), "{v}");
        assert!(v.contains("\"web\""), "{v}");
    }

    #[test]
    fn changed_sections_names_only_what_differs() {
        let a = serde_json::json!({"routes": [1], "auth": {"x": 1}, "cache": {}});
        let b = serde_json::json!({"routes": [1, 2], "auth": {"x": 1}, "cache": {}});
        assert_eq!(changed_sections(Some(&a), &b), vec!["routes".to_owned()]);
    }
}
