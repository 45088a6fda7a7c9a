//! Just enough of the Prometheus/OpenMetrics text format to read the gateway's
//! `/metrics`: samples (name, labels, value) and quantiles from histogram buckets.

use std::collections::BTreeMap;

/// One sample line: `name{label="value",...} 12.5`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name, with its suffix (`_total`, `_bucket`).
    pub name: String,
    /// The labels.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// The value of label `key`, or `""`.
    pub fn label(&self, key: &str) -> &str {
        self.labels.get(key).map_or("", String::as_str)
    }
}

/// Parses every sample line; comments, blank lines and lines that do not parse are
/// skipped (a newer gateway may add what this reader does not know).
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let split = line.find(['{', ' '])?;
    let (name, rest) = line.split_at(split);
    let (labels, rest) = match rest.strip_prefix('{') {
        Some(body) => parse_labels(body)?,
        None => (BTreeMap::new(), rest),
    };
    let value = match rest.split_whitespace().next()? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// `key="value",...}` (after the `{`): the labels and what follows the `}`.
fn parse_labels(body: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    let mut rest = body;
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i + 1,
                '\\' => {
                    let (_, escaped) = chars.next()?;
                    value.push(if escaped == 'n' { '\n' } else { escaped });
                }
                c => value.push(c),
            }
        };
        labels.insert(key.trim().to_owned(), value);
        rest = &after[end..];
    }
}

/// The `q` quantile (0 to 1) of a histogram given as cumulative counts by upper bound
/// (`le`, sorted ascending, `+Inf` last), interpolating linearly inside the bucket as
/// Prometheus' `histogram_quantile` does. `None` without observations. A quantile in the
/// `+Inf` bucket answers the highest finite bound.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let in_bucket = count - lower.1;
            if in_bucket <= 0.0 {
                return Some(le);
            }
            return Some(lower.0 + (le - lower.0) * (rank - lower.1) / in_bucket);
        }
        lower = (le, count);
    }
    Some(lower.0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_labels_with_escapes_and_values_and_skips_the_rest() {
        let text = "# HELP x y\n# TYPE gateway_upstream_attempts counter\n\
            gateway_upstream_attempts_total{service=\"room\",instance=\"room-1\",outcome=\"success\"} 12\n\
            gateway_x_bucket{route=\"/a \\\"q\\\"\",le=\"+Inf\"} 3.5\n\
            gateway_config_version 2\n\
            broken{label=\"unterminated 1\n\
            # EOF\n";
        let s = parse(text);
        assert_eq!(s.len(), 3, "{s:?}");
        assert_eq!(s[0].name, "gateway_upstream_attempts_total");
        assert_eq!(s[0].label("instance"), "room-1");
        assert_eq!(s[0].value, 12.0);
        assert_eq!(s[1].label("route"), "/a \"q\"");
        assert_eq!(s[1].label("le"), "+Inf");
        assert_eq!(s[1].value, 3.5);
        assert!(s[2].labels.is_empty());
        assert_eq!(s[2].value, 2.0);
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        // 10 observations: 5 up to 1 ms, 4 more up to 2 ms, 1 more up to 4 ms.
        let b = [
            (0.001, 5.0),
            (0.002, 9.0),
            (0.004, 10.0),
            (f64::INFINITY, 10.0),
        ];
        assert!((quantile(0.5, &b).unwrap() - 0.001).abs() < 1e-9);
        let p90 = quantile(0.9, &b).unwrap();
        assert!((p90 - 0.002).abs() < 1e-9, "{p90}");
        let p99 = quantile(0.99, &b).unwrap();
        assert!(p99 > 0.002 && p99 <= 0.004, "{p99}");
        assert_eq!(quantile(0.5, &[(0.001, 0.0), (f64::INFINITY, 0.0)]), None);
        // Everything beyond the last bound: the highest finite bound.
        assert_eq!(
            quantile(0.99, &[(0.001, 0.0), (f64::INFINITY, 4.0)]),
            Some(0.001)
        );
    }
}
