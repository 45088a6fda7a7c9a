//! Turns the recorded requests into the per-window table and the failover summary that
//! the issue asks for: errors, slow requests, how long the failed upstream still got
//! requests, the worst throughput dip and when the restored upstream came back.

use std::{fmt::Write as _, time::Duration};

use crate::{
    load::{STATUS_TRANSPORT, STATUS_UNFINISHED, Sample},
    watch::Arrival,
};

/// Upstream numbers tracked per window (`u1` .. `u7`; 0 is "no header").
pub const MAX_UPSTREAMS: usize = 8;

/// When the failure was injected and lifted, in microseconds since the load started.
#[derive(Debug, Clone, Copy, Default)]
pub struct Events {
    /// When the fail command was launched.
    pub fail_us: Option<u64>,
    /// When the restore command had finished (the instance is back and listening).
    pub restore_us: Option<u64>,
    /// The upstream number that was failed (`u2` -> 2), if known.
    pub failed_upstream: Option<u8>,
}

/// Requests that finished inside one window of time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Window {
    /// Window start, in microseconds since the load started.
    pub start_us: u64,
    /// Requests that finished in this window.
    pub requests: u32,
    /// Of those, the ones without a 2xx answer.
    pub errors: u32,
    /// Median latency of those requests, in microseconds.
    pub p50_us: u64,
    /// 99th percentile latency, in microseconds.
    pub p99_us: u64,
    /// Slowest request, in microseconds.
    pub max_us: u64,
    /// Answers per upstream number.
    pub by_upstream: [u32; MAX_UPSTREAMS],
}

/// What the whole run amounts to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Requests sent.
    pub requests: u64,
    /// Requests without a 2xx answer (all kinds).
    pub errors: u64,
    /// Requests that got no HTTP answer at all.
    pub transport_errors: u64,
    /// Requests still unanswered when the grace period ended.
    pub unfinished: u64,
    /// Requests slower than the slow threshold.
    pub slow: u64,
    /// Latency percentiles over every request, in microseconds: p50, p99, p99.9, max.
    pub latency_us: [u64; 4],
    /// Median requests per window before the failure: the reference for dips.
    pub baseline_per_window: u32,
    /// Fewest requests in one full window from the failure on, as a share of the
    /// baseline (100 = no dip), and when that window started (µs).
    pub worst_window: Option<(f64, u64)>,
    /// Full windows from the failure on with throughput down more than 25 %.
    pub windows_down_25: u32,
    /// Microseconds from the failure to the last moment new requests reached the failed
    /// upstream (from the port watch), and how many connections got them; `(0, 0)` when
    /// watched and none did, `None` when not watched.
    pub reached_failed: Option<(u64, u32)>,
    /// Microseconds from the restore to the first answer, for a request sent after the
    /// restore, from the restored upstream.
    pub back_in_rotation_us: Option<u64>,
    /// Share (percent) of answers the restored upstream gave in the last 2 s.
    pub restored_share_pct: Option<f64>,
}

/// Groups requests into windows by the moment they finished.
pub fn windows(samples: &[Sample], window: Duration) -> Vec<Window> {
    let width = u64::try_from(window.as_micros()).unwrap_or(u64::MAX).max(1);
    let Some(last_end) = samples.iter().map(Sample::end_us).max() else {
        return Vec::new();
    };
    let count = usize::try_from(last_end / width + 1).unwrap_or(usize::MAX);
    let mut latencies: Vec<Vec<u64>> = vec![Vec::new(); count];
    let mut out: Vec<Window> = (0..count)
        .map(|i| Window {
            start_us: i as u64 * width,
            ..Window::default()
        })
        .collect();
    for s in samples {
        let i = usize::try_from(s.end_us() / width).unwrap_or(usize::MAX);
        let (Some(w), Some(lat)) = (out.get_mut(i), latencies.get_mut(i)) else {
            continue;
        };
        w.requests += 1;
        if s.is_error() {
            w.errors += 1;
        }
        if let Some(n) = w.by_upstream.get_mut(usize::from(s.upstream)) {
            *n += 1;
        }
        lat.push(s.latency_us);
    }
    for (w, mut lat) in out.iter_mut().zip(latencies) {
        lat.sort_unstable();
        w.p50_us = percentile(&lat, 50.0);
        w.p99_us = percentile(&lat, 99.0);
        w.max_us = lat.last().copied().unwrap_or(0);
    }
    out
}

