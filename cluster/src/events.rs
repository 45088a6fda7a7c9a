//! `hotel events tail`: a live stream of a running cluster's events, read from each
//! producing service's own feed (`GET /events`, the embedded bus) at the instances
//! `cluster.json` lists, one line per event as it is published. The outbox is there on
//! either bus (on NATS JetStream the producers relay it to the broker from there), so
//! this works the same with `hotel up --events nats://...`: an event shows here once it
//! is committed, whether or not the broker has it yet.
//!
//! Each producer is followed on its own task from its head at start (or from its first
//! event with `--from-start`); when the instance being read goes away, the next live
//! instance of the service continues from the same position (replicas share the outbox).
//!
//! `hotel events dead`: the dead letters of every service (`GET /events/dead`).

use crate::{DataDirArg, clusterfile::ClusterFile, output};
use hotel_common::process::BoxError;
use serde_json::Value;
use std::{path::Path, process::ExitCode, time::Duration};

/// The services whose outboxes are followed.
const PRODUCERS: [&str; 3] = ["customer", "room", "booking"];
/// How long one blocking read of a feed waits for an event.
const WAIT_MS: u64 = 15_000;

/// `hotel events ...`.
#[derive(Debug, clap::Subcommand)]
pub enum EventsCommand {
    /// Follow the events of every service as they are published, one line each (time,
    /// type, subject, source, id), until Ctrl-C.
    Tail(TailArgs),
    /// List the events each service set aside as dead letters (malformed or of an
    /// unknown type), newest first.
    Dead(DeadArgs),
}

/// `hotel events dead` options.
#[derive(Debug, Clone, clap::Args)]
pub struct DeadArgs {
    /// Print JSON for scripts: per consuming service, its dead letters.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub dir: DataDirArg,
}

/// `hotel events tail` options.
#[derive(Debug, Clone, clap::Args)]
pub struct TailArgs {
    /// Only events whose type matches this pattern (`*` matches any run of characters):
    /// `hotel.booking.*`.
    #[arg(long = "type", value_name = "PATTERN")]
    pub kind: Option<String>,
    /// Print each event as its CloudEvents JSON, one per line.
    #[arg(long)]
    pub json: bool,
    /// Start from each service's first event instead of the events published from now.
    #[arg(long)]
    pub from_start: bool,
    #[command(flatten)]
    pub dir: DataDirArg,
}

/// Runs an events command.
pub async fn run(cmd: EventsCommand) -> Result<ExitCode, BoxError> {
    match cmd {
        EventsCommand::Tail(args) => tail(args).await,
        EventsCommand::Dead(args) => dead(args).await,
    }
}

