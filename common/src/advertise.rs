//! The address a process tells others to reach it at (what a service registers).
//!
//! Bound to a specific address, a process is reached there. Bound to the unspecified
//! address (`0.0.0.0`, `::`, as in a container or a pod), no peer can use the bind
//! address, so the default is the host's first non-loopback address of the same family
//! (the container or pod IP); loopback only when the host has nothing else. `advertise`
//! (`--advertise`, `HOTEL_ADVERTISE_ADDR`, `HOTEL_<ROLE>__ADVERTISE`) overrides the
//! choice: `HOST:PORT`, or `HOST` alone (the bound port), where `HOST` may be a name
//! (`room-1`, a Kubernetes Service) or an address (`[fd00::1]:7000`).

use crate::config::ConfigError;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The `HOST:PORT` to advertise for a listener bound to `bound`: `advertise` when given
/// (its port may be left out or 0 for the bound port), else the bind address, or for an
/// unspecified bind address the first suitable one of this host's interfaces.
pub fn advertised_addr(advertise: Option<&str>, bound: SocketAddr) -> Result<String, ConfigError> {
    choose(advertise, bound, host_addresses)
}

/// [`advertised_addr`] with the host's addresses given (tests); `host` is only called
/// when needed.
pub fn choose(
    advertise: Option<&str>,
    bound: SocketAddr,
    host: impl FnOnce() -> Vec<IpAddr>,
) -> Result<String, ConfigError> {
    if let Some(given) = advertise.map(str::trim).filter(|s| !s.is_empty()) {
        return parse(given, bound.port());
    }
    if !bound.ip().is_unspecified() {
        return Ok(bound.to_string());
    }
    let ip = first_reachable(&host(), bound.is_ipv4()).unwrap_or(if bound.is_ipv4() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        IpAddr::V6(Ipv6Addr::LOCALHOST)
    });
    Ok(SocketAddr::new(ip, bound.port()).to_string())
}

/// The first address of `ips` other hosts can use: not loopback, not unspecified, not
/// IPv6 link-local (which needs a zone); the bind family first, then the other.
fn first_reachable(ips: &[IpAddr], prefer_v4: bool) -> Option<IpAddr> {
    let usable = |ip: &&IpAddr| {
        !ip.is_loopback()
            && !ip.is_unspecified()
            && !matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local())
    };
    let family = |ip: &&IpAddr| ip.is_ipv4() == prefer_v4;
    ips.iter()
        .filter(usable)
        .find(family)
        .or_else(|| ips.iter().find(usable))
        .copied()
}

/// `HOST:PORT`, `HOST`, `[V6]:PORT`, `[V6]` or a bare IPv6 address; a missing or zero
/// port is the bound one.
fn parse(given: &str, bound_port: u16) -> Result<String, ConfigError> {
    let bad = |why: &str| {
        ConfigError(format!(
            "advertise = {given:?}: {why} (expected HOST:PORT or HOST)"
        ))
    };
    if let Ok(ip) = given.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, bound_port).to_string());
    }
    if let Ok(mut addr) = given.parse::<SocketAddr>() {
        if addr.port() == 0 {
            addr.set_port(bound_port);
        }
        return Ok(addr.to_string());
    }
    if let Some(inner) = given.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        let ip: Ipv6Addr = inner.parse().map_err(|_| bad("not an IPv6 address"))?;
        return Ok(SocketAddr::new(IpAddr::V6(ip), bound_port).to_string());
    }
    let (host, port) = match given.rsplit_once(':') {
        Some((host, port)) => {
            let port: u16 = port.parse().map_err(|_| bad("the port is not a number"))?;
            (host, if port == 0 { bound_port } else { port })
        }
        None => (given, bound_port),
    };
    let name_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !name_ok {
        return Err(bad("not a host name or address"));
    }
    Ok(format!("{host}:{port}"))
}

