//! `Idempotency-Key` on `POST /bookings` (IETF draft, Stripe semantics).
//!
//! The first request with a key reserves it (`in_flight`) in its own short transaction
//! before any work starts; a duplicate arriving meanwhile is refused with 409. When the
//! work ends its response is stored with the key (a 201 in the same transaction as the
//! booking itself) and every later request with that key and the same body gets that
//! response again, marked `Idempotent-Replayed: true`; the same key with another body is a
//! 422. A duplicate arriving while the first still runs (a client's retry after a
//! timeout, a gateway's hedge) waits a little for the first to finish and then replays
//! its answer; only when the first is still running after that wait is it refused (409). A 5xx is not stored: the key is released so the client can retry. Keys are kept
//! for the configured retention (24 h) and then purged.
//!
//! A reservation is a lease the owner renews every [`RENEW_EVERY`] while it works. When
//! a replica is killed mid-request, the client's retry lands on another replica: that one
//! takes the key over at once when the owner's process is gone from this host (replicas
//! sharing one SQLite file share a host), or after [`IN_FLIGHT_LEASE_MS`] without renewal
//! when the owner is frozen. Completion and release touch only the owner's own
//! reservation, so a late owner cannot overwrite the answer of the one that took over.

use crate::{error::BookingError, model::NewBooking};
use axum::{
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use hotel_common::{Problem, db, problem::PROBLEM_JSON};
use sha2::{Digest, Sha256};
use sqlx::{Any, AnyPool, Transaction};
use tracing::Instrument;

/// The request header carrying the key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The response header marking a replayed response.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
/// How long an in-flight reservation is honoured without renewal.
pub const IN_FLIGHT_LEASE_MS: i64 = 3_000;
/// How often the owner of a reservation renews it while working.
pub const RENEW_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// The longest key accepted.
pub const MAX_KEY_LEN: usize = 255;

/// Reads the `Idempotency-Key` header: absent is fine; present it must be sent once and be
/// 1 to 255 printable ASCII characters, not starting or ending with a space (an empty
/// value is a 400, not "no key").
pub fn key_from(headers: &HeaderMap) -> Result<Option<String>, BookingError> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(BookingError::BadIdempotencyKey("must be sent once"));
    }
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_KEY_LEN {
        return Err(BookingError::BadIdempotencyKey(
            "must be 1 to 255 characters long",
        ));
    }
    if !bytes.iter().all(|b| (0x20..=0x7e).contains(b)) {
        return Err(BookingError::BadIdempotencyKey("must be printable ASCII"));
    }
    // HTTP drops a header value's surrounding spaces before we see it; refusing them here
    // too keeps the rule the same whatever carries the request.
    if bytes.first() == Some(&b' ') || bytes.last() == Some(&b' ') {
        return Err(BookingError::BadIdempotencyKey(
            "must not start or end with a space",
        ));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// A fingerprint of the request: the parsed body re-serialised, so whitespace and key
/// order do not make two identical requests look different.
pub fn request_hash(req: &NewBooking) -> String {
    let canonical = serde_json::to_vec(req).unwrap_or_default();
    hex::encode(Sha256::digest(&canonical))
}

/// A response as stored with its key and replayed later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type` of the body.
    pub content_type: String,
    /// `Location` header, for a 201.
    pub location: Option<String>,
    /// The body bytes.
    pub body: Vec<u8>,
    /// `Retry-After` seconds; only 5xx and 409 carry one, and 5xx are never stored.
    pub retry_after: Option<u64>,
}

impl StoredResponse {
    /// A 201 with the created resource.
    pub fn created<T: serde::Serialize>(location: String, value: &T) -> Self {
        StoredResponse {
            status: 201,
            content_type: "application/json".to_owned(),
            location: Some(location),
            body: serde_json::to_vec(value).unwrap_or_default(),
            retry_after: None,
        }
    }

    /// A problem document (its body filled in with the current request's ids).
    pub fn problem(p: &Problem) -> Self {
        StoredResponse {
            status: p.status,
            content_type: PROBLEM_JSON.to_owned(),
            location: None,
            body: p.to_body(),
            retry_after: p.retry_after,
        }
    }

