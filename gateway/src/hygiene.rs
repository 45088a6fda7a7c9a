//! Header hygiene at the edge.
//!
//! - Hop-by-hop headers, including every header a `Connection` header names, are
//!   removed in both directions (RFC 9110 7.6.1): from a client's request here, from an
//!   instance's answer by the connection that read it (`hotel_upstream::HOP_BY_HOP`).
//! - `Forwarded`, `X-Forwarded-For` and `X-Forwarded-Proto` are set by the gateway. The
//!   incoming values are kept (and appended to) only when the peer is a configured
//!   trusted proxy; from anyone else they are replaced, so a client cannot spoof its
//!   address to the services or to per-IP limits.
//! - Headers that describe the upstream (server identity, internal addresses) are
//!   stripped from responses (`headers.strip_response`).
//! - Credentials are marked sensitive (`Debug` prints `Sensitive`) and [`Redacted`]
//!   prints a header map for logs with their values hidden.

use http::{HeaderMap, HeaderName, HeaderValue, header};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::sync::LazyLock;

/// `[headers]` as written in TOML.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HeaderSettings {
    /// Proxies (addresses or CIDR blocks: `10.0.0.0/8`, `::1`) whose `Forwarded` and
    /// `X-Forwarded-*` headers are believed. Empty: nobody's.
    pub trusted_proxies: Vec<String>,
    /// Response headers removed before the client sees them; `x-internal-*` removes
    /// every header with that prefix.
    pub strip_response: Vec<String>,
    /// Headers whose values never reach logs or span attributes.
    pub sensitive: Vec<String>,
}

impl Default for HeaderSettings {
    fn default() -> Self {
        HeaderSettings {
            trusted_proxies: Vec::new(),
            strip_response: ["server", "x-powered-by", "x-aspnet-version", "x-internal-*"]
                .map(str::to_owned)
                .to_vec(),
            sensitive: [
                "authorization",
                "proxy-authorization",
                "x-api-key",
                "cookie",
                "set-cookie",
            ]
            .map(str::to_owned)
            .to_vec(),
        }
    }
}

/// An address block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `::1/128` or a bare address.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an address or CIDR block"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            Some(b) => b
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0-{max}"))?,
            None => max,
        };
        Ok(Cidr { net, bits })
    }

    /// Whether `ip` is inside the block (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.bits))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// Validated `[headers]`.
#[derive(Debug, Clone, Default)]
pub struct Hygiene {
    trusted: Vec<Cidr>,
    strip_exact: NameSet,
    strip_prefix: Vec<String>,
    sensitive: NameSet,
}

