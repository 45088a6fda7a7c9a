//! `hotel load`: steady, bounded load through the gateway, with a line per second and a
//! summary, so a person can watch what a failure costs clients while they kill things.
//!
//! The load seeds its own customers and rooms through the API, then runs a weighted mix
//! of availability searches, room and customer reads, bookings (with an
//! `Idempotency-Key`), cancellations of its own bookings and sign-ups (a POST without a
//! key, which the gateway may not retry once sent). Every booking takes a night of its
//! own (a distinct room and date, years ahead), so a 409 is never expected: it is counted
//! as an error like any other non-2xx answer.

use crate::clusterfile::ClusterFile;
use hotel_common::process::BoxError;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::{
    collections::BTreeMap,
    io::Write,
    path::PathBuf,
    process::ExitCode,
    str::FromStr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio::{
    sync::{Semaphore, mpsc},
    time::Instant,
};

/// One kind of request in the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    /// `GET /api/availability`.
    Availability,
    /// `GET /api/rooms/{id}`.
    Room,
    /// `GET /api/customers/{id}`.
    Customer,
    /// `POST /api/bookings` with an `Idempotency-Key`.
    Book,
    /// `POST /api/bookings/{id}/cancel` of a booking this run made.
    Cancel,
    /// `POST /api/customers` without an `Idempotency-Key`.
    Signup,
}

impl Op {
    const ALL: [Op; 6] = [
        Op::Availability,
        Op::Room,
        Op::Customer,
        Op::Book,
        Op::Cancel,
        Op::Signup,
    ];

    /// The name used in `--mix` and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Availability => "availability",
            Op::Room => "room",
            Op::Customer => "customer",
            Op::Book => "book",
            Op::Cancel => "cancel",
            Op::Signup => "signup",
        }
    }
}

/// Weights of each request kind: `availability=4,room=2,customer=2,book=2,cancel=1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix(pub Vec<(Op, u32)>);

impl FromStr for Mix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut weights = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, w) = part
                .split_once('=')
                .ok_or_else(|| format!("mix: {part:?} is not KIND=WEIGHT"))?;
            let op = Op::ALL.into_iter().find(|o| o.as_str() == name.trim()).ok_or_else(|| {
                format!("mix: unknown kind {name:?}; expected availability, room, customer, book, cancel or signup")
            })?;
            let w: u32 = w
                .trim()
                .parse()
                .map_err(|_| format!("mix: weight {w:?} of {name} is not a whole number"))?;
            weights.push((op, w));
        }
        if weights.iter().map(|(_, w)| *w).sum::<u32>() == 0 {
            return Err("mix: at least one kind needs a weight above 0".into());
        }
        Ok(Mix(weights))
    }
}

impl Mix {
    fn pick(&self, rng: &mut impl Rng) -> Op {
        let total: u32 = self.0.iter().map(|(_, w)| *w).sum();
        let mut n = rng.random_range(0..total);
        for (op, w) in &self.0 {
            if n < *w {
                return *op;
            }
            n -= w;
        }
        Op::Availability
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (try 30s, 2m)"))
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r > 0.0 && r <= 10_000.0 => Ok(r),
        _ => Err(format!(
            "{s:?} is not a rate between 0 and 10000 requests per second"
        )),
    }
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    let (num, scale) = match s.strip_suffix('%') {
        Some(p) => (p, 100.0),
        None => (s, 1.0),
    };
    match num.trim().parse::<f64>() {
        Ok(v) if (0.0..=scale).contains(&v) => Ok(v / scale),
        _ => Err(format!(
            "{s:?} is not an error rate between 0 and 1 (or 0% and 100%)"
        )),
    }
}

/// The default bound when neither `--duration` nor `--requests` is given.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(30);

