//! Per-client rate limits: a token bucket per client, kept as GCRA (one theoretical
//! arrival time in an `AtomicU64`), so a decision is one compare-and-swap on the
//! client's own word. Clients never share state: a noisy client spins only on its own
//! atomic and cannot slow the others.
//!
//! Authenticated clients have one bucket each ([`RateLimiter::bucket_for`], made when
//! the key set is loaded and kept across key reloads by client name).
//! Unauthenticated traffic (auth off, or public paths) can be limited per source IP with
//! `rate_limit.per_ip`; those buckets live in sharded maps bounded in size — a full
//! bucket is the same as no bucket, so full ones are dropped when a shard fills.

use serde::{Deserialize, Serialize};
use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio::time::Instant;

/// One limit: `rate` requests per second on average, `burst` at once.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// Sustained requests per second (refill rate).
    pub rate: f64,
    /// Bucket size: requests allowed at once after a quiet period.
    pub burst: u32,
}

/// `[rate_limit]` as written in TOML.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSettings {
    /// The limit of every authenticated client without its own entry.
    pub default: Limit,
    /// Per-client limits, by client name (`[rate_limit.clients.web]`).
    pub clients: BTreeMap<String, Limit>,
    /// Whether the dev key of `hotel up` is unlimited unless `clients.dev` is set.
    pub dev_unlimited: bool,
    /// Limit per source IP for unauthenticated requests (auth off or public paths);
    /// none by default.
    pub per_ip: Option<Limit>,
    /// Most source IPs tracked at once (`per_ip`); past it the least useful are forgotten
    /// and new IPs share one overflow bucket until room frees up.
    pub max_tracked_ips: usize,
    /// Whether responses carry `RateLimit-Limit`, `RateLimit-Remaining`,
    /// `RateLimit-Reset`.
    pub headers: bool,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        RateLimitSettings {
            default: Limit {
                rate: 100.0,
                burst: 200,
            },
            clients: BTreeMap::new(),
            dev_unlimited: true,
            per_ip: None,
            max_tracked_ips: 100_000,
            headers: true,
        }
    }
}

/// Checks a limit, naming the key in the error.
pub fn validate(key: &str, l: &Limit) -> Result<(), String> {
    if !(l.rate.is_finite() && l.rate > 0.0 && l.rate <= 1_000_000.0) {
        return Err(format!(
            "{key}.rate: must be above 0 and at most 1000000 per second"
        ));
    }
    if l.burst == 0 || l.burst > 1_000_000 {
        return Err(format!("{key}.burst: must be between 1 and 1000000"));
    }
    Ok(())
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may pass.
    pub allowed: bool,
    /// The bucket size.
    pub limit: u32,
    /// Requests left right now.
    pub remaining: u32,
    /// Seconds until the bucket is full again (rounded up).
    pub reset_secs: u64,
    /// When refused: seconds until one request fits (rounded up, at least 1).
    pub retry_after_secs: u64,
}

/// The arithmetic of one limit, in nanoseconds.
#[derive(Debug, Clone, Copy)]
struct Gcra {
    /// Emission interval: nanoseconds per request.
    t: u64,
    /// Burst tolerance: `burst * t`.
    tau: u64,
    burst: u32,
}

impl Gcra {
    fn new(l: Limit) -> Gcra {
        let t = ((1e9 / l.rate).round() as u64).max(1);
        Gcra {
            t,
            tau: t.saturating_mul(u64::from(l.burst)),
            burst: l.burst,
        }
    }

    /// Given the stored arrival time `tat` and `now`, the new `tat` (when allowed) and
    /// the decision.
    fn step(&self, tat: u64, now: u64) -> (Option<u64>, Decision) {
        let next = tat.max(now) + self.t;
        let ahead = next - now;
        if ahead > self.tau {
            let wait = ahead - self.tau;
            let held = tat.max(now) - now;
            return (
                None,
                Decision {
                    allowed: false,
                    limit: self.burst,
                    remaining: 0,
                    reset_secs: ceil_secs(held),
                    retry_after_secs: ceil_secs(wait).max(1),
                },
            );
        }
        let remaining = ((self.tau - ahead) / self.t) as u32;
        (
            Some(next),
            Decision {
                allowed: true,
                limit: self.burst,
                remaining,
                reset_secs: ceil_secs(ahead),
                retry_after_secs: 0,
            },
        )
    }
}

fn ceil_secs(ns: u64) -> u64 {
    ns.div_ceil(1_000_000_000)
}

/// One client's bucket: its theoretical arrival time, in nanoseconds since the limiter's
/// epoch.
#[derive(Debug)]
pub struct Bucket {
    gcra: Gcra,
    tat: AtomicU64,
}

impl Bucket {
    fn check(&self, now: u64) -> Decision {
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let (next, d) = self.gcra.step(tat, now);
            let Some(next) = next else { return d };
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return d,
                Err(seen) => tat = seen,
            }
        }
    }
}

const SHARDS: usize = 16;

