//! The dashboards and alert rules in `manifests/monitoring/` are well-formed and name only
//! metrics the code exports: renaming a metric without updating them fails here.
//!
//! That each expression returns data from a running cluster is checked against a real
//! Prometheus by `services/cli/tests/monitoring.rs`.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn monitoring_files(extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("manifests/monitoring"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect();
    files.sort();
    files
}

fn dashboards() -> Vec<(PathBuf, Value)> {
    let files = monitoring_files("json");
    assert!(files.len() >= 4, "dashboards: {files:?}");
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()));
            (path, json)
        })
        .collect()
}

/// Every panel (rows' nested panels included), skipping rows themselves.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        if panel["type"] == "row" {
            out.extend(panel["panels"].as_array().into_iter().flatten());
        } else {
            out.push(panel);
        }
    }
    out
}

fn rules() -> Vec<serde_yaml::Value> {
    let text =
        std::fs::read_to_string(repo().join("manifests/monitoring/parsec-rules.yaml")).unwrap();
    let file: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    file["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap().clone())
        .collect()
}

/// `parsec_…` identifiers in `text`.
fn parsec_names(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while let Some(found) = text[i..].find("parsec_") {
        let start = i + found;
        let preceded = start > 0 && {
            let b = bytes[start - 1];
            b.is_ascii_alphanumeric() || b == b'_'
        };
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if !preceded {
            names.insert(text[start..end].to_string());
        }
        i = end;
    }
    names
}

/// Metric names the code registers: `"parsec_…"` string literals of the services and the
/// operator (every metric is created from such a literal).
fn names_in_code() -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path
                    .file_name()
                    .is_some_and(|n| n != "target" && n != "tests")
                {
                    walk(&path, out);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for literal in text.split('"').skip(1).step_by(2) {
                    if literal.starts_with("parsec_")
                        && literal
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                    {
                        out.insert(literal.to_string());
                    }
                }
            }
        }
    }
    let mut names = BTreeSet::new();
    walk(&repo().join("services"), &mut names);
    walk(&repo().join("operator/src"), &mut names);
    names
}

/// Whether `name` (as written in PromQL) is a series of a registered metric: histograms are
/// queried through their `_bucket`, `_sum` and `_count` series.
fn known(name: &str, code: &BTreeSet<String>) -> bool {
    code.contains(name)
        || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|base| code.contains(base))
        })
}

