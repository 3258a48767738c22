//! `GET /metrics` on a real three-node cluster: every line of every node's answer is checked
//! against the Prometheus text format's grammar (version 0.0.4), the documented families
//! are there with their HELP and TYPE, counters move after writes and after a failover, and
//! nobody reads them without a token.
//!
//! The check is written here against the format's grammar rather than done by the
//! `prometheus-parse` crate: that parser matches a sample's labels with `\{[^}]+\}`, so a
//! label value holding `}` (every `route="/v1/kv/{key}"`) makes the whole line silently
//! ignored, and it skips any line it cannot parse instead of refusing it, so it could not
//! fail on a malformed exposition.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;

/// One sample line: the series name, its labels, its value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// One metric family: what its HELP and TYPE lines said and its samples, in order.
#[derive(Debug, Default)]
struct FamilyText {
    help: Option<String>,
    kind: Option<String>,
    samples: Vec<Sample>,
}

fn is_name(text: &str, colons: bool) -> bool {
    let mut chars = text.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colons && c == ':'));
    first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colons && c == ':'))
}

/// A sample value as the format spells it (Go's ParseFloat: decimals, exponents, NaN, ±Inf).
fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ if text.chars().all(|c| c.is_ascii_digit() || "+-.eE".contains(c)) => {
            text.parse::<f64>().map_err(|e| format!("bad value {text:?}: {e}"))
        }
        _ => Err(format!("bad value {text:?}")),
    }
}

/// `name{label="value",...} value [timestamp]`, with the label value escapes `\\`, `\"`, `\n`.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("a sample needs a value")?;
    let name = &line[..name_end];
    if !is_name(name, true) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(body) = rest.strip_prefix('{') {
        // Label name, `=`, a quoted value; then `,` or `}` (a trailing `,` is allowed).
        let mut pos = 0;
        loop {
            if body[pos..].starts_with('}') {
                pos += 1;
                break;
            }
            let eq = body[pos..].find('=').ok_or("a label needs `=`")? + pos;
            let label = &body[pos..eq];
            if !is_name(label, false) || label.starts_with("__") {
                return Err(format!("bad label name {label:?}"));
            }
            pos = eq + 1;
            if !body[pos..].starts_with('"') {
                return Err(format!("label {label} needs a quoted value"));
            }
            pos += 1;
            let mut value = String::new();
            let mut chars = body[pos..].char_indices();
            pos = loop {
                let (i, c) = chars.next().ok_or("unterminated label value")?;
                match c {
                    '"' => break pos + i + 1,
                    '\\' => match chars.next().ok_or("dangling escape")?.1 {
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        'n' => value.push('\n'),
                        other => return Err(format!("bad escape \\{other}")),
                    },
                    c => value.push(c),
                }
            };
            if labels.insert(label.to_string(), value).is_some() {
                return Err(format!("label {label} twice"));
            }
            match body[pos..].chars().next() {
                Some(',') => pos += 1,
                Some('}') => {
                    pos += 1;
                    break;
                }
                other => return Err(format!("expected `,` or `}}` after a label, found {other:?}")),
            }
        }
        rest = &body[pos..];
    }
    let fields: Vec<&str> = rest.strip_prefix(' ').ok_or("a space must precede the value")?.split(' ').collect();
    let value = match fields.as_slice() {
        [value] => parse_value(value)?,
        [value, timestamp] => {
            timestamp.parse::<i64>().map_err(|_| format!("bad timestamp {timestamp:?}"))?;
            parse_value(value)?
        }
        _ => return Err(format!("expected `value [timestamp]`, found {rest:?}")),
    };
    Ok(Sample { name: name.to_string(), labels, value })
}

/// The family a series belongs to, given the declared families (histogram series end in
/// `_bucket`, `_sum`, `_count`).
fn family_of<'a>(series: &'a str, families: &BTreeMap<String, FamilyText>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = series.strip_suffix(suffix) {
            if families.get(base).is_some_and(|f| matches!(f.kind.as_deref(), Some("histogram" | "summary"))) {
                return base;
            }
        }
    }
    series
}

