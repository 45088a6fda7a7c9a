//! The database of a service: a SQLite file that several replica processes on one host
//! share (the default, nothing to install), or a PostgreSQL database that replicas on
//! any number of hosts share (`database.url = "postgres://..."`).
//!
//! Both are reached through one `sqlx::AnyPool`, so every store keeps one set of
//! runtime queries (`$N` placeholders, which both drivers accept) and one `FromRow` type
//! per table; what differs per backend lives here and in each service's second
//! migration history (`migrations-postgres/`), nowhere else:
//!
//! - opening: SQLite gets WAL, `busy_timeout` and a private file; PostgreSQL only a pool;
//! - writing: [`begin_immediate`] is SQLite's `BEGIN IMMEDIATE` (the file's one write
//!   lock, across processes), and on PostgreSQL `BEGIN` plus a transaction-level advisory
//!   lock that every write transaction of the service takes, across hosts: the same
//!   one-writer-at-a-time semantics, so a check-then-write (If-Match, idempotency keys,
//!   the event inbox, the outbox's commit order) is atomic on both;
//! - migrating: [`migrate`] under a file lock on SQLite, under sqlx's `pg_advisory_lock`
//!   on PostgreSQL, so replicas starting together never race;
//! - errors: [`is_transient`] knows both backends' "try again" codes (503, not 500).

use serde::{Deserialize, Serialize};
use sqlx::{
    Any, AnyPool, Transaction,
    any::{AnyConnectOptions, AnyPoolOptions},
    sqlite::SqliteConnectOptions,
};
use std::{
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

/// The `[database]` block every service takes (`HOTEL_<ROLE>__DATABASE__*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// `sqlite://PATH` or `postgres://USER@HOST:PORT/DATABASE`; unset: the SQLite file
    /// `<data_dir>/<role>.db`.
    #[serde(default)]
    pub url: Option<String>,
    /// Most connections this instance holds open (1 to 1000).
    pub max_connections: u32,
    /// Longest wait for a free (or new) connection before the request answers 503.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings {
            url: None,
            max_connections: 8,
            acquire_timeout: Duration::from_secs(2),
        }
    }
}

impl DatabaseSettings {
    /// Where the database is: `url`, else the file `default_file`. An error names the key.
    pub fn location(&self, default_file: PathBuf) -> Result<Location, String> {
        if !(1..=1000).contains(&self.max_connections) {
            return Err(format!(
                "database.max_connections: {} is not between 1 and 1000",
                self.max_connections
            ));
        }
        if self.acquire_timeout.is_zero() {
            return Err("database.acquire_timeout: must be more than 0".to_owned());
        }
        match self.url.as_deref() {
            None | Some("") => Ok(Location::Sqlite(default_file)),
            Some(url) if url.starts_with("sqlite:") => SqliteConnectOptions::from_str(url)
                .map(|o| Location::Sqlite(o.get_filename().to_owned()))
                .map_err(|e| format!("database.url: {e}")),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(Location::Postgres(url.to_owned()))
            }
            Some(url) => Err(format!(
                "database.url: {:?} is neither sqlite://PATH nor postgres://...",
                redact(url)
            )),
        }
    }
}

/// Where a service's database is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite file, shared by the replicas on this host.
    Sqlite(PathBuf),
    /// A PostgreSQL database (its URL), shared by replicas anywhere.
    Postgres(String),
}

impl Location {
    /// The backend this location is on.
    pub fn backend(&self) -> Backend {
        match self {
            Location::Sqlite(_) => Backend::Sqlite,
            Location::Postgres(_) => Backend::Postgres,
        }
    }
}

impl std::fmt::Display for Location {
    /// The file, or the URL without its password: what logs may show.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sqlite(path) => write!(f, "{}", path.display()),
            Location::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

/// `url` with any password replaced by `***`.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Which database a pool talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl Backend {
    /// The backend of `pool`.
    pub fn of(pool: &AnyPool) -> Backend {
        if pool
            .connect_options()
            .database_url
            .scheme()
            .starts_with("postgres")
        {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }

    /// The backend of a connection (or a transaction, through `&mut *tx`).
    pub fn of_conn(conn: &sqlx::AnyConnection) -> Backend {
        if conn.backend_name() == "PostgreSQL" {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }

    /// The OpenTelemetry `db.system.name`.
    pub fn system_name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgresql",
        }
    }
}