/// `hotel load` options.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Gateway URL [default: gateway_url from <data-dir>/cluster.json].
    #[arg(long)]
    pub url: Option<String>,
    /// API key sent as `Authorization: Bearer KEY` [default: api_key from cluster.json].
    #[arg(long, env = "HOTEL_API_KEY")]
    pub api_key: Option<String>,
    /// Where to find cluster.json.
    #[arg(long, env = "HOTEL_DATA_DIR", default_value = ".hotel")]
    pub data_dir: PathBuf,
    /// Requests started per second (open loop) [default: 20 unless --concurrency is given].
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Requests in flight: with --rate, the most at once; alone, that many clients each
    /// sending their next request as soon as the last one answered.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub concurrency: Option<u32>,
    /// Stop after this long [default: 30s when --requests is not given].
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many requests.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: Option<u64>,
    /// Weights of the request kinds.
    #[arg(
        long,
        default_value = "availability=4,room=2,customer=2,book=2,cancel=1"
    )]
    pub mix: Mix,
    /// Per-request timeout (a slower answer counts as a timeout error).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub timeout: Duration,
    /// Exit non-zero when more than this share of requests failed (0.01 or 1%).
    #[arg(long, value_parser = parse_fraction, default_value = "0")]
    pub max_error_rate: f64,
    /// Rooms created before the load starts.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub seed_rooms: u32,
    /// Customers created before the load starts.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub seed_customers: u32,
    /// Print the summary as JSON on stdout (per-second lines go to stderr).
    #[arg(long)]
    pub json: bool,
    /// No per-second lines.
    #[arg(long)]
    pub quiet: bool,
}

/// Request and failure counts of one request kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OpStats {
    /// Requests sent.
    pub requests: u64,
    /// 2xx answers.
    pub ok: u64,
    /// Everything else.
    pub errors: u64,
}

/// Latency percentiles in milliseconds, over every request (failed ones too).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// The slowest request.
    pub max_ms: f64,
}

/// What `hotel load --json` prints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The gateway URL.
    pub url: String,
    /// Wall time of the load phase (seeding excluded).
    pub duration_s: f64,
    /// Requests sent.
    pub requests: u64,
    /// 2xx answers.
    pub ok: u64,
    /// Everything else.
    pub errors: u64,
    /// errors / requests.
    pub error_rate: f64,
    /// Requests per second achieved.
    pub rate: f64,
    /// Latency percentiles.
    pub latency: Latency,
    /// Errors by kind: `http 503`, `timeout`, `connect`, `io`.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// The first failure of each kind: `book: room is booked on ... (x-request-id ...)`.
    pub error_samples: BTreeMap<String, String>,
    /// Per request kind.
    pub by_op: BTreeMap<String, OpStats>,
}

/// How one request ended.
#[derive(Debug, Clone)]
struct Outcome {
    op: Op,
    latency: Duration,
    error: Option<String>,
    /// What the failed answer said (problem detail or transport error).
    detail: Option<String>,
}

/// Customers and rooms this run created.
#[derive(Debug, Clone, Default)]
struct Seed {
    customers: Vec<String>,
    rooms: Vec<String>,
}

/// What every request task shares.
struct Client {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
    run: String,
    seed: Seed,
    /// Next booking slot: slot N books room N mod R for night N div R, so no two bookings
    /// of a run ever want the same room on the same night.
    slot: AtomicU64,
    /// Sequence of sign-up emails.
    signups: AtomicU64,
    /// Bookings made and not yet cancelled; cancellations take from here.
    booked: Mutex<Vec<String>>,
    /// The first night any booking of this run uses, inside booking's horizon.
    first_night: time::Date,
}

/// A transport error with its causes: reqwest's own message names only the URL
/// (`error sending request for url (...)`); the cause (`Connection refused`, a DNS or
/// TLS failure, a timeout) is in its source chain.
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

fn classify(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else {
        "io".into()
    }
}

