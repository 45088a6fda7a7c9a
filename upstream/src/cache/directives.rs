//! RFC 9111 / RFC 5861 rules that depend only on headers: `Cache-Control` parsing, what a
//! shared cache may store, how long a stored answer stays fresh, when it must be
//! revalidated and when it may stand in for a failed upstream. Pure functions, so every
//! rule is a unit test.

use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use std::time::Duration;

/// The `Cache-Control` directives a shared cache acts on (request or response).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CacheControl {
    /// `no-store`.
    pub no_store: bool,
    /// `no-cache` (a field-qualified `no-cache="x"` is treated as unqualified).
    pub no_cache: bool,
    /// `private` (qualified or not: a shared cache never stores it).
    pub private: bool,
    /// `public`.
    pub public: bool,
    /// `must-revalidate`.
    pub must_revalidate: bool,
    /// `proxy-revalidate`.
    pub proxy_revalidate: bool,
    /// `max-age=N` (the smallest when repeated; an unreadable value counts as 0).
    pub max_age: Option<Duration>,
    /// `s-maxage=N`.
    pub s_maxage: Option<Duration>,
    /// `stale-if-error=N` (RFC 5861).
    pub stale_if_error: Option<Duration>,
    /// `only-if-cached` (requests).
    pub only_if_cached: bool,
}

impl CacheControl {
    /// Every `Cache-Control` field line of `headers`, merged.
    pub fn of(headers: &HeaderMap) -> CacheControl {
        let mut cc = CacheControl::default();
        for line in headers.get_all(header::CACHE_CONTROL) {
            let Ok(line) = line.to_str() else { continue };
            for d in split_list(line) {
                let (name, value) = match d.split_once('=') {
                    Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                    None => (d, None),
                };
                let secs =
                    || Duration::from_secs(value.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0));
                let min =
                    |old: Option<Duration>, new: Duration| Some(old.map_or(new, |o| o.min(new)));
                match name.to_ascii_lowercase().as_str() {
                    "no-store" => cc.no_store = true,
                    "no-cache" => cc.no_cache = true,
                    "private" => cc.private = true,
                    "public" => cc.public = true,
                    "must-revalidate" => cc.must_revalidate = true,
                    "proxy-revalidate" => cc.proxy_revalidate = true,
                    "only-if-cached" => cc.only_if_cached = true,
                    "max-age" => cc.max_age = min(cc.max_age, secs()),
                    "s-maxage" => cc.s_maxage = min(cc.s_maxage, secs()),
                    "stale-if-error" => cc.stale_if_error = min(cc.stale_if_error, secs()),
                    _ => {}
                }
            }
        }
        cc
    }

    /// The freshness lifetime a shared cache gives a response (RFC 9111 section 4.2.1):
    /// `s-maxage`, else `max-age`. `None`: no explicit freshness (not stored here; see
    /// [`storable`]).
    pub fn freshness_lifetime(&self) -> Option<Duration> {
        self.s_maxage.or(self.max_age)
    }

    /// Whether a stale copy may be served without a successful revalidation when the
    /// upstream fails: never after `must-revalidate`, `proxy-revalidate`, `s-maxage`
    /// (which carries proxy-revalidate, RFC 9111 section 5.2.2.10) or `no-cache`.
    pub fn forbids_stale(&self) -> bool {
        self.must_revalidate || self.proxy_revalidate || self.s_maxage.is_some() || self.no_cache
    }
}

/// Splits a comma-separated list, ignoring commas inside quoted strings.
fn split_list(line: &str) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, b) in line.bytes().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                parts.push(&line[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&line[start..]);
    parts.into_iter().map(str::trim).filter(|p| !p.is_empty())
}

/// Status codes this cache stores (given explicit freshness): the heuristically
/// cacheable ones of RFC 9110 section 15.1, less 206 (no range support) and 405/414/501.
fn cacheable_status(s: StatusCode) -> bool {
    matches!(s.as_u16(), 200 | 203 | 204 | 300 | 301 | 308 | 404 | 410)
}

/// Why a response is not stored (for debug logs), or `Ok` when it may be.
///
/// `authenticated`: the request carried credentials (`Authorization`, or an API key,
/// which is how clients authenticate here); its answer is stored only when it says
/// `public`, `s-maxage` or `must-revalidate` (RFC 9111 section 3.5).
pub fn storable(
    method: &Method,
    req: &CacheControl,
    status: StatusCode,
    res: &CacheControl,
    res_headers: &HeaderMap,
    authenticated: bool,
) -> Result<(), &'static str> {
    if method != Method::GET {
        return Err("only GET answers are stored");
    }
    if !cacheable_status(status) {
        return Err("status not cacheable");
    }
    if req.no_store || res.no_store {
        return Err("no-store");
    }
    if res.private {
        return Err("private");
    }
    if authenticated && !(res.public || res.s_maxage.is_some() || res.must_revalidate) {
        return Err("credentials without public, s-maxage or must-revalidate");
    }
    if res.freshness_lifetime().is_none() {
        return Err("no explicit freshness (max-age or s-maxage)");
    }
    if vary_names(res_headers).is_none() {
        return Err("Vary: *");
    }
    if res_headers.contains_key(header::SET_COOKIE) {
        return Err("Set-Cookie");
    }
    Ok(())
}

