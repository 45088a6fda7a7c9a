//! SQLite pools that several replica processes can share safely.
//!
//! WAL lets readers run beside one writer; `busy_timeout` makes a writer wait for
//! another process's write lock instead of failing; services open write transactions with
//! `BEGIN IMMEDIATE` (see [`begin_immediate`]) so a check-then-insert is one atomic step
//! across processes.

use sqlx::{
    Sqlite, SqlitePool, Transaction,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};
use std::{path::Path, time::Duration};

/// Opens (creating if missing) the database file at `path`.
///
/// The database holds every customer's data, so it is private to its owner: a missing
/// directory is created `0700` and a missing file `0600` here, before SQLite opens it,
/// because SQLite creates a new file `0644` (less the umask) but gives its `-wal` and
/// `-shm` files the mode of the database file.
pub async fn open(path: &Path) -> Result<SqlitePool, sqlx::Error> {
    create_private(path).map_err(sqlx::Error::Io)?;
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true);
    // The first connection to a new file switches it to WAL, which takes an exclusive
    // lock that SQLite's busy handler does not wait for: replicas starting together would
    // fail with "database is locked". The same file lock as migrations serialises it.
    let lock = file_lock(path).await.map_err(sqlx::Error::Io)?;
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(opts)
        .await;
    drop(lock);
    pool
}

/// Creates the parent directories of `path` (mode `0700`) and the file itself (mode
/// `0600`, empty) when they are missing; existing ones are left as they are.
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if path == Path::new(":memory:") || path.to_string_lossy().starts_with("file:") {
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

/// Starts a write transaction that takes SQLite's write lock at once (`BEGIN IMMEDIATE`),
/// so no other connection or process can write between our reads and our writes.
pub async fn begin_immediate(
    pool: &SqlitePool,
) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
    pool.begin_with("BEGIN IMMEDIATE").await
}

/// Readiness: the database file is still where the instance opened it, and the
/// database answers a trivial query.
///
/// The file check matters because SQLite keeps working on an open file that was removed
/// or renamed: the instance would go on answering from (and writing to) a file that
/// the other replicas no longer see. In-memory databases have no file to check.
pub async fn ping(pool: &SqlitePool) -> Result<(), String> {
    let options = pool.connect_options();
    let path = options.get_filename();
    let in_memory = path == Path::new(":memory:") || path.to_string_lossy().starts_with("file:");
    if !in_memory && let Err(e) = tokio::fs::symlink_metadata(path).await {
        return Err(format!("database file {} is gone: {e}", path.display()));
    }
    sqlx::query("SELECT 1")
        .execute(pool)
        .await
        .map(|_| ())
        .map_err(|e| format!("database unreachable: {e}"))
}

/// A client span for one database operation, named and attributed per the OpenTelemetry
/// database conventions (`db.system.name`, `db.operation.name`, `db.collection.name`).
/// Use as `query.execute(&pool).instrument(db::span("INSERT", "bookings"))`.
pub fn span(operation: &'static str, table: &'static str) -> tracing::Span {
    tracing::info_span!(
        "db",
        otel.name = %format_args!("{operation} {table}"),
        otel.kind = "client",
        db.system.name = "sqlite",
        db.operation.name = operation,
        db.collection.name = table,
        otel.status_code = tracing::field::Empty,
    )
}

/// Runs `migrator` on the database at `db_path`, holding an exclusive file lock
/// (`<db_path>.migrate.lock`) meanwhile.
///
/// sqlx's SQLite migrator takes no lock of its own, so replicas starting together on one
/// file would race to create the same tables and all but one would fail to start. The
/// lock makes them take turns; the later ones find the migrations applied.
pub async fn migrate(
    pool: &SqlitePool,
    db_path: &Path,
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
    let lock = file_lock(db_path).await.map_err(io_err)?;
    let result = migrator.run(pool).await;
    drop(lock);
    result
}

/// Whether `e` is a UNIQUE (or primary key) constraint violation: the request conflicts
/// with a row that exists, a 409 for the client rather than a 500.
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

/// Whether `e` is worth retrying elsewhere or later: the pool had no free connection in
/// time, or another process held SQLite's lock past the busy timeout (`SQLITE_BUSY`,
/// `SQLITE_LOCKED` and their extended codes). Such errors map to 503 with `Retry-After`.
pub fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(d) => d
            .code()
            .and_then(|c| c.parse::<i64>().ok())
            .is_some_and(|c| matches!(c & 0xff, 5 | 6)),
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

    #[tokio::test]
    async fn a_new_database_and_its_wal_and_shm_files_are_readable_by_their_owner_only() {
        let root = hotel_testkit::TempDir::new("db");
        let dir = root.join("data");
        let path = dir.join("room.db");
        let pool = open(&path).await.unwrap();
        sqlx::query("CREATE TABLE t (x INTEGER)")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&pool)
            .await
            .unwrap();
        assert_eq!(mode(&dir), 0o700, "data directory");
        for suffix in ["", "-wal", "-shm", ".migrate.lock"] {
            let file = PathBuf::from(format!("{}{suffix}", path.display()));
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
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
        let pool = open(&path).await.unwrap();
        let migrator = sqlx::migrate::Migrator::new(migrations.as_path())
            .await
            .unwrap();
        let err = migrate(&pool, &path, &migrator)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("share version 1"), "{err}");
        let tables: i64 =
            sqlx::query_scalar("SELECT count(*) FROM sqlite_master WHERE name IN ('a', 'b')")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(tables, 0);
        pool.close().await;
    }

    #[test]
    fn every_service_migration_history_has_distinct_versions() {
        let services = Path::new(env!("CARGO_MANIFEST_DIR")).join("../services");
        for service in ["customer", "room", "booking"] {
            let mut versions = std::collections::BTreeMap::new();
            for entry in std::fs::read_dir(services.join(service).join("migrations")).unwrap() {
                let name = entry.unwrap().file_name().into_string().unwrap();
                let version = name.split('_').next().unwrap().to_owned();
                if let Some(other) = versions.insert(version.clone(), name.clone()) {
                    panic!("{service}: {other} and {name} share version {version}");
                }
            }
        }
    }
}
