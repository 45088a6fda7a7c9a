//! Headless Chromium driven over the DevTools protocol, for the dashboard's browser test.
//!
//! The transport is `--remote-debugging-pipe`: Chromium reads commands from fd 3 and
//! writes answers to fd 4, each a JSON text ended by a NUL byte. A small `sh` wrapper
//! makes our stdin and stdout pipes its fds 3 and 4 before `exec`ing the browser (no
//! port, no WebSocket crate, no `unsafe` fd juggling). The browser runs in its own
//! process group, which [`Browser::close`] (or drop) ends by that group's id.

#![allow(dead_code, clippy::unwrap_used)]

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use hotel_tests::TempDir;
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde_json::{Value, json};
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::{Child, ChildStdin},
    sync::oneshot,
};

/// The variable `scripts/test.sh` sets to the browser's path.
pub const CHROMIUM_VAR: &str = "HOTEL_TEST_CHROMIUM";

/// The browser to use: `HOTEL_TEST_CHROMIUM`, else `chromium` on `PATH`; `None` after
/// saying why the test is skipped; panics in CI, where it is required.
pub fn chromium() -> Option<PathBuf> {
    let from_env = std::env::var_os(CHROMIUM_VAR)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    let on_path = || {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .flat_map(|d| [d.join("chromium"), d.join("chromium-browser")])
                .find(|p| p.is_file())
        })
    };
    match from_env.or_else(on_path) {
        Some(p) => Some(p),
        None if hotel_tests::in_ci() => {
            panic!("Chromium is required in CI: scripts/test.sh installs it (scripts/chromium.sh)")
        }
        None => {
            eprintln!(
                "skipped: no Chromium ({CHROMIUM_VAR} unset and no chromium on PATH), so the \
                 dashboard's browser test did not run; scripts/chromium.sh install gets it"
            );
            None
        }
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// A running headless Chromium.
pub struct Browser {
    child: Child,
    pid: u32,
    stdin: tokio::sync::Mutex<ChildStdin>,
    /// Answers by command id, filled by the reader task.
    pending: Pending,
    next: AtomicU64,
    reader: tokio::task::JoinHandle<()>,
    /// Its profile directory and log.
    pub dir: TempDir,
}

/// How long one DevTools command may take.
const CALL_WITHIN: Duration = Duration::from_secs(30);

impl Browser {
    /// Starts `chromium` headless with a fresh profile and a `width` x `height` window.
    pub async fn launch(chromium: &Path, width: u32, height: u32) -> Result<Browser> {
        let dir = TempDir::new("chromium");
        let log = std::fs::File::create(dir.path().join("chromium.log"))?;
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg(r#"exec "$0" "$@" 3<&0 4>&1 0</dev/null 1>/dev/null"#)
            .arg(chromium)
            .arg("--headless=new")
            .arg("--remote-debugging-pipe")
            .arg(format!(
                "--user-data-dir={}",
                dir.path().join("profile").display()
            ))
            .arg(format!("--window-size={width},{height}"))
            .args([
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-sync",
                "--hide-scrollbars",
                "--mute-audio",
            ]);
        // /proc/self belongs to this process's effective user.
        let root = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self")?) == 0;
        if root {
            // Chromium refuses to run as root with its sandbox.
            cmd.arg("--no-sandbox");
        }
        cmd.arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().context("spawn chromium")?;
        let pid = child.id().context("chromium pid")?;
        let stdin = child.stdin.take().context("chromium stdin")?;
        let stdout = child.stdout.take().context("chromium stdout")?;
        let pending: Pending = Arc::default();
        let reader = tokio::spawn({
            let pending = pending.clone();
            async move {
                let mut r = BufReader::new(stdout);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match r.read_until(0, &mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    if buf.last() == Some(&0) {
                        buf.pop();
                    }
                    let Ok(msg) = serde_json::from_slice::<Value>(&buf) else {
                        continue;
                    };
                    if let Some(id) = msg.get("id").and_then(Value::as_u64)
                        && let Some(tx) = pending.lock().unwrap().remove(&id)
                    {
                        let _ = tx.send(msg);
                    }
                }
            }
        });
        let b = Browser {
            child,
            pid,
            stdin: tokio::sync::Mutex::new(stdin),
            pending,
            next: AtomicU64::new(1),
            reader,
            dir,
        };
        b.call("Browser.getVersion", json!({}), None)
            .await
            .with_context(|| format!("chromium did not answer:\n{}", b.log()))?;
        Ok(b)
    }

    /// Its stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("chromium.log")).unwrap_or_default()
    }

    /// Sends one command (to a page's session when given) and waits for its result.
    pub async fn call(&self, method: &str, params: Value, session: Option<&str>) -> Result<Value> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        let mut bytes = serde_json::to_vec(&msg)?;
        bytes.push(0);
        {
            let mut w = self.stdin.lock().await;
            w.write_all(&bytes).await?;
            w.flush().await?;
        }
        let answer = tokio::time::timeout(CALL_WITHIN, rx)
            .await
            .map_err(|_| anyhow!("{method}: no answer within {CALL_WITHIN:?}"))?
            .map_err(|_| anyhow!("{method}: chromium closed the pipe"))?;
        if let Some(e) = answer.get("error") {
            bail!("{method}: {e}");
        }
        Ok(answer["result"].clone())
    }

    /// A new tab, attached, with its page domain enabled.
    pub async fn new_page(&self) -> Result<Page<'_>> {
        let target = self
            .call("Target.createTarget", json!({ "url": "about:blank" }), None)
            .await?;
        let session = self
            .call(
                "Target.attachToTarget",
                json!({ "targetId": target["targetId"], "flatten": true }),
                None,
            )
            .await?["sessionId"]
            .as_str()
            .context("no sessionId")?
            .to_owned();
        let page = Page {
            browser: self,
            session,
        };
        page.call("Page.enable", json!({})).await?;
        Ok(page)
    }

    /// Asks the browser to quit and waits for it; SIGKILLs its process group after 10 s.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            self.call("Browser.close", json!({}), None),
        )
        .await;
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            self.kill_group();
            let _ = self.child.wait().await;
        }
        // Helpers it started (zygote, renderers) share its group.
        self.kill_group();
        self.reader.abort();
    }

    fn kill_group(&self) {
        if let Ok(raw) = i32::try_from(self.pid) {
            let _ = kill(Pid::from_raw(-raw), Signal::SIGKILL);
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.kill_group();
    }
}