/// Parses a whole exposition strictly: every line is HELP, TYPE, a comment, empty or a
/// valid sample; HELP and TYPE at most once per family and before its samples; a family's
/// samples in one group; histograms with cumulative buckets ending in `le="+Inf"` equal to
/// `_count`; counters not negative.
fn parse_exposition(text: &str) -> Result<BTreeMap<String, FamilyText>, String> {
    if !text.ends_with('\n') {
        return Err("the exposition must end with a newline".into());
    }
    let mut families: BTreeMap<String, FamilyText> = BTreeMap::new();
    let mut finished: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    for (number, line) in text.lines().enumerate() {
        let at = |error: String| format!("line {}: {error}: {line:?}", number + 1);
        if line.is_empty() {
            continue;
        }
        let family = if let Some(comment) = line.strip_prefix('#') {
            let words: Vec<&str> = comment.trim_start().splitn(3, ' ').collect();
            match words.as_slice() {
                ["HELP", name, help] => {
                    let entry = families.entry(name.to_string()).or_default();
                    if entry.help.replace(help.to_string()).is_some() || !entry.samples.is_empty() {
                        return Err(at("HELP twice or after samples".into()));
                    }
                    name.to_string()
                }
                ["TYPE", name, kind] => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(kind) {
                        return Err(at(format!("unknown type {kind}")));
                    }
                    let entry = families.entry(name.to_string()).or_default();
                    if entry.kind.replace(kind.to_string()).is_some() || !entry.samples.is_empty() {
                        return Err(at("TYPE twice or after samples".into()));
                    }
                    name.to_string()
                }
                ["HELP" | "TYPE", ..] => return Err(at("malformed HELP or TYPE".into())),
                _ => continue,
            }
        } else {
            let sample = parse_sample(line).map_err(at)?;
            let family = family_of(&sample.name, &families).to_string();
            families.entry(family.clone()).or_default().samples.push(sample);
            family
        };
        if !is_name(&family, true) {
            return Err(at(format!("bad metric name {family:?}")));
        }
        if current.as_deref() != Some(family.as_str()) {
            if finished.contains(&family) {
                return Err(at(format!("family {family} continues after another began")));
            }
            if let Some(previous) = current.replace(family) {
                finished.push(previous);
            }
        }
    }
    for (name, family) in &families {
        match family.kind.as_deref() {
            Some("counter") => {
                if let Some(negative) = family.samples.iter().find(|s| s.value < 0.0 || s.value.is_nan()) {
                    return Err(format!("counter {name} has {negative:?}"));
                }
            }
            Some("histogram") => check_histogram(name, family)?,
            _ => {}
        }
    }
    Ok(families)
}

/// One histogram series as exposed: its buckets (`le`, count), its `_count`, whether it has
/// a `_sum`.
type HistogramSeries = (Vec<(f64, f64)>, Option<f64>, bool);

/// Per label set (without `le`): buckets non-decreasing in `le`, the `+Inf` bucket present
/// and equal to `_count`, a `_sum`.
fn check_histogram(name: &str, family: &FamilyText) -> Result<(), String> {
    let mut series: BTreeMap<Vec<(String, String)>, HistogramSeries> = BTreeMap::new();
    for sample in &family.samples {
        let mut key: Vec<(String, String)> = sample.labels.clone().into_iter().collect();
        key.retain(|(label, _)| label != "le");
        let entry = series.entry(key).or_default();
        if sample.name == format!("{name}_bucket") {
            let le = sample.labels.get("le").ok_or(format!("{name}_bucket without le"))?;
            entry.0.push((parse_value(le)?, sample.value));
        } else if sample.name == format!("{name}_count") {
            entry.1 = Some(sample.value);
        } else if sample.name == format!("{name}_sum") {
            entry.2 = true;
        } else {
            return Err(format!("histogram {name} has a series {}", sample.name));
        }
    }
    for (labels, (buckets, count, sum)) in series {
        let ordered = buckets.windows(2).all(|pair| pair[0].0 < pair[1].0 && pair[0].1 <= pair[1].1);
        let last = buckets.last().copied();
        if !ordered || last.map(|(le, _)| le) != Some(f64::INFINITY) || last.map(|(_, n)| n) != count || !sum {
            return Err(format!("histogram {name}{labels:?} is inconsistent: {buckets:?} count {count:?} sum {sum}"));
        }
    }
    Ok(())
}

