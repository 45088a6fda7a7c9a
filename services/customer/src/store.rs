//! SQL for customers. Every statement runs inside a `db` client span, and uniqueness is
//! left to the database's UNIQUE index so that concurrent replicas cannot both win.

use crate::{
    error::Error,
    model::{BookingCounts, Customer, email_key},
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

const TABLE: &str = "customers";

/// A `customers` row as stored.
#[derive(Debug, sqlx::FromRow)]
struct Row {
    id: String,
    name: String,
    email: String,
    created_at: i64,
    version: i64,
    updated_at: i64,
    active: i64,
    cancelled: i64,
}

/// The columns of a [`Row`]: the customer with its version and its booking counts (0
/// before any event).
macro_rules! customer_select {
    () => {
        "SELECT c.id, c.name, c.email, c.created_at, c.version, c.updated_at, \
         COALESCE(b.active, 0) AS active, COALESCE(b.cancelled, 0) AS cancelled \
         FROM customers c LEFT JOIN customer_bookings b ON b.customer_id = c.id "
    };
}

impl Row {
    fn into_versioned(self) -> Result<Versioned<Customer>, Error> {
        let validators = Validators::of_row(&self.id, self.version, self.updated_at);
        Ok(Versioned {
            value: self.into_customer()?,
            validators,
        })
    }

    fn into_customer(self) -> Result<Customer, Error> {
        // Only this service writes the table, so a bad id means a corrupted database.
        let id = Uuid::parse_str(&self.id)
            .map_err(|e| Error::Database(sqlx::Error::Decode(Box::new(e))))?;
        Ok(Customer {
            id,
            name: self.name,
            email: self.email,
            created_at: page::rfc3339_micros(self.created_at),
            bookings: BookingCounts {
                active: self.active,
                cancelled: self.cancelled,
            },
        })
    }
}

fn taken_or(e: sqlx::Error) -> Error {
    if db::is_unique_violation(&e) {
        Error::EmailTaken
    } else {
        Error::Database(e)
    }
}

/// Inserts a customer whose name and email are already valid.
pub async fn insert(
    pool: &AnyPool,
    name: String,
    email: String,
) -> Result<Versioned<Customer>, Error> {
    let backend = db::Backend::of(pool);
    let id = Uuid::new_v4();
    let created_at = page::now_micros();
    sqlx::query(
        "INSERT INTO customers (id, name, email, email_key, created_at, version, updated_at) \
         VALUES ($1, $2, $3, $4, $5, 1, $5)",
    )
    .bind(id.to_string())
    .bind(&name)
    .bind(&email)
    .bind(email_key(&email))
    .bind(created_at)
    .execute(pool)
    .instrument(db::span(backend, "INSERT", TABLE))
    .await
    .map_err(taken_or)?;
    Ok(Versioned {
        value: Customer {
            id,
            name,
            email,
            created_at: page::rfc3339_micros(created_at),
            bookings: BookingCounts::default(),
        },
        validators: Validators::of_row(id, 1, created_at),
    })
}

/// The customer with `id`.
pub async fn get(pool: &AnyPool, id: Uuid) -> Result<Versioned<Customer>, Error> {
    let backend = db::Backend::of(pool);
    fetch(backend, pool, id).await
}

async fn fetch<'c, E>(backend: db::Backend, conn: E, id: Uuid) -> Result<Versioned<Customer>, Error>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let row: Option<Row> = sqlx::query_as(concat!(customer_select!(), "WHERE c.id = $1"))
        .bind(id.to_string())
        .fetch_optional(conn)
        .instrument(db::span(backend, "SELECT", TABLE))
        .await?;
    row.ok_or(Error::NotFound(id))?.into_versioned()
}

/// Checks `If-Match` against the current version, in the writing transaction.
fn check(condition: Option<&IfMatch>, customer: &Versioned<Customer>) -> Result<(), Error> {
    let what = format!("customer {}", customer.value.id);
    conditional::check(condition, &what, &customer.validators.etag).map_err(Error::from)
}

/// One page of customers in `(created_at, id)` order, optionally only those with `email`.
pub async fn list(
    pool: &AnyPool,
    email: Option<&str>,
    after: Option<Keyset>,
    limit: u32,
) -> Result<(Page<Customer>, Validators), Error> {
    let backend = db::Backend::of(pool);
    let rows: Vec<Row> = sqlx::query_as(concat!(
        customer_select!(),
        "WHERE ($1 IS NULL OR c.email_key = $1) \
           AND ($2 IS NULL OR (c.created_at, c.id) > ($2, $3)) \
         ORDER BY c.created_at, c.id LIMIT $4"
    ))
    .bind(email.map(email_key))
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
        r.into_customer().map(|c| {
            let id = c.id;
            (c, Keyset { t, id })
        })
    })?;
    let tag = conditional::list_tag(versions, page.next_cursor.as_deref());
    Ok((page, Validators::tag(tag)))
}

