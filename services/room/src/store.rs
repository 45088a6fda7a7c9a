//! SQL for rooms. Every statement runs inside a `db` client span; number uniqueness is
//! left to the database's partial UNIQUE index so that concurrent replicas cannot both win.

use crate::{
    error::Error,
    model::{Room, RoomKind, RoomStatus, number_key},
};
use hotel_common::{
    conditional::{self, IfMatch, Validators, Versioned},
    db,
    page::{self, Keyset, Page},
};
use hotel_events::Producer;
use sqlx::AnyPool;
use tracing::Instrument;
use uuid::Uuid;

const TABLE: &str = "rooms";
const COLUMNS: &str =
    "id, number, kind, capacity, nightly_rate_cents, status, created_at, version, updated_at";

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
    version: i64,
    updated_at: i64,
}

impl Row {
    fn validators(&self) -> Validators {
        Validators::of_row(&self.id, self.version, self.updated_at)
    }

    fn into_versioned(self) -> Result<Versioned<Room>, Error> {
        let validators = self.validators();
        Ok(Versioned {
            value: self.into_room()?,
            validators,
        })
    }

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

async fn fetch<'c, E>(backend: db::Backend, conn: E, id: Uuid) -> Result<Versioned<Room>, Error>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM rooms WHERE id = $1"
    )))
    .bind(id.to_string())
    .fetch_optional(conn)
    .instrument(db::span(backend, "SELECT", TABLE))
    .await?;
    row.ok_or(Error::NotFound(id))?.into_versioned()
}

/// Checks `If-Match` against the current version of `room`, in the writing transaction.
fn check(condition: Option<&IfMatch>, room: &Versioned<Room>) -> Result<(), Error> {
    let what = format!("room {}", room.value.id);
    conditional::check(condition, &what, &room.validators.etag).map_err(Error::from)
}

/// Inserts an available room whose fields are already valid.
pub async fn insert(
    pool: &AnyPool,
    number: String,
    kind: RoomKind,
    capacity: i64,
    nightly_rate_cents: i64,
) -> Result<Versioned<Room>, Error> {
    let backend = db::Backend::of(pool);
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
        "INSERT INTO rooms (id, number, number_key, kind, capacity, nightly_rate_cents, status, \
         created_at, version, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $8)",
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
    .instrument(db::span(backend, "INSERT", TABLE))
    .await
    .map_err(taken_or)?;
    Ok(Versioned {
        validators: Validators::of_row(room.id, 1, created_at),
        value: Room {
            created_at: page::rfc3339_micros(created_at),
            ..room
        },
    })
}

/// The room with `id`, whatever its status.
pub async fn get(pool: &AnyPool, id: Uuid) -> Result<Versioned<Room>, Error> {
    let backend = db::Backend::of(pool);
    fetch(backend, pool, id).await
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

/// One page of rooms in `(created_at, id)` order, and its weak `ETag`.
pub async fn list(
    pool: &AnyPool,
    filter: Filter,
    after: Option<Keyset>,
    limit: u32,
) -> Result<(Page<Room>, Validators), Error> {
    let backend = db::Backend::of(pool);
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM rooms \
         WHERE ($1 IS NULL OR kind = $1) \
           AND ($2 IS NULL OR capacity >= $2) \
           AND ($3 IS NULL OR status = $3) \
           AND ($4 IS NULL OR (created_at, id) > ($4, $5)) \
         ORDER BY created_at, id LIMIT $6"
    )))
    .bind(filter.kind.map(RoomKind::as_str))
    .bind(filter.min_capacity)
    .bind(filter.status.map(RoomStatus::as_str))
    .bind(after.map(|k| k.t))
    .bind(after.map(|k| k.id.to_string()))
    .bind(i64::from(limit) + 1)
    .fetch_all(pool)
    .instrument(db::span(backend, "SELECT", TABLE))
    .await?;
    let versions: Vec<(String, i64)> = rows
        .iter()
        .take(limit as usize)
        .map(|r| (r.id.clone(), r.version))
        .collect();
    let page = Page::from_keyset_rows(rows, limit, |r| {
        let t = r.created_at;
        r.into_room().map(|room| {
            let id = room.id;
            (room, Keyset { t, id })
        })
    })?;
    let tag = conditional::list_tag(versions, page.next_cursor.as_deref());
    Ok((page, Validators::tag(tag)))
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