/// The key of the transaction-level advisory lock every PostgreSQL write transaction of a
/// service takes ([`begin_immediate`]); each service has its own database, so one key.
const WRITE_LOCK: i64 = 0x686f_7465_6c77; // "hotelw"

/// Opens the database at `location` with the pool `settings`; a SQLite file is created
/// (private) when missing.
pub async fn open(
    location: &Location,
    settings: &DatabaseSettings,
) -> Result<AnyPool, sqlx::Error> {
    sqlx::any::install_default_drivers();
    let pool = AnyPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout);
    match location {
        Location::Sqlite(path) => open_sqlite(path, pool).await,
        Location::Postgres(url) => pool.connect_with(AnyConnectOptions::from_str(url)?).await,
    }
}

/// Opens (creating if missing) the SQLite file at `path`.
///
/// The database holds every customer's data, so it is private to its owner: a missing
/// directory is created `0700` and a missing file `0600` here, before SQLite opens it,
/// because SQLite creates a new file `0644` (less the umask) but gives its `-wal` and
/// `-shm` files the mode of the database file.
async fn open_sqlite(path: &Path, pool: AnyPoolOptions) -> Result<AnyPool, sqlx::Error> {
    create_private(path).map_err(sqlx::Error::Io)?;
    // The file exists now (just made, private). Connections opened later must not make
    // it again: were it removed or renamed under a running instance, a new connection
    // would start an empty database at the path, the readiness check would pass on it,
    // and writes would land where the other replicas never look. Such a connection
    // fails instead, and the check keeps reporting the file gone.
    let url = sqlx::ConnectOptions::to_url_lossy(
        &SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(in_memory(path)),
    );
    let opts = <AnyConnectOptions as sqlx::ConnectOptions>::from_url(&url)?;
    // The Any driver builds SQLite's options from the URL alone, so the per-connection
    // settings are pragmas: wait up to 10 s for another process's write lock instead of
    // failing, and WAL's usual `synchronous = NORMAL` (foreign keys are on by default).
    let pool = pool.after_connect(|conn, _| {
        Box::pin(async move {
            sqlx::query("PRAGMA busy_timeout = 10000")
                .execute(&mut *conn)
                .await?;
            sqlx::query("PRAGMA synchronous = NORMAL")
                .execute(&mut *conn)
                .await?;
            Ok(())
        })
    });
    // The switch of a new file to WAL takes an exclusive lock that SQLite's busy handler
    // does not wait for: replicas starting together would fail with "database is
    // locked". The same file lock as migrations serialises it; WAL then stays on the file.
    let lock = file_lock(path).await.map_err(sqlx::Error::Io)?;
    let opened = async {
        let pool = pool.connect_with(opts).await?;
        sqlx::query("PRAGMA journal_mode = WAL")
            .execute(&pool)
            .await?;
        Ok(pool)
    }
    .await;
    drop(lock);
    opened
}

/// Creates the parent directories of `path` (mode `0700`) and the file itself (mode
/// `0600`, empty) when they are missing; existing ones are left as they are.
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if in_memory(path) {
        return Ok(());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether the SQLite `path` names an in-memory database (`:memory:` or a `file:` URI),
/// not a file.
fn in_memory(path: &Path) -> bool {
    path == Path::new(":memory:") || path.to_string_lossy().starts_with("file:")
}

/// Takes an exclusive `flock` on `<db>.migrate.lock` (waiting on a blocking thread); the
/// lock is held until the returned file is dropped. It coordinates processes that open or
/// migrate one database file at the same moment.
async fn file_lock(db_path: &Path) -> std::io::Result<std::fs::File> {
    let mut lock_path = db_path.as_os_str().to_owned();
    lock_path.push(".migrate.lock");
    tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)?;
        file.lock()?;
        Ok(file)
    })
    .await
    .map_err(std::io::Error::other)?
}

/// The SQLite file behind `pool`, if it is one (not in memory, not PostgreSQL).
fn sqlite_file(pool: &AnyPool) -> Option<PathBuf> {
    let options = pool.connect_options();
    let url = &options.database_url;
    if Backend::of(pool) != Backend::Sqlite {
        return None;
    }
    let path = SqliteConnectOptions::from_str(url.as_str())
        .ok()?
        .get_filename()
        .to_owned();
    (!in_memory(&path)).then_some(path)
}