    /// The HTTP response; `replayed` adds `Idempotent-Replayed: true`.
    pub fn into_response(self, replayed: bool) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut res = (status, self.body).into_response();
        let h = res.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&self.content_type) {
            h.insert(header::CONTENT_TYPE, v);
        }
        if let Some(v) = self
            .location
            .as_deref()
            .and_then(|l| HeaderValue::from_str(l).ok())
        {
            h.insert(header::LOCATION, v);
        }
        if let Some(secs) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if replayed {
            h.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
        }
        res
    }
}

/// What the key's row says about a new request with it.
#[derive(Debug)]
pub enum Reservation {
    /// The key is ours under this owner token: do the work (renewing with [`renew`]),
    /// then [`complete`] or [`release`] it.
    Reserved(String),
    /// The key's request finished: answer this again.
    Replay(StoredResponse),
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    request_hash: String,
    state: String,
    status: Option<i64>,
    content_type: Option<String>,
    location: Option<String>,
    body: Option<Vec<u8>>,
    created_at: i64,
    locked_at: i64,
    owner: String,
}

/// A fresh owner token for a reservation made by this process: `<host>/<pid>/<random>`.
pub fn new_owner() -> String {
    format!(
        "{}/{}/{}",
        host_name(),
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    )
}

fn host_name() -> &'static str {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default()
    })
}

/// Whether `owner` names a process on this host that no longer exists. Unknown hosts,
/// old rows without an owner, and systems without `/proc` answer false: the lease
/// decides then.
pub fn owner_is_gone(owner: &str) -> bool {
    let mut parts = owner.splitn(3, '/');
    let (Some(host), Some(pid)) = (parts.next(), parts.next()) else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    let proc_fs = std::path::Path::new("/proc/self");
    !host.is_empty()
        && host == host_name()
        && proc_fs.exists()
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Reserves `key` for a request with body hash `hash`, at `now_ms` (Unix ms); rows older
/// than `retention_ms` count as absent. Errors: another body used this key (422), or its
/// first request is still running (409).
pub async fn reserve(
    pool: &AnyPool,
    key: &str,
    hash: &str,
    now_ms: i64,
    retention_ms: i64,
) -> Result<Reservation, BookingError> {
    let backend = db::Backend::of(pool);
    let mut tx = db::begin_immediate(pool)
        .instrument(db::span(backend, "BEGIN IMMEDIATE", "idempotency_keys"))
        .await?;
    let row: Option<KeyRow> = sqlx::query_as(
        "SELECT request_hash, state, status, content_type, location, body, created_at, locked_at, \
         owner FROM idempotency_keys WHERE key = $1",
    )
    .bind(key)
    .fetch_optional(&mut *tx)
    .instrument(db::span(backend, "SELECT", "idempotency_keys"))
    .await?;
    let row = row.filter(|r| r.created_at >= now_ms - retention_ms);
    let owner = new_owner();
    let outcome = match row {
        None => {
            sqlx::query(
                "INSERT INTO idempotency_keys \
                 (key, request_hash, state, created_at, locked_at, owner) \
                 VALUES ($1, $2, 'in_flight', $3, $3, $4) \
                 ON CONFLICT (key) DO UPDATE SET request_hash = excluded.request_hash, \
                   state = 'in_flight', status = NULL, content_type = NULL, location = NULL, \
                   body = NULL, created_at = excluded.created_at, \
                   locked_at = excluded.locked_at, owner = excluded.owner",
            )
            .bind(key)
            .bind(hash)
            .bind(now_ms)
            .bind(&owner)
            .execute(&mut *tx)
            .instrument(db::span(backend, "INSERT", "idempotency_keys"))
            .await?;
            Ok(Reservation::Reserved(owner))
        }
        Some(r) if r.request_hash != hash => Err(BookingError::IdempotencyKeyReused),
        Some(r) if r.state == "in_flight" => {
            let gone = owner_is_gone(&r.owner);
            if !gone && r.locked_at > now_ms - IN_FLIGHT_LEASE_MS {
                Err(BookingError::IdempotencyKeyInFlight)
            } else {
                tracing::warn!(
                    previous_owner = %r.owner,
                    owner_gone = gone,
                    "taking over an abandoned idempotency key reservation"
                );
                sqlx::query(
                    "UPDATE idempotency_keys SET locked_at = $2, owner = $3 WHERE key = $1",
                )
                .bind(key)
                .bind(now_ms)
                .bind(&owner)
                .execute(&mut *tx)
                .instrument(db::span(backend, "UPDATE", "idempotency_keys"))
                .await?;
                Ok(Reservation::Reserved(owner))
            }
        }
        Some(r) => Ok(Reservation::Replay(StoredResponse {
            status: r
                .status
                .and_then(|s| u16::try_from(s).ok())
                .ok_or_else(|| BookingError::Internal("completed key without status".into()))?,
            content_type: r
                .content_type
                .unwrap_or_else(|| "application/json".to_owned()),
            location: r.location,
            body: r.body.unwrap_or_default(),
            retry_after: None,
        })),
    };
    // Only the reservation wrote; committing a read-only transaction is harmless.
    tx.commit()
        .instrument(db::span(backend, "COMMIT", "idempotency_keys"))
        .await?;
    outcome
}

/// Waits until `key`'s reservation may have changed hands: it was settled or released,
/// its owner is gone, or its lease ran out; or until `deadline`. Reads only, so many
/// waiting duplicates do not compete for the write lock.
pub async fn wait_for_change(
    pool: &AnyPool,
    key: &str,
    deadline: tokio::time::Instant,
) -> Result<(), BookingError> {
    let backend = db::Backend::of(pool);
    const POLL: std::time::Duration = std::time::Duration::from_millis(20);
    loop {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(());
        }
        tokio::time::sleep_until((now + POLL).min(deadline)).await;
        let row: Option<(String, i64, String)> =
            sqlx::query_as("SELECT state, locked_at, owner FROM idempotency_keys WHERE key = $1")
                .bind(key)
                .fetch_optional(pool)
                .instrument(db::span(backend, "SELECT", "idempotency_keys"))
                .await?;
        let settled = match row {
            None => true,
            Some((state, locked_at, owner)) => {
                state != "in_flight"
                    || locked_at <= now_ms() - IN_FLIGHT_LEASE_MS
                    || owner_is_gone(&owner)
            }
        };
        if settled {
            return Ok(());
        }
    }
}

