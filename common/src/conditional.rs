//! Conditional requests and cache directives of the domain services (RFC 9110 sections
//! 8.8 and 13, RFC 9111 section 5.2, RFC 5861), written once for customer, room and
//! booking.
//!
//! - [`Validators`]: a strong `ETag` (`"<id>-<version>"`, from a row version every write
//!   bumps) and `Last-Modified` of one entity; [`list_tag`] the weak `ETag` of a page.
//! - [`CacheControl`]: the `Cache-Control` a resource is answered with, and
//!   [`CacheControl::answer`], which turns a GET into `304 Not Modified` (no body, the
//!   validators and `Cache-Control` kept, RFC 9110 section 15.4.5) when `If-None-Match`
//!   (weak comparison, `*` and lists) or, without it, `If-Modified-Since` says the client
//!   has the current representation.
//! - [`IfMatch`]: `If-Match` of a PATCH, DELETE or other state change, compared strongly
//!   with the current `ETag` inside the write transaction; a mismatch is
//!   [`precondition_failed`] (412 problem+json `/problems/precondition-failed`).
//! - [`document`]: the same rules in a service's OpenAPI document.

// `Problem` is the error every handler answers with; it is large, but only on the cold path.
#![allow(clippy::result_large_err)]

use crate::problem::Problem;
use axum::{
    Json,
    response::{IntoResponse, Response},
};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The validators of one entity: its strong `ETag` and when it last changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validators {
    /// The quoted strong entity tag, such as `"3f6c...-2"`.
    pub etag: String,
    /// When the entity last changed, whole seconds (what an HTTP-date can say).
    pub last_modified: Option<SystemTime>,
}

impl Validators {
    /// The validators of row `id` at `version`, changed at `updated_at_micros`
    /// (microseconds since the Unix epoch, as the services store times).
    pub fn of_row(id: impl std::fmt::Display, version: i64, updated_at_micros: i64) -> Self {
        let secs = u64::try_from(updated_at_micros.div_euclid(1_000_000)).unwrap_or(0);
        Validators {
            etag: format!("\"{id}-{version}\""),
            last_modified: Some(UNIX_EPOCH + Duration::from_secs(secs)),
        }
    }

    /// Validators with only a (weak or strong) entity tag, such as a page's [`list_tag`].
    pub fn tag(etag: String) -> Self {
        Validators {
            etag,
            last_modified: None,
        }
    }

    /// Adds `ETag` and `Last-Modified` to `headers`.
    pub fn write(&self, headers: &mut HeaderMap) {
        if let Ok(v) = HeaderValue::from_str(&self.etag) {
            headers.insert(header::ETAG, v);
        }
        if let Some(t) = self.last_modified
            && let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(t))
        {
            headers.insert(header::LAST_MODIFIED, v);
        }
    }
}

/// The weak entity tag of a list page: a digest of the `(id, version)` of every item on
/// it and of the cursor to the next page, so any change to the page changes the tag.
pub fn list_tag<I, D>(items: I, next: Option<&str>) -> String
where
    I: IntoIterator<Item = (D, i64)>,
    D: std::fmt::Display,
{
    let mut h = Sha256::new();
    for (id, version) in items {
        h.update(format!("{id}-{version};").as_bytes());
    }
    h.update(next.unwrap_or("").as_bytes());
    let digest = h.finalize();
    format!("W/\"{}\"", hex::encode(&digest[..12]))
}

/// A value read with its validators.
#[derive(Debug, Clone)]
pub struct Versioned<T> {
    /// The entity.
    pub value: T,
    /// Its `ETag` and `Last-Modified`.
    pub validators: Validators,
}

/// The `Cache-Control` of a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheControl(HeaderValue);

/// What personal data (customers, bookings) is answered with: never stored by a shared
/// cache, nor by the client's.
pub const PERSONAL: &str = "private, no-store";

