//! Sees requests reach a frozen upstream from the outside.
//!
//! A process stopped with SIGSTOP reads nothing, yet the kernel still accepts connections
//! for it and queues the bytes that proxies send. So every new request a proxy sends to
//! the hung instance shows up as a connection to its port whose receive queue grew. This
//! module samples `/proc/net/tcp` every few milliseconds and records those moments: the
//! client alone could only guess them from slow answers.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// One sampling moment at which new request bytes had arrived at the watched port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// Microseconds since the load started.
    pub at_us: u64,
    /// How many connections got new bytes since the previous sample (each is at least
    /// one request: proxies do not pipeline, so a stuck connection gets no second one).
    pub connections: u32,
}

/// A running sampler; [`ArrivalWatch::finish`] stops it and returns what it saw.
pub struct ArrivalWatch {
    /// Tells the sampling thread to stop after its current sample.
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Vec<Arrival>>,
}

impl ArrivalWatch {
    /// Starts sampling connections whose local port is `port`.
    pub fn spawn(port: u16, t0: Instant, every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let mut arrivals = Vec::new();
            let mut previous: HashMap<u64, u32> = HashMap::new();
            while !flag.load(Ordering::Relaxed) {
                if let Ok(text) = std::fs::read_to_string("/proc/net/tcp") {
                    let current = receive_queues(&text, port);
                    let grown = grown_connections(&previous, &current);
                    if grown > 0 {
                        let at_us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
                        arrivals.push(Arrival {
                            at_us,
                            connections: grown,
                        });
                    }
                    previous = current;
                }
                std::thread::sleep(every);
            }
            arrivals
        });
        Self { stop, handle }
    }

    /// Stops sampling and returns every arrival seen.
    pub fn finish(self) -> Vec<Arrival> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}

/// Receive-queue bytes of every non-listening IPv4 connection on local `port`, keyed by
/// the remote address and port.
pub fn receive_queues(proc_net_tcp: &str, port: u16) -> HashMap<u64, u32> {
    let mut out = HashMap::new();
    for line in proc_net_tcp.lines().skip(1) {
        let mut fields = line.split_whitespace();
        let (Some(_slot), Some(local), Some(remote), Some(state), Some(queues)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            continue;
        };
        // 0A is LISTEN: its "receive queue" is the accept backlog, not request bytes.
        if state == "0A" || hex_port(local) != Some(port) {
            continue;
        }
        let Some(key) = hex_endpoint(remote) else {
            continue;
        };
        let Some(rx) = queues
            .split_once(':')
            .and_then(|(_, rx)| u32::from_str_radix(rx, 16).ok())
        else {
            continue;
        };
        out.insert(key, rx);
    }
    out
}

/// How many connections hold more unread bytes now than at the previous sample (a new
/// connection counts when it holds any). A growth by exactly one is not a request: the
/// queue counts sequence numbers, and a FIN (the proxy closing a connection it gave up
/// on) takes one.
pub fn grown_connections(previous: &HashMap<u64, u32>, current: &HashMap<u64, u32>) -> u32 {
    let grown = current
        .iter()
        .filter(|(key, rx)| **rx > previous.get(key).copied().unwrap_or(0).saturating_add(1))
        .count();
    u32::try_from(grown).unwrap_or(u32::MAX)
}

fn hex_port(endpoint: &str) -> Option<u16> {
    let (_, port) = endpoint.split_once(':')?;
    u16::from_str_radix(port, 16).ok()
}

fn hex_endpoint(endpoint: &str) -> Option<u64> {
    let (addr, port) = endpoint.split_once(':')?;
    let addr = u32::from_str_radix(addr, 16).ok()?;
    let port = u16::from_str_radix(port, 16).ok()?;
    Some((u64::from(addr) << 16) | u64::from(port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000003 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:C350 01 00000000:0000004E 00:00000000 00000000     0        0 2 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:1F90 0100007F:C351 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:C352 0100007F:1F90 01 00000000:00000010 00:00000000 00000000     0        0 4 1 0000000000000000 20 4 30 10 -1
";

    #[test]
    fn receive_queues_keep_only_connections_on_the_watched_local_port() {
        let q = receive_queues(SAMPLE, 0x1F90);
        assert_eq!(
            q.len(),
            2,
            "listener and the outgoing side are left out: {q:?}"
        );
        let key = (0x0100_007Fu64 << 16) | 0xC350;
        assert_eq!(q.get(&key), Some(&0x4E));
    }

    #[test]
    fn a_connection_counts_as_an_arrival_only_when_its_queue_grew() {
        let before: HashMap<u64, u32> = [(1, 0), (2, 78), (3, 78)].into_iter().collect();
        let after: HashMap<u64, u32> = [(1, 78), (2, 78), (3, 0), (4, 78), (5, 0), (6, 1)]
            .into_iter()
            .collect();
        // 1 grew, 4 is new with bytes; 2 unchanged, 3 drained, 5 new but empty.
        assert_eq!(grown_connections(&before, &after), 2);
        // A FIN on a stuck connection is one more sequence number, not a request.
        let closed: HashMap<u64, u32> = [(2, 79)].into_iter().collect();
        assert_eq!(grown_connections(&before, &closed), 0);
    }
}