/// The `p`th percentile of sorted values (nearest rank); 0 when empty.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    // The small epsilon keeps 99.9 % of 1000 at rank 999 despite float rounding.
    let rank = ((p / 100.0) * sorted.len() as f64 - 1e-9).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Computes the summary.
///
/// `duration` is when the load stopped starting requests: windows after it are partial
/// and never count as dips. `slow` is the threshold for a slow request.
pub fn summarize(
    samples: &[Sample],
    windows: &[Window],
    window: Duration,
    duration: Duration,
    slow: Duration,
    events: &Events,
    arrivals: Option<&[Arrival]>,
) -> Summary {
    let width = u64::try_from(window.as_micros()).unwrap_or(u64::MAX).max(1);
    let duration_us = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
    let slow_us = u64::try_from(slow.as_micros()).unwrap_or(u64::MAX);

    let mut lat: Vec<u64> = samples.iter().map(|s| s.latency_us).collect();
    lat.sort_unstable();
    let mut summary = Summary {
        requests: samples.len() as u64,
        errors: samples.iter().filter(|s| s.is_error()).count() as u64,
        transport_errors: samples
            .iter()
            .filter(|s| s.status == STATUS_TRANSPORT)
            .count() as u64,
        unfinished: samples
            .iter()
            .filter(|s| s.status == STATUS_UNFINISHED)
            .count() as u64,
        slow: samples.iter().filter(|s| s.latency_us > slow_us).count() as u64,
        latency_us: [
            percentile(&lat, 50.0),
            percentile(&lat, 99.0),
            percentile(&lat, 99.9),
            lat.last().copied().unwrap_or(0),
        ],
        ..Summary::default()
    };

    // Only full windows, and none of the first second (connections still opening).
    let full = |w: &&Window| w.start_us + width <= duration_us;
    let warm_from = 1_000_000u64.min(events.fail_us.unwrap_or(u64::MAX) / 2);
    let fail_us = events.fail_us.unwrap_or(warm_from);
    let mut before: Vec<u32> = windows
        .iter()
        .filter(full)
        .filter(|w| w.start_us >= warm_from && w.start_us + width <= fail_us.max(warm_from + width))
        .map(|w| w.requests)
        .collect();
    before.sort_unstable();
    summary.baseline_per_window = before.get(before.len() / 2).copied().unwrap_or(0);

    if summary.baseline_per_window > 0 {
        let baseline = f64::from(summary.baseline_per_window);
        let first = fail_us / width * width;
        for w in windows.iter().filter(full).filter(|w| w.start_us >= first) {
            let pct = 100.0 * f64::from(w.requests) / baseline;
            if summary.worst_window.is_none_or(|(worst, _)| pct < worst) {
                summary.worst_window = Some((pct, w.start_us));
            }
            if pct < 75.0 {
                summary.windows_down_25 += 1;
            }
        }
    }

    if let (Some(fail), Some(arrivals)) = (events.fail_us, arrivals) {
        let until = events.restore_us.unwrap_or(u64::MAX);
        let late: Vec<&Arrival> = arrivals
            .iter()
            .filter(|a| a.at_us >= fail && a.at_us < until)
            .collect();
        // Watched and nothing arrived: the proxy never sent the failed upstream a request.
        summary.reached_failed = Some(late.last().map_or((0, 0), |last| {
            (last.at_us - fail, late.iter().map(|a| a.connections).sum())
        }));
    }

    if let (Some(restore), Some(up)) = (events.restore_us, events.failed_upstream) {
        summary.back_in_rotation_us = samples
            .iter()
            .filter(|s| s.upstream == up && s.start_us >= restore && !s.is_error())
            .map(|s| s.end_us() - restore)
            .min();
        let tail_from = duration_us.saturating_sub(2_000_000).max(restore);
        let tail: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.start_us >= tail_from && s.end_us() <= duration_us)
            .collect();
        if !tail.is_empty() {
            let mine = tail.iter().filter(|s| s.upstream == up).count();
            summary.restored_share_pct = Some(100.0 * mine as f64 / tail.len() as f64);
        }
    }
    summary
}