impl Hygiene {
    /// Validates `s`, naming the key on error.
    pub fn from_settings(s: &HeaderSettings) -> Result<Hygiene, String> {
        let trusted = s
            .trusted_proxies
            .iter()
            .enumerate()
            .map(|(i, c)| Cidr::parse(c).map_err(|e| format!("headers.trusted_proxies[{i}]: {e}")))
            .collect::<Result<_, _>>()?;
        let mut strip_exact = Vec::new();
        let mut strip_prefix = Vec::new();
        for (i, name) in s.strip_response.iter().enumerate() {
            let lower = name.to_ascii_lowercase();
            match lower.strip_suffix('*') {
                Some(prefix) if !prefix.is_empty() => strip_prefix.push(prefix.to_owned()),
                _ => strip_exact.push(HeaderName::try_from(lower).map_err(|_| {
                    format!("headers.strip_response[{i}]: {name:?} is not a header name")
                })?),
            }
        }
        let sensitive = s
            .sensitive
            .iter()
            .enumerate()
            .map(|(i, name)| {
                HeaderName::try_from(name.to_ascii_lowercase())
                    .map_err(|_| format!("headers.sensitive[{i}]: {name:?} is not a header name"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Hygiene {
            trusted,
            strip_exact: NameSet::new(strip_exact),
            strip_prefix,
            sensitive: NameSet::new(sensitive),
        })
    }

    /// Whether `ip` is a trusted proxy.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip))
    }

    /// The client's address: the peer, or, when the peer is a trusted proxy, the
    /// rightmost address in `X-Forwarded-For` that is not itself a trusted proxy.
    pub fn client_ip(&self, headers: &HeaderMap, peer: IpAddr) -> IpAddr {
        if !self.is_trusted(peer) {
            return peer;
        }
        let mut client = peer;
        for v in headers.get_all("x-forwarded-for").iter().rev() {
            let Ok(s) = v.to_str() else { return client };
            for part in s.rsplit(',') {
                let Ok(ip) = part.trim().parse::<IpAddr>() else {
                    return client;
                };
                client = ip;
                if !self.is_trusted(ip) {
                    return ip;
                }
            }
        }
        client
    }

    /// The forwarding headers every request from `peer` gets, made once per connection;
    /// `None` for a trusted proxy, whose requests extend their own headers.
    pub fn peer_headers(&self, peer: SocketAddr) -> Option<PeerHeaders> {
        if self.is_trusted(peer.ip()) {
            return None;
        }
        let ip = peer.ip().to_canonical();
        let fwd = match ip {
            IpAddr::V4(a) => format!("for={a};proto=http"),
            IpAddr::V6(a) => format!("for=\"[{a}]\";proto=http"),
        };
        Some(PeerHeaders {
            xff: HeaderValue::try_from(ip.to_string()).ok()?,
            forwarded: HeaderValue::try_from(fwd).ok()?,
        })
    }

    /// Rewrites the forwarding headers of a request from `peer` (see the module docs),
    /// using `pre` (from [`Hygiene::peer_headers`]) when the peer is untrusted.
    pub fn set_forwarded(
        &self,
        headers: &mut HeaderMap,
        peer: SocketAddr,
        pre: Option<&PeerHeaders>,
    ) {
        if let Some(pre) = pre {
            remove_present(headers, &CLIENT_FORWARDING);
            // `HeaderName`s, not `&str`s: a non-standard name given as `&str` is copied
            // into a new allocation on every insert.
            headers.insert(X_FORWARDED_FOR, pre.xff.clone());
            headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
            headers.insert(header::FORWARDED, pre.forwarded.clone());
            return;
        }
        let trusted = self.is_trusted(peer.ip());
        let ip = peer.ip().to_canonical();
        let forwarded_for = match ip {
            IpAddr::V4(a) => format!("for={a}"),
            IpAddr::V6(a) => format!("for=\"[{a}]\""),
        };
        let xff_prev = trusted.then(|| join(headers, "x-forwarded-for")).flatten();
        let fwd_prev = trusted.then(|| join(headers, "forwarded")).flatten();
        let proto = trusted
            .then(|| {
                headers
                    .get("x-forwarded-proto")
                    .and_then(|v| v.to_str().ok())
                    .filter(|p| matches!(*p, "http" | "https"))
                    .map(str::to_owned)
            })
            .flatten()
            .unwrap_or_else(|| "http".to_owned());
        for name in ["x-forwarded-for", "x-forwarded-proto", "x-real-ip"] {
            headers.remove(name);
        }
        headers.remove(header::FORWARDED);
        if !trusted {
            headers.remove("x-forwarded-host");
        }
        let xff = match xff_prev {
            Some(p) => format!("{p}, {ip}"),
            None => ip.to_string(),
        };
        let fwd = match fwd_prev {
            Some(p) => format!("{p}, {forwarded_for};proto={proto}"),
            None => format!("{forwarded_for};proto={proto}"),
        };
        for (name, value) in [
            (X_FORWARDED_FOR, xff),
            (X_FORWARDED_PROTO, proto),
            (header::FORWARDED, fwd),
        ] {
            if let Ok(v) = HeaderValue::try_from(value) {
                headers.insert(name, v);
            }
        }
    }

    /// Marks credentials sensitive so no `Debug` print of the headers shows them.
    pub fn mark_sensitive(&self, headers: &mut HeaderMap) {
        // One pass over the values (a handful) rather than a hashed lookup per name.
        for (k, v) in headers.iter_mut() {
            if self.sensitive.contains(k) {
                v.set_sensitive(true);
            }
        }
    }

    /// Removes upstream-identifying headers from a response. An instance's answer has
    /// no hop-by-hop headers left (its connection read them); the gateway's own answers
    /// have none but the `Connection: close` it means to send.
    pub fn clean_response(&self, headers: &mut HeaderMap) {
        remove_present(headers, &self.strip_exact);
        if !self.strip_prefix.is_empty() {
            let doomed: Vec<HeaderName> = headers
                .keys()
                .filter(|k| self.strip_prefix.iter().any(|p| k.as_str().starts_with(p)))
                .cloned()
                .collect();
            for k in doomed {
                headers.remove(k);
            }
        }
    }

    /// Prints `headers` for a log line with sensitive values replaced.
    pub fn redacted<'a>(&'a self, headers: &'a HeaderMap) -> Redacted<'a> {
        Redacted {
            headers,
            sensitive: &self.sensitive,
        }
    }
}

fn join(headers: &HeaderMap, name: &str) -> Option<String> {
    let parts: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// Forwarding headers precomputed for an untrusted peer.
#[derive(Debug, Clone)]
pub struct PeerHeaders {
    xff: HeaderValue,
    forwarded: HeaderValue,
}

/// Headers that describe one connection, not the message: never forwarded (RFC 9110 7.6.1).
static HOP_BY_HOP: LazyLock<NameSet> =
    LazyLock::new(|| NameSet::new(hotel_upstream::HOP_BY_HOP.to_vec()));

/// Removes the fixed hop-by-hop list from a request the shield admitted, which already
/// removed what its `Connection` header named (before the forwarding headers were set,
/// so that a client cannot have them removed by naming them).
pub fn strip_hop_by_hop_list(h: &mut HeaderMap) {
    remove_present(h, &HOP_BY_HOP);
}

/// As constants: `HeaderName::from_static` outside a const context parses the name at
/// run time, on every request.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// The forwarding headers a client may not set for itself that the gateway does not
/// set again for an untrusted peer: `X-Forwarded-For`, `X-Forwarded-Proto` and
/// `Forwarded` are replaced whole by their `insert`.
static CLIENT_FORWARDING: LazyLock<NameSet> = LazyLock::new(|| {
    NameSet::new(vec![
        HeaderName::from_static("x-forwarded-host"),
        HeaderName::from_static("x-real-ip"),
    ])
});

/// A fixed list of header names, with a one-word filter in front: each name sets one of
/// 64 bits, chosen by its length and last byte, so that a header whose bit is clear
/// (most of a message's, for the short lists on the proxy path) is known absent after
/// one test instead of one comparison per listed name.
#[derive(Debug, Clone, Default)]
pub struct NameSet {
    names: Vec<HeaderName>,
    filter: u64,
}

impl NameSet {
    /// The set of `names` (in order; duplicates are harmless).
    pub fn new(names: Vec<HeaderName>) -> NameSet {
        let filter = names.iter().fold(0, |f, n| f | NameSet::bit(n));
        NameSet { names, filter }
    }

    /// `name`'s filter bit. Header names are never empty.
    fn bit(name: &HeaderName) -> u64 {
        let s = name.as_str().as_bytes();
        let last = s.last().copied().map_or(0, usize::from);
        1 << ((s.len() ^ last.wrapping_mul(7)) & 63)
    }

    /// Where `name` is in the list, if it is.
    fn position(&self, name: &HeaderName) -> Option<usize> {
        if self.filter & NameSet::bit(name) == 0 {
            return None;
        }
        self.names.iter().position(|n| n == name)
    }

    /// Whether `name` is in the list.
    pub fn contains(&self, name: &HeaderName) -> bool {
        self.position(name).is_some()
    }

    /// The names, in order.
    pub fn names(&self) -> &[HeaderName] {
        &self.names
    }
}

/// Removes the headers of `set` that `h` holds. One pass over the names `h` holds (a
/// handful on most messages, and usually none of the set's, which its filter tells in
/// one test each) instead of a hashed lookup per name: on the proxy path every request
/// and response goes through several lists.
pub fn remove_present(h: &mut HeaderMap, set: &NameSet) {
    let names = set.names();
    if h.is_empty() || names.is_empty() {
        return;
    }
    // Bit i: `names[i]` is present. Lists longer than 64 take the plain way past it.
    let mut present = 0u64;
    for k in h.keys() {
        if let Some(i) = set.position(k).filter(|i| *i < 64) {
            present |= 1 << i;
        }
    }
    for (i, n) in names.iter().enumerate().take(64) {
        if present & (1 << i) != 0 {
            h.remove(n);
        }
    }
    for n in names.iter().skip(64) {
        h.remove(n);
    }
}

/// Removes every header named by a `Connection` header (and `Connection` itself): they
/// describe this hop only.
pub fn remove_connection_listed(headers: &mut HeaderMap) {
    let mut lines = headers.get_all(header::CONNECTION).iter();
    if lines.next().is_none() {
        return;
    }
    if lines.next().is_some() {
        // More than one `Connection` line: rare enough for a copy of them all.
        let values: Vec<HeaderValue> = headers
            .get_all(header::CONNECTION)
            .iter()
            .cloned()
            .collect();
        headers.remove(header::CONNECTION);
        for v in &values {
            remove_named_by(headers, v);
        }
    } else if let Some(v) = headers.remove(header::CONNECTION) {
        remove_named_by(headers, &v);
    }
}

/// Removes the headers one `Connection` value names. Each by its `&str`: the map looks it
/// up ignoring case without building a `HeaderName` (which would copy a non-standard name
/// such as `keep-alive`, on most responses, into a new allocation). And only when the
/// message has it: most named headers are absent (`Connection: keep-alive` on an answer
/// without a `Keep-Alive` line), and a look along the names it has is cheaper than the
/// map's lookup by `&str`, which parses and hashes the token.
fn remove_named_by(headers: &mut HeaderMap, value: &HeaderValue) {
    let Ok(value) = value.to_str() else {
        return;
    };
    for token in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        if headers
            .keys()
            .any(|k| k.as_str().eq_ignore_ascii_case(token))
        {
            headers.remove(token);
        }
    }
}

/// A header map for logs: sensitive values print as `[redacted]`.
pub struct Redacted<'a> {
    headers: &'a HeaderMap,
    sensitive: &'a NameSet,
}

impl std::fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for (k, v) in self.headers {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            if self.sensitive.contains(k) {
                write!(f, "{k}: [redacted]")?;
            } else {
                write!(f, "{k}: {}", String::from_utf8_lossy(v.as_bytes()))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn remove_present_removes_every_value_of_the_listed_names_and_nothing_else() {
        let mut h = HeaderMap::new();
        h.append(header::TE, HeaderValue::from_static("trailers"));
        h.append("keep-alive", HeaderValue::from_static("a"));
        h.append("keep-alive", HeaderValue::from_static("b"));
        h.append(header::ACCEPT, HeaderValue::from_static("*/*"));
        remove_present(&mut h, &HOP_BY_HOP);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::ACCEPT));
        // Past 64 names the rest are still removed.
        let many: Vec<HeaderName> = (0..70)
            .map(|i| HeaderName::try_from(format!("x-n{i}")).unwrap())
            .collect();
        h.insert(many[3].clone(), HeaderValue::from_static("1"));
        h.insert(many[66].clone(), HeaderValue::from_static("1"));
        remove_present(&mut h, &NameSet::new(many));
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn a_name_set_holds_its_names_and_no_other() {
        // Standard and custom names, many sharing a length or a last byte (and so,
        // between them, every filter bit): the filter may only ever save a comparison.
        let mut all: Vec<HeaderName> = [
            header::ACCEPT,
            header::CONNECTION,
            header::CONTENT_LENGTH,
            header::CONTENT_TYPE,
            header::DATE,
            header::HOST,
            header::SERVER,
            header::TE,
            header::TRANSFER_ENCODING,
            header::USER_AGENT,
        ]
        .to_vec();
        all.extend(
            (0..200).map(|i| {
                HeaderName::try_from(format!("x-{}{}", "a".repeat(i % 37), i % 10)).unwrap()
            }),
        );
        all.dedup();
        for step in [2, 3, 7] {
            let picked: Vec<HeaderName> = all.iter().step_by(step).cloned().collect();
            let set = NameSet::new(picked.clone());
            for n in &all {
                assert_eq!(set.contains(n), picked.contains(n), "{n} (every {step}th)");
            }
        }
        assert!(!NameSet::default().contains(&header::HOST));
    }