impl CacheControl {
    /// `public, max-age=N, stale-if-error=M`: any cache may keep the answer `max_age` and,
    /// when this service fails, serve it stale for `stale_if_error` more (RFC 5861).
    pub fn shared(max_age: Duration, stale_if_error: Duration) -> Self {
        let mut v = format!("public, max-age={}", max_age.as_secs());
        if !stale_if_error.is_zero() {
            v.push_str(&format!(", stale-if-error={}", stale_if_error.as_secs()));
        }
        CacheControl(HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static(PERSONAL)))
    }

    /// [`PERSONAL`]: `private, no-store`.
    pub fn personal() -> Self {
        CacheControl(HeaderValue::from_static(PERSONAL))
    }

    /// The header value.
    pub fn value(&self) -> &HeaderValue {
        &self.0
    }

    /// Adds `Cache-Control` and the validators to `headers`.
    pub fn write(&self, headers: &mut HeaderMap, validators: &Validators) {
        headers.insert(header::CACHE_CONTROL, self.0.clone());
        validators.write(headers);
    }

    /// The answer to a GET of a representation with `validators`: `304 Not Modified`
    /// with no body when the request's conditions say the client has it ([`not_modified`]),
    /// else 200 with `body` as JSON; `Cache-Control`, `ETag` and `Last-Modified` on both.
    pub fn answer<T: Serialize>(
        &self,
        request: &HeaderMap,
        validators: &Validators,
        body: T,
    ) -> Response {
        let mut res = if not_modified(request, validators) {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            Json(body).into_response()
        };
        self.write(res.headers_mut(), validators);
        res
    }

    /// A state change's answer (`status` with `body`) carrying the new validators, so a
    /// client can send its next `If-Match` without reading again. No cache stores it.
    pub fn changed<T: Serialize>(
        &self,
        status: StatusCode,
        validators: &Validators,
        body: T,
    ) -> Response {
        let mut res = (status, Json(body)).into_response();
        validators.write(res.headers_mut());
        res.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        res
    }
}

/// Every value of header `name`, joined as one comma-separated list; `None` when absent
/// or not visible ASCII.
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut out: Option<String> = None;
    for v in headers.get_all(name) {
        let v = v.to_str().ok()?;
        match &mut out {
            Some(s) => {
                s.push(',');
                s.push_str(v);
            }
            None => out = Some(v.to_owned()),
        }
    }
    out
}

/// One entity tag of a list: weak or not, and its opaque part with the quotes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tag {
    weak: bool,
    opaque: String,
}

/// An `If-Match` / `If-None-Match` field value (RFC 9110 section 8.8.3).
#[derive(Debug, Clone, PartialEq, Eq)]
enum TagList {
    /// `*`: any current representation.
    Any,
    /// One or more entity tags.
    Tags(Vec<Tag>),
}

/// Parses `*` or `#entity-tag`; `None` when the value is not that grammar.
fn parse_list(value: &str) -> Option<TagList> {
    if value.trim() == "*" {
        return Some(TagList::Any);
    }
    let mut tags = Vec::new();
    let mut rest = value.trim_start();
    loop {
        rest = rest.trim_start_matches([',', ' ', '\t']);
        if rest.is_empty() {
            break;
        }
        let weak = rest.starts_with("W/");
        if weak {
            rest = &rest[2..];
        }
        let body = rest.strip_prefix('"')?;
        let end = body.find('"')?;
        let opaque = &body[..end];
        // etagc = %x21 / %x23-7E / obs-text; obs-text is not visible ASCII, refused above.
        if !opaque
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x7e).contains(&b))
        {
            return None;
        }
        tags.push(Tag {
            weak,
            opaque: format!("\"{opaque}\""),
        });
        rest = body[end + 1..].trim_start();
        if !rest.is_empty() && !rest.starts_with(',') {
            return None;
        }
    }
    (!tags.is_empty()).then_some(TagList::Tags(tags))
}

/// `etag` split into weakness and opaque part.
fn own_tag(etag: &str) -> Tag {
    match etag.strip_prefix("W/") {
        Some(opaque) => Tag {
            weak: true,
            opaque: opaque.to_owned(),
        },
        None => Tag {
            weak: false,
            opaque: etag.to_owned(),
        },
    }
}

