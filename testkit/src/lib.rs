//! What every test crate in the workspace shares: [`TempDir`], a directory that is
//! removed when the test passes and kept (with its path printed) when it fails, and
//! [`eventually`], the one way a test waits for something: polling with a deadline,
//! never a sleep of a guessed length.
//!
//! A dev-dependency only. It depends on nothing of the project, so any crate's tests
//! (the registry's included) may use it without a cycle.

use std::{
    fmt,
    future::Future,
    path::{Path, PathBuf},
    time::Duration,
};

/// A fresh directory under the system temp dir, created `0700`. Removed on drop, unless
/// the thread is panicking (a failing test), when it is kept for inspection and its path
/// is printed.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `hotel-test-<prefix>-<uuid>`; `prefix` names the test area in the path.
    ///
    /// # Panics
    /// When the directory cannot be created (a test cannot go on without it).
    pub fn new(prefix: &str) -> Self {
        let p = std::env::temp_dir().join(format!("hotel-test-{prefix}-{}", uuid::Uuid::new_v4()));
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        if let Err(e) = b.create(&p) {
            panic!("create temp dir {}: {e}", p.display());
        }
        TempDir(p)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("keeping {} for inspection", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// What [`eventually`] returns when its deadline passes first.
#[derive(Debug, Clone)]
pub struct TimedOut {
    /// What was waited for.
    pub what: String,
    /// How long.
    pub within: Duration,
}

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "timed out after {:?} waiting for {}",
            self.within, self.what
        )
    }
}

impl std::error::Error for TimedOut {}

/// How often [`eventually`] checks: often enough that a wait ends within a few ms of its
/// condition, rarely enough not to load a busy 2-core machine.
pub const POLL_EVERY: Duration = Duration::from_millis(20);

/// Polls `check` every [`POLL_EVERY`] until it returns `Some`, or fails with
/// [`TimedOut`] once `within` has passed. The check runs at least once, and once more
/// at the deadline. Uses tokio's clock, so it also works on a paused test clock.
pub async fn eventually<T, F, Fut>(
    within: Duration,
    what: &str,
    mut check: F,
) -> Result<T, TimedOut>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(TimedOut {
                what: what.to_owned(),
                within,
            });
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// [`eventually`] for a condition that needs no `.await`: polls until `check` holds.
pub async fn eventually_true(
    within: Duration,
    what: &str,
    mut check: impl FnMut() -> bool,
) -> Result<(), TimedOut> {
    eventually(within, what, || {
        let ok = check();
        async move { ok.then_some(()) }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn eventually_returns_the_first_value_the_check_gives() {
        let mut n = 0;
        let v = eventually(Duration::from_secs(1), "the third call", || {
            n += 1;
            let n = n;
            async move { (n == 3).then_some(n) }
        })
        .await
        .map_err(|e| e.to_string());
        assert_eq!(v, Ok(3));
    }

    #[tokio::test(start_paused = true)]
    async fn eventually_fails_naming_what_it_waited_for_after_the_deadline() {
        let start = tokio::time::Instant::now();
        let e = eventually_true(Duration::from_millis(100), "nothing", || false)
            .await
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("timed out after 100ms waiting for nothing")
        );
        assert!(start.elapsed() >= Duration::from_millis(100));
    }

    #[test]
    fn a_temp_dir_is_private_and_removed_on_drop() {
        let d = TempDir::new("testkit");
        let p = d.path().to_owned();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).map(|m| m.permissions().mode() & 0o777);
            assert_eq!(mode.ok(), Some(0o700));
        }
        drop(d);
        assert!(!p.exists());
    }
}
