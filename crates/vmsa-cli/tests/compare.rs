//! `vmsa compare`: names, exit status, the JSON array and the chart.
//!
//! The tests that need rows take the names from `vmsa compare --list` and
//! fail with "driver has no workloads yet" while the driver has none.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn vmsa(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmsa"))
        .arg("compare")
        .args(args)
        .output()
        .expect("run vmsa")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `vmsa compare ARGS`, expecting exit status 0.
fn ok(args: &[&str]) -> Output {
    let out = vmsa(args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "vmsa compare {args:?}\nstdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// A path in the temporary directory no other test run uses.
fn temp_path(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    std::env::temp_dir().join(format!(
        "vmsa-cli-compare-{}-{nanos}-{name}",
        std::process::id()
    ))
}

/// The names `vmsa compare --list` prints.
struct Names {
    workloads: Vec<String>,
    policies: Vec<String>,
    profiles: Vec<String>,
}

/// The names, whether or not the driver has any workloads yet.
fn listing() -> Names {
    let out = ok(&["--list"]);
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    let names = |line: &str, prefix: &str| -> Vec<String> {
        let rest = line
            .strip_prefix(prefix)
            .unwrap_or_else(|| panic!("`{line}` does not start with `{prefix}`"));
        rest.split_whitespace().map(str::to_string).collect()
    };
    Names {
        workloads: names(lines[0], "workloads:"),
        policies: names(lines[1], "policies:"),
        profiles: names(lines[2], "profiles:"),
    }
}

/// The names, failing the test while the driver has no workloads or no
/// policies.
fn names() -> Names {
    let names = listing();
    assert!(
        !names.workloads.is_empty() && !names.policies.is_empty(),
        "driver has no workloads yet"
    );
    names
}

/// The JSON array `vmsa compare --json ARGS` prints, each object checked:
/// exactly the ten fields, strings for the names and numbers for the rest.
fn json_rows(args: &[&str]) -> Vec<Value> {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = ok(&all);
    let value: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", text(&out.stdout)));
    let rows = value.as_array().expect("a JSON array").clone();
    for row in &rows {
        let object = row.as_object().expect("an array of objects");
        let keys: BTreeSet<&str> = object.keys().map(String::as_str).collect();
        let expected: BTreeSet<&str> = [
            "workload",
            "policy",
            "profile",
            "tlbi_ops",
            "broadcast_ops",
            "dsb",
            "collateral",
            "spurious_faults",
            "cycles",
            "violations",
        ]
        .into_iter()
        .collect();
        assert_eq!(keys, expected, "{row}");
        for key in ["workload", "policy", "profile"] {
            assert!(object[key].is_string(), "{key} is not a string: {row}");
        }
        for key in [
            "tlbi_ops",
            "broadcast_ops",
            "dsb",
            "collateral",
            "spurious_faults",
            "cycles",
            "violations",
        ] {
            assert!(object[key].is_u64(), "{key} is not a count: {row}");
        }
    }
    rows
}

fn name_of<'a>(row: &'a Value, key: &str) -> &'a str {
    row[key].as_str().unwrap()
}

#[test]
fn list_prints_the_names() {
    let names = listing();
    assert!(names.profiles.contains(&"native".to_string()));
    assert!(names.profiles.contains(&"nested".to_string()));
    if let Some(first) = names.policies.first() {
        assert_eq!(first, "vmsa", "vmsa is listed first");
    }
}