/// Starts a write transaction that no other writer of the database can interleave with:
/// SQLite's `BEGIN IMMEDIATE` (its write lock, across processes), or on PostgreSQL
/// `BEGIN` and the service's transaction-level advisory write lock (across hosts; held
/// until commit or rollback). Either way the reads of the transaction see every write
/// committed before it, and no write commits between them and the transaction's own.
pub async fn begin_immediate(pool: &AnyPool) -> Result<Transaction<'static, Any>, sqlx::Error> {
    match Backend::of(pool) {
        Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await,
        Backend::Postgres => {
            let mut tx = pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(WRITE_LOCK)
                .execute(&mut *tx)
                .await?;
            Ok(tx)
        }
    }
}

/// Readiness: the database answers a trivial query within `within`, and a SQLite file is
/// still where the instance opened it.
///
/// The file check matters because SQLite keeps working on an open file that was removed
/// or renamed: the instance would go on answering from (and writing to) a file that
/// the other replicas no longer see. The deadline matters because a PostgreSQL server
/// that is down or unreachable must fail the check, not hang it.
pub async fn ping(pool: &AnyPool, within: Duration) -> Result<(), String> {
    if let Some(path) = sqlite_file(pool)
        && let Err(e) = tokio::fs::symlink_metadata(&path).await
    {
        return Err(format!("database file {} is gone: {e}", path.display()));
    }
    match tokio::time::timeout(within, sqlx::query("SELECT 1").execute(pool)).await {
        Ok(Ok(_)) => Ok(()),
        // Every connection open and in use: the database answers, the instance is busy
        // (writes queue for the write lock under load). Failing readiness here would take
        // a working instance out of rotation exactly when it is needed; a database that
        // is down breaks those connections, and the pool shrinks.
        Ok(Err(sqlx::Error::PoolTimedOut)) | Err(_)
            if pool.num_idle() == 0 && pool.size() >= pool.options().get_max_connections() =>
        {
            Ok(())
        }
        Ok(Err(e)) => Err(format!("database unreachable: {e}")),
        Err(_) => Err(format!("database unreachable: no answer within {within:?}")),
    }
}

/// A client span for one database operation, named and attributed per the OpenTelemetry
/// database conventions (`db.system.name`, `db.operation.name`, `db.collection.name`).
/// Use as `query.execute(&pool).instrument(db::span(backend, "INSERT", "bookings"))`.
pub fn span(backend: Backend, operation: &'static str, table: &'static str) -> tracing::Span {
    tracing::info_span!(
        "db",
        otel.name = %format_args!("{operation} {table}"),
        otel.kind = "client",
        db.system.name = backend.system_name(),
        db.operation.name = operation,
        db.collection.name = table,
        otel.status_code = tracing::field::Empty,
    )
}

/// Runs `migrator` on `pool` so that replicas starting together take turns: on SQLite
/// under an exclusive file lock (`<file>.migrate.lock`; sqlx's SQLite migrator takes no
/// lock of its own), on PostgreSQL under the `pg_advisory_lock` sqlx's migrator takes.
/// The later replicas find the migrations applied.
pub async fn migrate(
    pool: &AnyPool,
    migrator: &sqlx::migrate::Migrator,
) -> Result<(), sqlx::migrate::MigrateError> {
    let io_err = |e: std::io::Error| sqlx::migrate::MigrateError::Execute(sqlx::Error::Io(e));
    // sqlx accepts two files with one version and applies the first; every start after
    // that then fails with "migration N was previously applied but has been modified".
    // Two branches that each add "the next migration" produce exactly that on merge, so
    // it is refused here, before anything is applied.
    let mut seen = std::collections::BTreeMap::new();
    for m in migrator.iter() {
        if let Some(first) = seen.insert(m.version, m.description.clone()) {
            return Err(sqlx::migrate::MigrateError::Source(
                format!(
                    "two migrations share version {}: {first:?} and {:?}; renumber one",
                    m.version, m.description
                )
                .into(),
            ));
        }
    }
    let lock = match sqlite_file(pool) {
        Some(path) => Some(file_lock(&path).await.map_err(io_err)?),
        None => None,
    };
    let result = migrator.run(pool).await;
    drop(lock);
    result
}