/// This host's interface addresses (interfaces that are up), in the order the kernel
/// lists them; empty when they cannot be read.
pub fn host_addresses() -> Vec<IpAddr> {
    #[cfg(target_os = "linux")]
    {
        use nix::net::if_::InterfaceFlags;
        let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
            return Vec::new();
        };
        addrs
            .filter(|a| a.flags.contains(InterfaceFlags::IFF_UP))
            .filter_map(|a| {
                let addr = a.address?;
                if let Some(v4) = addr.as_sockaddr_in() {
                    Some(IpAddr::V4(v4.ip()))
                } else {
                    addr.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
                }
            })
            .collect()
    }
    #[cfg(not(target_os = "linux"))]
    {
        Vec::new()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn never() -> Vec<IpAddr> {
        panic!("the host's addresses are not needed here")
    }

    #[test]
    fn a_specific_bind_address_is_advertised_as_bound() {
        let bound = "127.0.0.1:7100".parse().unwrap();
        assert_eq!(choose(None, bound, never).unwrap(), "127.0.0.1:7100");
        let bound = "10.1.2.3:7100".parse().unwrap();
        assert_eq!(choose(None, bound, never).unwrap(), "10.1.2.3:7100");
        let bound = "[fd00::5]:7100".parse().unwrap();
        assert_eq!(choose(Some("  "), bound, never).unwrap(), "[fd00::5]:7100");
    }

    #[test]
    fn a_wildcard_bind_advertises_the_first_non_loopback_address_of_its_family() {
        let host = || {
            ips(&[
                "127.0.0.1",
                "::1",
                "fe80::1",
                "fd00::7",
                "10.88.0.5",
                "10.89.0.2",
            ])
        };
        let v4 = "0.0.0.0:7000".parse().unwrap();
        assert_eq!(choose(None, v4, host).unwrap(), "10.88.0.5:7000");
        let v6 = "[::]:7000".parse().unwrap();
        assert_eq!(choose(None, v6, host).unwrap(), "[fd00::7]:7000");
        // The other family when the bind family has nothing but loopback.
        let v4_only = || ips(&["127.0.0.1", "::1", "10.0.0.9"]);
        assert_eq!(choose(None, v6, v4_only).unwrap(), "10.0.0.9:7000");
    }

    #[test]
    fn a_wildcard_bind_on_a_host_with_only_loopback_advertises_loopback() {
        let host = || ips(&["127.0.0.1", "::1", "fe80::1"]);
        let v4 = "0.0.0.0:7000".parse().unwrap();
        assert_eq!(choose(None, v4, host).unwrap(), "127.0.0.1:7000");
        let v6 = "[::]:7000".parse().unwrap();
        assert_eq!(choose(None, v6, Vec::new).unwrap(), "[::1]:7000");
    }

    #[test]
    fn an_explicit_advertise_wins_and_may_leave_out_the_port() {
        let bound: SocketAddr = "0.0.0.0:7000".parse().unwrap();
        assert_eq!(
            choose(Some("room-1:7000"), bound, never).unwrap(),
            "room-1:7000"
        );
        assert_eq!(choose(Some("room-1"), bound, never).unwrap(), "room-1:7000");
        assert_eq!(
            choose(Some("room.hotel.svc.cluster.local:80"), bound, never).unwrap(),
            "room.hotel.svc.cluster.local:80"
        );
        assert_eq!(
            choose(Some("10.0.0.3"), bound, never).unwrap(),
            "10.0.0.3:7000"
        );
        assert_eq!(
            choose(Some("10.0.0.3:0"), bound, never).unwrap(),
            "10.0.0.3:7000"
        );
        assert_eq!(
            choose(Some("fd00::3"), bound, never).unwrap(),
            "[fd00::3]:7000"
        );
        assert_eq!(
            choose(Some("[fd00::3]"), bound, never).unwrap(),
            "[fd00::3]:7000"
        );
        assert_eq!(
            choose(Some("[fd00::3]:9000"), bound, never).unwrap(),
            "[fd00::3]:9000"
        );
    }

    #[test]
    fn a_malformed_advertise_is_refused_naming_it() {
        let bound: SocketAddr = "0.0.0.0:7000".parse().unwrap();
        for bad in [
            "room-1:http",
            "room_1:7000",
            "http://room:7000",
            ":7000",
            "a..b",
            "[zz]",
        ] {
            let err = choose(Some(bad), bound, never).unwrap_err().to_string();
            assert!(err.contains("advertise"), "{bad}: {err}");
        }
    }

    #[test]
    fn this_host_lists_its_loopback_address() {
        // Every Linux host (and container) has `lo` up.
        assert!(
            host_addresses().iter().any(IpAddr::is_loopback),
            "{:?}",
            host_addresses()
        );
    }
}