/// Families every node exports, with their type (docs/operations.md, "Metrics").
const EXPECTED: &[(&str, &str)] = &[
    ("haven_raft_term", "gauge"),
    ("haven_raft_commit_index", "gauge"),
    ("haven_raft_applied_index", "gauge"),
    ("haven_raft_last_log_index", "gauge"),
    ("haven_raft_is_leader", "gauge"),
    ("haven_raft_leader_id", "gauge"),
    ("haven_raft_voters", "gauge"),
    ("haven_replication_lag_entries", "gauge"),
    ("haven_ha_status", "gauge"),
    ("haven_failovers_last_hour", "gauge"),
    ("haven_storage_bytes", "gauge"),
    ("haven_storage_max_bytes", "gauge"),
    ("haven_http_requests_total", "counter"),
    ("haven_leader_changes_total", "counter"),
    ("haven_proposal_duration_seconds", "histogram"),
    ("haven_alert_runs_total", "counter"),
];

/// Scrapes node `index` with `token`: the status code and body.
fn scrape_raw(cluster: &TestCluster, index: usize, token: Option<&str>) -> (u16, String, String) {
    let url = format!("{}/metrics", cluster.nodes[index].client_url);
    let mut request = cluster.http().get(url).timeout(Duration::from_secs(30));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    block_on(async move {
        let response = request.send().await.expect("scrape");
        let status = response.status().as_u16();
        let content_type =
            response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        (status, content_type, response.text().await.unwrap_or_default())
    })
}

/// A strictly parsed scrape of node `index` with `token`.
fn scrape(cluster: &TestCluster, index: usize, token: &str) -> BTreeMap<String, FamilyText> {
    let (status, content_type, text) = scrape_raw(cluster, index, Some(token));
    assert_eq!(status, 200, "scrape of node {}: {text}", cluster.nodes[index].id);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    parse_exposition(&text).unwrap_or_else(|error| panic!("node {}: {error}\n{text}", cluster.nodes[index].id))
}

/// The value of the one sample named `series` whose labels include `labels` (0 when absent:
/// a counter series appears on its first increment).
fn value(families: &BTreeMap<String, FamilyText>, series: &str, labels: &[(&str, &str)]) -> f64 {
    let matching: Vec<f64> = families
        .values()
        .flat_map(|family| &family.samples)
        .filter(|sample| sample.name == series)
        .filter(|sample| labels.iter().all(|(k, v)| sample.labels.get(*k).map(String::as_str) == Some(*v)))
        .map(|sample| sample.value)
        .collect();
    assert!(matching.len() <= 1, "{series} {labels:?} matches {} samples", matching.len());
    matching.first().copied().unwrap_or(0.0)
}

#[test]
fn the_parser_refuses_what_the_format_does_not_allow() {
    // The checker has teeth: each of these breaks one rule of the format.
    let bad = [
        "x 1",                                                                                     // no final newline
        "x{a=\"1\" 1\n",                             // unterminated labels
        "x{a=1} 1\n",                                // unquoted value
        "x{a=\"\\q\"} 1\n",                          // bad escape
        "x 1 2 3\n",                                 // too many fields
        "x one\n",                                   // not a number
        "# TYPE x counter\n# TYPE x counter\nx 1\n", // TYPE twice
        "x 1\n# TYPE x counter\n",                   // TYPE after samples
        "x 1\ny 1\nx 2\n",                           // family interleaved
        "# TYPE x counter\nx -1\n",                  // negative counter
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n", // not cumulative
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n", // no +Inf bucket
        "9x 1\n",                                    // bad name
    ];
    for text in bad {
        assert!(parse_exposition(text).is_err(), "accepted {text:?}");
    }
    let good = "# HELP x_total A counter.\n# TYPE x_total counter\nx_total{route=\"/v1/kv/{key}\",q=\"a\\\"b\"} 3\n";
    let families = parse_exposition(good).expect("valid");
    assert_eq!(value(&families, "x_total", &[("route", "/v1/kv/{key}"), ("q", "a\"b")]), 3.0);
}