/// Buckets per source IP, sharded so concurrent IPs rarely share a lock.
#[derive(Debug)]
struct IpBuckets {
    gcra: Gcra,
    shards: Vec<Mutex<HashMap<IpAddr, u64>>>,
    per_shard: usize,
    overflow: Bucket,
}

impl IpBuckets {
    fn check(&self, ip: IpAddr, now: u64) -> Decision {
        // FNV-1a over the address bytes: cheap and stable; the map's own SipHash
        // protects the lookup inside a shard.
        let mut x: u64 = 0xcbf2_9ce4_8422_2325;
        let mut feed = |b: u8| {
            x ^= u64::from(b);
            x = x.wrapping_mul(0x100_0000_01b3);
        };
        match ip {
            IpAddr::V4(a) => a.octets().into_iter().for_each(&mut feed),
            IpAddr::V6(a) => a.octets().into_iter().for_each(&mut feed),
        }
        let shard = (x as usize) % SHARDS;
        let Ok(mut map) = self.shards[shard].lock() else {
            return self.overflow.check(now);
        };
        if !map.contains_key(&ip) && map.len() >= self.per_shard {
            // A bucket whose arrival time has passed is full: forgetting it changes nothing.
            map.retain(|_, tat| *tat > now);
            if map.len() >= self.per_shard {
                drop(map);
                return self.overflow.check(now);
            }
        }
        let tat = map.entry(ip).or_insert(0);
        let (next, d) = self.gcra.step(*tat, now);
        if let Some(n) = next {
            *tat = n;
        }
        d
    }
}

/// Every bucket of the gateway.
#[derive(Debug)]
pub struct RateLimiter {
    epoch: Instant,
    default: Limit,
    per_client: BTreeMap<String, Limit>,
    dev_unlimited: bool,
    per_ip: Option<IpBuckets>,
    /// Whether to add the `RateLimit-*` headers.
    pub headers: bool,
}

/// `[rate_limit]`, validated: what [`RateLimiter::new`] builds its buckets from.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimits(RateLimitSettings);

impl RateLimits {
    /// Validates `s`; a name in `s.clients` that is not among `clients` (the clients of the
    /// configured keys) is an error naming the key.
    pub fn new(s: &RateLimitSettings, clients: &[Arc<String>]) -> Result<RateLimits, String> {
        validate("rate_limit.default", &s.default)?;
        for (name, l) in &s.clients {
            validate(&format!("rate_limit.clients.{name}"), l)?;
            if !clients.iter().any(|c| c.as_str() == name) {
                return Err(format!(
                    "rate_limit.clients.{name}: no API key names this client"
                ));
            }
        }
        if let Some(l) = &s.per_ip {
            validate("rate_limit.per_ip", l)?;
            if s.max_tracked_ips < SHARDS {
                return Err(format!(
                    "rate_limit.max_tracked_ips: must be at least {SHARDS}"
                ));
            }
        }
        Ok(RateLimits(s.clone()))
    }

    /// Whether responses carry the `RateLimit-*` headers.
    pub fn headers(&self) -> bool {
        self.0.headers
    }
}

impl RateLimiter {
    /// The limiter of `limits`, every bucket full; time counts from now.
    pub fn new(limits: &RateLimits) -> Self {
        let s = &limits.0;
        let per_ip = s.per_ip.map(|l| {
            let g = Gcra::new(l);
            IpBuckets {
                gcra: g,
                shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
                per_shard: s.max_tracked_ips / SHARDS,
                overflow: Bucket {
                    gcra: g,
                    tat: AtomicU64::new(0),
                },
            }
        });
        RateLimiter {
            epoch: Instant::now(),
            default: s.default,
            per_client: s.clients.clone(),
            dev_unlimited: s.dev_unlimited,
            per_ip,
            headers: s.headers,
        }
    }