/// Applies the given changes (already valid) in one write transaction, which bumps the
/// version; 412 when `condition` does not name the current one.
pub async fn update(
    pool: &AnyPool,
    id: Uuid,
    name: Option<String>,
    email: Option<String>,
    condition: Option<&IfMatch>,
) -> Result<Versioned<Customer>, Error> {
    let backend = db::Backend::of(pool);
    let mut tx = db::begin_immediate(pool).await?;
    let current = fetch(backend, &mut *tx, id).await?;
    check(condition, &current)?;
    let mut customer = current.value;
    if let Some(name) = name {
        customer.name = name;
    }
    if let Some(email) = email {
        customer.email = email;
    }
    let updated_at = page::now_micros();
    let version: i64 = sqlx::query_scalar(
        "UPDATE customers SET name = $1, email = $2, email_key = $3, version = version + 1, \
         updated_at = $4 WHERE id = $5 RETURNING version",
    )
    .bind(&customer.name)
    .bind(&customer.email)
    .bind(email_key(&customer.email))
    .bind(updated_at)
    .bind(id.to_string())
    .fetch_one(&mut *tx)
    .instrument(db::span(backend, "UPDATE", TABLE))
    .await
    .map_err(taken_or)?;
    tx.commit().await?;
    Ok(Versioned {
        value: customer,
        validators: Validators::of_row(id, version, updated_at),
    })
}

/// Deletes the customer with `id`, writing `hotel.customer.deleted` (data: the customer
/// as it was) in the same transaction: booking cancels their bookings when it reads it.
/// With `condition`, only the version it names is deleted (412).
pub async fn delete(
    pool: &AnyPool,
    producer: &Producer,
    id: Uuid,
    condition: Option<&IfMatch>,
) -> Result<(), Error> {
    let backend = db::Backend::of(pool);
    let mut tx = db::begin_immediate(pool).await?;
    let current = fetch(backend, &mut *tx, id).await?;
    check(condition, &current)?;
    sqlx::query("DELETE FROM customers WHERE id = $1")
        .bind(id.to_string())
        .execute(&mut *tx)
        .instrument(db::span(backend, "DELETE", TABLE))
        .await?;
    sqlx::query("DELETE FROM customer_bookings WHERE customer_id = $1")
        .bind(id.to_string())
        .execute(&mut *tx)
        .instrument(db::span(backend, "DELETE", "customer_bookings"))
        .await?;
    producer
        .publish(&mut tx, hotel_events::CUSTOMER_DELETED, id, &current.value)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Adds `active` and `cancelled` to the booking counts of customer `id`, and bumps its
/// version, on the connection of the event's transaction; a customer that no longer
/// exists gets no row.
pub async fn count_bookings(
    conn: &mut sqlx::AnyConnection,
    id: Uuid,
    active: i64,
    cancelled: i64,
) -> Result<(), sqlx::Error> {
    let backend = db::Backend::of_conn(conn);
    sqlx::query(
        "INSERT INTO customer_bookings (customer_id, active, cancelled) \
         SELECT $1, CASE WHEN $2 > 0 THEN $2 ELSE 0 END, $3 \
         WHERE EXISTS (SELECT 1 FROM customers WHERE id = $1) \
         ON CONFLICT (customer_id) DO UPDATE SET \
           active = CASE WHEN customer_bookings.active + $2 > 0 \
             THEN customer_bookings.active + $2 ELSE 0 END, \
           cancelled = customer_bookings.cancelled + $3",
    )
    .bind(id.to_string())
    .bind(active)
    .bind(cancelled)
    .execute(&mut *conn)
    .instrument(db::span(backend, "UPSERT", "customer_bookings"))
    .await?;
    // The counts are part of the customer as the API shows it: a new version, so an ETag
    // taken before the event no longer matches (no 304 for changed counts).
    sqlx::query("UPDATE customers SET version = version + 1, updated_at = $1 WHERE id = $2")
        .bind(page::now_micros())
        .bind(id.to_string())
        .execute(&mut *conn)
        .instrument(db::span(backend, "UPDATE", TABLE))
        .await?;
    Ok(())
}
