//! Merging the services' OpenAPI documents into the one clients see through the gateway.
//!
//! - **Paths** are rewritten the way the gateway routes them, backwards: a service path
//!   `/rooms/{id}` sits under a route of that service whose `rewrite` (`/rooms`) is a
//!   whole-segment prefix of it, and becomes the route's `prefix` plus the rest
//!   (`/api/rooms/{id}`). The result is checked against the [`RouteTable`] itself (it
//!   must route to the same service and rewrite back to the same path), so the document
//!   never shows a path the gateway would send elsewhere. Service paths no route reaches
//!   (`/healthz`, `/readyz`, `/openapi.json`) are left out.
//! - **Components** (schemas, responses, parameters, ...) keep their names when no other
//!   document uses the name for something different; a clash is renamed
//!   `<service>.<Name>` and every `$ref` of that service follows. Identical components
//!   (the shared `Problem`) are kept once.
//! - **Operation ids** that two services share get a `<service>_` prefix.
//! - **What the gateway adds**: the API-key security schemes (`x-api-key` header, or
//!   `Authorization: Bearer`), required on every operation, and the gateway's own
//!   answers on every operation (401, 413, 429 and 503 with `Retry-After`, 502, 504), as
//!   `application/problem+json` with the `Problem` schema.
//!
//! Everything here is a pure function of its inputs; `serde_json` maps are sorted, so the
//! same documents and routes always give the same bytes.

use crate::routes::RouteTable;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// Name of the `x-api-key` security scheme (the header [`crate::auth`] reads).
pub const API_KEY_SCHEME: &str = "apiKey";
/// Name of the `Authorization: Bearer` security scheme.
pub const BEARER_SCHEME: &str = "bearer";

/// HTTP methods an OpenAPI path item may hold operations for.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The merged document and the routed services that had no document.
#[derive(Debug, Clone)]
pub struct Merged {
    /// The OpenAPI 3.1 document.
    pub document: Value,
    /// Services named by routes but missing from the input, sorted.
    pub missing: Vec<String>,
}

/// Merges `docs` (by service name) as reached through `table`.
pub(crate) fn merge(docs: &BTreeMap<String, Value>, table: &RouteTable, version: &str) -> Merged {
    let mut out = Document::gateway(version);
    let services: BTreeSet<&str> = table.routes().iter().map(|r| r.service.as_str()).collect();
    let mut missing = Vec::new();
    for service in services {
        match docs.get(service) {
            Some(doc) => out.add_service(service, doc, table),
            None => missing.push(service.to_owned()),
        }
    }
    Merged {
        document: out.finish(),
        missing,
    }
}

/// The document being assembled.
struct Document {
    root: Map<String, Value>,
    paths: Map<String, Value>,
    /// `components.<kind>.<name>`.
    components: BTreeMap<String, Map<String, Value>>,
    tags: Vec<Value>,
    operation_ids: BTreeSet<String>,
}