    fn hygiene(trusted: &[&str]) -> Hygiene {
        Hygiene::from_settings(&HeaderSettings {
            trusted_proxies: trusted.iter().map(|s| (*s).to_owned()).collect(),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn cidr_blocks_match_their_addresses_only() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.0.9".parse().unwrap()));
        assert!(Cidr::parse("::1").unwrap().contains("::1".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("ten").is_err());
    }

    #[test]
    fn forwarding_headers_from_an_untrusted_peer_are_replaced() {
        let h = hygiene(&[]);
        let mut m = HeaderMap::new();
        m.insert("x-forwarded-for", "1.2.3.4".parse().unwrap());
        m.insert("x-forwarded-proto", "https".parse().unwrap());
        m.insert("forwarded", "for=1.2.3.4".parse().unwrap());
        let peer: SocketAddr = "192.0.2.7:5555".parse().unwrap();
        h.set_forwarded(&mut m, peer, None);
        assert_eq!(m["x-forwarded-for"], "192.0.2.7");
        assert_eq!(m["x-forwarded-proto"], "http");
        assert_eq!(m["forwarded"], "for=192.0.2.7;proto=http");
        assert_eq!(h.client_ip(&m, peer.ip()), peer.ip());
    }

    #[test]
    fn per_connection_forwarding_headers_equal_the_per_request_ones() {
        let h = hygiene(&["10.0.0.0/8"]);
        assert!(h.peer_headers("10.0.0.1:1".parse().unwrap()).is_none());
        for peer in ["192.0.2.7:5555", "[2001:db8::1]:80", "[::ffff:192.0.2.9]:1"] {
            let peer: SocketAddr = peer.parse().unwrap();
            let pre = h.peer_headers(peer).unwrap();
            let mut spoofed = HeaderMap::new();
            spoofed.insert("x-forwarded-for", "1.2.3.4".parse().unwrap());
            spoofed.append("x-forwarded-for", "5.6.7.8".parse().unwrap());
            spoofed.insert("forwarded", "for=1.2.3.4".parse().unwrap());
            spoofed.append("forwarded", "for=5.6.7.8".parse().unwrap());
            spoofed.insert("x-forwarded-proto", "https".parse().unwrap());
            spoofed.insert("x-forwarded-host", "evil.example".parse().unwrap());
            spoofed.insert("x-real-ip", "1.2.3.4".parse().unwrap());
            let (mut a, mut b) = (spoofed.clone(), spoofed);
            h.set_forwarded(&mut a, peer, None);
            h.set_forwarded(&mut b, peer, Some(&pre));
            assert_eq!(a, b, "{peer}");
            assert_eq!(b.get_all("x-forwarded-for").iter().count(), 1, "{peer}");
            assert_eq!(b.get_all("forwarded").iter().count(), 1, "{peer}");
            assert!(!b.contains_key("x-forwarded-host") && !b.contains_key("x-real-ip"));
        }
    }

    #[test]
    fn forwarding_headers_from_a_trusted_proxy_are_appended_to() {
        let h = hygiene(&["10.0.0.0/8"]);
        let mut m = HeaderMap::new();
        m.insert("x-forwarded-for", "203.0.113.9, 10.0.0.3".parse().unwrap());
        m.insert("x-forwarded-proto", "https".parse().unwrap());
        let peer: SocketAddr = "10.0.0.2:1".parse().unwrap();
        assert_eq!(
            h.client_ip(&m, peer.ip()),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        h.set_forwarded(&mut m, peer, None);
        assert_eq!(m["x-forwarded-for"], "203.0.113.9, 10.0.0.3, 10.0.0.2");
        assert_eq!(m["x-forwarded-proto"], "https");
        assert_eq!(m["forwarded"], "for=10.0.0.2;proto=https");
        let v6: SocketAddr = "[2001:db8::1]:80".parse().unwrap();
        let mut m = HeaderMap::new();
        hygiene(&[]).set_forwarded(&mut m, v6, None);
        assert_eq!(m["forwarded"], "for=\"[2001:db8::1]\";proto=http");
    }

    #[test]
    fn upstream_identity_headers_are_stripped_from_responses() {
        let h = hygiene(&[]);
        let mut m = HeaderMap::new();
        m.insert("server", "room/1.0 (10.0.0.5)".parse().unwrap());
        m.insert("x-internal-addr", "10.0.0.5:9001".parse().unwrap());
        m.insert("x-upstream", "u1".parse().unwrap());
        m.insert("content-type", "application/json".parse().unwrap());
        // An instance's answer, as the shield cleans it.
        h.clean_response(&mut m);
        let left: Vec<&str> = m.keys().map(|k| k.as_str()).collect();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(m.contains_key("x-upstream") && m.contains_key("content-type"));
        // The gateway's own `Connection: close` is left for hyper to act on.
        let mut m = HeaderMap::new();
        m.insert("connection", "close".parse().unwrap());
        m.insert("server", "hotel".parse().unwrap());
        h.clean_response(&mut m);
        let left: Vec<&str> = m.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["connection"]);
    }

    #[test]
    fn every_name_of_every_connection_line_is_removed_whatever_its_case() {
        let mut m = HeaderMap::new();
        m.append("connection", "Keep-Alive , X-Hop-One".parse().unwrap());
        m.append("connection", "x-hop-two,,close".parse().unwrap());
        for name in ["keep-alive", "x-hop-one", "x-hop-two"] {
            m.append(name, "1".parse().unwrap());
        }
        m.append("x-hop-one", "2".parse().unwrap());
        m.insert("x-kept", "1".parse().unwrap());
        remove_connection_listed(&mut m);
        let left: Vec<&str> = m.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-kept"]);
        // One line, the common case (an upstream's `Connection: keep-alive`).
        let mut m = HeaderMap::new();
        m.insert("connection", "keep-alive".parse().unwrap());
        m.insert("keep-alive", "timeout=5".parse().unwrap());
        m.insert("x-kept", "1".parse().unwrap());
        remove_connection_listed(&mut m);
        let left: Vec<&str> = m.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-kept"]);
    }

    #[test]
    fn credentials_are_redacted_in_logs_and_debug_output() {
        let h = hygiene(&[]);
        let mut m = HeaderMap::new();
        m.insert("authorization", "Bearer s3cr3t".parse().unwrap());
        m.insert("x-api-key", "s3cr3t".parse().unwrap());
        m.insert("accept", "text/plain".parse().unwrap());
        let line = h.redacted(&m).to_string();
        assert!(
            !line.contains("s3cr3t") && line.contains("accept: text/plain"),
            "{line}"
        );
        h.mark_sensitive(&mut m);
        assert!(!format!("{m:?}").contains("s3cr3t"));
    }
}