impl Client {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.key {
            Some(k) => req.bearer_auth(k),
            None => req,
        }
    }

    fn pick<'a>(items: &'a [String], rng: &mut impl Rng) -> &'a str {
        &items[rng.random_range(0..items.len())]
    }

    /// Sends one request of kind `op`; returns the kind actually sent (a cancellation
    /// with nothing to cancel books instead) and the answer's JSON on success.
    async fn send(&self, op: Op) -> (Op, Result<serde_json::Value, (String, String)>) {
        let (op, req) = {
            let mut rng = rand::rng();
            let cancel = if op == Op::Cancel {
                self.booked.lock().ok().and_then(|mut b| b.pop())
            } else {
                None
            };
            let op = if op == Op::Cancel && cancel.is_none() {
                Op::Book
            } else {
                op
            };
            let req = match op {
                Op::Availability => {
                    let from = self.first_night + time::Duration::days(rng.random_range(0..60));
                    let to = from + time::Duration::days(rng.random_range(1..4));
                    let guests = rng.random_range(1..=3);
                    self.request(
                        reqwest::Method::GET,
                        &format!(
                            "/api/availability?check_in={from}&check_out={to}&guests={guests}"
                        ),
                    )
                }
                Op::Room => self.request(
                    reqwest::Method::GET,
                    &format!("/api/rooms/{}", Self::pick(&self.seed.rooms, &mut rng)),
                ),
                Op::Customer => self.request(
                    reqwest::Method::GET,
                    &format!(
                        "/api/customers/{}",
                        Self::pick(&self.seed.customers, &mut rng)
                    ),
                ),
                Op::Book => {
                    let slot = self.slot.fetch_add(1, Ordering::Relaxed);
                    let rooms = self.seed.rooms.len() as u64;
                    let room = &self.seed.rooms[usize::try_from(slot % rooms).unwrap_or(0)];
                    let night = self.first_night
                        + time::Duration::days(i64::try_from(slot / rooms).unwrap_or(0));
                    let body = serde_json::json!({
                        "customer_id": Self::pick(&self.seed.customers, &mut rng),
                        "room_id": room,
                        "check_in": night.to_string(),
                        "check_out": (night + time::Duration::days(1)).to_string(),
                        "guests": 1,
                    });
                    self.request(reqwest::Method::POST, "/api/bookings")
                        .header("idempotency-key", uuid::Uuid::new_v4().to_string())
                        .json(&body)
                }
                Op::Cancel => self
                    .request(
                        reqwest::Method::POST,
                        &format!("/api/bookings/{}/cancel", cancel.unwrap_or_default()),
                    )
                    .header("idempotency-key", uuid::Uuid::new_v4().to_string()),
                Op::Signup => {
                    let n = self.signups.fetch_add(1, Ordering::Relaxed);
                    let body = serde_json::json!({
                        "name": format!("Load Signup {n}"),
                        "email": format!("signup-{}-{n}@load.example", self.run),
                    });
                    self.request(reqwest::Method::POST, "/api/customers")
                        .json(&body)
                }
            };
            (op, req)
        };
        let transport = |e: reqwest::Error| (classify(&e), describe(&e));
        let result = match req.send().await {
            Ok(res) if res.status().is_success() => {
                res.json::<serde_json::Value>().await.map_err(transport)
            }
            Ok(res) => {
                let kind = format!("http {}", res.status().as_u16());
                let request_id = res
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let body = res.text().await.unwrap_or_default();
                // The problem's detail says why; the request id finds it in the logs.
                let detail = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_owned))
                    .unwrap_or_else(|| body.chars().take(200).collect());
                let detail = match request_id {
                    Some(id) => format!("{detail} (x-request-id {id})"),
                    None => detail,
                };
                Err((kind, detail))
            }
            Err(e) => Err(transport(e)),
        };
        if op == Op::Book
            && let Ok(Some(id)) = result
                .as_ref()
                .map(|v| v.get("id").and_then(|i| i.as_str()))
            && let Ok(mut booked) = self.booked.lock()
        {
            booked.push(id.to_owned());
        }
        (op, result)
    }

    async fn timed(&self, op: Op) -> Outcome {
        let start = Instant::now();
        let (op, result) = self.send(op).await;
        let (error, detail) = match result {
            Ok(_) => (None, None),
            Err((kind, detail)) => (Some(kind), Some(detail)),
        };
        Outcome {
            op,
            latency: start.elapsed(),
            error,
            detail,
        }
    }
}

/// Creates one resource, retrying a few times: the seed is set-up, not measurement.
async fn create(client: &Client, path: &str, body: serde_json::Value) -> Result<String, String> {
    let mut last = String::new();
    for attempt in 0..5u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
        }
        match client
            .request(reqwest::Method::POST, path)
            .json(&body)
            .send()
            .await
        {
            Ok(res) if res.status().is_success() => {
                let v: serde_json::Value =
                    res.json().await.map_err(|e| format!("POST {path}: {e}"))?;
                return v
                    .get("id")
                    .and_then(|i| i.as_str())
                    .map(str::to_owned)
                    .ok_or_else(|| format!("POST {path} answered without an id: {v}"));
            }
            Ok(res) => {
                let status = res.status();
                let text = res.text().await.unwrap_or_default();
                last = format!("POST {path} answered {status}: {text}");
                // Auth and validation errors will not get better by retrying.
                if status.is_client_error() && status != reqwest::StatusCode::TOO_MANY_REQUESTS {
                    break;
                }
            }
            Err(e) => last = format!("POST {path}: {}", describe(&e)),
        }
    }
    Err(last)
}