#[test]
fn dashboards_are_well_formed() {
    for (path, dashboard) in dashboards() {
        let name = path.display();
        assert!(
            dashboard["uid"].as_str().is_some_and(|u| !u.is_empty()),
            "{name}: uid"
        );
        assert!(dashboard["title"].as_str().is_some(), "{name}: title");
        let variables: Vec<&Value> = dashboard["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .collect();
        assert!(
            variables.iter().any(|v| v["type"] == "datasource"
                && v["query"] == "prometheus"
                && v["name"] == "datasource"),
            "{name}: a Prometheus datasource variable named `datasource`"
        );
        assert!(
            variables
                .iter()
                .any(|v| v["name"] == "namespace" || v["name"] == "cluster"),
            "{name}: a namespace or cluster variable"
        );
        let mut ids = BTreeSet::new();
        for panel in dashboard["panels"].as_array().unwrap() {
            let id = panel["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("{name}: panel without id"));
            assert!(ids.insert(id), "{name}: panel id {id} used twice");
        }
        let panels = panels(&dashboard);
        assert!(!panels.is_empty(), "{name}: no panels");
        for panel in panels {
            let title = panel["title"].as_str().unwrap_or("?");
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{name}: panel {title:?} must use the datasource variable"
            );
            let targets = panel["targets"]
                .as_array()
                .unwrap_or_else(|| panic!("{name}: panel {title:?} has no targets"));
            assert!(!targets.is_empty(), "{name}: panel {title:?} has no query");
            for target in targets {
                let expr = target["expr"].as_str().unwrap_or_default();
                assert!(
                    !expr.trim().is_empty(),
                    "{name}: panel {title:?} has an empty query"
                );
            }
        }
    }
}

#[test]
fn rules_are_well_formed() {
    let rules = rules();
    assert!(rules.len() >= 8, "{} rules", rules.len());
    let mut names = BTreeSet::new();
    for rule in &rules {
        let alert = rule["alert"].as_str().unwrap();
        assert!(
            names.insert(alert.to_string()),
            "alert {alert} defined twice"
        );
        assert!(
            rule["expr"].as_str().is_some_and(|e| !e.trim().is_empty()),
            "{alert}: expr"
        );
        assert!(
            matches!(
                rule["labels"]["severity"].as_str(),
                Some("critical" | "warning" | "info")
            ),
            "{alert}: severity"
        );
        assert!(
            rule["annotations"]["summary"].as_str().is_some(),
            "{alert}: summary"
        );
    }
    for required in [
        "ParsecRaftGroupWithoutLeader",
        "ParsecRaftQuorumAtRisk",
        "ParsecTransactionErrorRateHigh",
        "ParsecTransactionLatencyHigh",
        "ParsecDiskNearlyFull",
        "ParsecOperatorReconcileErrors",
    ] {
        assert!(names.contains(required), "missing alert {required}");
    }
}

#[test]
fn every_metric_named_in_dashboards_and_rules_is_exported_by_the_code() {
    let code = names_in_code();
    // A few names the test itself must see, or the scan is broken.
    for sure in [
        "parsec_raft_is_leader",
        "parsec_agent_transactions_total",
        "parsec_rpc_requests_total",
    ] {
        assert!(
            code.contains(sure),
            "scan of the code missed {sure}: {code:?}"
        );
    }
    let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, dashboard) in dashboards() {
        for panel in panels(&dashboard) {
            for target in panel["targets"].as_array().into_iter().flatten() {
                for name in parsec_names(target["expr"].as_str().unwrap_or_default()) {
                    used.entry(name)
                        .or_default()
                        .insert(path.display().to_string());
                }
            }
        }
        for variable in dashboard["templating"]["list"].as_array().unwrap() {
            for name in parsec_names(&variable["definition"].to_string()) {
                used.entry(name)
                    .or_default()
                    .insert(path.display().to_string());
            }
        }
    }
    for rule in rules() {
        for name in parsec_names(rule["expr"].as_str().unwrap()) {
            used.entry(name)
                .or_default()
                .insert("parsec-rules.yaml".into());
        }
    }
    assert!(used.len() >= 20, "{used:?}");
    let unknown: Vec<String> = used
        .iter()
        .filter(|(name, _)| !known(name, &code))
        .map(|(name, files)| format!("{name} (in {files:?})"))
        .collect();
    assert!(
        unknown.is_empty(),
        "metrics used but not exported by any process: {unknown:#?}"
    );
}

#[test]
fn the_scan_tells_series_of_histograms_from_unknown_names() {
    let code: BTreeSet<String> = ["parsec_x_seconds".to_string()].into();
    assert!(known("parsec_x_seconds_bucket", &code));
    assert!(!known("parsec_y_seconds_bucket", &code));
    assert_eq!(
        parsec_names("rate(parsec_a_total{x=\"parsec_b\"}[1m]) / my_parsec_c"),
        ["parsec_a_total".to_string(), "parsec_b".into()].into()
    );
}

#[test]
fn promtool_accepts_the_rules() {
    let rules = repo().join("manifests/monitoring/parsec-rules.yaml");
    match std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
    {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "SKIPPED: promtool not installed (Debian package prometheus; scripts/test.sh installs it)"
            );
        }
        Err(e) => panic!("promtool: {e}"),
        Ok(output) => assert!(
            output.status.success(),
            "promtool check rules failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}