/// Applies `changes` in one write transaction, which bumps the version, with the
/// `hotel.room.updated` event in the outbox; a retired room refuses them (409), and so
/// does a room whose version `condition` does not name (412).
pub async fn update(
    pool: &AnyPool,
    producer: &Producer,
    id: Uuid,
    changes: Changes,
    condition: Option<&IfMatch>,
) -> Result<Versioned<Room>, Error> {
    let backend = db::Backend::of(pool);
    let mut tx = db::begin_immediate(pool).await?;
    let current = fetch(backend, &mut *tx, id).await?;
    let before = current.value.clone();
    if current.value.status == RoomStatus::Retired {
        return Err(Error::Retired(id));
    }
    check(condition, &current)?;
    let mut room = current.value;
    if let Some(number) = changes.number {
        room.number = number;
    }
    room.kind = changes.kind.unwrap_or(room.kind);
    room.capacity = changes.capacity.unwrap_or(room.capacity);
    room.nightly_rate_cents = changes
        .nightly_rate_cents
        .unwrap_or(room.nightly_rate_cents);
    room.status = changes.status.unwrap_or(room.status);
    let updated_at = page::now_micros();
    let version: i64 = sqlx::query_scalar(
        "UPDATE rooms SET number = $1, number_key = $2, kind = $3, capacity = $4, \
         nightly_rate_cents = $5, status = $6, version = version + 1, updated_at = $7 \
         WHERE id = $8 RETURNING version",
    )
    .bind(&room.number)
    .bind(number_key(&room.number))
    .bind(room.kind.as_str())
    .bind(room.capacity)
    .bind(room.nightly_rate_cents)
    .bind(room.status.as_str())
    .bind(updated_at)
    .bind(id.to_string())
    .fetch_one(&mut *tx)
    .instrument(db::span(backend, "UPDATE", TABLE))
    .await
    .map_err(taken_or)?;
    publish_update(&mut tx, producer, &before, &room).await?;
    tx.commit().await?;
    Ok(Versioned {
        validators: Validators::of_row(id, version, updated_at),
        value: room,
    })
}

/// Retires the room with `id` (idempotent: retiring a retired room changes nothing, not
/// even its version, and publishes nothing) and returns it; 412 when `condition` does not
/// name its version. The retirement writes `hotel.room.updated` in the same transaction.
pub async fn retire(
    pool: &AnyPool,
    producer: &Producer,
    id: Uuid,
    condition: Option<&IfMatch>,
) -> Result<Versioned<Room>, Error> {
    let backend = db::Backend::of(pool);
    let mut tx = db::begin_immediate(pool).await?;
    let current = fetch(backend, &mut *tx, id).await?;
    check(condition, &current)?;
    if current.value.status == RoomStatus::Retired {
        return Ok(current);
    }
    sqlx::query(
        "UPDATE rooms SET status = 'retired', version = version + 1, updated_at = $1 \
         WHERE id = $2",
    )
    .bind(page::now_micros())
    .bind(id.to_string())
    .execute(&mut *tx)
    .instrument(db::span(backend, "UPDATE", TABLE))
    .await?;
    let room = fetch(backend, &mut *tx, id).await?;
    publish_update(&mut tx, producer, &current.value, &room.value).await?;
    tx.commit().await?;
    Ok(room)
}

/// Writes `hotel.room.updated` (data: the room now, and `changes`: each changed field's
/// value before) unless nothing changed.
async fn publish_update(
    conn: &mut sqlx::AnyConnection,
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