fn problem_content() -> Value {
    json!({"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}})
}

/// The gateway's own answers, by status: (description, with `Retry-After`).
const GATEWAY_RESPONSES: [(&str, &str, bool); 6] = [
    (
        "401",
        "No valid API key: send `x-api-key: <key>` or `Authorization: Bearer <key>` \
         (answered by the gateway)",
        false,
    ),
    (
        "413",
        "The request body is over the gateway's size limit (answered by the gateway)",
        false,
    ),
    (
        "429",
        "The client's rate limit is exceeded; retry after `Retry-After` seconds \
         (answered by the gateway, with `RateLimit-*` headers when enabled)",
        true,
    ),
    (
        "502",
        "No instance of the service could be reached (answered by the gateway)",
        false,
    ),
    (
        "503",
        "No healthy instance, every breaker open, or an in-flight limit reached; retry \
         after `Retry-After` seconds (answered by the gateway)",
        true,
    ),
    (
        "504",
        "The route's deadline passed before an instance answered (answered by the gateway)",
        false,
    ),
];

fn gateway_response(description: &str, retry_after: bool) -> Value {
    let mut r = json!({"description": description, "content": problem_content()});
    if retry_after {
        r["headers"] = retry_after_header();
    }
    r
}

fn retry_after_header() -> Value {
    json!({"Retry-After": {
        "description": "Seconds after which a retry may succeed",
        "schema": {"type": "integer", "minimum": 0}
    }})
}

impl Document {
    fn gateway(version: &str) -> Document {
        let mut root = Map::new();
        root.insert("openapi".into(), json!("3.1.0"));
        root.insert(
            "info".into(),
            json!({
                "title": "hotel API",
                "version": version,
                "description": "The hotel-booking API as clients reach it through the \
                    gateway: customers, rooms, bookings and availability. Every operation \
                    needs an API key and may get the gateway's own answers (401, 413, \
                    429, 502, 503, 504) as application/problem+json.",
            }),
        );
        let mut components: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
        let schemas = components.entry("schemas".into()).or_default();
        for (name, schema) in problem_schemas() {
            schemas.insert(name, schema);
        }
        let schemes = components.entry("securitySchemes".into()).or_default();
        schemes.insert(
            API_KEY_SCHEME.into(),
            json!({"type": "apiKey", "in": "header", "name": "x-api-key",
                   "description": "An API key issued for the client"}),
        );
        schemes.insert(
            BEARER_SCHEME.into(),
            json!({"type": "http", "scheme": "bearer",
                   "description": "The same API key, as `Authorization: Bearer <key>`"}),
        );
        Document {
            root,
            paths: Map::new(),
            components,
            tags: Vec::new(),
            operation_ids: BTreeSet::new(),
        }
    }

    fn add_service(&mut self, service: &str, doc: &Value, table: &RouteTable) {
        let renames = self.component_renames(service, doc);
        let doc = rewrite_refs(doc, &renames);
        if let Some(kinds) = doc.get("components").and_then(Value::as_object) {
            for (kind, items) in kinds {
                let Some(items) = items.as_object() else {
                    continue;
                };
                let target = self.components.entry(kind.clone()).or_default();
                for (name, value) in items {
                    let name = renames
                        .get(&component_ref(kind, name))
                        .and_then(|r| r.rsplit('/').next())
                        .unwrap_or(name);
                    target
                        .entry(name.to_owned())
                        .or_insert_with(|| value.clone());
                }
            }
        }
        if let Some(tags) = doc.get("tags").and_then(Value::as_array) {
            for tag in tags {
                if !self.tags.iter().any(|t| t.get("name") == tag.get("name")) {
                    self.tags.push(tag.clone());
                }
            }
        }
        let Some(paths) = doc.get("paths").and_then(Value::as_object) else {
            return;
        };
        for (path, item) in paths {
            let Some(public) = gateway_path(table, service, path) else {
                tracing::debug!(service, path = %path, "not routed by the gateway; left out of its API document");
                continue;
            };
            if self.paths.contains_key(&public) {
                tracing::warn!(service, path = %public, "path documented twice; the first document wins");
                continue;
            }
            let mut item = item.clone();
            if let Some(ops) = item.as_object_mut() {
                for (method, op) in ops.iter_mut() {
                    if METHODS.contains(&method.as_str()) {
                        self.gateway_operation(service, op);
                    }
                }
            }
            self.paths.insert(public, item);
        }
    }

    /// `$ref` renames (`#/components/schemas/Room` -> `#/components/schemas/booking.Room`)
    /// for `service`'s components whose names are taken by different ones. Repeated until
    /// nothing changes: renaming one component can change another that refers to it.
    fn component_renames(&self, service: &str, doc: &Value) -> BTreeMap<String, String> {
        let mut renames = BTreeMap::new();
        let Some(kinds) = doc.get("components").and_then(Value::as_object) else {
            return renames;
        };
        loop {
            let mut changed = false;
            for (kind, items) in kinds {
                let Some(items) = items.as_object() else {
                    continue;
                };
                let taken = self.components.get(kind);
                for (name, value) in items {
                    let from = component_ref(kind, name);
                    if renames.contains_key(&from) {
                        continue;
                    }
                    let Some(existing) = taken.and_then(|t| t.get(name)) else {
                        continue;
                    };
                    if *existing == rewrite_refs(value, &renames) {
                        continue;
                    }
                    let mut new = format!("{service}.{name}");
                    let mut n = 2;
                    while taken.is_some_and(|t| t.contains_key(&new)) {
                        new = format!("{service}.{name}.{n}");
                        n += 1;
                    }
                    renames.insert(from, component_ref(kind, &new));
                    changed = true;
                }
            }
            if !changed {
                return renames;
            }
        }
    }

    /// Security, the gateway's answers and a unique operation id on one operation.
    fn gateway_operation(&mut self, service: &str, op: &mut Value) {
        let Some(op) = op.as_object_mut() else {
            return;
        };
        op.insert(
            "security".into(),
            json!([{API_KEY_SCHEME: []}, {BEARER_SCHEME: []}]),
        );
        let responses = op
            .entry("responses")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(responses) = responses.as_object_mut() {
            for (status, description, retry_after) in GATEWAY_RESPONSES {
                match responses.get_mut(status).and_then(Value::as_object_mut) {
                    // The service answers this status too: one entry, both meanings.
                    Some(own) => {
                        let theirs = own
                            .get("description")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned();
                        own.insert(
                            "description".into(),
                            json!(format!("{theirs}; or: {description}")),
                        );
                        own.entry("content").or_insert_with(problem_content);
                        if retry_after {
                            let headers = own
                                .entry("headers")
                                .or_insert_with(|| Value::Object(Map::new()));
                            if let (Some(h), Value::Object(ra)) =
                                (headers.as_object_mut(), retry_after_header())
                            {
                                for (k, v) in ra {
                                    h.entry(k).or_insert(v);
                                }
                            }
                        }
                    }
                    None => {
                        responses.insert(
                            status.to_owned(),
                            gateway_response(description, retry_after),
                        );
                    }
                }
            }
        }
        if let Some(id) = op.get("operationId").and_then(Value::as_str) {
            let mut id = id.to_owned();
            if self.operation_ids.contains(&id) {
                id = format!("{service}_{id}");
                op.insert("operationId".into(), json!(id));
            }
            self.operation_ids.insert(id);
        }
    }

    fn finish(mut self) -> Value {
        self.root.insert("paths".into(), Value::Object(self.paths));
        let components: Map<String, Value> = self
            .components
            .into_iter()
            .map(|(k, v)| (k, Value::Object(v)))
            .collect();
        self.root
            .insert("components".into(), Value::Object(components));
        if !self.tags.is_empty() {
            self.root.insert("tags".into(), Value::Array(self.tags));
        }
        Value::Object(self.root)
    }
}

fn component_ref(kind: &str, name: &str) -> String {
    format!("#/components/{kind}/{name}")
}

/// `v` with every `$ref` string found in `renames` replaced.
fn rewrite_refs(v: &Value, renames: &BTreeMap<String, String>) -> Value {
    if renames.is_empty() {
        return v.clone();
    }
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| {
                    let x = match (k.as_str(), x) {
                        ("$ref", Value::String(r)) => {
                            Value::String(renames.get(r).cloned().unwrap_or_else(|| r.clone()))
                        }
                        _ => rewrite_refs(x, renames),
                    };
                    (k.clone(), x)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|x| rewrite_refs(x, renames)).collect()),
        other => other.clone(),
    }
}

