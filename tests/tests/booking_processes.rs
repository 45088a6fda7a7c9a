//! System test of DESIGN.md drill 5 with real processes: one customer, one room and two
//! booking processes sharing ONE database file. Many concurrent conflicting bookings
//! split between the two booking processes: exactly one wins; a retried POST with the
//! same `Idempotency-Key`, sent to both processes at once, books once; and a keyed
//! request whose process is killed mid-way can be retried on the other one at once.
//! A third test lets booking discover customer and room through a real registry and
//! kills one of two room replicas under it.
//!
//! Run: `cargo build -p hotel && cargo test -p hotel-tests --test booking_processes -- --nocapture`

use anyhow::{Context, Result, ensure};
use hotel_tests::{Proc, TempDir, day, spawn_instance, wait_ready};
use serde_json::{Value, json};
use std::{
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::sync::Barrier;

/// Conflicting create requests in the race (half to each booking process).
const CONFLICTING: usize = 60;
/// Requests carrying one shared Idempotency-Key.
const SAME_KEY: usize = 20;

/// The processes of one test: they are killed by PID when dropped.
struct Cluster {
    customer: Proc,
    _room: Proc,
    bookings: Vec<Proc>,
    customer_url: String,
    room_url: String,
    _dir: TempDir,
}

/// The client of every test: a generous timeout, since a stuck request is a failure the
/// test reports rather than waits out.
fn client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?)
}

/// Spawns `hotel registry` (for role `registry`) or `hotel service ROLE` as instance
/// `name` on a loopback ephemeral port, with its data and log in `dir`.
fn spawn_role(dir: &TempDir, role: &str, name: &str, env: &[(&str, &str)]) -> Result<Proc> {
    spawn_instance(role, name, dir.path(), env, &[], dir.path())
}

/// Waits until every process answers `/readyz`.
async fn wait_all_ready(client: &reqwest::Client, procs: &[&Proc]) -> Result<()> {
    for p in procs {
        wait_ready(
            client,
            &format!("{}/readyz", p.url()),
            Duration::from_secs(30),
        )
        .await?;
    }
    Ok(())
}

async fn start_cluster(client: &reqwest::Client) -> Result<Cluster> {
    let dir = TempDir::new("hotel-booking-processes");
    let customer = spawn_role(&dir, "customer", "customer-1", &[])?;
    let room = spawn_role(&dir, "room", "room-1", &[])?;
    let (customer_url, room_url) = (customer.url(), room.url());
    let env = [
        ("HOTEL_BOOKING__CUSTOMER_URL", customer_url.as_str()),
        ("HOTEL_BOOKING__ROOM_URL", room_url.as_str()),
        // Long enough that a request stuck on a frozen customer outlives the kill below.
        ("HOTEL_BOOKING__PEER_TIMEOUT", "30s"),
        // The "idempotency key reserved" line tells when a keyed request has started.
        ("RUST_LOG", "info,hotel_booking=debug"),
    ];
    // Started one after the other only because `Proc::spawn` waits for the address line;
    // both open the same `<data>/booking.db`.
    let bookings = vec![
        spawn_role(&dir, "booking", "booking-1", &env)?,
        spawn_role(&dir, "booking", "booking-2", &env)?,
    ];
    wait_all_ready(client, &[&customer, &room, &bookings[0], &bookings[1]]).await?;
    Ok(Cluster {
        customer,
        _room: room,
        bookings,
        customer_url,
        room_url,
        _dir: dir,
    })
}

async fn post(client: &reqwest::Client, url: &str, body: &Value) -> Result<Value> {
    let res = client.post(url).json(body).send().await?;
    let status = res.status();
    let body: Value = res.json().await?;
    ensure!(status == 201, "POST {url} answered {status}: {body}");
    Ok(body)
}

