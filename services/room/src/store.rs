//! SQL for rooms. Every statement runs inside a `db` client span; number uniqueness is
//! left to the database's partial UNIQUE index so that concurrent replicas cannot both win.

use crate::{
    error::Error,
    model::{Room, RoomKind, RoomStatus, number_key},
};
use hotel_common::{
    db,
    page::{self, Keyset, Page},
};
use hotel_events::Producer;
use sqlx::{Sqlite, SqlitePool};
use tracing::Instrument;
use uuid::Uuid;

const TABLE: &str = "rooms";
const COLUMNS: &str = "id, number, kind, capacity, nightly_rate_cents, status, created_at";

/// A `rooms` row as stored.
#[derive(Debug, sqlx::FromRow)]
struct Row {
    id: String,
    number: String,
    kind: String,
    capacity: i64,
    nightly_rate_cents: i64,
    status: String,
    created_at: i64,
}

impl Row {
    fn into_room(self) -> Result<Room, Error> {
        // Only this service writes the table (with CHECK constraints), so a value that
        // does not parse means a corrupted database: a 500, never a guess.
        let corrupt = |what: &str| {
            Error::Database(sqlx::Error::Decode(
                format!("bad {what} in rooms row").into(),
            ))
        };
        Ok(Room {
            id: Uuid::parse_str(&self.id).map_err(|_| corrupt("id"))?,
            number: self.number,
            kind: RoomKind::parse(&self.kind).ok_or_else(|| corrupt("kind"))?,
            capacity: self.capacity,
            nightly_rate_cents: self.nightly_rate_cents,
            status: RoomStatus::parse(&self.status).ok_or_else(|| corrupt("status"))?,
            created_at: page::rfc3339_micros(self.created_at),
        })
    }
}

fn taken_or(e: sqlx::Error) -> Error {
    if db::is_unique_violation(&e) {
        Error::NumberTaken
    } else {
        Error::Database(e)
    }
}

async fn fetch<'c, E>(conn: E, id: Uuid) -> Result<Room, Error>
where
    E: sqlx::Executor<'c, Database = Sqlite>,
{
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM rooms WHERE id = ?"
    )))
    .bind(id.to_string())
    .fetch_optional(conn)
    .instrument(db::span("SELECT", TABLE))
    .await?;
    row.ok_or(Error::NotFound(id))?.into_room()
}

/// Inserts an available room whose fields are already valid.
pub async fn insert(
    pool: &SqlitePool,
    number: String,
    kind: RoomKind,
    capacity: i64,
    nightly_rate_cents: i64,
) -> Result<Room, Error> {
    let room = Room {
        id: Uuid::new_v4(),
        number,
        kind,
        capacity,
        nightly_rate_cents,
        status: RoomStatus::Available,
        created_at: String::new(),
    };
    let created_at = page::now_micros();
    sqlx::query(
        "INSERT INTO rooms (id, number, number_key, kind, capacity, nightly_rate_cents, status, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(room.id.to_string())
    .bind(&room.number)
    .bind(number_key(&room.number))
    .bind(room.kind.as_str())
    .bind(room.capacity)
    .bind(room.nightly_rate_cents)
    .bind(room.status.as_str())
    .bind(created_at)
    .execute(pool)
    .instrument(db::span("INSERT", TABLE))
    .await
    .map_err(taken_or)?;
    Ok(Room {
        created_at: page::rfc3339_micros(created_at),
        ..room
    })
}

/// The room with `id`, whatever its status.
pub async fn get(pool: &SqlitePool, id: Uuid) -> Result<Room, Error> {
    fetch(pool, id).await
}

/// Filters of a room list, already valid.
#[derive(Debug, Clone, Copy, Default)]
pub struct Filter {
    /// Only this kind.
    pub kind: Option<RoomKind>,
    /// Only rooms at least this large.
    pub min_capacity: Option<i64>,
    /// Only this status.
    pub status: Option<RoomStatus>,
}

/// One page of rooms in `(created_at, id)` order.
pub async fn list(
    pool: &SqlitePool,
    filter: Filter,
    after: Option<Keyset>,
    limit: u32,
) -> Result<Page<Room>, Error> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM rooms \
         WHERE (?1 IS NULL OR kind = ?1) \
           AND (?2 IS NULL OR capacity >= ?2) \
           AND (?3 IS NULL OR status = ?3) \
           AND (?4 IS NULL OR (created_at, id) > (?4, ?5)) \
         ORDER BY created_at, id LIMIT ?6"
    )))
    .bind(filter.kind.map(RoomKind::as_str))
    .bind(filter.min_capacity)
    .bind(filter.status.map(RoomStatus::as_str))
    .bind(after.map(|k| k.t))
    .bind(after.map(|k| k.id.to_string()))
    .bind(i64::from(limit) + 1)
    .fetch_all(pool)
    .instrument(db::span("SELECT", TABLE))
    .await?;
    Page::from_keyset_rows(rows, limit, |r| {
        let t = r.created_at;
        r.into_room().map(|room| {
            let id = room.id;
            (room, Keyset { t, id })
        })
    })
}