#[test]
fn metrics_are_exported_parse_strictly_and_move_with_writes_and_failovers() {
    let _serial = serial();
    let mut cluster = TestCluster::start(3, &[]);
    let leader = cluster.wait_leader(LEADER_TIMEOUT);
    cluster.wait_for(CONDITION_TIMEOUT, "three voters", |cluster| cluster.voter_count(0) == 3);
    let reader = block_on(cluster.client().create_token("reader", Some("prometheus"), None)).expect("reader token");

    // No token: 401, as on every non-public route.
    let (status, _, text) = scrape_raw(&cluster, 0, None);
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("unauthorized"), "{text}");

    // Every node: every line parses, every family is there with HELP and TYPE, and the
    // views agree on one leader.
    let mut leaders_seen = 0.0;
    for index in 0..3 {
        let families = scrape(&cluster, index, &reader.token);
        for (name, kind) in EXPECTED {
            let family = families.get(*name).unwrap_or_else(|| panic!("node {index}: no family {name}"));
            assert_eq!(family.kind.as_deref(), Some(*kind), "{name}");
            assert!(family.help.as_deref().is_some_and(|help| !help.is_empty()), "{name} has no HELP");
        }
        assert_eq!(value(&families, "haven_raft_voters", &[]), 3.0);
        assert_eq!(value(&families, "haven_raft_leader_id", &[]), leader as f64);
        assert!(value(&families, "haven_raft_term", &[]) >= 1.0);
        assert_eq!(value(&families, "haven_ha_status", &[("state", "stable")]), 1.0, "node {index}");
        assert!(value(&families, "haven_storage_max_bytes", &[("store", "kv")]) > 0.0);
        leaders_seen += value(&families, "haven_raft_is_leader", &[]);
    }
    assert_eq!(leaders_seen, 1.0, "exactly one node says it leads");

    // Writes on the leader move its request counter (by route template, never the raw
    // path) and its proposal histogram; an unknown path counts under one fixed label.
    let leader_index = cluster.index_of(leader);
    let put = [("route", "/v1/kv/{key}"), ("method", "PUT"), ("status", "200")];
    let before = scrape(&cluster, leader_index, &reader.token);
    const WRITES: usize = 5;
    for n in 0..WRITES {
        let (status, body) =
            call_raw(&cluster, leader_index, "PUT", &format!("/v1/kv/metrics/key-{n}"), "v", &cluster.admin_token);
        assert_eq!(status, 200, "{body}");
    }
    let (status, _) = call(&cluster, leader_index, "GET", "/no/such/route/abc", None);
    assert_eq!(status, 404);
    let (status, _) = call(&cluster, leader_index, "GET", "/metrics?nonsense=1", None);
    assert_eq!(status, 400, "an unknown query parameter is refused as on every route");
    let after = scrape(&cluster, leader_index, &reader.token);
    assert_eq!(
        value(&after, "haven_http_requests_total", &put) - value(&before, "haven_http_requests_total", &put),
        WRITES as f64
    );
    let proposals =
        |families: &BTreeMap<String, FamilyText>| value(families, "haven_proposal_duration_seconds_count", &[]);
    assert!(proposals(&after) >= proposals(&before) + WRITES as f64, "{} -> {}", proposals(&before), proposals(&after));
    let unmatched = [("route", "unmatched"), ("method", "GET"), ("status", "404")];
    assert_eq!(value(&after, "haven_http_requests_total", &unmatched), 1.0);
    let routes: Vec<&String> = after["haven_http_requests_total"].samples.iter().map(|s| &s.labels["route"]).collect();
    assert!(
        routes.iter().all(|route| !route.contains("key-") && !route.contains("abc")),
        "raw paths in labels: {routes:?}"
    );
    assert!(value(&after, "haven_http_requests_total", &[("route", "/metrics"), ("status", "200")]) >= 1.0);

    // Kill the leader: the survivors see the leader replaced and count it.
    let survivors: Vec<usize> = (0..3).filter(|index| *index != leader_index).collect();
    let changes_before: Vec<f64> = survivors
        .iter()
        .map(|index| value(&scrape(&cluster, *index, &reader.token), "haven_leader_changes_total", &[]))
        .collect();
    let term_before = value(&after, "haven_raft_term", &[]);
    cluster.kill(leader_index);
    let new_leader = cluster.wait_leader(LEADER_TIMEOUT * 3);
    assert_ne!(new_leader, leader);
    for (survivor, changes_before) in survivors.iter().zip(changes_before) {
        let mut changes = 0.0;
        cluster.wait_for(CONDITION_TIMEOUT, "the survivor to count the leader change", |cluster| {
            changes = value(&scrape(cluster, *survivor, &reader.token), "haven_leader_changes_total", &[]);
            changes > changes_before
        });
        let families = scrape(&cluster, *survivor, &reader.token);
        assert_eq!(value(&families, "haven_raft_leader_id", &[]), new_leader as f64);
        assert!(value(&families, "haven_raft_term", &[]) > term_before);
    }
}