/// Sends every request at once (behind a barrier) and returns, per request, the booking
/// process, the status, whether it was a replay and the body; and the burst's wall time.
async fn burst(
    client: &reqwest::Client,
    targets: Vec<(usize, String, Value, Option<String>)>,
) -> Result<(Vec<(usize, u16, bool, Value)>, Duration)> {
    let barrier = Arc::new(Barrier::new(targets.len()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (process, url, body, key) in targets {
        let client = client.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut req = client.post(url).json(&body);
            if let Some(key) = key {
                req = req.header("Idempotency-Key", key);
            }
            let res = req.send().await?;
            let status = res.status().as_u16();
            let replayed = res.headers().contains_key("idempotent-replayed");
            let body: Value = res.json().await.unwrap_or(Value::Null);
            anyhow::Ok((process, status, replayed, body))
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await??);
    }
    Ok((out, started.elapsed()))
}

async fn bookings_of_room(
    client: &reqwest::Client,
    booking_url: &str,
    room: &str,
) -> Result<Vec<Value>> {
    let page: Value = client
        .get(format!("{booking_url}/bookings?room_id={room}&limit=100"))
        .send()
        .await?
        .json()
        .await?;
    Ok(page["items"].as_array().cloned().unwrap_or_default())
}

/// One customer and one room, created through their services; returns their ids.
async fn seed(
    client: &reqwest::Client,
    customer_url: &str,
    room_url: &str,
) -> Result<(Value, Value)> {
    let customer = post(
        client,
        &format!("{customer_url}/customers"),
        &json!({"name": "Grace", "email": "grace@example.com"}),
    )
    .await?;
    let room = post(
        client,
        &format!("{room_url}/rooms"),
        &json!({"number": "301", "kind": "double", "capacity": 2, "nightly_rate_cents": 12_500}),
    )
    .await?;
    Ok((customer["id"].clone(), room["id"].clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conflicting_bookings_across_two_processes_on_one_database_book_exactly_once() -> Result<()>
{
    let client = client()?;
    let cluster = start_cluster(&client).await?;
    let (customer_id, room_id) = seed(&client, &cluster.customer_url, &cluster.room_url).await?;
    let room_id_str = room_id.as_str().context("room id")?.to_owned();

    // Different but pairwise-overlapping stays: each covers the night of day 102.
    let stays = [
        (day(100), day(103)),
        (day(101), day(104)),
        (day(102), day(105)),
    ];
    let targets = (0..CONFLICTING)
        .map(|i| {
            let process = i % 2;
            let (check_in, check_out) = &stays[i % stays.len()];
            let body = json!({
                "customer_id": customer_id, "room_id": room_id,
                "check_in": check_in, "check_out": check_out, "guests": 2,
            });
            (
                process,
                format!("{}/bookings", cluster.bookings[process].url()),
                body,
                None,
            )
        })
        .collect();
    let (results, wall) = burst(&client, targets).await?;
    let created: Vec<_> = results.iter().filter(|(_, s, _, _)| *s == 201).collect();
    let conflicts = results.iter().filter(|(_, s, _, _)| *s == 409).count();
    let per_process: Vec<usize> = (0..2)
        .map(|p| results.iter().filter(|(q, _, _, _)| *q == p).count())
        .collect();
    println!(
        "booking race: {CONFLICTING} conflicting requests ({} to booking-1, {} to booking-2) -> \
         {} x 201, {conflicts} x 409, others {}, in {:.0} ms",
        per_process[0],
        per_process[1],
        created.len(),
        results.len() - created.len() - conflicts,
        wall.as_secs_f64() * 1000.0,
    );
    let others: Vec<_> = results
        .iter()
        .filter(|(_, s, _, _)| *s != 201 && *s != 409)
        .collect();
    ensure!(others.is_empty(), "unexpected answers: {others:?}");
    ensure!(
        created.len() == 1,
        "expected exactly one booking, got {created:?}"
    );
    ensure!(conflicts == CONFLICTING - 1);
    for (_, _, _, p) in results.iter().filter(|(_, s, _, _)| *s == 409) {
        let detail = p["detail"].as_str().unwrap_or_default();
        ensure!(
            stays
                .iter()
                .any(|(check_in, _)| detail.contains(check_in.as_str())),
            "409 must name the booked dates: {p}"
        );
    }
    // Both processes read the one booking from the one file.
    for p in &cluster.bookings {
        let items = bookings_of_room(&client, &p.url(), &room_id_str).await?;
        ensure!(
            items.len() == 1,
            "{} sees {} bookings: {items:?}",
            p.name,
            items.len()
        );
        ensure!(items[0]["id"] == created[0].3["id"]);
    }

    // A retried POST with one Idempotency-Key, sent to both processes at the same moment,
    // books once: one 201 that ran, the rest replays of it (duplicates wait for the first
    // answer) or, only past that wait, 409 "still in progress".
    let later = json!({
        "customer_id": customer_id, "room_id": room_id,
        "check_in": day(120), "check_out": day(122), "guests": 1,
    });
    let targets = (0..SAME_KEY)
        .map(|i| {
            let process = i % 2;
            let url = format!("{}/bookings", cluster.bookings[process].url());
            (
                process,
                url,
                later.clone(),
                Some("drill-5-retry".to_owned()),
            )
        })
        .collect();
    let (results, wall) = burst(&client, targets).await?;
    let ok = results.iter().filter(|(_, s, _, _)| *s == 201).count();
    let ran = results
        .iter()
        .filter(|(_, s, replayed, _)| *s == 201 && !replayed)
        .count();
    let in_flight = results.iter().filter(|(_, s, _, _)| *s == 409).count();
    println!(
        "same Idempotency-Key x{SAME_KEY} across both processes -> {ok} x 201 (first or replayed), \
         {in_flight} x 409 in flight, in {:.0} ms",
        wall.as_secs_f64() * 1000.0
    );
    ensure!(
        ok + in_flight == SAME_KEY,
        "unexpected answers: {results:?}"
    );
    ensure!(
        ran == 1,
        "exactly one request must have run, {ran} did: {results:?}"
    );
    let ids: std::collections::HashSet<String> = results
        .iter()
        .filter(|(_, s, _, _)| *s == 201)
        .map(|(_, _, _, b)| b["id"].to_string())
        .collect();
    ensure!(
        ids.len() == 1,
        "every 201 must name the same booking: {ids:?}"
    );
    let items = bookings_of_room(&client, &cluster.bookings[1].url(), &room_id_str).await?;
    ensure!(
        items.len() == 2,
        "expected the race winner and one keyed booking: {items:?}"
    );
    // A later retry with the key, on either process, is a marked replay.
    for p in &cluster.bookings {
        let res = client
            .post(format!("{}/bookings", p.url()))
            .header("Idempotency-Key", "drill-5-retry")
            .json(&later)
            .send()
            .await?;
        ensure!(res.status() == 201, "{} answered {}", p.name, res.status());
        ensure!(
            res.headers()
                .get("idempotent-replayed")
                .is_some_and(|v| v == "true")
        );
    }
    Ok(())
}

/// Kill -9 a booking process while it holds a key mid-request (stuck on a frozen customer
/// service): the client's retry on the other process books at once, because the
/// reservation's owner is gone, instead of answering 409 until a lease runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_keyed_retry_after_its_owner_is_killed_mid_request_books_on_the_other_process_at_once()
-> Result<()> {
    let client = client()?;
    let mut cluster = start_cluster(&client).await?;
    let (customer_id, room_id) = seed(&client, &cluster.customer_url, &cluster.room_url).await?;
    let room_id_str = room_id.as_str().context("room id")?.to_owned();
    let orphan = json!({
        "customer_id": customer_id, "room_id": room_id,
        "check_in": day(140), "check_out": day(141), "guests": 1,
    });
    cluster.customer.pause();
    let stuck = {
        let (client, url, body) = (
            client.clone(),
            format!("{}/bookings", cluster.bookings[0].url()),
            orphan.clone(),
        );
        tokio::spawn(async move {
            client
                .post(url)
                .header("Idempotency-Key", "killed-mid-flight")
                .json(&body)
                .send()
                .await
        })
    };
    let reserved = hotel_tests::eventually(
        Duration::from_secs(30),
        "booking-1 to reserve the key",
        || async {
            cluster.bookings[0]
                .log_text()
                .contains("idempotency key reserved")
                .then_some(())
        },
    )
    .await;
    cluster.bookings[0].kill9();
    cluster.customer.resume();
    reserved?;
    ensure!(
        stuck.await?.is_err(),
        "the killed process cannot have answered"
    );
    let retried_at = Instant::now();
    let res = client
        .post(format!("{}/bookings", cluster.bookings[1].url()))
        .header("Idempotency-Key", "killed-mid-flight")
        .json(&orphan)
        .send()
        .await?;
    let took = retried_at.elapsed();
    let status = res.status();
    let replayed = res.headers().get("idempotent-replayed").is_some();
    let body: Value = res.json().await?;
    println!(
        "retry after kill -9 of the key's owner -> {status} in {:.0} ms",
        took.as_secs_f64() * 1000.0
    );
    ensure!(
        status == 201 && !replayed,
        "the retry must run and book: {status} {body}"
    );
    let items = bookings_of_room(&client, &cluster.bookings[1].url(), &room_id_str).await?;
    ensure!(
        items.len() == 1,
        "expected exactly the retried booking: {items:?}"
    );
    Ok(())
}

/// With only `registry.url` set, booking finds customer and room replicas through the
/// registry and calls them with the resilient client: a room replica killed with -9
/// costs no booking.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn booking_discovers_its_peers_in_the_registry_and_a_killed_room_replica_costs_nothing()
-> Result<()> {
    let client = client()?;
    let dir = TempDir::new("hotel-booking-discovery");
    let (registry, url, customer) = registry_and_customer(&dir)?;
    let room_env = [("HOTEL_ROOM__REGISTRY__URL", url.as_str())];
    let mut room_1 = spawn_role(&dir, "room", "room-1", &room_env)?;
    let room_2 = spawn_role(&dir, "room", "room-2", &room_env)?;
    let booking = spawn_role(
        &dir,
        "booking",
        "booking-1",
        &[("HOTEL_BOOKING__REGISTRY__URL", &url)],
    )?;
    wait_all_ready(&client, &[&registry, &customer, &room_1, &room_2, &booking]).await?;
    let (customer_id, room_id) = seed(&client, &customer.url(), &room_1.url()).await?;
    let booking_url = booking.url();
    let book = |n: u32| {
        let key = format!("discovery-{n}");
        book_night(
            &client,
            &booking_url,
            &customer_id,
            &room_id,
            200 + i64::from(n),
            key,
        )
    };
    // Discovery takes a moment after the instances register: the first booking waits for
    // it (same key each try, so it books once).
    let started = Instant::now();
    hotel_tests::eventually(
        Duration::from_secs(30),
        "booking to reach customer and room",
        || async { matches!(book(1).await, Ok((201, _))).then_some(()) },
    )
    .await?;
    println!(
        "booking reached its discovered peers {:.0} ms after start",
        started.elapsed().as_secs_f64() * 1000.0
    );

    room_1.kill9();
    let started = Instant::now();
    let mut failures = Vec::new();
    for n in 2..=21 {
        let (status, body) = book(n).await?;
        if status != 201 {
            failures.push((n, status, body));
        }
    }
    println!(
        "after kill -9 of room-1: 20 bookings, {} failed, in {:.0} ms",
        failures.len(),
        started.elapsed().as_secs_f64() * 1000.0
    );
    ensure!(
        failures.is_empty(),
        "bookings failed after room-1 died: {failures:?}"
    );
    let items = bookings_of_room(
        &client,
        &booking.url(),
        room_id.as_str().context("room id")?,
    )
    .await?;
    ensure!(
        items.len() == 21,
        "expected 21 bookings, got {}",
        items.len()
    );
    Ok(())
}

/// The sum of the samples of `name` whose labels include every one of `labels`
/// (`status="304"`) in a Prometheus text exposition; 0 when there are none.
fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn metrics_of(client: &reqwest::Client, p: &Proc) -> Result<String> {
    Ok(client
        .get(format!("{}/metrics", p.url()))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?)
}

/// Booking reads rooms through its peer cache (the gateway's cache rules, shared in
/// `hotel_upstream::cache`): with room's `max_age = 0s` every read is stale at once, so
/// repeated bookings of one room fetch it once (200) and then only revalidate it with its
/// ETag (304, no body); customers are `private, no-store` and read every time. (The
/// gateway's cache has the HIT case; `upstream/tests/cached_client.rs` has it here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repeated_bookings_read_the_room_once_then_revalidate_it_with_its_etag() -> Result<()> {
    const BOOKINGS: u32 = 6;
    let client = client()?;
    let dir = TempDir::new("hotel-booking-peer-cache");
    let (registry, url, customer) = registry_and_customer(&dir)?;
    let room = spawn_role(
        &dir,
        "room",
        "room-1",
        &[
            ("HOTEL_ROOM__REGISTRY__URL", &url),
            ("HOTEL_ROOM__CACHE__MAX_AGE", "0s"),
        ],
    )?;
    let booking = spawn_role(
        &dir,
        "booking",
        "booking-1",
        &[
            ("HOTEL_BOOKING__REGISTRY__URL", &url),
            ("RUST_LOG", "info,hotel_upstream::cache=debug"),
        ],
    )?;
    wait_all_ready(&client, &[&registry, &customer, &room, &booking]).await?;
    let (customer_id, room_id) = seed(&client, &customer.url(), &room.url()).await?;
    let booking_url = booking.url();
    let book = |n: u32| {
        let key = format!("peer-cache-{n}");
        book_night(
            &client,
            &booking_url,
            &customer_id,
            &room_id,
            300 + i64::from(n),
            key,
        )
    };
    // Discovery takes a moment after the instances register (same key each try).
    hotel_tests::eventually(
        Duration::from_secs(30),
        "booking to reach customer and room",
        || async { matches!(book(1).await, Ok((201, _))).then_some(()) },
    )
    .await?;
    // Counted from here: a first attempt that failed while discovery was still filling
    // in may have read the room or the customer already.
    let room_reads = |text: &str, status: &str| {
        metric_sum(
            text,
            "hotel_http_requests_total",
            &[
                "route=\"/rooms/{id}\"",
                "method=\"GET\"",
                &format!("status=\"{status}\""),
            ],
        )
    };
    let peer = |text: &str, name: &str, service: &str| {
        metric_sum(text, name, &[&format!("service=\"{service}\"")])
    };
    let (room_before, booking_before) = (
        metrics_of(&client, &room).await?,
        metrics_of(&client, &booking).await?,
    );
    for n in 2..=BOOKINGS + 1 {
        ensure!(book(n).await?.0 == 201, "booking {n} failed");
    }
    let (room_after, booking_after) = (
        metrics_of(&client, &room).await?,
        metrics_of(&client, &booking).await?,
    );

    let full = room_reads(&room_after, "200");
    let not_modified = room_reads(&room_after, "304") - room_reads(&room_before, "304");
    println!("room served booking's reads: {full} x 200 in all, then {not_modified} x 304");
    ensure!(
        full == 1.0,
        "room sent the room in full {full} times, not once"
    );
    ensure!(
        not_modified == f64::from(BOOKINGS),
        "expected {BOOKINGS} revalidations answered 304, got {not_modified}"
    );
    let delta = |name: &str, service: &str| {
        peer(&booking_after, name, service) - peer(&booking_before, name, service)
    };
    ensure!(delta("hotel_peer_cache_misses_total", "room") == 0.0);
    ensure!(
        delta("hotel_peer_cache_revalidations_total", "room") == f64::from(BOOKINGS),
        "{booking_after}"
    );
    // Customers are private, no-store: every booking asks the customer service.
    ensure!(delta("hotel_peer_cache_misses_total", "customer") == f64::from(BOOKINGS));
    ensure!(peer(&booking_after, "hotel_peer_cache_hits_total", "customer") == 0.0);
    ensure!(metric_sum(&booking_after, "hotel_peer_cache_bytes", &[]) > 0.0);
    ensure!(
        booking.log_text().contains("REVALIDATED"),
        "the outcome is logged at debug"
    );
    Ok(())
}

/// `POST BOOKING/bookings` of one night `offset` days from today of `room` for `customer`,
/// under the Idempotency-Key `key`: its status and body.
async fn book_night(
    client: &reqwest::Client,
    booking: &str,
    customer: &Value,
    room: &Value,
    offset: i64,
    key: String,
) -> anyhow::Result<(u16, Value)> {
    let body = json!({
        "customer_id": customer, "room_id": room,
        "check_in": day(offset), "check_out": day(offset + 1), "guests": 1,
    });
    let res = client
        .post(format!("{booking}/bookings"))
        .header("Idempotency-Key", key)
        .json(&body)
        .send()
        .await?;
    let status = res.status().as_u16();
    Ok((status, res.json().await.unwrap_or(Value::Null)))
}

/// A registry and one customer replica registered with it: the registry, its URL, the
/// customer.
fn registry_and_customer(dir: &TempDir) -> Result<(Proc, String, Proc)> {
    let registry = spawn_role(dir, "registry", "registry", &[])?;
    let url = registry.url();
    let customer = spawn_role(
        dir,
        "customer",
        "customer-1",
        &[("HOTEL_CUSTOMER__REGISTRY__URL", &url)],
    )?;
    Ok((registry, url, customer))
}