async fn seed(client: &Client, rooms: u32, customers: u32) -> Result<Seed, String> {
    use futures::{StreamExt, stream};
    let kinds = [
        ("single", 1, 9_000),
        ("double", 2, 12_000),
        ("suite", 4, 25_000),
    ];
    let room_bodies: Vec<_> = (0..rooms)
        .map(|i| {
            let (kind, capacity, rate) = kinds[(i % 3) as usize];
            serde_json::json!({
                "number": format!("L{}-{i}", client.run),
                "kind": kind,
                "capacity": capacity,
                "nightly_rate_cents": rate,
            })
        })
        .collect();
    let customer_bodies: Vec<_> = (0..customers)
        .map(|i| serde_json::json!({"name": format!("Load Guest {i}"), "email": format!("guest-{}-{i}@load.example", client.run)}))
        .collect();
    let rooms: Vec<Result<String, String>> = stream::iter(
        room_bodies
            .into_iter()
            .map(|b| create(client, "/api/rooms", b)),
    )
    .buffered(8)
    .collect()
    .await;
    let customers: Vec<Result<String, String>> = stream::iter(
        customer_bodies
            .into_iter()
            .map(|b| create(client, "/api/customers", b)),
    )
    .buffered(8)
    .collect()
    .await;
    Ok(Seed {
        rooms: rooms.into_iter().collect::<Result<_, _>>()?,
        customers: customers.into_iter().collect::<Result<_, _>>()?,
    })
}

/// Aggregates outcomes: the per-second window and the whole run.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    /// The first failure of each kind, to show what went wrong.
    samples: BTreeMap<String, String>,
    errors_by_kind: BTreeMap<String, u64>,
    by_op: BTreeMap<Op, OpStats>,
    ok: u64,
    errors: u64,
}

impl Tally {
    fn add(&mut self, o: &Outcome) {
        self.latencies_us
            .push(u64::try_from(o.latency.as_micros()).unwrap_or(u64::MAX));
        let stats = self.by_op.entry(o.op).or_default();
        stats.requests += 1;
        match &o.error {
            None => {
                self.ok += 1;
                stats.ok += 1;
            }
            Some(kind) => {
                self.errors += 1;
                stats.errors += 1;
                *self.errors_by_kind.entry(kind.clone()).or_default() += 1;
                self.samples.entry(kind.clone()).or_insert_with(|| {
                    format!(
                        "{}: {}",
                        o.op.as_str(),
                        o.detail.clone().unwrap_or_default()
                    )
                });
            }
        }
    }