/// One tab.
pub struct Page<'a> {
    browser: &'a Browser,
    session: String,
}

impl Page<'_> {
    /// A command in this tab's session.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value> {
        self.browser.call(method, params, Some(&self.session)).await
    }

    /// Loads `url` (following redirects).
    pub async fn navigate(&self, url: &str) -> Result<()> {
        let r = self.call("Page.navigate", json!({ "url": url })).await?;
        if let Some(e) = r.get("errorText") {
            bail!("navigating to {url}: {e}");
        }
        Ok(())
    }

    /// The value of a JavaScript expression (promises awaited).
    pub async fn eval(&self, expression: &str) -> Result<Value> {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await?;
        if let Some(e) = r.get("exceptionDetails") {
            bail!("{expression}: {e}");
        }
        Ok(r["result"]["value"].clone())
    }

    /// Polls `expression` every 100 ms until `done` accepts its value; the value, or an
    /// error naming `what` and the last value after `within`.
    pub async fn wait_for(
        &self,
        what: &str,
        within: Duration,
        expression: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + within;
        loop {
            let v = self.eval(expression).await.unwrap_or(Value::Null);
            if done(&v) {
                return Ok(v);
            }
            if Instant::now() >= deadline {
                bail!("{what}: not within {within:?}; last value {v}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A real mouse click in the middle of the element `selector` (scrolled into view);
    /// fails when it is missing or disabled.
    pub async fn click(&self, selector: &str) -> Result<()> {
        let sel = serde_json::to_string(selector)?;
        let at = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({sel}); if (!e) return null; \
                 e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); \
                 return [r.x + r.width / 2, r.y + r.height / 2, !!e.disabled]; }})()"
            ))
            .await?;
        let Some([x, y, disabled]) = at.as_array().map(|a| [&a[0], &a[1], &a[2]]) else {
            bail!("no element {selector}");
        };
        if disabled.as_bool() == Some(true) {
            bail!("{selector} is disabled");
        }
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
            )
            .await?;
        }
        Ok(())
    }

    /// Saves a PNG of the whole page at `path`.
    pub async fn screenshot(&self, path: &Path) -> Result<()> {
        let r = self
            .call(
                "Page.captureScreenshot",
                json!({ "format": "png", "captureBeyondViewport": true }),
            )
            .await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().context("no screenshot data")?)?;
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(path, png)?;
        Ok(())
    }
}
