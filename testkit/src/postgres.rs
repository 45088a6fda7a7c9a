//! A fresh PostgreSQL database per test, on the server `scripts/test.sh` starts
//! (`scripts/postgres.sh`) and names in `HOTEL_TEST_POSTGRES_URL`.
//!
//! Without that variable the PostgreSQL variants of the tests say so on stderr and pass
//! (a developer machine without PostgreSQL); with `CI=true` they fail instead, so CI can
//! never skip them silently.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use sqlx::{Connection, PgConnection};

/// The variable naming the test server: `postgres://USER@HOST:PORT/DB` of a role allowed
/// to create databases.
pub const URL_VAR: &str = "HOTEL_TEST_POSTGRES_URL";

/// Which database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in the test's temporary directory (always available).
    Sqlite,
    /// A database of its own on the test PostgreSQL server.
    Postgres,
}

/// The server's URL, or `None` after saying why the test is skipped; panics in CI.
pub fn server_url() -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{URL_VAR} is required in CI (scripts/test.sh starts PostgreSQL)")
        }
        _ => {
            eprintln!(
                "skipped: {URL_VAR} is not set, so this PostgreSQL test did not run \
                 (scripts/test.sh starts a PostgreSQL when it can)"
            );
            None
        }
    }
}

/// A database created for one test, dropped (with its connections) when this is dropped,
/// unless the test failed: then it is kept for a look, like `TempDir`.
#[derive(Debug)]
pub struct TestDatabase {
    /// The URL of the new database.
    pub url: String,
    server: String,
    name: String,
}

impl TestDatabase {
    /// A new empty database named after `label`, or `None` when no test server is set
    /// (see [`server_url`]).
    pub async fn create(label: &str) -> Option<TestDatabase> {
        let server = server_url()?;
        let label: String = label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(30)
            .collect();
        let name = format!("t_{label}_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&server)
            .await
            .unwrap_or_else(|e| panic!("test PostgreSQL at {server}: {e}"));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .expect("create the test database");
        conn.close().await.ok();
        let mut url = url::Url::parse(&server).expect("test PostgreSQL URL");
        url.set_path(&name);
        Some(TestDatabase {
            url: url.to_string(),
            server,
            name,
        })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept test database {} for a look", self.url);
            return;
        }
        let (server, name) = (self.server.clone(), self.name.clone());
        // Drop runs inside (or outside) the test's runtime: a thread of its own with a
        // runtime of its own can always block on the drop.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let mut conn = PgConnection::connect(&server).await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await?;
                conn.close().await
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

/// A test's database on one backend: its temporary directory (the SQLite file's home,
/// and anything else the test writes) and, on PostgreSQL, a database of its own.
#[derive(Debug)]
pub struct TestDb {
    /// The test's data directory.
    pub dir: crate::TempDir,
    /// The PostgreSQL database, when the backend is PostgreSQL.
    pub postgres: Option<TestDatabase>,
}

impl TestDb {
    /// A new database for a test labelled `label` on `backend`, or `None` when that
    /// backend is not available here (see [`server_url`]).
    pub async fn new(backend: Backend, label: &str) -> Option<TestDb> {
        let postgres = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(TestDatabase::create(label).await?),
        };
        Some(TestDb {
            dir: crate::TempDir::new(label),
            postgres,
        })
    }

    /// The `database.url` setting that selects this database (`None`: the SQLite file in
    /// the data directory).
    pub fn url(&self) -> Option<String> {
        self.postgres.as_ref().map(|p| p.url.clone())
    }
}

impl From<crate::TempDir> for TestDb {
    fn from(dir: crate::TempDir) -> Self {
        TestDb {
            dir,
            postgres: None,
        }
    }
}
