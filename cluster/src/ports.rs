//! Checks the fixed ports of `hotel up` before anything is spawned, so a busy port is
//! reported as the user needs it: which port, which process holds it (when the kernel
//! tells us), and the flag, config key and variable that move it.
//!
//! The holder is found as `ss -ltnp` finds it: the listening socket's inode in
//! `/proc/net/tcp{,6}`, then the process with a `socket:[inode]` descriptor in
//! `/proc/*/fd`. Another user's descriptors are not readable; then the holder is unknown.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};

/// One fixed port of the cluster and the settings that choose it.
#[derive(Debug, Clone, Copy)]
pub struct FixedPort {
    /// What listens there: `gateway`, `gateway admin`, `registry`, `control API`.
    pub what: &'static str,
    /// The port (never 0: port 0 is always free).
    pub port: u16,
    /// The `hotel up` flag that sets it.
    pub flag: &'static str,
    /// Its key under `[ports]` in `config/hotel.toml`.
    pub key: &'static str,
}

/// A process holding a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its pid.
    pub pid: u32,
    /// Its command line (or `comm` when the command line is empty).
    pub command: String,
}

/// Binds each port on 127.0.0.1 for a moment; the first one that is taken is refused
/// with a message naming it, its holder and how to move it.
pub fn check_free(ports: &[FixedPort]) -> Result<(), String> {
    for p in ports.iter().filter(|p| p.port != 0) {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, p.port));
        match TcpListener::bind(addr) {
            Ok(listener) => drop(listener),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => return Err(busy(p)),
            Err(e) => {
                return Err(format!(
                    "cannot listen on {addr} ({} port): {e}; {}",
                    p.what,
                    how_to_move(p)
                ));
            }
        }
    }
    Ok(())
}

fn how_to_move(p: &FixedPort) -> String {
    format!(
        "pick another port with {} PORT (0: any free port), `{}` under [ports] in \
         config/hotel.toml, or HOTEL_CLUSTER__PORTS__{}",
        p.flag,
        p.key,
        p.key.to_ascii_uppercase()
    )
}

/// The message for a port that is taken.
fn busy(p: &FixedPort) -> String {
    let who = match holder(p.port) {
        Some(Some(h)) => format!("pid {} ({})", h.pid, h.command),
        Some(None) => "another user's process (its pid is not visible to you)".to_owned(),
        None => "a process this user cannot see (unknown)".to_owned(),
    };
    format!(
        "port {} on 127.0.0.1 ({}) is already in use by {who}; {}",
        p.port,
        p.what,
        how_to_move(p)
    )
}

/// Who listens on TCP `port` (any local address): `None` when no listening socket was
/// found, `Some(None)` when one was but its process is not visible to this user.
pub fn holder(port: u16) -> Option<Option<Holder>> {
    let inodes: Vec<u64> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|text| listening_inodes(&text, port))
        .collect();
    if inodes.is_empty() {
        return None;
    }
    Some(process_with_socket(&inodes))
}

/// Inodes of the sockets listening on `port` in a `/proc/net/tcp` table.
fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = f.get(1)?.rsplit_once(':')?.1;
            // State 0A is LISTEN.
            if u16::from_str_radix(local_port, 16).ok()? != port || *f.get(3)? != "0A" {
                return None;
            }
            f.get(9)?.parse().ok().filter(|inode| *inode != 0)
        })
        .collect()
}

/// The first process with a descriptor on one of `inodes`.
fn process_with_socket(inodes: &[u64]) -> Option<Holder> {
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let owns = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|target| wanted.iter().any(|w| target.as_os_str() == w.as_str()))
        });
        if owns {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let mut command = String::from_utf8_lossy(&cmdline)
                .split('\0')
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            if command.is_empty() {
                command = std::fs::read_to_string(entry.path().join("comm"))
                    .unwrap_or_default()
                    .trim()
                    .to_owned();
            }
            return Some(Holder { pid, command });
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const GATEWAY: FixedPort = FixedPort {
        what: "gateway",
        port: 0,
        flag: "--gateway-port",
        key: "gateway",
    };

    #[test]
    fn a_busy_port_is_named_with_its_holder_and_the_settings_that_move_it() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let err = check_free(&[FixedPort { port, ..GATEWAY }]).unwrap_err();
        for needle in [
            format!("port {port}"),
            "gateway".to_owned(),
            format!("pid {}", std::process::id()),
            "--gateway-port".to_owned(),
            "HOTEL_CLUSTER__PORTS__GATEWAY".to_owned(),
        ] {
            assert!(err.contains(&needle), "{needle:?} missing from: {err}");
        }
        drop(taken);
        assert!(check_free(&[FixedPort { port, ..GATEWAY }]).is_ok());
    }

    #[test]
    fn listening_sockets_are_read_from_the_kernel_table() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
            0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1\n\
            1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 4243 1\n";
        assert_eq!(listening_inodes(table, 8080), vec![4242]);
        assert!(listening_inodes(table, 8081).is_empty());
    }
}
