//! Every policy on every workload, judged by the model: vmsa and the
//! faithful baselines are violation-free, the broken controls are caught,
//! and vmsa meets its goals against the baselines.

use std::collections::HashMap;
use std::process::Command;

use serde_json::Value;

fn rows() -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_vmsa"))
        .args(["compare", "--json"])
        .output()
        .expect("run vmsa compare");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .expect("JSON")
        .as_array()
        .expect("array")
        .clone()
}

fn n(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"))
}

#[test]
fn policies_on_every_workload() {
    let rows = rows();
    let mut by: HashMap<(String, String), HashMap<String, Value>> = HashMap::new();
    for r in &rows {
        let key = (
            r["workload"].as_str().unwrap().to_string(),
            r["profile"].as_str().unwrap().to_string(),
        );
        by.entry(key)
            .or_default()
            .insert(r["policy"].as_str().unwrap().to_string(), r.clone());
    }
    let stage2 = [
        "foreign-unmap",
        "dirty-log",
        "vcpu-migrate",
        "balloon",
        "huge-unmap",
        "vm-teardown",
    ];
    for ((workload, profile), p) in &by {
        let at = format!("{workload} ({profile})");
        for (policy, r) in p {
            let v = n(r, "violations");
            match policy.as_str() {
                "none" => assert!(v > 0, "{at}: none must be caught"),
                "aarch64-paging" if stage2.contains(&workload.as_str()) => {
                    assert!(v > 0, "{at}: aarch64-paging leaves combined entries")
                }
                _ => assert_eq!(v, 0, "{at}: {policy} has violations"),
            }
        }
        // vmsa costs no more than the cheapest violation-free baseline.
        let vmsa = n(&p["vmsa"], "cycles");
        let best = p
            .iter()
            .filter(|(k, r)| {
                !matches!(k.as_str(), "vmsa" | "oracle" | "none") && n(r, "violations") == 0
            })
            .map(|(_, r)| n(r, "cycles"))
            .min()
            .unwrap();
        assert!(
            vmsa <= best,
            "{at}: vmsa {vmsa} cycles > best baseline {best}"
        );
        let bc = |k: &str| n(&p[k], "broadcast_ops");
        if ["relro", "munmap-small", "jit-wx", "foreign-unmap"].contains(&workload.as_str()) {
            for base in ["broadcast", "xen"] {
                assert!(
                    2 * bc("vmsa") <= bc(base),
                    "{at}: {} broadcast TLBIs vs {base} {}",
                    bc("vmsa"),
                    bc(base)
                );
            }
        }
        let ops = |k: &str| n(&p[k], "tlbi_ops");
        if ["huge-unmap", "vm-teardown"].contains(&workload.as_str()) {
            for base in ["freebsd", "aarch64-paging"] {
                assert!(
                    100 * ops("vmsa") <= ops(base),
                    "{at}: {} TLBIs vs {base} {}",
                    ops("vmsa"),
                    ops(base)
                );
            }
        }
    }
}