    fn latency(&mut self) -> Latency {
        self.latencies_us.sort_unstable();
        let at = |q: f64| -> f64 {
            if self.latencies_us.is_empty() {
                return 0.0;
            }
            let idx = ((self.latencies_us.len() as f64 * q).ceil() as usize)
                .clamp(1, self.latencies_us.len())
                - 1;
            self.latencies_us[idx] as f64 / 1000.0
        };
        Latency {
            p50_ms: at(0.50),
            p90_ms: at(0.90),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }

    /// One progress line; `label` is the second (`  3s`) or `end` for the last, partial one.
    fn line(&mut self, label: &str) -> String {
        let l = self.latency();
        let mut s = format!(
            "{label:>5}  ok {:>5}  err {:>4}  p50 {:>7.1}ms  p99 {:>7.1}ms",
            self.ok, self.errors, l.p50_ms, l.p99_ms
        );
        if !self.errors_by_kind.is_empty() {
            let kinds: Vec<String> = self
                .errors_by_kind
                .iter()
                .map(|(k, n)| format!("{k} x{n}"))
                .collect();
            s.push_str(&format!("  [{}]", kinds.join(", ")));
        }
        s
    }
}

/// How the load is paced and bounded (resolved from the flags).
#[derive(Debug, Clone)]
pub struct Plan {
    /// Gateway base URL.
    pub url: String,
    /// API key, if any.
    pub api_key: Option<String>,
    /// Open-loop rate, or `None` for closed loop.
    pub rate: Option<f64>,
    /// Most requests in flight (closed loop: the number of clients).
    pub concurrency: u32,
    /// Time bound.
    pub duration: Option<Duration>,
    /// Count bound.
    pub requests: Option<u64>,
    /// The mix.
    pub mix: Mix,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Rooms to create first.
    pub seed_rooms: u32,
    /// Customers to create first.
    pub seed_customers: u32,
    /// Print a line per second (to stdout, or stderr when `to_stderr`).
    pub progress: bool,
    /// Per-second lines go to stderr (stdout is for JSON).
    pub to_stderr: bool,
    /// Set to end the load early (Ctrl-C): no new requests start, in-flight ones finish
    /// and the summary covers what was sent.
    pub stop: Arc<AtomicBool>,
}

/// Runs the load described by `plan` and returns its summary.
pub async fn execute(plan: Plan) -> Result<Summary, BoxError> {
    let http = hotel_common::tls::internal::reqwest_client()
        .timeout(plan.timeout)
        .connect_timeout(plan.timeout.min(Duration::from_secs(2)))
        .no_proxy()
        .pool_max_idle_per_host(usize::try_from(plan.concurrency).unwrap_or(64))
        .build()?;
    let run: String = {
        let b: [u8; 3] = rand::random();
        b.iter().map(|x| format!("{x:02x}")).collect()
    };
    let today = time::OffsetDateTime::now_utc().date();
    // A month ahead plus a per-run offset. The rooms are this run's own, so no real
    // booking can clash; booking refuses a check_in past its `max_days_ahead` (730 days
    // by default), which leaves every room about 640 nights of slots.
    let first_night = today + time::Duration::days(30 + i64::from(rand::random::<u16>() % 60));
    let mut client = Client {
        http,
        base: plan.url.trim_end_matches('/').to_owned(),
        key: plan.api_key.clone(),
        run,
        seed: Seed::default(),
        slot: AtomicU64::new(0),
        signups: AtomicU64::new(0),
        booked: Mutex::new(Vec::new()),
        first_night,
    };
    client.seed = seed(&client, plan.seed_rooms, plan.seed_customers)
        .await
        .map_err(|e| format!("cannot create the seed data through {}: {e}", plan.url))?;
    let client = Arc::new(client);

    let (tx, mut rx) = mpsc::unbounded_channel::<Outcome>();
    let started = Instant::now();
    let progress = plan.progress;
    let to_stderr = plan.to_stderr;
    let reporter = tokio::spawn(async move {
        let mut total = Tally::default();
        let mut window = Tally::default();
        let mut tick =
            tokio::time::interval_at(started + Duration::from_secs(1), Duration::from_secs(1));
        let mut second = 0;
        let emit = |text: String| {
            if to_stderr {
                let _ = writeln!(std::io::stderr().lock(), "{text}");
            } else {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{text}");
                let _ = out.flush();
            }
        };
        loop {
            tokio::select! {
                o = rx.recv() => match o {
                    Some(o) => { total.add(&o); window.add(&o); }
                    None => break,
                },
                _ = tick.tick() => {
                    second += 1;
                    if progress {
                        emit(window.line(&format!("{second}s")));
                    }
                    window = Tally::default();
                }
            }
        }
        if progress && (window.ok + window.errors) > 0 {
            // Requests that finished after the last full second.
            emit(window.line("end"));
        }
        total
    });

    let deadline = plan.duration.map(|d| started + d);
    let issued = Arc::new(AtomicU64::new(0));
    // Claims the next request number, or None when a bound is reached.
    let claim = {
        let issued = Arc::clone(&issued);
        let limit = plan.requests;
        let stop = Arc::clone(&plan.stop);
        move || -> bool {
            if stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
            let n = issued.fetch_add(1, Ordering::Relaxed);
            limit.is_none_or(|l| n < l)
        }
    };
    match plan.rate {
        Some(rate) => {
            let permits = Arc::new(Semaphore::new(
                usize::try_from(plan.concurrency).unwrap_or(64),
            ));
            let period = Duration::from_secs_f64(1.0 / rate);
            let mut next = Instant::now();
            while claim() {
                tokio::time::sleep_until(next).await;
                next += period;
                // After a stall, do not fire a burst to catch up on more than a second.
                if Instant::now().saturating_duration_since(next) > Duration::from_secs(1) {
                    next = Instant::now();
                }
                let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                    break;
                };
                let op = plan.mix.pick(&mut rand::rng());
                let (client, tx) = (Arc::clone(&client), tx.clone());
                tokio::spawn(async move {
                    let _ = tx.send(client.timed(op).await);
                    drop(permit);
                });
            }
            let _ = permits.acquire_many(plan.concurrency).await;
        }
        None => {
            let workers: Vec<_> = (0..plan.concurrency)
                .map(|_| {
                    let (client, tx, claim, mix) = (
                        Arc::clone(&client),
                        tx.clone(),
                        claim.clone(),
                        plan.mix.clone(),
                    );
                    tokio::spawn(async move {
                        while claim() {
                            let op = mix.pick(&mut rand::rng());
                            let _ = tx.send(client.timed(op).await);
                        }
                    })
                })
                .collect();
            futures::future::join_all(workers).await;
        }
    }
    drop(tx);
    let elapsed = started.elapsed();
    let mut total = reporter.await?;
    let requests = total.ok + total.errors;
    let latency = total.latency();
    Ok(Summary {
        url: plan.url,
        duration_s: elapsed.as_secs_f64(),
        requests,
        ok: total.ok,
        errors: total.errors,
        error_rate: if requests == 0 {
            0.0
        } else {
            total.errors as f64 / requests as f64
        },
        rate: requests as f64 / elapsed.as_secs_f64().max(0.001),
        latency,
        errors_by_kind: total.errors_by_kind,
        error_samples: total.samples,
        by_op: total
            .by_op
            .into_iter()
            .map(|(op, s)| (op.as_str().to_owned(), s))
            .collect(),
    })
}