/// Makes sure the database `name` exists on the PostgreSQL server at `server_url`
/// (connecting to the database that URL names), creating it when missing and allowed;
/// answers the URL of `name` on that server. Used by `hotel up --postgres` to give each
/// service a database of its own.
pub async fn ensure_postgres_database(server_url: &str, name: &str) -> Result<String, String> {
    use sqlx::Connection;
    let shown = redact(server_url);
    let mut url = url::Url::parse(server_url).map_err(|e| format!("{shown}: {e}"))?;
    let mut conn = sqlx::PgConnection::connect(server_url)
        .await
        .map_err(|e| format!("{shown}: {e}"))?;
    let exists: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&mut conn)
        .await
        .map_err(|e| format!("{shown}: {e}"))?;
    if exists.is_none() {
        // The name is ours (hotel_<role>), not user input: quoting it is enough.
        let created = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await;
        match created {
            Ok(_) => tracing::info!(database = name, server = %shown, "database created"),
            // Another `hotel up` created it meanwhile (duplicate_database).
            Err(e) if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("42P04") => {}
            Err(e) => return Err(format!("{shown}: cannot create database {name}: {e}")),
        }
    }
    conn.close().await.ok();
    url.set_path(name);
    Ok(url.to_string())
}

/// Whether `e` is a UNIQUE (or primary key) constraint violation: the request conflicts
/// with a row that exists, a 409 for the client rather than a 500.
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

/// Whether `e` is PostgreSQL's exclusion-constraint violation (SQLSTATE `23P01`) of the
/// constraint named `constraint`: two rows that the constraint says may not coexist.
pub fn is_exclusion_violation(e: &sqlx::Error, constraint: &str) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.code().as_deref() == Some("23P01") && d.constraint() == Some(constraint))
}

