//! Path checking and route matching: which service a request goes to and with which path.
//!
//! The gateway is the only thing between the internet and the services' own routers, so
//! it refuses anything that could walk out of a route's prefix: dot segments, empty
//! segments (`//`), and their percent-encoded forms (`%2e%2e`, `%2f`, `%5c`, `%00`).
//! Upstreams only ever see paths this module rebuilt.

use crate::settings::Route;

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadPath {
    /// A `.` or `..` segment, plain or percent-encoded.
    #[error("the path contains a dot segment ('.' or '..')")]
    DotSegment,
    /// `//` in the path.
    #[error("the path contains an empty segment ('//')")]
    EmptySegment,
    /// An encoded `/`, `\` or NUL, or a raw `\`.
    #[error("the path contains an encoded separator or control character")]
    EncodedSeparator,
    /// A `%` not followed by two hex digits.
    #[error("the path contains a malformed percent-encoding")]
    BadEscape,
}

/// Checks `path` and returns it without a trailing `/` (except for `/` itself).
pub fn normalise(path: &str) -> Result<&str, BadPath> {
    if path.is_empty() || path == "/" {
        return Ok("/");
    }
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    for seg in trimmed.split('/').skip(1) {
        if seg.is_empty() {
            return Err(BadPath::EmptySegment);
        }
        check_segment(seg)?;
    }
    Ok(trimmed)
}

fn check_segment(seg: &str) -> Result<(), BadPath> {
    let b = seg.as_bytes();
    if b.contains(&b'\\') {
        return Err(BadPath::EncodedSeparator);
    }
    // A segment that decodes to only dots is a traversal whether or not it was encoded.
    let mut decoded_dots = 0usize;
    let mut only_dots = true;
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).ok_or(BadPath::BadEscape)?;
            let v = std::str::from_utf8(hex)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(BadPath::BadEscape)?;
            if matches!(v, b'/' | b'\\' | 0) {
                return Err(BadPath::EncodedSeparator);
            }
            if v == b'.' {
                decoded_dots += 1;
            } else {
                only_dots = false;
            }
            i += 3;
        } else {
            if b[i] == b'.' {
                decoded_dots += 1;
            } else {
                only_dots = false;
            }
            i += 1;
        }
    }
    if only_dots && (decoded_dots == 1 || decoded_dots == 2) {
        return Err(BadPath::DotSegment);
    }
    Ok(())
}

/// The routes, longest prefix first, and the match of a path against them.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<Route>,
}

/// A matched route: its index in the table and the path to send upstream.
#[derive(Debug, PartialEq, Eq)]
pub struct Matched {
    /// Index of the route in [`RouteTable::routes`].
    pub index: usize,
    /// Path and query for the instance, prefix rewritten.
    pub upstream_path: String,
}

impl RouteTable {
    /// A table of validated routes (sorted longest prefix first by the config).
    pub fn new(mut routes: Vec<Route>) -> Self {
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        RouteTable { routes }
    }

    /// The routes.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Matches a normalised path; `query` is appended to the rewritten path.
    pub fn matches(&self, path: &str, query: Option<&str>) -> Option<Matched> {
        self.routes.iter().enumerate().find_map(|(index, r)| {
            let rest = path.strip_prefix(r.prefix.as_str())?;
            if !(rest.is_empty() || rest.starts_with('/')) {
                return None;
            }
            let mut upstream_path = String::with_capacity(
                r.rewrite.len() + rest.len() + query.map_or(0, |q| q.len() + 1),
            );
            upstream_path.push_str(&r.rewrite);
            upstream_path.push_str(rest);
            if let Some(q) = query {
                upstream_path.push('?');
                upstream_path.push_str(q);
            }
            Some(Matched {
                index,
                upstream_path,
            })
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::field_reassign_with_default)]
mod tests {
    use super::*;
    use crate::settings::{Config, Settings};

    fn table() -> RouteTable {
        RouteTable::new(Config::try_from(Settings::default()).unwrap().routes)
    }

    #[test]
    fn traversal_in_every_spelling_is_refused() {
        for p in [
            "/api/rooms/../customers",
            "/api/rooms/%2e%2e/customers",
            "/api/rooms/%2E%2e/x",
            "/api/rooms/.%2e/x",
            "/api/rooms/./x",
            "/api/rooms%2fx",
            "/api/rooms/%2F",
            "/api/rooms/a%5cb",
            "/api/rooms/a\\b",
            "/api/rooms/%00",
            "/api//rooms",
            "/api/rooms/%zz",
            "/api/rooms/%2",
        ] {
            assert!(normalise(p).is_err(), "{p} was accepted");
        }
    }

    #[test]
    fn ordinary_paths_pass_and_lose_a_trailing_slash() {
        assert_eq!(normalise("/api/rooms/"), Ok("/api/rooms"));
        assert_eq!(
            normalise("/api/rooms/abc-1.json"),
            Ok("/api/rooms/abc-1.json")
        );
        assert_eq!(normalise("/api/rooms/...x"), Ok("/api/rooms/...x"));
        assert_eq!(normalise("/"), Ok("/"));
    }

    #[test]
    fn prefixes_match_whole_segments_and_are_rewritten() {
        let t = table();
        let m = t.matches("/api/customers/42", Some("a=1")).unwrap();
        assert_eq!(m.upstream_path, "/customers/42?a=1");
        assert_eq!(
            t.matches("/api/rooms", None).unwrap().upstream_path,
            "/rooms"
        );
        assert_eq!(
            t.matches("/api/availability", None).unwrap().upstream_path,
            "/availability"
        );
        assert!(t.matches("/api/roomsx", None).is_none());
        assert!(t.matches("/api", None).is_none());
        assert!(t.matches("/rooms", None).is_none());
    }
}