/// Renders the summary for people.
pub fn render(s: &Summary) -> String {
    let mut text = format!(
        "\n{} requests in {:.1}s ({:.1}/s): {} ok, {} failed ({:.2}%)\nlatency p50 {:.1}ms  p90 {:.1}ms  p99 {:.1}ms  max {:.1}ms\n",
        s.requests,
        s.duration_s,
        s.rate,
        s.ok,
        s.errors,
        s.error_rate * 100.0,
        s.latency.p50_ms,
        s.latency.p90_ms,
        s.latency.p99_ms,
        s.latency.max_ms
    );
    for (op, st) in &s.by_op {
        text.push_str(&format!(
            "  {op:<12} {:>6} sent  {:>6} ok  {:>4} failed\n",
            st.requests, st.ok, st.errors
        ));
    }
    if !s.errors_by_kind.is_empty() {
        let kinds: Vec<String> = s
            .errors_by_kind
            .iter()
            .map(|(k, n)| format!("{k} x{n}"))
            .collect();
        text.push_str(&format!("errors: {}\n", kinds.join(", ")));
        for (kind, sample) in &s.error_samples {
            text.push_str(&format!("  first {kind}: {sample}\n"));
        }
    }
    text
}

/// Resolves the flags (and cluster.json) into a plan.
pub fn plan(args: LoadArgs) -> Result<Plan, BoxError> {
    let file = ClusterFile::read(&args.data_dir);
    let url = match (&args.url, &file) {
        (Some(u), _) => u.clone(),
        (None, Ok(f)) => f.gateway_url.clone().ok_or_else(|| {
            format!(
                "the cluster in {} has no gateway yet",
                args.data_dir.display()
            )
        })?,
        (None, Err(e)) => return Err(format!("{e}; or pass --url").into()),
    };
    if url.starts_with("https://") {
        return Err(format!(
            "{url}: hotel load speaks cleartext HTTP only; run it against a cluster started \
             without --tls (or a gateway without [tls])"
        )
        .into());
    }
    let api_key = args.api_key.clone().or_else(|| {
        file.as_ref()
            .ok()
            .map(|f| f.api_key.clone())
            .filter(|k| !k.is_empty())
    });
    let rate = match (args.rate, args.concurrency) {
        (Some(r), _) => Some(r),
        (None, Some(_)) => None,
        (None, None) => Some(20.0),
    };
    let duration = match (args.duration, args.requests) {
        (None, None) => Some(DEFAULT_DURATION),
        (d, _) => d,
    };
    Ok(Plan {
        url,
        api_key,
        rate,
        concurrency: args.concurrency.unwrap_or(64),
        duration,
        requests: args.requests,
        mix: args.mix,
        timeout: args.timeout,
        seed_rooms: args.seed_rooms,
        seed_customers: args.seed_customers,
        progress: !args.quiet,
        to_stderr: args.json,
        stop: Arc::new(AtomicBool::new(false)),
    })
}