#[test]
fn unknown_profile_exits_2_naming_the_valid_ones() {
    let out = vmsa(&["--profile", "native,no-such-profile"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("unknown profile `no-such-profile`"),
        "{stderr}"
    );
    for profile in listing().profiles {
        assert!(stderr.contains(&profile), "{profile} not in: {stderr}");
    }
    assert!(out.stdout.is_empty());
}

#[test]
fn unknown_workload_exits_2_naming_the_valid_ones() {
    let out = vmsa(&["--workload", "no-such-workload"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("unknown workload `no-such-workload`"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
    for workload in names().workloads {
        assert!(stderr.contains(&workload), "{workload} not in: {stderr}");
    }
}

#[test]
fn unknown_policy_exits_2_naming_the_valid_ones() {
    let names = names();
    let out = vmsa(&[
        "--workload",
        &names.workloads[0],
        "--policy",
        "no-such-policy",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("unknown policy `no-such-policy`"),
        "{stderr}"
    );
    for policy in names.policies {
        assert!(stderr.contains(&policy), "{policy} not in: {stderr}");
    }
}

#[test]
fn pes_out_of_range_is_refused() {
    for pes in ["0", "65"] {
        let out = vmsa(&["--pes", pes]);
        assert_eq!(out.status.code(), Some(2), "--pes {pes}");
    }
}

#[test]
fn json_has_one_object_per_workload_policy_and_profile() {
    let names = names();
    let rows = json_rows(&[]);
    let expected = names.workloads.len() * names.policies.len() * names.profiles.len();
    assert_eq!(rows.len(), expected);
    let mut seen = BTreeSet::new();
    for row in &rows {
        let key = (
            name_of(row, "workload"),
            name_of(row, "policy"),
            name_of(row, "profile"),
        );
        assert!(names.workloads.iter().any(|w| w == key.0), "{row}");
        assert!(names.policies.iter().any(|p| p == key.1), "{row}");
        assert!(names.profiles.iter().any(|p| p == key.2), "{row}");
        assert!(seen.insert(key), "twice: {row}");
    }
    // vmsa maintains the tables correctly: its rows have no violations.
    for row in rows.iter().filter(|r| name_of(r, "policy") == "vmsa") {
        assert_eq!(row["violations"], 0, "{row}");
    }
}

#[test]
fn filters_select_the_combinations_named() {
    let names = names();
    let (workload, policy, profile) = (&names.workloads[0], &names.policies[0], &names.profiles[0]);
    let rows = json_rows(&[
        "--workload",
        workload,
        "--policy",
        policy,
        "--profile",
        profile,
        "--pes",
        "2",
    ]);
    assert_eq!(rows.len(), 1);
    assert_eq!(name_of(&rows[0], "workload"), workload);
    assert_eq!(name_of(&rows[0], "policy"), policy);
    assert_eq!(name_of(&rows[0], "profile"), profile);

    // Comma-separated and repeated forms select the same.
    let workloads = names.workloads[..names.workloads.len().min(2)].join(",");
    let policies = &names.policies[..names.policies.len().min(2)];
    let mut args = vec!["--workload", &workloads, "--profile", profile];
    for p in policies {
        args.extend(["--policy", p.as_str()]);
    }
    let rows = json_rows(&args);
    assert_eq!(
        rows.len(),
        names.workloads.len().min(2) * policies.len(),
        "{args:?}"
    );
}

#[test]
fn table_puts_vmsa_first_with_a_relative_cycles_column() {
    let names = names();
    let (workload, profile) = (&names.workloads[0], &names.profiles[0]);
    let out = ok(&["--workload", workload, "--profile", profile]);
    let stdout = text(&out.stdout);
    let all: Vec<&str> = stdout.lines().collect();
    assert!(
        all[0].starts_with("Per workload"),
        "no legend first:\n{stdout}"
    );
    assert!(all[0].contains("vs best"), "{stdout}");
    let lines = &all[2..];
    assert!(lines[0].starts_with(workload.as_str()), "{stdout}");
    assert!(lines[0].contains(profile.as_str()), "{stdout}");
    for column in [
        "policy",
        "TLBI",
        "broadcast",
        "DSB",
        "collateral",
        "spurious faults",
        "cycles",
        "vs best",
        "violations",
    ] {
        assert!(lines[1].contains(column), "no {column} column:\n{stdout}");
    }
    let policy_lines = &lines[2..2 + names.policies.len()];
    for (line, policy) in policy_lines.iter().zip(&names.policies) {
        assert_eq!(
            line.split_whitespace().next(),
            Some(policy.as_str()),
            "{stdout}"
        );
    }
    let verdict = lines[2 + names.policies.len()];
    assert!(
        verdict.starts_with("  cheapest correct: ") || verdict.contains("no policy is correct"),
        "no verdict under the table:\n{stdout}"
    );
}

#[test]
fn svg_writes_a_chart() {
    let names = names();
    let file = temp_path("chart.svg");
    let file_name = file.to_str().unwrap();
    let out = ok(&[
        "--workload",
        &names.workloads[0],
        "--profile",
        &names.profiles[0],
        "--svg",
        file_name,
        "--json",
    ]);
    let svg = std::fs::read_to_string(&file).expect("the chart was written");
    std::fs::remove_file(&file).ok();
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
    assert!(text(&out.stderr).contains(&format!("wrote {file_name}")));
    assert!(svg.contains(names.workloads[0].as_str()));
    for policy in &names.policies {
        assert!(svg.contains(policy.as_str()), "{policy} not in the legend");
    }
    // --svg does not replace the report.
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), names.policies.len());
}