/// The request header names a response varies on (lower case); `None` for `Vary: *`.
pub fn vary_names(res_headers: &HeaderMap) -> Option<Vec<http::HeaderName>> {
    let mut names = Vec::new();
    for line in res_headers.get_all(header::VARY) {
        let Ok(line) = line.to_str() else { continue };
        for n in split_list(line) {
            if n == "*" {
                return None;
            }
            if let Ok(n) = http::HeaderName::try_from(n.to_ascii_lowercase()) {
                names.push(n);
            }
        }
    }
    Some(names)
}

/// The values of `names` in a request, joined per name, for comparing variants
/// (RFC 9111 section 4.1: whitespace around commas normalised, case kept).
pub fn vary_values(req: &HeaderMap, names: &[http::HeaderName]) -> Vec<Option<String>> {
    names
        .iter()
        .map(|n| {
            let vals: Vec<String> = req
                .get_all(n)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| split_list(v).map(str::to_owned).collect::<Vec<_>>())
                .collect();
            (!vals.is_empty()).then(|| vals.join(","))
        })
        .collect()
}

/// Whether `If-None-Match` (a list, or `*`) matches `etag` by weak comparison.
pub fn none_match(if_none_match: &HeaderValue, etag: Option<&HeaderValue>) -> bool {
    let Some(etag) = etag.and_then(|e| e.to_str().ok()) else {
        return false;
    };
    let Ok(list) = if_none_match.to_str() else {
        return false;
    };
    let weak = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    let etag = weak(etag);
    split_list(list).any(|t| t == "*" || weak(t) == etag)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::try_from(*k).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn cc(v: &str) -> CacheControl {
        CacheControl::of(&headers(&[("cache-control", v)]))
    }

    #[test]
    fn directives_are_read_case_insensitively_across_lines_and_quoted_commas() {
        let h = headers(&[
            ("cache-control", "Public, MAX-AGE=5, private=\"a, b\""),
            ("cache-control", "stale-if-error=300, max-age=9"),
        ]);
        let c = CacheControl::of(&h);
        assert!(c.public && c.private);
        assert_eq!(c.max_age, Some(Duration::from_secs(5)), "smallest wins");
        assert_eq!(c.stale_if_error, Some(Duration::from_secs(300)));
        assert_eq!(cc("max-age=abc").max_age, Some(Duration::ZERO));
    }

    #[test]
    fn s_maxage_wins_over_max_age_and_forbids_stale() {
        let c = cc("max-age=60, s-maxage=5, stale-if-error=300");
        assert_eq!(c.freshness_lifetime(), Some(Duration::from_secs(5)));
        assert!(c.forbids_stale());
        assert!(!cc("public, max-age=5, stale-if-error=300").forbids_stale());
        assert!(cc("max-age=5, must-revalidate").forbids_stale());
    }

    #[test]
    fn only_shareable_get_answers_with_explicit_freshness_are_stored() {
        let ok = |c: &str, auth: bool| {
            storable(
                &Method::GET,
                &CacheControl::default(),
                StatusCode::OK,
                &cc(c),
                &HeaderMap::new(),
                auth,
            )
        };
        assert!(ok("public, max-age=5", false).is_ok());
        assert!(ok("max-age=5", false).is_ok());
        assert_eq!(ok("private, no-store", false), Err("no-store"));
        assert_eq!(ok("private, max-age=5", false), Err("private"));
        assert!(ok("max-age=5", true).is_err(), "credentials need public");
        assert!(ok("public, max-age=5", true).is_ok());
        assert!(ok("s-maxage=5", true).is_ok());
        assert!(ok("no-cache", false).is_err(), "no freshness");
        let post = storable(
            &Method::POST,
            &CacheControl::default(),
            StatusCode::OK,
            &cc("public, max-age=5"),
            &HeaderMap::new(),
            false,
        );
        assert!(post.is_err());
        let star = storable(
            &Method::GET,
            &CacheControl::default(),
            StatusCode::OK,
            &cc("max-age=5"),
            &headers(&[("vary", "accept, *")]),
            false,
        );
        assert_eq!(star, Err("Vary: *"));
        let partial = storable(
            &Method::GET,
            &CacheControl::default(),
            StatusCode::PARTIAL_CONTENT,
            &cc("max-age=5"),
            &HeaderMap::new(),
            false,
        );
        assert!(partial.is_err());
    }

    #[test]
    fn if_none_match_uses_weak_comparison_and_star() {
        let e = HeaderValue::from_static("\"v1\"");
        assert!(none_match(
            &HeaderValue::from_static("\"v0\", W/\"v1\""),
            Some(&e)
        ));
        assert!(none_match(&HeaderValue::from_static("*"), Some(&e)));
        assert!(!none_match(&HeaderValue::from_static("\"v2\""), Some(&e)));
        assert!(!none_match(&HeaderValue::from_static("*"), None));
    }

    #[test]
    fn vary_values_normalise_lists_and_tell_absent_from_empty() {
        let names = vary_names(&headers(&[("vary", "Accept-Language, accept")])).unwrap();
        let a = vary_values(&headers(&[("accept-language", "en ,  de")]), &names);
        let b = vary_values(&headers(&[("accept-language", "en,de")]), &names);
        assert_eq!(a, b);
        assert_eq!(a[1], None);
    }
}
