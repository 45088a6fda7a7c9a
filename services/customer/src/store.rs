//! SQL for customers. Every statement runs inside a `db` client span, and uniqueness is
//! left to the database's UNIQUE index so that concurrent replicas cannot both win.

use crate::{
    error::Error,
    model::{Customer, email_key},
};
use hotel_common::{
    conditional::{self, IfMatch, Validators, Versioned},
    db,
    page::{self, Keyset, Page},
};
use sqlx::SqlitePool;
use tracing::Instrument;
use uuid::Uuid;

const TABLE: &str = "customers";
const COLUMNS: &str = "id, name, email, created_at, version, updated_at";

/// A `customers` row as stored.
#[derive(Debug, sqlx::FromRow)]
struct Row {
    id: String,
    name: String,
    email: String,
    created_at: i64,
    version: i64,
    updated_at: i64,
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
    pool: &SqlitePool,
    name: String,
    email: String,
) -> Result<Versioned<Customer>, Error> {
    let id = Uuid::new_v4();
    let created_at = page::now_micros();
    sqlx::query(
        "INSERT INTO customers (id, name, email, email_key, created_at, version, updated_at) \
         VALUES (?, ?, ?, ?, ?5, 1, ?5)",
    )
    .bind(id.to_string())
    .bind(&name)
    .bind(&email)
    .bind(email_key(&email))
    .bind(created_at)
    .execute(pool)
    .instrument(db::span("INSERT", TABLE))
    .await
    .map_err(taken_or)?;
    Ok(Versioned {
        value: Customer {
            id,
            name,
            email,
            created_at: page::rfc3339_micros(created_at),
        },
        validators: Validators::of_row(id, 1, created_at),
    })
}

/// The customer with `id`.
pub async fn get(pool: &SqlitePool, id: Uuid) -> Result<Versioned<Customer>, Error> {
    fetch(pool, id).await
}

async fn fetch<'c, E>(conn: E, id: Uuid) -> Result<Versioned<Customer>, Error>
where
    E: sqlx::Executor<'c, Database = sqlx::Sqlite>,
{
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM customers WHERE id = ?"
    )))
    .bind(id.to_string())
    .fetch_optional(conn)
    .instrument(db::span("SELECT", TABLE))
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
    pool: &SqlitePool,
    email: Option<&str>,
    after: Option<Keyset>,
    limit: u32,
) -> Result<(Page<Customer>, Validators), Error> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM customers \
         WHERE (?1 IS NULL OR email_key = ?1) \
           AND (?2 IS NULL OR (created_at, id) > (?2, ?3)) \
         ORDER BY created_at, id LIMIT ?4"
    )))
    .bind(email.map(email_key))
    .bind(after.map(|k| k.t))
    .bind(after.map(|k| k.id.to_string()))
    .bind(i64::from(limit) + 1)
    .fetch_all(pool)
    .instrument(db::span("SELECT", TABLE))
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
    pool: &SqlitePool,
    id: Uuid,
    name: Option<String>,
    email: Option<String>,
    condition: Option<&IfMatch>,
) -> Result<Versioned<Customer>, Error> {
    let mut tx = db::begin_immediate(pool).await?;
    let current = fetch(&mut *tx, id).await?;
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
        "UPDATE customers SET name = ?, email = ?, email_key = ?, version = version + 1, \
         updated_at = ? WHERE id = ? RETURNING version",
    )
    .bind(&customer.name)
    .bind(&customer.email)
    .bind(email_key(&customer.email))
    .bind(updated_at)
    .bind(id.to_string())
    .fetch_one(&mut *tx)
    .instrument(db::span("UPDATE", TABLE))
    .await
    .map_err(taken_or)?;
    tx.commit().await?;
    Ok(Versioned {
        value: customer,
        validators: Validators::of_row(id, version, updated_at),
    })
}

/// Deletes the customer with `id`; with `condition`, only the version it names (412).
pub async fn delete(pool: &SqlitePool, id: Uuid, condition: Option<&IfMatch>) -> Result<(), Error> {
    let mut tx = db::begin_immediate(pool).await?;
    if condition.is_some() {
        check(condition, &fetch(&mut *tx, id).await?)?;
    }
    let done = sqlx::query("DELETE FROM customers WHERE id = ?")
        .bind(id.to_string())
        .execute(&mut *tx)
        .instrument(db::span("DELETE", TABLE))
        .await?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound(id));
    }
    tx.commit().await?;
    Ok(())
}