    fn now(&self) -> u64 {
        // One bucket's worth of history before the epoch, so a fresh bucket starts full.
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX / 2)
            + Duration::from_secs(1 << 20).as_nanos() as u64
    }

    /// A new, full bucket for client `name` under its limit; `None` when it is unlimited
    /// (the dev client, unless configured).
    pub fn bucket_for(&self, name: &str) -> Option<Arc<Bucket>> {
        let limit = match self.per_client.get(name) {
            Some(l) => *l,
            None if name == crate::auth::DEV_CLIENT && self.dev_unlimited => return None,
            None => self.default,
        };
        Some(Arc::new(Bucket {
            gcra: Gcra::new(limit),
            tat: AtomicU64::new(0),
        }))
    }

    /// Checks (and on success takes) one request from the client of bucket `b`.
    pub fn check_bucket(&self, b: &Bucket) -> Decision {
        b.check(self.now())
    }

    /// Checks one unauthenticated request from `ip`; `None` when `per_ip` is off.
    pub fn check_ip(&self, ip: IpAddr) -> Option<Decision> {
        self.per_ip.as_ref().map(|b| b.check(ip, self.now()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A limiter and one bucket per client, by position.
    struct Buckets(RateLimiter, Vec<Option<Arc<Bucket>>>);

    impl Buckets {
        fn check_client(&self, i: usize) -> Option<Decision> {
            self.1[i].as_ref().map(|b| self.0.check_bucket(b))
        }
    }

    fn limiter(default: Limit, clients: &[&str]) -> Buckets {
        let names: Vec<Arc<String>> = clients.iter().map(|c| Arc::new((*c).to_owned())).collect();
        let rl = RateLimiter::new(
            &RateLimits::new(
                &RateLimitSettings {
                    default,
                    ..Default::default()
                },
                &names,
            )
            .unwrap(),
        );
        let b = clients.iter().map(|c| rl.bucket_for(c)).collect();
        Buckets(rl, b)
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_passes_then_requests_refill_at_the_steady_rate() {
        let rl = limiter(
            Limit {
                rate: 10.0,
                burst: 5,
            },
            &["web"],
        );
        for left in (0..5).rev() {
            let d = rl.check_client(0).unwrap();
            assert!(d.allowed);
            assert_eq!(d.remaining, left);
        }
        let refused = rl.check_client(0).unwrap();
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_secs, 1);
        assert_eq!(refused.limit, 5);
        // 10 per second: one more every 100 ms, and not before.
        tokio::time::advance(Duration::from_millis(99)).await;
        assert!(!rl.check_client(0).unwrap().allowed);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(rl.check_client(0).unwrap().allowed);
        assert!(!rl.check_client(0).unwrap().allowed);
        // Over 10 s at the steady rate exactly 100 pass.
        let mut passed = 0;
        for _ in 0..1000 {
            tokio::time::advance(Duration::from_millis(10)).await;
            if rl.check_client(0).unwrap().allowed {
                passed += 1;
            }
        }
        assert_eq!(passed, 100);
        // After a quiet second the bucket is full again.
        tokio::time::advance(Duration::from_secs(1)).await;
        let d = rl.check_client(0).unwrap();
        assert!(d.allowed);
        assert_eq!(d.remaining, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn one_client_is_limited_while_another_is_not() {
        let rl = limiter(
            Limit {
                rate: 1.0,
                burst: 3,
            },
            &["noisy", "quiet"],
        );
        let mut refused = 0;
        for _ in 0..100 {
            if !rl.check_client(0).unwrap().allowed {
                refused += 1;
            }
        }
        assert_eq!(refused, 97);
        for _ in 0..3 {
            assert!(rl.check_client(1).unwrap().allowed);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_dev_client_is_unlimited_and_per_client_limits_override_the_default() {
        let names: Vec<Arc<String>> = ["dev", "web"]
            .iter()
            .map(|c| Arc::new((*c).to_owned()))
            .collect();
        let mut s = RateLimitSettings::default();
        s.clients.insert(
            "web".into(),
            Limit {
                rate: 1.0,
                burst: 1,
            },
        );
        let rl = RateLimiter::new(&RateLimits::new(&s, &names).unwrap());
        assert!(rl.bucket_for("dev").is_none());
        let web = rl.bucket_for("web").unwrap();
        assert!(rl.check_bucket(&web).allowed);
        assert!(!rl.check_bucket(&web).allowed);
        // A client that appears later (a reloaded key file) gets the default.
        let later = rl.bucket_for("later").unwrap();
        assert_eq!(rl.check_bucket(&later).limit, 200);
        s.clients.insert(
            "nobody".into(),
            Limit {
                rate: 1.0,
                burst: 1,
            },
        );
        let e = RateLimits::new(&s, &names).unwrap_err();
        assert!(e.starts_with("rate_limit.clients.nobody"), "{e}");
        s.clients.clear();
        s.default.burst = 0;
        assert!(
            RateLimits::new(&s, &names)
                .unwrap_err()
                .starts_with("rate_limit.default.burst")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn per_ip_buckets_stay_bounded_and_forget_only_full_buckets() {
        let s = RateLimitSettings {
            per_ip: Some(Limit {
                rate: 1.0,
                burst: 2,
            }),
            max_tracked_ips: 32,
            ..Default::default()
        };
        let rl = RateLimiter::new(&RateLimits::new(&s, &[]).unwrap());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(rl.check_ip(a).unwrap().allowed);
        assert!(rl.check_ip(a).unwrap().allowed);
        assert!(!rl.check_ip(a).unwrap().allowed);
        // Thousands of other addresses cannot grow the maps past their bound...
        for i in 0..5000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0b00_0000 + i));
            rl.check_ip(ip);
        }
        let tracked: usize = rl
            .per_ip
            .as_ref()
            .unwrap()
            .shards
            .iter()
            .map(|s| s.lock().unwrap().len())
            .sum();
        assert!(tracked <= 32, "{tracked}");
        // ...and a limited address is still limited (its bucket was not full).
        assert!(!rl.check_ip(a).unwrap().allowed);
    }
}
