//! What every test crate in the workspace shares: [`TempDir`], a directory that is
//! removed when the test passes and kept (with its path printed) when it fails, and
//! [`eventually`], the one way a test waits for something: polling with a deadline,
//! never a sleep of a guessed length; and [`wire`], HTTP/1.1 spoken byte for byte.
//!
//! A dev-dependency only. It depends on nothing of the project, so any crate's tests
//! (the registry's included) may use it without a cycle.

pub mod postgres;
pub mod wire;

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

impl std::ops::Deref for TempDir {
    type Target = Path;

    fn deref(&self) -> &Path {
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

/// Checks a shipped config file (`config/<role>.toml`) against the built-in defaults of
/// its settings type `S`, so the file, the code and the docs pointing at the file cannot
/// drift apart:
/// - the whole parsed file equals `S::default()` (compared as JSON, so durations and
///   addresses compare by their configured spelling);
/// - every key the defaults have is written out in the file (keys whose default is
///   unset, such as tokens, appear only as comments and are not required).
///
/// Unknown keys need no check here: every settings type denies them when parsing.
///
/// # Panics
/// With a message naming the file and the keys that differ or are missing.
pub fn assert_config_file_lists_the_defaults<S>(path: &Path)
where
    S: serde::de::DeserializeOwned + serde::Serialize + Default,
{
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let parsed: S =
        toml::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()));
    let json = |s: &S| serde_json::to_value(s).unwrap_or_else(|e| panic!("settings to JSON: {e}"));
    let (file, code) = (json(&parsed), json(&S::default()));
    let mut differ = Vec::new();
    diff_paths("", &file, &code, &mut differ);
    assert!(
        differ.is_empty(),
        "{} says other values than the built-in defaults at: {}",
        path.display(),
        differ.join(", ")
    );
    let written: toml::Value =
        toml::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()));
    let defaults =
        toml::Value::try_from(S::default()).unwrap_or_else(|e| panic!("defaults to TOML: {e}"));
    let (mut have, mut want) = (Vec::new(), Vec::new());
    key_paths("", &written, &mut have);
    key_paths("", &defaults, &mut want);
    let missing: Vec<_> = want.iter().filter(|k| !have.contains(k)).cloned().collect();
    assert!(
        missing.is_empty(),
        "{} does not list these keys with their defaults: {}",
        path.display(),
        missing.join(", ")
    );
}

/// The dotted paths (`policy.deadline`, `routes[2].policy.per_try_timeout`) of every
/// leaf value in `v`. An empty table has none (an empty `[services]` says nothing); an
/// empty array is a leaf (`trusted_proxies = []` is a default worth reading).
fn key_paths(prefix: &str, v: &toml::Value, out: &mut Vec<String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                key_paths(&p, v, out);
            }
        }
        toml::Value::Array(a) if a.iter().all(toml::Value::is_table) && !a.is_empty() => {
            for (i, v) in a.iter().enumerate() {
                key_paths(&format!("{prefix}[{i}]"), v, out);
            }
        }
        _ => out.push(prefix.to_owned()),
    }
}

/// The paths at which two JSON values differ.
fn diff_paths(prefix: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<_> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                diff_paths(
                    &p,
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                diff_paths(&format!("{prefix}[{i}]"), x, y, out);
            }
        }
        _ if a != b => out.push(format!("{prefix} (file {a}, code {b})")),
        _ => {}
    }
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

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    #[serde(deny_unknown_fields, default)]
    struct Demo {
        port: u16,
        token: Option<String>,
        limits: DemoLimits,
    }

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    #[serde(deny_unknown_fields, default)]
    struct DemoLimits {
        max: u32,
    }

    impl Default for Demo {
        fn default() -> Self {
            Demo {
                port: 80,
                token: None,
                limits: DemoLimits::default(),
            }
        }
    }

    impl Default for DemoLimits {
        fn default() -> Self {
            DemoLimits { max: 7 }
        }
    }

    fn check_demo(text: &str) -> Result<(), String> {
        let d = TempDir::new("testkit-config");
        let p = d.path().join("demo.toml");
        std::fs::write(&p, text).map_err(|e| e.to_string())?;
        std::panic::catch_unwind(|| assert_config_file_lists_the_defaults::<Demo>(&p))
            .map_err(|e| e.downcast_ref::<String>().cloned().unwrap_or_default())
    }

    #[test]
    fn a_config_file_passes_only_when_it_lists_every_default_with_its_value() {
        assert_eq!(
            check_demo("port = 80\n# token = \"...\"\n[limits]\nmax = 7\n"),
            Ok(())
        );
        let missing = check_demo("port = 80\n").err().unwrap_or_default();
        assert!(
            missing.contains("does not list these keys with their defaults: limits.max"),
            "{missing}"
        );
        let differs = check_demo("port = 81\n[limits]\nmax = 7\n")
            .err()
            .unwrap_or_default();
        assert!(differs.contains("port (file 81, code 80)"), "{differs}");
    }
}