async fn dead(args: DeadArgs) -> Result<ExitCode, BoxError> {
    ClusterFile::read(&args.dir.data_dir)?.install_identity()?;
    let client = hotel_common::tls::internal::reqwest_client()
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut all = serde_json::Map::new();
    let mut rows = Vec::new();
    for service in PRODUCERS {
        let Some(base) = instance_url(&args.dir.data_dir, service, 0) else {
            continue;
        };
        let page: Value = client
            .get(format!("{base}/events/dead"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        for d in page["items"].as_array().into_iter().flatten() {
            let field = |k: &str| match &d[k] {
                Value::String(s) => s.clone(),
                Value::Null => "-".to_owned(),
                other => other.to_string(),
            };
            let at = d["at"]
                .as_i64()
                .map_or_else(|| "-".to_owned(), hotel_common::page::rfc3339_micros);
            rows.push(vec![
                service.to_owned(),
                field("producer"),
                field("seq"),
                field("type"),
                field("id"),
                at,
                field("reason"),
            ]);
        }
        all.insert(service.to_owned(), page["items"].clone());
    }
    if args.json {
        output::line(&Value::Object(all).to_string());
    } else if rows.is_empty() {
        output::line("no dead letters");
    } else {
        let table = output::table(
            &["SERVICE", "FROM", "SEQ", "TYPE", "ID", "AT", "REASON"],
            &rows,
        );
        output::line(table.trim_end());
    }
    Ok(ExitCode::SUCCESS)
}

async fn tail(args: TailArgs) -> Result<ExitCode, BoxError> {
    // Fails at once, naming the directory, when no cluster runs there.
    ClusterFile::read(&args.dir.data_dir)?.install_identity()?;
    let client = hotel_common::tls::internal::reqwest_client()
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_millis(WAIT_MS) + Duration::from_secs(5))
        .build()?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Value>(256);
    for producer in PRODUCERS {
        let (client, tx, dir) = (client.clone(), tx.clone(), args.dir.data_dir.clone());
        let from_start = args.from_start;
        tokio::spawn(async move { follow(&client, &dir, producer, from_start, tx).await });
    }
    drop(tx);
    loop {
        tokio::select! {
            event = rx.recv() => {
                let Some(event) = event else { break };
                let kind = event["type"].as_str().unwrap_or_default();
                if args.kind.as_deref().is_some_and(|p| !matches(p, kind)) {
                    continue;
                }
                if args.json {
                    output::line(&event.to_string());
                } else {
                    let field = |k: &str| event[k].as_str().unwrap_or("-").to_owned();
                    output::line(&format!(
                        "{}  {:<24}  {}  {}  {}",
                        field("time"), kind, field("subject"), field("source"), field("id")
                    ));
                }
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Follows one producer's feed forever, sending each event's JSON to `tx`.
async fn follow(
    client: &reqwest::Client,
    data_dir: &Path,
    producer: &str,
    from_start: bool,
    tx: tokio::sync::mpsc::Sender<Value>,
) {
    let mut after: Option<i64> = from_start.then_some(0);
    let mut turn = 0usize;
    loop {
        let Some(base) = instance_url(data_dir, producer, turn) else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        // The head first (a read past any position answers it), so that only events
        // published from now on are shown.
        let (from, wait) = match after {
            Some(a) => (a, WAIT_MS),
            None => (i64::MAX, 0),
        };
        let page: Result<Value, reqwest::Error> = async {
            client
                .get(format!("{base}/events"))
                .query(&[
                    ("after", from.to_string()),
                    ("limit", "100".to_owned()),
                    ("wait_ms", wait.to_string()),
                    ("consumer", "hotel-events-tail".to_owned()),
                ])
                .send()
                .await?
                .error_for_status()?
                .json()
                .await
        }
        .await;
        let Ok(page) = page else {
            turn += 1;
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        if after.is_none() {
            after = page["head"].as_i64();
            continue;
        }
        for e in page["events"].as_array().into_iter().flatten() {
            after = e["seq"].as_i64().or(after);
            let payload = e["payload"].as_str().unwrap_or_default();
            let event = serde_json::from_str(payload)
                .unwrap_or_else(|_| serde_json::json!({"type": "malformed", "payload": payload}));
            if tx.send(event).await.is_err() {
                return;
            }
        }
    }
}

/// The URL of the `turn`-th (modulo) running instance of `service` in `cluster.json`.
fn instance_url(data_dir: &Path, service: &str, turn: usize) -> Option<String> {
    let file = ClusterFile::read(data_dir).ok()?;
    let live: Vec<String> = file
        .instances
        .iter()
        .filter(|i| i.service == service && i.state == "running")
        .filter_map(|i| {
            i.address
                .as_ref()
                .map(hotel_common::tls::internal::base_url)
        })
        .collect();
    (!live.is_empty()).then(|| live[turn % live.len()].clone())
}

/// Whether `text` matches `pattern`, where `*` matches any run of characters.
pub fn matches(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn type_patterns_match_with_stars() {
        assert!(matches("hotel.booking.*", "hotel.booking.created"));
        assert!(matches("hotel.*.deleted", "hotel.customer.deleted"));
        assert!(matches("*", "anything"));
        assert!(matches("hotel.room.updated", "hotel.room.updated"));
        assert!(!matches("hotel.booking.*", "hotel.customer.deleted"));
        assert!(!matches("hotel.room.updated", "hotel.room.updated2"));
        assert!(!matches("hotel.*.created", "hotel.booking.cancelled"));
    }
}