/// Whether a GET or HEAD of the representation with `validators` is answered 304 (RFC
/// 9110 section 13.2.2): `If-None-Match` when present (weak comparison; `*` matches any
/// representation; a value that is not a list of entity tags matches nothing), else
/// `If-Modified-Since` (ignored unless a valid HTTP-date; not modified when the entity
/// did not change after it).
pub fn not_modified(request: &HeaderMap, validators: &Validators) -> bool {
    if request.contains_key(header::IF_NONE_MATCH) {
        let ours = own_tag(&validators.etag);
        return match joined(request, &header::IF_NONE_MATCH).and_then(|v| parse_list(&v)) {
            Some(TagList::Any) => true,
            Some(TagList::Tags(tags)) => tags.iter().any(|t| t.opaque == ours.opaque),
            None => false,
        };
    }
    let (Some(since), Some(modified)) = (
        request
            .get(header::IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v.trim()).ok()),
        validators.last_modified,
    ) else {
        return false;
    };
    modified <= since
}

/// A request's `If-Match` (RFC 9110 section 13.1.1), to be checked against the current
/// `ETag` inside the transaction that writes, so no other write can come between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfMatch(Option<TagList>);

impl IfMatch {
    /// The request's `If-Match`; no condition when the header is absent. A value that is
    /// not `*` nor a list of entity tags matches nothing.
    pub fn from_headers(request: &HeaderMap) -> Option<Self> {
        request
            .contains_key(header::IF_MATCH)
            .then(|| IfMatch(joined(request, &header::IF_MATCH).and_then(|v| parse_list(&v))))
    }

    /// Whether the current representation, tagged `etag`, satisfies the condition:
    /// `*`, or a listed tag equal to it by strong comparison (weak tags never match).
    pub fn matches(&self, etag: &str) -> bool {
        let ours = own_tag(etag);
        match &self.0 {
            Some(TagList::Any) => true,
            Some(TagList::Tags(tags)) => tags
                .iter()
                .any(|t| !t.weak && !ours.weak && t.opaque == ours.opaque),
            None => false,
        }
    }
}

/// Checks `condition` (when the request had one) against the current `etag`.
pub fn check(condition: Option<&IfMatch>, what: &str, etag: &str) -> Result<(), Problem> {
    match condition {
        Some(c) if !c.matches(etag) => {
            tracing::info!(
                resource = what,
                current_etag = etag,
                "If-Match refused: 412"
            );
            Err(precondition_failed(what, etag))
        }
        _ => Ok(()),
    }
}

/// 412 `/problems/precondition-failed`: `If-Match` does not name the current version of
/// `what` (`room 3f6c...`), which is `etag` now.
pub fn precondition_failed(what: &str, etag: &str) -> Problem {
    Problem::new(
        StatusCode::PRECONDITION_FAILED,
        "precondition-failed",
        format!(
            "If-Match does not name the current version of {what} (now ETag {etag}); \
             read it again and retry with its ETag"
        ),
    )
}