/// The per-window table. Unless `all`, only windows near the events are printed (half a
/// second before to two seconds after each), the rest elided.
pub fn render_windows(windows: &[Window], window: Duration, events: &Events, all: bool) -> String {
    let width = u64::try_from(window.as_micros()).unwrap_or(u64::MAX).max(1);
    let near = |t: u64| {
        [events.fail_us, events.restore_us]
            .iter()
            .flatten()
            .any(|&e| t + 500_000 >= e && t <= e + 2_000_000)
    };
    let used: Vec<usize> = (1..MAX_UPSTREAMS)
        .filter(|&u| windows.iter().any(|w| w.by_upstream[u] > 0))
        .collect();
    let mut out = String::new();
    let _ = write!(
        out,
        "{:>7} {:>6} {:>5} {:>8} {:>8} {:>8}",
        "t(s)", "reqs", "err", "p50ms", "p99ms", "maxms"
    );
    for u in &used {
        let _ = write!(out, " {:>6}", format!("u{u}"));
    }
    out.push('\n');
    let mut elided = false;
    let mut marks: Vec<(u64, &str)> = Vec::new();
    if let Some(t) = events.fail_us {
        marks.push((t, "failure injected"));
    }
    if let Some(t) = events.restore_us {
        marks.push((t, "upstream restored"));
    }
    for w in windows {
        for (t, what) in &marks {
            if *t >= w.start_us && *t < w.start_us + width {
                let _ = writeln!(out, "--- {:.3} s: {what}", *t as f64 / 1e6);
            }
        }
        if !all && !near(w.start_us) {
            if !elided {
                out.push_str("    ...\n");
                elided = true;
            }
            continue;
        }
        elided = false;
        let _ = write!(
            out,
            "{:>7.1} {:>6} {:>5} {:>8.2} {:>8.2} {:>8.2}",
            w.start_us as f64 / 1e6,
            w.requests,
            w.errors,
            w.p50_us as f64 / 1e3,
            w.p99_us as f64 / 1e3,
            w.max_us as f64 / 1e3
        );
        for &u in &used {
            let _ = write!(out, " {:>6}", w.by_upstream[u]);
        }
        out.push('\n');
    }
    out
}

/// The per-window table as CSV, every window.
pub fn windows_csv(windows: &[Window]) -> String {
    let mut out = String::from("t_s,requests,errors,p50_ms,p99_ms,max_ms");
    for u in 1..MAX_UPSTREAMS {
        let _ = write!(out, ",u{u}");
    }
    out.push('\n');
    for w in windows {
        let _ = write!(
            out,
            "{:.1},{},{},{:.3},{:.3},{:.3}",
            w.start_us as f64 / 1e6,
            w.requests,
            w.errors,
            w.p50_us as f64 / 1e3,
            w.p99_us as f64 / 1e3,
            w.max_us as f64 / 1e3
        );
        for u in 1..MAX_UPSTREAMS {
            let _ = write!(out, ",{}", w.by_upstream[u]);
        }
        out.push('\n');
    }
    out
}

fn ms(us: u64) -> String {
    format!("{:.1}", us as f64 / 1e3)
}

fn opt_ms(us: Option<u64>) -> String {
    us.map_or_else(|| "-".to_owned(), ms)
}

/// Header of [`summary_tsv_row`].
pub const SUMMARY_TSV_HEADER: &str = "target\tmode\treq/s\terrors\tslow>250ms\tp99ms\tmaxms\tworst100ms%\twindows<75%\treached_failed_ms\treached_conns\tback_ms\trestored_share%";

