//! The consumer over a real SQLite file, fed by an in-memory [`Source`] (the seam a
//! broker transport plugs into): each event applied once however often it is delivered
//! and however many consumers compete, bad events dead-lettered without blocking, and a
//! failing effect retried, never skipped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use futures::future::BoxFuture;
use hotel_events::{
    Batch, CloudEvent, Delivery, EventMetrics, EventSettings, HandleError, Handler, Producer,
    Progress, Source, Subscription,
    consumer::{Consumer, Running, position},
    outbox::{self, Stored},
};
use hotel_testkit::{
    eventually,
    postgres::{Backend, TestDb},
};
use sqlx::{AnyConnection, AnyPool};
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

/// A feed held in memory: what a producer's outbox would serve.
#[derive(Default)]
struct MemoryFeed(Mutex<Vec<Stored>>);

impl MemoryFeed {
    fn push(&self, payload: String) {
        let mut v = self.0.lock().unwrap();
        let seq = i64::try_from(v.len()).unwrap() + 1;
        v.push(Stored { seq, payload });
    }
}

impl Source for MemoryFeed {
    fn read<'a>(
        &'a self,
        after: i64,
        limit: u32,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Batch, String>> {
        Box::pin(async move {
            let (batch, head) = {
                let v = self.0.lock().unwrap();
                let batch: Vec<Delivery> = v
                    .iter()
                    .filter(|d| d.seq > after)
                    .take(limit as usize)
                    .map(|d| Delivery {
                        seq: d.seq,
                        payload: d.payload.clone(),
                        receipt: None,
                    })
                    .collect();
                (batch, i64::try_from(v.len()).unwrap())
            };
            if batch.is_empty() {
                tokio::time::sleep(wait.min(Duration::from_millis(20))).await;
            }
            Ok(Batch {
                deliveries: batch,
                progress: Progress::Head(head),
            })
        })
    }
}

/// Adds each event's `data.n` to a running total in the consumer's database; fails with
/// a database error while `fail` is above zero (counting down).
struct Sum {
    fail: AtomicUsize,
}

impl Handler for Sum {
    fn handle<'a>(
        &'a self,
        conn: &'a mut AnyConnection,
        event: &'a CloudEvent,
    ) -> BoxFuture<'a, Result<(), HandleError>> {
        Box::pin(async move {
            event.expect_type("test.added")?;
            if self
                .fail
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(HandleError::Database(sqlx::Error::PoolTimedOut));
            }
            let n = event.data["n"]
                .as_i64()
                .ok_or_else(|| HandleError::Reject("no n".into()))?;
            sqlx::query("UPDATE total SET n = n + $1")
                .bind(n)
                .execute(&mut *conn)
                .await?;
            Ok(())
        })
    }
}

/// The consumer's database on `db`'s backend, with the bus's tables and `total`.
async fn database(db: &TestDb) -> AnyPool {
    let location = match db.url() {
        Some(url) => hotel_common::db::Location::Postgres(url),
        None => hotel_common::db::Location::Sqlite(db.dir.path().join("consumer.db")),
    };
    let pool = hotel_common::db::open(&location, &hotel_common::db::DatabaseSettings::default())
        .await
        .unwrap();
    outbox::create_tables(&pool).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS total (n BIGINT NOT NULL); INSERT INTO total VALUES (0);",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool
}

/// Writes an event through a real producer (into a scratch outbox) and returns its JSON.
async fn event(producer: &Producer, pool: &AnyPool, kind: &str, n: i64) -> String {
    let mut conn = pool.acquire().await.unwrap();
    let e = producer
        .publish(&mut conn, kind, n, &serde_json::json!({ "n": n }))
        .await
        .unwrap();
    serde_json::to_string(&e).unwrap()
}

fn consumer(
    name: &str,
    pool: &AnyPool,
    source: Arc<MemoryFeed>,
    handler: Arc<Sum>,
    metrics: Arc<EventMetrics>,
) -> Consumer {
    Consumer {
        service: "test",
        instance: name.to_owned(),
        pool: pool.clone(),
        subscription: Subscription {
            producer: "producer",
            handler,
        },
        source,
        settings: EventSettings {
            batch: 7,
            retry_backoff: Duration::from_millis(10),
            ..EventSettings::default()
        },
        metrics,
    }
}

async fn total(pool: &AnyPool) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT n FROM total")
        .fetch_one(pool)
        .await
        .unwrap();
    n
}

#[tokio::test]
async fn competing_consumers_apply_each_event_once_and_dead_letter_what_they_cannot_apply_on_sqlite()
 {
    competing_consumers(Backend::Sqlite).await;
}

#[tokio::test]
async fn competing_consumers_apply_each_event_once_and_dead_letter_what_they_cannot_apply_on_postgres()
 {
    competing_consumers(Backend::Postgres).await;
}

async fn competing_consumers(backend: Backend) {
    let Some(dir) = TestDb::new(backend, "events-consumer").await else {
        return;
    };
    let pool = database(&dir).await;
    let Some(scratch_dir) = TestDb::new(backend, "events-scratch").await else {
        return;
    };
    let scratch = database(&scratch_dir).await;
    let producer = Producer::new("producer", "producer-1", EventMetrics::new());
    let feed = Arc::new(MemoryFeed::default());
    let mut want = 0;
    for n in 1..=50 {
        let payload = event(&producer, &scratch, "test.added", n).await;
        feed.push(payload.clone());
        want += n;
        if n % 10 == 0 {
            // Delivered again later, as a relay that published twice would.
            feed.push(payload);
        }
    }
    feed.push("{not an event".into());
    feed.push(event(&producer, &scratch, "test.unknown", 1000).await);
    feed.push(event(&producer, &scratch, "test.added", 1).await);
    want += 1;
    let head = i64::try_from(feed.0.lock().unwrap().len()).unwrap();

    // Three replicas of the consuming service on one database, and an effect that fails
    // twice (retried, not skipped).
    let handler = Arc::new(Sum {
        fail: AtomicUsize::new(2),
    });
    let metrics: Vec<_> = (0..3).map(|_| EventMetrics::new()).collect();
    let mut running = Running::default();
    for (i, m) in metrics.iter().enumerate() {
        running.spawn(consumer(
            &format!("test-{i}"),
            &pool,
            feed.clone(),
            handler.clone(),
            m.clone(),
        ));
    }
    eventually(
        Duration::from_secs(30),
        "the consumers to reach the head",
        || async { (position(&pool, "producer").await.ok()? == head).then_some(()) },
    )
    .await
    .unwrap();
    drop(running);

    assert_eq!(total(&pool).await, want, "every event applied exactly once");
    let (inbox,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM event_inbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(inbox, 51, "one inbox row per applied event");
    let dead: Vec<(String,)> = sqlx::query_as("SELECT reason FROM event_dead_letters ORDER BY seq")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert!(dead[0].0.starts_with("malformed"), "{dead:?}");
    assert!(dead[1].0.contains("unknown event type"), "{dead:?}");
    let statuses: Vec<_> = metrics
        .iter()
        .map(|m| m.status()["producer"].clone())
        .collect();
    let applied: u64 = statuses.iter().map(|s| s.applied).sum();
    let duplicates: u64 = statuses.iter().map(|s| s.duplicates).sum();
    let dead_letters: u64 = statuses.iter().map(|s| s.dead_letters).sum();
    assert_eq!(
        (applied, duplicates, dead_letters),
        (51, 5, 2),
        "{statuses:?}"
    );
    let text = metrics[0].encode();
    assert!(text.contains("hotel_events_consumer_lag"), "{text}");
}