/// Documents the conditional rules in a service's OpenAPI document, on the operations
/// of `paths` (`/rooms`, `/rooms/{id}`) that exist: every GET takes `If-None-Match` and
/// `If-Modified-Since`, answers `ETag`, `Last-Modified` (single entities) and
/// `Cache-Control` with its 200, and may answer 304; every PATCH, PUT and DELETE and each
/// POST listed in `guarded_posts` takes `If-Match` and may answer 412.
pub fn document(
    doc: &mut utoipa::openapi::OpenApi,
    paths: &[&str],
    guarded_posts: &[&str],
    cache_control: &str,
) {
    use utoipa::openapi::{
        ContentBuilder, Ref, RefOr, Required,
        header::HeaderBuilder,
        path::{Operation, ParameterBuilder, ParameterIn},
        response::{Response as OaResponse, ResponseBuilder},
    };
    let string =
        || utoipa::openapi::ObjectBuilder::new().schema_type(utoipa::openapi::Type::String);
    let param = |name: &str, description: &str| {
        ParameterBuilder::new()
            .name(name)
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .description(Some(description))
            .schema(Some(string()))
            .build()
    };
    let header_of = |description: &str| {
        HeaderBuilder::new()
            .schema(string())
            .description(Some(description))
            .build()
    };
    let problem = |description: &str| -> RefOr<OaResponse> {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content(
                    crate::problem::PROBLEM_JSON,
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build(),
        )
    };
    let etag_header = |single: bool| {
        header_of(if single {
            "Strong entity tag of this version (`\"<id>-<version>\"`); every change makes a new one"
        } else {
            "Weak entity tag of this page"
        })
    };
    let cc = format!("`{cache_control}`");
    let add_validators = |op: &mut Operation, status: &str, single: bool| {
        if let Some(RefOr::T(r)) = op.responses.responses.get_mut(status) {
            r.headers.insert("ETag".to_owned(), etag_header(single));
            if single {
                r.headers.insert(
                    "Last-Modified".to_owned(),
                    header_of("When this entity last changed"),
                );
            }
        }
    };
    let mut guarded_ids = Vec::new();
    for path in paths {
        let Some(item) = doc.paths.paths.get_mut(*path) else {
            continue;
        };
        let single = path.contains('{');
        if let Some(get) = item.get.as_mut() {
            let params = get.parameters.get_or_insert_with(Vec::new);
            params.push(param(
                "If-None-Match",
                "Entity tags (or `*`) the client holds; 304 when one matches by weak comparison",
            ));
            params.push(param(
                "If-Modified-Since",
                "HTTP-date; 304 when unchanged since (ignored when If-None-Match is sent)",
            ));
            add_validators(get, "200", single);
            if let Some(RefOr::T(r)) = get.responses.responses.get_mut("200") {
                r.headers.insert("Cache-Control".to_owned(), header_of(&cc));
            }
            let mut not_modified = ResponseBuilder::new()
                .description("Not modified: the client's copy is current; no body")
                .header("ETag", etag_header(single))
                .header("Cache-Control", header_of(&cc));
            if single {
                not_modified = not_modified
                    .header("Last-Modified", header_of("When this entity last changed"));
            }
            get.responses
                .responses
                .insert("304".to_owned(), RefOr::T(not_modified.build()));
        }
        let guarded_post = guarded_posts.contains(path);
        let ops = [
            item.patch.as_mut(),
            item.put.as_mut(),
            item.delete.as_mut(),
            item.post.as_mut().filter(|_| guarded_post),
        ];
        for op in ops.into_iter().flatten() {
            guarded_ids.extend(op.operation_id.clone());
            op.parameters.get_or_insert_with(Vec::new).push(param(
                "If-Match",
                "Entity tags (or `*`); the change is made only when one equals the current ETag by strong comparison, else 412",
            ));
            add_validators(op, "200", true);
            op.responses.responses.insert(
                "412".to_owned(),
                problem(
                    "If-Match does not name the current version (`/problems/precondition-failed`)",
                ),
            );
        }
    }
    // A create whose 201 answers an `ETag` passes it as If-Match along its links to a
    // guarded operation, so a client (or a fuzzer) following them changes the version it
    // just made.
    for item in doc.paths.paths.values_mut() {
        let Some(RefOr::T(created)) = item
            .post
            .as_mut()
            .and_then(|op| op.responses.responses.get_mut("201"))
            .filter(|r| matches!(r, RefOr::T(r) if r.headers.contains_key("ETag")))
        else {
            continue;
        };
        for link in created.links.values_mut() {
            if let RefOr::T(link) = link
                && guarded_ids.contains(&link.operation_id)
            {
                link.parameters.insert(
                    "If-Match".to_owned(),
                    serde_json::Value::String("$response.header.ETag".to_owned()),
                );
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn req(pairs: &[(HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn row() -> Validators {
        // 2026-12-05T10:00:00.5Z
        Validators::of_row("abc", 3, 1_796_464_800_500_000)
    }

    #[test]
    fn an_entity_tag_is_strong_and_names_the_row_version() {
        let v = row();
        assert_eq!(v.etag, "\"abc-3\"");
        let mut h = HeaderMap::new();
        v.write(&mut h);
        assert_eq!(h[header::ETAG], "\"abc-3\"");
        assert_eq!(h[header::LAST_MODIFIED], "Sat, 05 Dec 2026 10:00:00 GMT");
    }

    #[test]
    fn if_none_match_compares_weakly_and_accepts_star_and_lists() {
        let v = row();
        for yes in [
            "\"abc-3\"",
            "W/\"abc-3\"",
            "*",
            "\"x\", \"abc-3\"",
            "\"x\",W/\"abc-3\"",
        ] {
            assert!(
                not_modified(&req(&[(header::IF_NONE_MATCH, yes)]), &v),
                "{yes}"
            );
        }
        for no in ["\"abc-2\"", "abc-3", "\"abc-3", "", "W/", "\"a\" \"abc-3\""] {
            assert!(
                !not_modified(&req(&[(header::IF_NONE_MATCH, no)]), &v),
                "{no}"
            );
        }
        let two_lines = req(&[
            (header::IF_NONE_MATCH, "\"x\""),
            (header::IF_NONE_MATCH, "\"abc-3\""),
        ]);
        assert!(not_modified(&two_lines, &v));
        let weak_page = Validators::tag(list_tag([("a", 1)], None));
        let inm = req(&[(header::IF_NONE_MATCH, &weak_page.etag)]);
        assert!(not_modified(&inm, &weak_page));
    }

    #[test]
    fn if_modified_since_counts_only_without_if_none_match_and_when_it_is_a_date() {
        let v = row();
        let at = |d: &str| req(&[(header::IF_MODIFIED_SINCE, d)]);
        assert!(not_modified(&at("Sat, 05 Dec 2026 10:00:00 GMT"), &v));
        assert!(not_modified(&at("Sun, 06 Dec 2026 10:00:00 GMT"), &v));
        assert!(!not_modified(&at("Sat, 05 Dec 2026 09:59:59 GMT"), &v));
        assert!(!not_modified(&at("yesterday"), &v));
        let both = req(&[
            (header::IF_NONE_MATCH, "\"abc-2\""),
            (header::IF_MODIFIED_SINCE, "Sun, 06 Dec 2026 10:00:00 GMT"),
        ]);
        assert!(!not_modified(&both, &v), "If-None-Match wins");
    }

    #[test]
    fn if_match_compares_strongly() {
        let cond = |v: &str| IfMatch::from_headers(&req(&[(header::IF_MATCH, v)])).unwrap();
        assert!(cond("\"abc-3\"").matches("\"abc-3\""));
        assert!(cond("\"x\", \"abc-3\"").matches("\"abc-3\""));
        assert!(cond("*").matches("\"abc-3\""));
        assert!(!cond("W/\"abc-3\"").matches("\"abc-3\""));
        assert!(!cond("\"abc-2\"").matches("\"abc-3\""));
        assert!(!cond("garbage").matches("\"abc-3\""));
        assert!(IfMatch::from_headers(&HeaderMap::new()).is_none());
        let p = check(Some(&cond("\"abc-2\"")), "room abc", "\"abc-3\"").unwrap_err();
        assert_eq!(p.status, 412);
        assert_eq!(p.kind, "/problems/precondition-failed");
        assert!(check(None, "room abc", "\"abc-3\"").is_ok());
    }

    #[test]
    fn a_page_tag_is_weak_and_changes_with_any_version_or_the_next_cursor() {
        let a = list_tag([("a", 1), ("b", 1)], None);
        assert!(a.starts_with("W/\""));
        assert_eq!(a, list_tag([("a", 1), ("b", 1)], None));
        assert_ne!(a, list_tag([("a", 1), ("b", 2)], None));
        assert_ne!(a, list_tag([("a", 1), ("b", 1)], Some("c")));
    }

    #[tokio::test]
    async fn a_304_has_no_body_but_keeps_the_validators_and_cache_control() {
        use http_body_util::BodyExt;
        let cc = CacheControl::shared(Duration::from_secs(5), Duration::from_secs(300));
        assert_eq!(cc.value(), "public, max-age=5, stale-if-error=300");
        let v = row();
        let res = cc.answer(&req(&[(header::IF_NONE_MATCH, "\"abc-3\"")]), &v, "x");
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(res.headers()[header::ETAG], "\"abc-3\"");
        assert_eq!(
            res.headers()[header::CACHE_CONTROL],
            "public, max-age=5, stale-if-error=300"
        );
        assert!(res.headers().contains_key(header::LAST_MODIFIED));
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert!(body.is_empty());
        let res = CacheControl::personal().answer(&HeaderMap::new(), &v, "x");
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()[header::CACHE_CONTROL], "private, no-store");
    }
}
