//! `bench-load`: the benchmark suite's own load generator and helpers (see bench/README).
//!
//! wrk measures steady throughput well but cannot say, per 100 ms, which upstream served
//! each request or when a failed upstream stopped getting requests. `bench-load run`
//! does: it keeps N keep-alive connections busy like wrk, injects a failure and a restore
//! by running shell commands at set times on its own clock, watches the failed
//! upstream's port from the kernel's side, and prints the per-window table and summary.
//! `ports` and `wait` let the shell scripts pick free loopback ports and poll for
//! readiness without sleeping blind.

mod load;
mod report;
mod watch;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use tokio::time::Instant;

#[derive(Parser)]
#[command(
    name = "bench-load",
    about = "Load generator and helpers for hotel's benchmark suite"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Steady load with an optional failure and restore; prints per-window figures.
    Run(Box<RunArgs>),
    /// Prints N free TCP ports on 127.0.0.1, one per line.
    Ports {
        /// How many.
        count: usize,
    },
    /// Polls a URL until it answers 2xx; exits non-zero when the timeout passes first.
    Wait {
        /// `http://127.0.0.1:PORT/path`.
        url: String,
        /// Give up after this long.
        #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// `http://127.0.0.1:PORT/path`.
    #[arg(long)]
    url: String,
    /// Extra request header, `Name: value`; repeatable.
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Keep-alive connections, one request in flight on each.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Runtime worker threads of the load generator.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// How long to keep sending.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// How long to wait for answers after the last request was sent.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    grace: Duration,
    /// Width of one row of the table.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    window: Duration,
    /// Requests slower than this are counted as slow.
    #[arg(long, default_value = "250ms", value_parser = humantime::parse_duration)]
    slow: Duration,
    /// When to run --fail-cmd, after the load starts.
    #[arg(long, value_parser = humantime::parse_duration, requires = "fail_cmd")]
    fail_at: Option<Duration>,
    /// Shell command that fails an upstream (`kill -STOP 1234`).
    #[arg(long, requires = "fail_at")]
    fail_cmd: Option<String>,
    /// When to run --restore-cmd, after the load starts.
    #[arg(long, value_parser = humantime::parse_duration, requires = "restore_cmd")]
    restore_at: Option<Duration>,
    /// Shell command that brings the upstream back; its end counts as the restore time.
    #[arg(long, requires = "restore_at")]
    restore_cmd: Option<String>,
    /// The `X-Upstream` label of the failed upstream (`u2`).
    #[arg(long)]
    failed_upstream: Option<String>,
    /// Watch this local port for request bytes arriving while the upstream is failed.
    #[arg(long)]
    watch_port: Option<u16>,
    /// Name printed with the results.
    #[arg(long, default_value = "target")]
    label: String,
    /// Failure mode printed with the results (stop, kill, none).
    #[arg(long, default_value = "none")]
    mode: String,
    /// Print every window instead of only those near the events.
    #[arg(long)]
    all_windows: bool,
    /// Write every window as CSV here.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Append one tab-separated summary row here (a header first if the file is new).
    #[arg(long)]
    summary_tsv: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let threads = match &cli.command {
        Command::Run(args) => args.threads.max(1),
        _ => 1,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench-load: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Run(args) => run(*args).await,
            Command::Ports { count } => ports(count),
            Command::Wait { url, timeout } => wait(&url, timeout).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-load: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: RunArgs) -> Result<(), String> {
    let mut target = load::Target::parse(&args.url)?;
    for h in &args.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("header {h:?} must look like `Name: value`"))?;
        let name =
            http::HeaderName::try_from(name.trim()).map_err(|e| format!("header {h:?}: {e}"))?;
        let value =
            http::HeaderValue::try_from(value.trim()).map_err(|e| format!("header {h:?}: {e}"))?;
        target.headers.push((name, value));
    }
    let failed_upstream = match args.failed_upstream.as_deref() {
        None => None,
        Some(label) => match load::parse_upstream(label) {
            0 => return Err(format!("--failed-upstream {label:?} must look like u2")),
            n => Some(n),
        },
    };
    let plan = load::LoadPlan {
        connections: args.connections.max(1),
        duration: args.duration,
        grace: args.grace,
    };

    let t0 = Instant::now();
    let watcher = args
        .watch_port
        .map(|port| watch::ArrivalWatch::spawn(port, t0.into_std(), Duration::from_millis(5)));
    let injector = tokio::spawn(inject(
        t0,
        args.fail_at.zip(args.fail_cmd),
        args.restore_at.zip(args.restore_cmd),
    ));
    let samples = load::run(&target, &plan, t0).await;
    let (fail_us, restore_us) = injector
        .await
        .map_err(|e| format!("failure injector died: {e}"))?;
    let arrivals = watcher.map(watch::ArrivalWatch::finish);

    let events = report::Events {
        fail_us,
        restore_us,
        failed_upstream,
    };
    let windows = report::windows(&samples, args.window);
    let summary = report::summarize(
        &samples,
        &windows,
        args.window,
        args.duration,
        args.slow,
        &events,
        arrivals.as_deref(),
    );
    println!("== {} ({}) ==", args.label, args.mode);
    print!(
        "{}",
        report::render_windows(&windows, args.window, &events, args.all_windows)
    );
    print!(
        "{}",
        report::render_summary(&args.label, &summary, args.duration, args.slow)
    );
    if let Some(path) = &args.csv {
        std::fs::write(path, report::windows_csv(&windows))
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    if let Some(path) = &args.summary_tsv {
        use std::io::Write as _;
        let new = !path.exists();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("opening {}: {e}", path.display()))?;
        if new {
            writeln!(f, "{}", report::SUMMARY_TSV_HEADER).map_err(|e| e.to_string())?;
        }
        writeln!(
            f,
            "{}",
            report::summary_tsv_row(&args.label, &args.mode, &summary, args.duration)
        )
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Runs the fail and restore commands at their times; returns when each took effect, in
/// microseconds since `t0` (fail: when launched; restore: when its command finished, so a
/// restarted upstream is listening by then).
async fn inject(
    t0: Instant,
    fail: Option<(Duration, String)>,
    restore: Option<(Duration, String)>,
) -> (Option<u64>, Option<u64>) {
    let since = |t: Instant| u64::try_from(t.duration_since(t0).as_micros()).unwrap_or(u64::MAX);
    let mut fail_us = None;
    if let Some((at, cmd)) = fail {
        tokio::time::sleep_until(t0 + at).await;
        fail_us = Some(since(Instant::now()));
        shell(&cmd).await;
    }
    let mut restore_us = None;
    if let Some((at, cmd)) = restore {
        tokio::time::sleep_until(t0 + at).await;
        shell(&cmd).await;
        restore_us = Some(since(Instant::now()));
    }
    (fail_us, restore_us)
}

async fn shell(cmd: &str) {
    match tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .status()
        .await
    {
        Ok(status) if status.success() => {}
        Ok(status) => eprintln!("bench-load: `{cmd}` exited with {status}"),
        Err(e) => eprintln!("bench-load: cannot run `{cmd}`: {e}"),
    }
}

/// Binds `count` listeners on port 0 at once (so the ports differ), prints their ports
/// and releases them for the caller's servers.
fn ports(count: usize) -> Result<(), String> {
    let listeners = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot bind a free port: {e}"))?;
    for l in &listeners {
        let port = l.local_addr().map_err(|e| e.to_string())?.port();
        println!("{port}");
    }
    Ok(())
}

/// Polls `url` with one-request connections until it answers 2xx.
async fn wait(url: &str, timeout: Duration) -> Result<(), String> {
    let target = load::Target::parse(url)?;
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no attempt");
    while Instant::now() < deadline {
        match load::probe(&target, Duration::from_secs(2)).await {
            Ok(status) if (200..300).contains(&status) => return Ok(()),
            Ok(status) => last = format!("status {status}"),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!(
        "{url} not ready after {}: {last}",
        humantime::format_duration(timeout)
    ))
}