/// One tab-separated summary row, for the script that builds the cross-proxy table.
pub fn summary_tsv_row(label: &str, mode: &str, s: &Summary, duration: Duration) -> String {
    let rate = s.requests as f64 / duration.as_secs_f64().max(1e-9);
    format!(
        "{label}\t{mode}\t{rate:.0}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
        s.errors,
        s.slow,
        ms(s.latency_us[1]),
        ms(s.latency_us[3]),
        s.worst_window
            .map_or_else(|| "-".to_owned(), |(p, _)| format!("{p:.0}")),
        s.windows_down_25,
        opt_ms(s.reached_failed.map(|(t, _)| t)),
        s.reached_failed
            .map_or_else(|| "-".to_owned(), |(_, c)| c.to_string()),
        opt_ms(s.back_in_rotation_us),
        s.restored_share_pct
            .map_or_else(|| "-".to_owned(), |p| format!("{p:.0}")),
    )
}

/// The human summary printed under the window table.
pub fn render_summary(label: &str, s: &Summary, duration: Duration, slow: Duration) -> String {
    let mut out = String::new();
    let rate = s.requests as f64 / duration.as_secs_f64().max(1e-9);
    let _ = writeln!(
        out,
        "{label}: {} requests ({rate:.0}/s), {} errors ({} without an HTTP answer, {} unfinished), {} slower than {}",
        s.requests,
        s.errors,
        s.transport_errors,
        s.unfinished,
        s.slow,
        humantime::format_duration(slow)
    );
    let _ = writeln!(
        out,
        "  latency ms: p50 {} p99 {} p99.9 {} max {}",
        ms(s.latency_us[0]),
        ms(s.latency_us[1]),
        ms(s.latency_us[2]),
        ms(s.latency_us[3])
    );
    if let Some((pct, at)) = s.worst_window {
        let _ = writeln!(
            out,
            "  worst window: {pct:.0} % of the {} requests/window baseline at {:.1} s; {} windows down more than 25 %",
            s.baseline_per_window,
            at as f64 / 1e6,
            s.windows_down_25
        );
    }
    if let Some((t, conns)) = s.reached_failed {
        let _ = writeln!(
            out,
            "  failed upstream still got new requests until +{} ms ({conns} connections got bytes after the failure)",
            ms(t)
        );
    }
    match (s.back_in_rotation_us, s.restored_share_pct) {
        (Some(t), share) => {
            let _ = writeln!(
                out,
                "  restored upstream answered again {} ms after the restore; share of the last 2 s: {}",
                ms(t),
                share.map_or_else(|| "-".to_owned(), |p| format!("{p:.0} %"))
            );
        }
        (None, Some(_)) => {
            let _ = writeln!(
                out,
                "  restored upstream never answered again during the run"
            );
        }
        (None, None) => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(start_ms: u64, latency_ms: u64, upstream: u8) -> Sample {
        Sample {
            start_us: start_ms * 1000,
            latency_us: latency_ms * 1000,
            status: 200,
            upstream,
        }
    }

    #[test]
    fn nearest_rank_percentiles_pick_the_expected_element() {
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&v, 50.0), 500);
        assert_eq!(percentile(&v, 99.0), 990);
        assert_eq!(percentile(&v, 99.9), 999);
        assert_eq!(percentile(&v, 100.0), 1000);
        assert_eq!(percentile(&[], 50.0), 0);
        assert_eq!(percentile(&[7], 0.0), 7);
    }

    #[test]
    fn requests_fall_into_the_window_in_which_they_finished() {
        let samples = vec![ok(0, 50, 1), ok(60, 50, 2), ok(150, 10, 2), ok(100, 120, 3)];
        let w = windows(&samples, Duration::from_millis(100));
        assert_eq!(w.len(), 3);
        assert_eq!(w[0].requests, 1);
        assert_eq!(w[1].requests, 2);
        assert_eq!(w[1].by_upstream[2], 2);
        assert_eq!(w[2].requests, 1);
        assert_eq!(w[2].max_us, 120_000);
    }

    /// Two seconds of steady load at 10 requests per 100 ms, a failure at 1.2 s that
    /// empties one window, upstream 2 absent until restored at 1.5 s, then round robin.
    fn failover_run() -> (Vec<Sample>, Events) {
        let mut samples = Vec::new();
        for ms in (0..2000).step_by(10) {
            if (1200..1300).contains(&ms) {
                continue;
            }
            let upstream = if !(1200..1500).contains(&ms) {
                [1, 2, 3][(ms / 10 % 3) as usize]
            } else {
                1
            };
            samples.push(ok(ms, 1, upstream));
        }
        samples.push(Sample {
            start_us: 1_250_000,
            latency_us: 400_000,
            status: 502,
            upstream: 0,
        });
        let events = Events {
            fail_us: Some(1_200_000),
            restore_us: Some(1_500_000),
            failed_upstream: Some(2),
        };
        (samples, events)
    }

    #[test]
    fn summary_finds_the_dip_the_errors_and_the_return_of_the_restored_upstream() {
        let (samples, events) = failover_run();
        let window = Duration::from_millis(100);
        let w = windows(&samples, window);
        let arrivals = [
            Arrival {
                at_us: 1_100_000,
                connections: 3,
            },
            Arrival {
                at_us: 1_230_000,
                connections: 2,
            },
            Arrival {
                at_us: 1_280_000,
                connections: 1,
            },
            Arrival {
                at_us: 1_600_000,
                connections: 9,
            },
        ];
        let s = summarize(
            &samples,
            &w,
            window,
            Duration::from_secs(2),
            Duration::from_millis(250),
            &events,
            Some(&arrivals),
        );
        assert_eq!(s.errors, 1);
        assert_eq!(s.slow, 1);
        assert_eq!(s.baseline_per_window, 10);
        let (worst, at) = s.worst_window.expect("a dip");
        assert!(worst < 1.0, "the empty window is the worst: {worst}");
        assert_eq!(at, 1_200_000);
        assert_eq!(s.windows_down_25, 1);
        assert_eq!(
            s.reached_failed,
            Some((80_000, 3)),
            "only arrivals between failure and restore count"
        );
        // First request to upstream 2 sent after 1.5 s is the one at 1.51 s, done at 1.511.
        assert_eq!(s.back_in_rotation_us, Some(11_000));
        let share = s.restored_share_pct.expect("a share");
        assert!((share - 100.0 / 3.0).abs() < 3.0, "{share}");
    }

    #[test]
    fn a_run_without_failure_has_no_failover_figures() {
        let samples: Vec<Sample> = (0..2000).step_by(10).map(|ms| ok(ms, 1, 1)).collect();
        let window = Duration::from_millis(100);
        let w = windows(&samples, window);
        let s = summarize(
            &samples,
            &w,
            window,
            Duration::from_secs(2),
            Duration::from_millis(250),
            &Events::default(),
            None,
        );
        assert_eq!(s.errors, 0);
        assert_eq!(s.reached_failed, None);
        assert_eq!(s.back_in_rotation_us, None);
        assert_eq!(s.windows_down_25, 0);
    }

    #[test]
    fn the_table_marks_events_and_elides_quiet_windows() {
        let (samples, events) = failover_run();
        let window = Duration::from_millis(100);
        let w = windows(&samples, window);
        let table = render_windows(&w, window, &events, false);
        assert!(table.contains("--- 1.200 s: failure injected"), "{table}");
        assert!(table.contains("--- 1.500 s: upstream restored"), "{table}");
        assert!(
            table.contains("    ..."),
            "windows before 0.7 s are elided: {table}"
        );
        let csv = windows_csv(&w);
        assert_eq!(csv.lines().count(), w.len() + 1);
        let row = summary_tsv_row(
            "x",
            "stop",
            &summarize(
                &samples,
                &w,
                window,
                Duration::from_secs(2),
                Duration::from_millis(250),
                &events,
                None,
            ),
            Duration::from_secs(2),
        );
        assert_eq!(
            row.split('\t').count(),
            SUMMARY_TSV_HEADER.split('\t').count()
        );
    }
}