/// Where a client reaches `service`'s `path` through the gateway, if anywhere: the
/// route of that service with the longest `rewrite` that is a whole-segment prefix of
/// `path`, confirmed by matching the result against the table.
pub fn gateway_path(table: &RouteTable, service: &str, path: &str) -> Option<String> {
    let route = table
        .routes()
        .iter()
        .filter(|r| r.service == service)
        .filter(|r| {
            path.strip_prefix(r.rewrite.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
        .max_by_key(|r| r.rewrite.len())?;
    let public = format!("{}{}", route.prefix, &path[route.rewrite.len()..]);
    let m = table.matches(&public, None)?;
    (table.routes()[m.index].service == service && m.upstream_path == path).then_some(public)
}

/// The gateway's `Problem` schema and the schemas it refers to, as the services'
/// documents write them (the same `hotel_common` types), so identical copies merge.
fn problem_schemas() -> Vec<(String, Value)> {
    use utoipa::{PartialSchema, ToSchema};
    let mut schemas = Vec::new();
    hotel_common::Problem::schemas(&mut schemas);
    schemas.push((
        hotel_common::Problem::name().into_owned(),
        hotel_common::Problem::schema(),
    ));
    schemas
        .into_iter()
        .filter_map(|(name, s)| serde_json::to_value(s).ok().map(|v| (name, v)))
        .collect()
}