/// Renews `owner`'s reservation of `key`; false when it is no longer `owner`'s.
pub async fn renew(
    pool: &AnyPool,
    key: &str,
    owner: &str,
    now_ms: i64,
) -> Result<bool, BookingError> {
    let backend = db::Backend::of(pool);
    let done = sqlx::query(
        "UPDATE idempotency_keys SET locked_at = $3 \
         WHERE key = $1 AND owner = $2 AND state = 'in_flight'",
    )
    .bind(key)
    .bind(owner)
    .bind(now_ms)
    .execute(pool)
    .instrument(db::span(backend, "UPDATE", "idempotency_keys"))
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Stores the final response of `owner`'s reservation of `key` inside an open
/// transaction; false when the reservation was taken over meanwhile (then nothing is
/// written and the caller must not commit its work).
pub async fn complete_in(
    tx: &mut Transaction<'static, Any>,
    key: &str,
    owner: &str,
    response: &StoredResponse,
) -> Result<bool, BookingError> {
    let backend = db::Backend::of_conn(tx);
    let done = sqlx::query(
        "UPDATE idempotency_keys \
         SET state = 'completed', status = $3, content_type = $4, location = $5, body = $6 \
         WHERE key = $1 AND owner = $2 AND state = 'in_flight'",
    )
    .bind(key)
    .bind(owner)
    .bind(i64::from(response.status))
    .bind(&response.content_type)
    .bind(&response.location)
    .bind(&response.body)
    .execute(&mut **tx)
    .instrument(db::span(backend, "UPDATE", "idempotency_keys"))
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Stores the final response of `owner`'s reservation of `key`; false when it was taken
/// over meanwhile.
pub async fn complete(
    pool: &AnyPool,
    key: &str,
    owner: &str,
    response: &StoredResponse,
) -> Result<bool, BookingError> {
    let backend = db::Backend::of(pool);
    let mut tx = db::begin_immediate(pool)
        .instrument(db::span(backend, "BEGIN IMMEDIATE", "idempotency_keys"))
        .await?;
    let completed = complete_in(&mut tx, key, owner, response).await?;
    tx.commit()
        .instrument(db::span(backend, "COMMIT", "idempotency_keys"))
        .await?;
    Ok(completed)
}

/// Forgets `owner`'s reservation of `key` after a 5xx, so a retry runs again.
pub async fn release(pool: &AnyPool, key: &str, owner: &str) -> Result<(), BookingError> {
    let backend = db::Backend::of(pool);
    sqlx::query(
        "DELETE FROM idempotency_keys WHERE key = $1 AND owner = $2 AND state = 'in_flight'",
    )
    .bind(key)
    .bind(owner)
    .execute(pool)
    .instrument(db::span(backend, "DELETE", "idempotency_keys"))
    .await?;
    Ok(())
}

/// Deletes keys created before `before_ms` (Unix ms); returns how many.
pub async fn purge(pool: &AnyPool, before_ms: i64) -> Result<u64, BookingError> {
    let backend = db::Backend::of(pool);
    let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
        .bind(before_ms)
        .execute(pool)
        .instrument(db::span(backend, "DELETE", "idempotency_keys"))
        .await?;
    Ok(done.rows_affected())
}

/// The wall clock in Unix milliseconds (keys outlive processes, so not a monotonic clock).
pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(IDEMPOTENCY_KEY, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn keys_must_be_one_to_255_printable_ascii_characters_sent_once() {
        assert_eq!(key_from(&headers(&[])).unwrap(), None);
        assert_eq!(
            key_from(&headers(&[b"abc-123 x"])).unwrap().as_deref(),
            Some("abc-123 x")
        );
        assert!(
            key_from(&headers(&["k".repeat(255).as_bytes()]))
                .unwrap()
                .is_some()
        );
        assert!(key_from(&headers(&["k".repeat(256).as_bytes()])).is_err());
        assert!(key_from(&headers(&[b""])).is_err());
        assert!(key_from(&headers(&[b"caf\xc3\xa9"])).is_err());
        assert!(key_from(&headers(&[b"tab\there"])).is_err());
        assert!(key_from(&headers(&[b"a", b"b"])).is_err());
    }

    #[test]
    fn an_owner_on_this_host_without_a_process_is_gone() {
        let mine = new_owner();
        assert!(!owner_is_gone(&mine), "{mine}");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(owner_is_gone(&format!("{}/{pid}/x", host_name())));
        assert!(!owner_is_gone(&format!(
            "elsewhere-{}/{pid}/x",
            host_name()
        )));
        assert!(!owner_is_gone(""));
        assert!(!owner_is_gone("host/notapid/x"));
    }

    #[test]
    fn the_hash_ignores_formatting_but_not_content() {
        let a: NewBooking = serde_json::from_str(
            r#"{"customer_id":"6f1c3b8e-0a8e-4c55-9a57-0b1f8f2f9d11","room_id":"6f1c3b8e-0a8e-4c55-9a57-0b1f8f2f9d12","check_in":"2030-01-01","check_out":"2030-01-02","guests":1}"#,
        )
        .unwrap();
        let b: NewBooking = serde_json::from_str(
            r#"{ "guests": 1, "check_out":"2030-01-02", "check_in":"2030-01-01",
                 "room_id":"6f1c3b8e-0a8e-4c55-9a57-0b1f8f2f9d12","customer_id":"6f1c3b8e-0a8e-4c55-9a57-0b1f8f2f9d11"}"#,
        )
        .unwrap();
        assert_eq!(request_hash(&a), request_hash(&b));
        let c = NewBooking {
            guests: crate::model::Guests::new(2).unwrap(),
            ..a.clone()
        };
        assert_ne!(request_hash(&a), request_hash(&c));
    }
}