/// Changes to a room, already valid. `status` is never `Retired` here.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    /// New number.
    pub number: Option<String>,
    /// New kind.
    pub kind: Option<RoomKind>,
    /// New capacity.
    pub capacity: Option<i64>,
    /// New nightly rate.
    pub nightly_rate_cents: Option<i64>,
    /// available or maintenance.
    pub status: Option<RoomStatus>,
}

/// Applies `changes` in one write transaction, with the `hotel.room.updated` event in
/// the outbox; a retired room refuses them (409).
pub async fn update(
    pool: &SqlitePool,
    producer: &Producer,
    id: Uuid,
    changes: Changes,
) -> Result<Room, Error> {
    let mut tx = db::begin_immediate(pool).await?;
    let mut room = fetch(&mut *tx, id).await?;
    let before = room.clone();
    if room.status == RoomStatus::Retired {
        return Err(Error::Retired(id));
    }
    if let Some(number) = changes.number {
        room.number = number;
    }
    room.kind = changes.kind.unwrap_or(room.kind);
    room.capacity = changes.capacity.unwrap_or(room.capacity);
    room.nightly_rate_cents = changes
        .nightly_rate_cents
        .unwrap_or(room.nightly_rate_cents);
    room.status = changes.status.unwrap_or(room.status);
    sqlx::query(
        "UPDATE rooms SET number = ?, number_key = ?, kind = ?, capacity = ?, \
         nightly_rate_cents = ?, status = ? WHERE id = ?",
    )
    .bind(&room.number)
    .bind(number_key(&room.number))
    .bind(room.kind.as_str())
    .bind(room.capacity)
    .bind(room.nightly_rate_cents)
    .bind(room.status.as_str())
    .bind(id.to_string())
    .execute(&mut *tx)
    .instrument(db::span("UPDATE", TABLE))
    .await
    .map_err(taken_or)?;
    publish_update(&mut tx, producer, &before, &room).await?;
    tx.commit().await?;
    Ok(room)
}

/// Retires the room with `id` (idempotent) and returns it; the first retirement writes
/// `hotel.room.updated` in the same transaction.
pub async fn retire(pool: &SqlitePool, producer: &Producer, id: Uuid) -> Result<Room, Error> {
    let mut tx = db::begin_immediate(pool).await?;
    let before = fetch(&mut *tx, id).await?;
    sqlx::query("UPDATE rooms SET status = 'retired' WHERE id = ?")
        .bind(id.to_string())
        .execute(&mut *tx)
        .instrument(db::span("UPDATE", TABLE))
        .await?;
    let room = fetch(&mut *tx, id).await?;
    publish_update(&mut tx, producer, &before, &room).await?;
    tx.commit().await?;
    Ok(room)
}

/// Writes `hotel.room.updated` (data: the room now, and `changes`: each changed field's
/// value before) unless nothing changed.
async fn publish_update(
    conn: &mut sqlx::SqliteConnection,
    producer: &Producer,
    before: &Room,
    after: &Room,
) -> Result<(), Error> {
    let (old, new) = (
        serde_json::to_value(before).unwrap_or_default(),
        serde_json::to_value(after).unwrap_or_default(),
    );
    let mut changes = serde_json::Map::new();
    if let (Some(old), Some(new)) = (old.as_object(), new.as_object()) {
        for (field, value) in old {
            if new.get(field) != Some(value) {
                changes.insert(field.clone(), value.clone());
            }
        }
    }
    if changes.is_empty() {
        return Ok(());
    }
    let data = serde_json::json!({ "room": after, "changes": changes });
    producer
        .publish(conn, hotel_events::ROOM_UPDATED, after.id, &data)
        .await?;
    Ok(())
}
