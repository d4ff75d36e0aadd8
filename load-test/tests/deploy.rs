//! The deployment files agree with the code:
//! - every metric the code emits (gateway, ingest, control-plane) is documented in
//!   `docs/metrics.md`, and every documented metric is emitted;
//! - every metric the Grafana dashboards and the Prometheus alert rules query is documented
//!   (so a renamed metric cannot silently blank a panel or disarm an alert);
//! - `promtool check rules` / `test rules` (deploy/prometheus/alerts_test.yml) / `check config`
//!   accept the Prometheus files, when promtool is
//!   installed (`scripts/check-deploy.sh` installs it and sets `SMARTSOLAR_REQUIRE_PROMTOOL=1`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every `smartsolar_…` identifier in `text` (letters, digits, `_`).
fn names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("smartsolar_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        // Not the tail of a longer identifier.
        let before = rest[..i].chars().next_back();
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            out.push(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Metric names in the code: string literals `"smartsolar_…"` under the services' `src/`.
fn emitted() -> BTreeSet<String> {
    let mut files = Vec::new();
    for c in ["bus", "gateway", "ingest", "control-plane"] {
        rust_files(&root().join(c).join("src"), &mut files);
    }
    let mut out = BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for n in names(&text) {
            if text.contains(&format!("\"{n}\"")) && !n.starts_with("smartsolar_test") {
                out.insert(n);
            }
        }
    }
    out
}

/// Metric names documented: the first column of the tables in `docs/metrics.md`.
fn documented() -> BTreeSet<String> {
    let text = std::fs::read_to_string(root().join("docs/metrics.md")).unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("| `smartsolar_"))
        .map(|l| format!("smartsolar_{}", &l[..l.find('`').unwrap()]))
        .collect()
}

/// A queried name as the metric it reads (`_bucket`, `_sum`, `_count` of a histogram).
fn base<'a>(name: &'a str, documented: &BTreeSet<String>) -> &'a str {
    if documented.contains(name) {
        return name;
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(b) = name.strip_suffix(suffix) {
            if documented.contains(b) {
                return b;
            }
        }
    }
    name
}

fn exprs_in_json(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => exprs_in_json(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| exprs_in_json(v, out)),
        _ => {}
    }
}

#[test]
fn every_emitted_metric_is_documented_and_every_documented_one_is_emitted() {
    let (code, docs) = (emitted(), documented());
    assert!(code.len() > 30, "found the metrics in the code: {code:?}");
    let undocumented: Vec<_> = code.difference(&docs).collect();
    let stale: Vec<_> = docs.difference(&code).collect();
    assert!(
        undocumented.is_empty(),
        "emitted but not in docs/metrics.md: {undocumented:?}"
    );
    assert!(
        stale.is_empty(),
        "in docs/metrics.md but not emitted: {stale:?}"
    );
}

#[test]
fn names_follow_the_scheme() {
    for n in documented() {
        let component = n.split('_').nth(1).unwrap_or_default();
        assert!(
            [
                "gateway", "bus", "ingest", "tsdb", "http", "db", "webhook", "dead", "dcm", "rtc",
                "alerts"
            ]
            .contains(&component),
            "{n}: unknown component"
        );
        assert!(
            !n.ends_with("_seconds_total") && !n.contains("__"),
            "{n}: malformed"
        );
    }
}

#[test]
fn dashboards_and_alerts_query_only_documented_metrics() {
    let docs = documented();
    let mut queried: Vec<(String, String)> = Vec::new();
    let dir = root().join("deploy/grafana/dashboards");
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "json") {
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            let mut exprs = Vec::new();
            exprs_in_json(&v, &mut exprs);
            assert!(!exprs.is_empty(), "{}: no queries", p.display());
            for e in exprs {
                queried.extend(names(&e).into_iter().map(|n| (p.display().to_string(), n)));
            }
        }
    }
    let alerts = root().join("deploy/prometheus/alerts.yml");
    let text = std::fs::read_to_string(&alerts).unwrap();
    let exprs: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("expr:"))
        .collect();
    assert!(exprs.len() >= 10, "alert expressions found: {exprs:?}");
    for e in exprs {
        queried.extend(names(e).into_iter().map(|n| ("alerts.yml".to_owned(), n)));
    }
    let unknown: Vec<_> = queried
        .iter()
        .filter(|(_, n)| !docs.contains(base(n, &docs)))
        .collect();
    assert!(
        unknown.is_empty(),
        "queried but not documented/emitted: {unknown:?}"
    );
}

#[test]
fn promtool_accepts_the_prometheus_files() {
    let found = Command::new("promtool").arg("--version").output().is_ok();
    if !found {
        assert!(
            std::env::var("SMARTSOLAR_REQUIRE_PROMTOOL").as_deref() != Ok("1"),
            "promtool not installed"
        );
        eprintln!("promtool not installed: skipped (scripts/check-deploy.sh installs it)");
        return;
    }
    let dir = root().join("deploy/prometheus");
    for args in [
        vec!["check", "rules", "alerts.yml"],
        vec!["test", "rules", "alerts_test.yml"],
        vec!["check", "config", "prometheus.yml"],
    ] {
        let out = Command::new("promtool")
            .args(&args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