/// Whether `e` is worth retrying elsewhere or later: the database is unreachable (the
/// connection failed or broke, the pool had no free connection in time), or busy:
/// another process held SQLite's lock past the busy timeout (`SQLITE_BUSY`,
/// `SQLITE_LOCKED` and their extended codes), or PostgreSQL refused for now (connection
/// exceptions `08xxx`, shutting down or starting `57P0x`, too many connections `53300`,
/// serialization failure or deadlock `40001`/`40P01`). Such errors map to 503 with
/// `Retry-After`.
pub fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(d) => {
            let Some(code) = d.code() else { return false };
            if let Ok(n) = code.parse::<i64>()
                && d.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some()
            {
                return matches!(n & 0xff, 5 | 6);
            }
            code.starts_with("08")
                || code.starts_with("57P0")
                || matches!(code.as_ref(), "53300" | "40001" | "40P01")
        }
        _ => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::{os::unix::fs::PermissionsExt, path::PathBuf};

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// Runs one statement on `pool`.
    async fn run(pool: &AnyPool, sql: &'static str) {
        sqlx::query(sql).execute(pool).await.unwrap();
    }

    #[tokio::test]
    async fn a_new_database_and_its_wal_and_shm_files_are_readable_by_their_owner_only() {
        let root = hotel_testkit::TempDir::new("db");
        let dir = root.join("data");
        let path = dir.join("room.db");
        let pool = open(
            &Location::Sqlite(path.clone()),
            &DatabaseSettings::default(),
        )
        .await
        .unwrap();
        run(&pool, "CREATE TABLE t (x INTEGER)").await;
        run(&pool, "INSERT INTO t VALUES (1)").await;
        assert_eq!(mode(&dir), 0o700, "data directory");
        for suffix in ["", "-wal", "-shm", ".migrate.lock"] {
            let file = PathBuf::from(format!("{}{suffix}", path.display()));
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
        pool.close().await;
    }

    /// SQLite goes on with an open file that was renamed; a connection opened after that
    /// must fail rather than start an empty database at the path (which would pass the
    /// readiness check and take writes no other replica sees).
    #[tokio::test]
    async fn a_database_file_that_left_its_path_is_not_made_again_by_a_new_connection() {
        let root = hotel_testkit::TempDir::new("db");
        let path = root.join("data").join("room.db");
        let settings = DatabaseSettings {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(2),
            ..DatabaseSettings::default()
        };
        let pool = open(&Location::Sqlite(path.clone()), &settings)
            .await
            .unwrap();
        run(&pool, "CREATE TABLE t (x INTEGER)").await;
        // Connections open now (a used one may still be on its way back to the pool,
        // so count them all, idle or not).
        let open_before = pool.size() as usize;
        std::fs::rename(&path, root.join("room.db.away")).unwrap();
        // The connections the pool holds keep working on the renamed file; hold them all,
        // so that the next acquire has to open a new one, which must fail.
        let mut held = Vec::new();
        while let Ok(c) = pool.acquire().await {
            held.push(c);
            assert!(
                held.len() <= open_before,
                "a new connection opened a database at the old path"
            );
        }
        assert!(!path.exists(), "an empty database was made at the old path");
        let why = ping(&pool, Duration::from_secs(1)).await.unwrap_err();
        assert!(why.contains("is gone"), "{why}");
        drop(held);
        pool.close().await;
    }

    #[tokio::test]
    async fn two_migrations_with_one_version_are_refused_before_anything_is_applied() {
        let root = hotel_testkit::TempDir::new("db");
        let migrations = root.join("migrations");
        std::fs::create_dir_all(&migrations).unwrap();
        std::fs::write(migrations.join("0001_a.sql"), "CREATE TABLE a (x INTEGER);").unwrap();
        std::fs::write(migrations.join("0001_b.sql"), "CREATE TABLE b (x INTEGER);").unwrap();
        let path = root.join("data").join("t.db");
        let pool = open(&Location::Sqlite(path), &DatabaseSettings::default())
            .await
            .unwrap();
        let migrator = sqlx::migrate::Migrator::new(migrations.as_path())
            .await
            .unwrap();
        let err = migrate(&pool, &migrator).await.unwrap_err().to_string();
        assert!(err.contains("share version 1"), "{err}");
        let tables: i64 =
            sqlx::query_scalar("SELECT count(*) FROM sqlite_master WHERE name IN ('a', 'b')")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(tables, 0);
        pool.close().await;
    }

    /// The files of one migration history, by version.
    fn history(dir: &Path) -> std::collections::BTreeMap<String, String> {
        let mut versions = std::collections::BTreeMap::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let version = name.split('_').next().unwrap().to_owned();
            if let Some(other) = versions.insert(version.clone(), name.clone()) {
                panic!(
                    "{}: {other} and {name} share version {version}",
                    dir.display()
                );
            }
        }
        versions
    }

    #[test]
    fn every_service_migration_history_has_distinct_versions_and_one_twin_per_backend() {
        let services = Path::new(env!("CARGO_MANIFEST_DIR")).join("../services");
        for service in ["customer", "room", "booking"] {
            let sqlite = history(&services.join(service).join("migrations"));
            let postgres = history(&services.join(service).join("migrations-postgres"));
            assert_eq!(
                sqlite, postgres,
                "{service}: every migration needs its twin, same file name, in \
                 migrations/ (SQLite) and migrations-postgres/ (PostgreSQL)"
            );
        }
    }

    #[test]
    fn database_urls_choose_the_backend_and_bad_settings_name_their_key() {
        let file = PathBuf::from("/data/room.db");
        let with = |url: Option<&str>| DatabaseSettings {
            url: url.map(str::to_owned),
            ..DatabaseSettings::default()
        };
        assert_eq!(
            with(None).location(file.clone()),
            Ok(Location::Sqlite(file.clone()))
        );
        assert_eq!(
            with(Some("sqlite:///srv/x.db")).location(file.clone()),
            Ok(Location::Sqlite(PathBuf::from("/srv/x.db")))
        );
        let pg = with(Some("postgres://hotel:secret@db:5432/hotel_room"))
            .location(file.clone())
            .unwrap();
        assert_eq!(pg.backend(), Backend::Postgres);
        assert!(!pg.to_string().contains("secret"), "{pg}");
        let err = with(Some("mysql://db/x"))
            .location(file.clone())
            .unwrap_err();
        assert!(err.starts_with("database.url"), "{err}");
        let err = DatabaseSettings {
            max_connections: 0,
            ..DatabaseSettings::default()
        }
        .location(file)
        .unwrap_err();
        assert!(err.starts_with("database.max_connections"), "{err}");
    }
}