/// `hotel load`: exits non-zero when the error rate is above `--max-error-rate`.
pub async fn run(args: LoadArgs) -> Result<ExitCode, BoxError> {
    let json = args.json;
    let max = args.max_error_rate;
    let plan = plan(args)?;
    if plan.progress {
        let how = match plan.rate {
            Some(r) => format!("{r}/s, at most {} in flight", plan.concurrency),
            None => format!("{} clients", plan.concurrency),
        };
        let bound = match (plan.duration, plan.requests) {
            (Some(d), Some(n)) => format!("{} or {n} requests", humantime::format_duration(d)),
            (Some(d), None) => humantime::format_duration(d).to_string(),
            (None, Some(n)) => format!("{n} requests"),
            (None, None) => String::new(),
        };
        let _ = writeln!(
            std::io::stderr().lock(),
            "load: {} ({how}, {bound})",
            plan.url
        );
    }
    let stop = Arc::clone(&plan.stop);
    tokio::spawn(async move {
        hotel_common::server::shutdown_signal().await;
        stop.store(true, Ordering::Relaxed);
    });
    let summary = execute(plan).await?;
    if json {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", serde_json::to_string_pretty(&summary)?);
    } else {
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "{}", render(&summary));
    }
    let failed = summary.requests == 0 || summary.error_rate > max;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::{
        Json, Router,
        extract::{Path, State},
        http::{HeaderMap, StatusCode},
        routing::{get, post},
    };

    /// An in-process stand-in for the gateway's public API: enough of it to seed and run
    /// the mix, remembering what was booked so double bookings would show.
    #[derive(Default)]
    struct StandIn {
        nights: Mutex<std::collections::HashSet<(String, String)>>,
        missing_keys: AtomicU64,
        requests: AtomicU64,
        /// When set, every fifth GET of a room answers 503.
        flaky: AtomicBool,
        /// When set, every request without the right bearer key answers 401.
        key: Option<String>,
    }

    fn authorized(s: &StandIn, h: &HeaderMap) -> bool {
        match &s.key {
            None => true,
            Some(k) => {
                h.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {k}"))
            }
        }
    }

    async fn serve(state: Arc<StandIn>) -> String {
        type S = State<Arc<StandIn>>;
        let app = Router::new()
            .route(
                "/api/rooms",
                post(|State(s): S, h: HeaderMap| async move {
                    if !authorized(&s, &h) {
                        return Err(StatusCode::UNAUTHORIZED);
                    }
                    Ok((
                        StatusCode::CREATED,
                        Json(serde_json::json!({"id": uuid::Uuid::new_v4()})),
                    ))
                }),
            )
            .route(
                "/api/customers",
                post(|State(s): S, h: HeaderMap| async move {
                    if !authorized(&s, &h) {
                        return Err(StatusCode::UNAUTHORIZED);
                    }
                    s.requests.fetch_add(1, Ordering::Relaxed);
                    Ok((
                        StatusCode::CREATED,
                        Json(serde_json::json!({"id": uuid::Uuid::new_v4()})),
                    ))
                }),
            )
            .route(
                "/api/rooms/{id}",
                get(|State(s): S, Path(id): Path<String>| async move {
                    let n = s.requests.fetch_add(1, Ordering::Relaxed);
                    if s.flaky.load(Ordering::Relaxed) && n % 5 == 0 {
                        return Err(StatusCode::SERVICE_UNAVAILABLE);
                    }
                    Ok(Json(serde_json::json!({"id": id})))
                }),
            )
            .route(
                "/api/customers/{id}",
                get(|State(s): S, Path(id): Path<String>| async move {
                    s.requests.fetch_add(1, Ordering::Relaxed);
                    Json(serde_json::json!({"id": id}))
                }),
            )
            .route(
                "/api/availability",
                get(|State(s): S| async move {
                    s.requests.fetch_add(1, Ordering::Relaxed);
                    Json(serde_json::json!({"items": []}))
                }),
            )
            .route(
                "/api/bookings",
                post(
                    |State(s): S, h: HeaderMap, Json(b): Json<serde_json::Value>| async move {
                        s.requests.fetch_add(1, Ordering::Relaxed);
                        if !h.contains_key("idempotency-key") {
                            s.missing_keys.fetch_add(1, Ordering::Relaxed);
                        }
                        let night = (
                            b["room_id"].as_str().unwrap_or("").to_owned(),
                            b["check_in"].as_str().unwrap_or("").to_owned(),
                        );
                        if !s.nights.lock().unwrap().insert(night) {
                            return Err(StatusCode::CONFLICT);
                        }
                        Ok((
                            StatusCode::CREATED,
                            Json(serde_json::json!({"id": uuid::Uuid::new_v4()})),
                        ))
                    },
                ),
            )
            .route(
                "/api/bookings/{id}/cancel",
                post(|State(s): S, Path(id): Path<String>| async move {
                    s.requests.fetch_add(1, Ordering::Relaxed);
                    Json(serde_json::json!({"id": id, "status": "cancelled"}))
                }),
            )
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }

    fn plan_for(url: String) -> Plan {
        Plan {
            url,
            api_key: None,
            rate: None,
            concurrency: 8,
            duration: Some(Duration::from_secs(30)),
            requests: Some(300),
            mix: "availability=1,room=1,customer=1,book=3,cancel=1,signup=1"
                .parse()
                .unwrap(),
            timeout: Duration::from_secs(5),
            seed_rooms: 5,
            seed_customers: 3,
            progress: false,
            to_stderr: true,
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    #[tokio::test]
    async fn a_load_that_cannot_connect_names_the_url_and_the_cause() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let err = execute(plan_for(url.clone()))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("{url}/api/")), "{err}");
        assert!(err.to_lowercase().contains("connection refused"), "{err}");
    }

    #[tokio::test]
    async fn a_healthy_api_gives_a_clean_summary_and_bookings_never_collide() {
        let state = Arc::new(StandIn::default());
        let url = serve(Arc::clone(&state)).await;
        let s = execute(plan_for(url)).await.unwrap();
        assert_eq!(s.requests, 300, "{s:?}");
        assert_eq!(s.ok, 300, "{s:?}");
        assert_eq!(s.errors, 0);
        assert_eq!(s.by_op.values().map(|o| o.requests).sum::<u64>(), 300);
        assert!(
            s.by_op["book"].requests > 0 && s.by_op["cancel"].requests > 0,
            "{s:?}"
        );
        assert_eq!(
            state.requests.load(Ordering::Relaxed),
            300 + 3,
            "300 requests plus 3 seeded customers"
        );
        assert_eq!(
            state.missing_keys.load(Ordering::Relaxed),
            0,
            "every booking carries a key"
        );
        assert!(s.latency.max_ms >= s.latency.p50_ms);
    }

    #[tokio::test]
    async fn failed_requests_are_counted_by_status_and_kind() {
        let state = Arc::new(StandIn::default());
        state.flaky.store(true, Ordering::Relaxed);
        let url = serve(Arc::clone(&state)).await;
        let mut plan = plan_for(url);
        plan.mix = "room=1".parse().unwrap();
        plan.requests = Some(100);
        let s = execute(plan).await.unwrap();
        assert_eq!(s.requests, 100);
        assert_eq!(s.errors, 20, "{s:?}");
        assert_eq!(s.errors_by_kind.get("http 503"), Some(&20));
        assert!((s.error_rate - 0.2).abs() < 1e-9);
        assert!(render(&s).contains("http 503 x20"));
        assert!(s.error_samples["http 503"].starts_with("room: "), "{s:?}");
    }

    #[tokio::test]
    async fn an_open_loop_rate_is_held_and_the_duration_bounds_the_run() {
        let url = serve(Arc::new(StandIn::default())).await;
        let mut plan = plan_for(url);
        plan.rate = Some(50.0);
        plan.requests = None;
        plan.duration = Some(Duration::from_secs(2));
        let s = execute(plan).await.unwrap();
        assert!(
            (80..=110).contains(&s.requests),
            "{} requests in 2 s at 50/s",
            s.requests
        );
        assert!(s.duration_s < 4.0, "{s:?}");
    }

    #[tokio::test]
    async fn stopping_early_ends_the_run_with_a_summary_of_what_was_sent() {
        let url = serve(Arc::new(StandIn::default())).await;
        let mut plan = plan_for(url);
        plan.rate = Some(20.0);
        plan.requests = None;
        plan.duration = Some(Duration::from_secs(60));
        let stop = Arc::clone(&plan.stop);
        let run = tokio::spawn(execute(plan));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stop.store(true, Ordering::Relaxed);
        let s = tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(s.requests > 5 && s.requests < 100, "{s:?}");
        assert_eq!(s.errors, 0);
    }

    #[tokio::test]
    async fn a_refused_api_key_stops_before_the_load_with_the_answer() {
        let state = Arc::new(StandIn {
            key: Some("right".into()),
            ..StandIn::default()
        });
        let url = serve(state).await;
        let mut plan = plan_for(url);
        plan.api_key = Some("wrong".into());
        let err = execute(plan).await.unwrap_err().to_string();
        assert!(err.contains("401"), "{err}");
    }

    #[test]
    fn mixes_and_error_rates_parse_or_name_the_problem() {
        let m: Mix = "book=1, room=3".parse().unwrap();
        assert_eq!(m.0, vec![(Op::Book, 1), (Op::Room, 3)]);
        assert!("spa=1".parse::<Mix>().unwrap_err().contains("unknown kind"));
        assert!("room=0".parse::<Mix>().unwrap_err().contains("above 0"));
        assert_eq!(parse_fraction("1%").unwrap(), 0.01);
        assert_eq!(parse_fraction("0.05").unwrap(), 0.05);
        assert!(parse_fraction("2").is_err());
        assert!(parse_rate("0").is_err());
    }
}
