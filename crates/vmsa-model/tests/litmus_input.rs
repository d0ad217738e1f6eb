//! The litmus runner on damaged input: truncated files and files with a
//! line missing give an error or an unsupported verdict, never a panic.

use std::path::PathBuf;

use vmsa_model::litmus::{run_source, Limits};

const SMALL: Limits = Limits {
    states: 500,
    variants: 4,
};

fn some_tests() -> Vec<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/litmus/pgtable/HAND");
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("vendored tests")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".litmus.toml"))
        .collect();
    names.sort();
    names
        .iter()
        .step_by(12)
        .map(|p| std::fs::read_to_string(p).expect("readable"))
        .collect()
}

#[test]
fn truncated_files_do_not_panic() {
    for src in some_tests() {
        for cut in (0..src.len()).step_by(53) {
            if src.is_char_boundary(cut) {
                let _ = run_source(&src[..cut], SMALL);
            }
        }
    }
}

#[test]
fn files_with_a_line_missing_do_not_panic() {
    for src in some_tests() {
        let lines: Vec<&str> = src.lines().collect();
        for skip in 0..lines.len() {
            let damaged: Vec<&str> = lines
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != skip)
                .map(|(_, l)| *l)
                .collect();
            let _ = run_source(&damaged.join("\n"), SMALL);
        }
    }
}
