//! The model's verdicts on Casemate's example traces
//! (`tests/data/casemate/`, see the README there) match Casemate's, except
//! where the architecture says otherwise (each such case says why).

use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;

use vmsa_model::trace::{check, CheckReport};
use vmsa_model::Config;

fn run(name: &str) -> CheckReport {
    run_in("casemate", name, Config::default())
}

fn run_in(dir: &str, name: &str, config: Config) -> CheckReport {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests/data", dir, name]
        .iter()
        .collect();
    let file = File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    check(BufReader::new(file), config).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Casemate's examples program VTCR_EL2 = 0x10: T0SZ 16 (a 48-bit IPA
/// space) with SL0 0, a walk starting at level 2, which would need 2^18
/// concatenated root tables (at most 16 are allowed). That is no
/// consistent stage 2 configuration (the walk may give a level 0
/// Translation fault), so the model reports it, once, and nothing else on
/// these good examples: the one place vmsa and Casemate (which does not
/// check VTCR_EL2) differ on them.
fn only_the_vtcr_violation(name: &str) {
    let report = run(name);
    assert!(report.records > 0);
    let all: Vec<String> = report.violations.iter().map(|v| v.to_string()).collect();
    assert_eq!(all.len(), 1, "{name}:\n{}", all.join("\n"));
    let v = &report.violations[0];
    assert_eq!(
        v.kind,
        vmsa_model::ViolationKind::RegisterProgramming,
        "{}",
        all[0]
    );
    assert!(
        all[0].contains("VTCR_EL2 = 0x10") && all[0].contains("262144 concatenated"),
        "{}",
        all[0]
    );
}

fn clean(name: &str) {
    let report = run(name);
    assert!(report.records > 0);
    let all: Vec<String> = report.violations.iter().map(|v| v.to_string()).collect();
    assert!(
        report.violations.is_empty(),
        "{name} is clean, but:\n{}",
        all.join("\n")
    );
}

/// The trace has a violation whose explanation names `address`.
fn violation(name: &str, address: &str) {
    let report = run(name);
    assert!(report.records > 0);
    let all: Vec<String> = report.violations.iter().map(|v| v.to_string()).collect();
    assert!(!all.is_empty(), "{name} has a violation, none found");
    assert!(
        all.iter().any(|v| v.contains(address)),
        "{name}: no violation mentions {address}:\n{}",
        all.join("\n")
    );
}

#[test]
fn good_bbm() {
    only_the_vtcr_violation("good_bbm.log");
}

#[test]
fn good_bbm_by_vmid() {
    only_the_vtcr_violation("good_bbm_by_VMID.log");
}

#[test]
fn good_write() {
    clean("good_write.log");
}

#[test]
fn good_free_tree() {
    clean("good_free_tree.log");
}

#[test]
fn bad_bbm_missing_tlbi() {
    // Invalid, then valid again with no TLBI in between.
    violation("bad_bbm_missing_tlbi.log", "0xaaaadccc5000");
}

#[test]
fn bad_no_bbm() {
    // A live entry replaced without break-before-make.
    violation("bad_no_bbm.log", "0xaaaabad05000");
}

#[test]
fn bad_bbm_by_wrong_vmid() {
    // The TLBI ran with another VMID current, so it did not clean the entry.
    violation("bad_bbm_by_wrong_VMID.log", "0xaaaab9385000");
}

#[test]
fn bad_reuse_page() {
    // Table page 0xaaaac6c46000 linked into two trees.
    violation("bad_reuse_page.log", "0xaaaac6c46000");
}

#[test]
fn generated_bbm_stress_is_clean() {
    let mut trace = Vec::new();
    let records = vmsa_model::trace::bbm_stress(&mut trace, 2000, 7).unwrap();
    let report = check(&trace[..], Config::default()).unwrap();
    assert_eq!(report.records, records);
    let all: Vec<String> = report.violations.iter().map(|v| v.to_string()).collect();
    assert!(all.is_empty(), "{}", all.join("\n"));
}

/// Casemate examples beyond the eight samples (`tests/data/casemate-more/`):
/// the same verdicts as Casemate, and the violation of the kind it reports.
#[test]
fn more_casemate_examples() {
    use vmsa_model::ViolationKind::*;
    let cases = [
        ("good_bbm_stage1.log", None),
        ("good_release_table.log", None),
        ("good_switch.log", None),
        ("good_write_child.log", None),
        ("bad_free_page_without_clean.log", Some(UseAfterFree)),
        ("bad_overlap_VMID.log", Some(IdReuse)),
        ("bad_overlap_ASID.log", Some(IdReuse)),
        ("bad_switch_wrong_vmid.log", Some(IdReuse)),
        // Casemate: "TTBR0_EL2 ASID is reserved 0". The trace never writes
        // HCR_EL2, and with E2H 1 (the EL2&0 regime) the ASID is
        // architectural: the model judges the RES0 rule only on an HCR_EL2
        // the trace gave, so this one is clean and its derivative with
        // HCR_EL2 = 0 written first is not.
        ("bad_EL2_ASID.log", None),
        // Expected clean by Casemate's example output, which uses the
        // `(addr A) (level L)` TLBI form. It installs a second declared root
        // with VMID 0 while the first, never released, owns it: the same as
        // bad_overlap_VMID, and Casemate's model.c raises "duplicate
        // (VM/AS)ID" for this sequence too.
        ("good_free_page.log", Some(IdReuse)),
        ("bad_EL2_ASID_hcr.log", Some(RegisterProgramming)),
        // Lock discipline is not architectural: clean unless asked for
        // (`lock_discipline_only_on_request`).
        ("bad_unlocked_write.log", None),
        ("bad_no_assoc_lock.log", None),
    ];
    for (name, want) in cases {
        let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests/data/casemate-more", name]
            .iter()
            .collect();
        let file = File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let report = check(BufReader::new(file), Config::default()).unwrap();
        let kinds: Vec<_> = report.violations.iter().map(|v| v.kind).collect();
        match want {
            None => assert!(kinds.is_empty(), "{name}: {:?}", report.violations),
            Some(k) => assert_eq!(kinds, vec![k], "{name}: {:?}", report.violations),
        }
    }
}

/// Casemate's lock rules, with [`Config::locks`]: a write to an installed
/// tree without its root's lock, or to a tree whose root has none.
#[test]
fn lock_discipline_only_on_request() {
    use vmsa_model::ViolationKind::LockDiscipline;
    let locks = Config {
        locks: true,
        ..Config::default()
    };
    for (name, message) in [
        (
            "bad_unlocked_write.log",
            "without holding its lock 0xaaaad2225000",
        ),
        ("bad_no_assoc_lock.log", "no lock associated with it"),
    ] {
        let off = run_in("casemate-more", name, Config::default());
        assert!(off.violations.is_empty(), "{name}: {:?}", off.violations);
        let on = run_in("casemate-more", name, locks.clone());
        let kinds: Vec<_> = on.violations.iter().map(|v| v.kind).collect();
        assert_eq!(kinds, vec![LockDiscipline], "{name}: {:?}", on.violations);
        assert!(
            on.violations[0].explanation.contains(message),
            "{name}: {}",
            on.violations[0]
        );
    }
    // The examples that take their locks stay as they were.
    for name in ["good_free_tree.log", "good_write.log", "bad_no_bbm.log"] {
        let on = run_in("casemate", name, locks.clone());
        assert!(
            on.violations.iter().all(|v| v.kind != LockDiscipline),
            "{name}: {:?}",
            on.violations
        );
    }
    let on = run_in("casemate", "good_bbm.log", locks.clone());
    assert_eq!(on.violations.len(), 1, "{:?}", on.violations);
}

/// Checks `text` (a trace) with `config`; the violations' kinds and texts.
fn kinds_of(text: &str, config: Config) -> (Vec<vmsa_model::ViolationKind>, String) {
    let report = check(text.as_bytes(), config).unwrap_or_else(|e| panic!("{e}"));
    let all: Vec<String> = report.violations.iter().map(|v| v.to_string()).collect();
    (
        report.violations.iter().map(|v| v.kind).collect(),
        all.join("\n"),
    )
}

/// A trace that programs VTCR_EL2 = `vtcr` and installs the (empty) stage
/// 2 root at 0x10000 (two pages of table memory) with VTTBR_EL2 = `vttbr`.
fn stage2_trace(vtcr: u64, vttbr: u64) -> String {
    format!(
        "(sysreg-write (id 0) (tid 0) (sysreg vtcr_el2) (value {vtcr:#x}))\n\
         (mem-init (id 1) (tid 0) (address 0x10000) (size 0x2000))\n\
         (sysreg-write (id 2) (tid 0) (sysreg vttbr_el2) (value {vttbr:#x}))\n"
    )
}

/// VTCR_EL2 for a 39-bit IPA space starting at level 1 (one root page),
/// 4 KiB granule, VS (bit 19) as given.
fn vtcr_39(vs16: bool) -> u64 {
    25 | 1 << 6 | u64::from(vs16) << 19
}

/// A consistent geometry and a clean VTTBR_EL2 are no violation; neither is
/// a VTCR_EL2 never written (the model walks from level 0) nor one with
/// another granule (not this model's, not wrong).
#[test]
fn register_rules_accept_good_values() {
    let d = Config::default;
    let (k, all) = kinds_of(&stage2_trace(vtcr_39(false), 0x10000), d());
    assert!(k.is_empty(), "{all}");
    // CnP (bit 0) is not RES0.
    let (k, all) = kinds_of(&stage2_trace(vtcr_39(false), 0x10001), d());
    assert!(k.is_empty(), "{all}");
    let (k, all) = kinds_of(
        "(mem-init (id 1) (tid 0) (address 0x10000) (size 0x1000))\n\
         (sysreg-write (id 2) (tid 0) (sysreg vttbr_el2) (value 0x10000))\n",
        d(),
    );
    assert!(k.is_empty(), "{all}");
    let (k, all) = kinds_of(&stage2_trace(25 | 1 << 6 | 1 << 14, 0x10000), d());
    assert!(k.is_empty(), "{all}");
}

/// With 8-bit VMIDs (VTCR_EL2.VS 0) VTTBR_EL2[63:56] are RES0.
#[test]
fn register_rule_vmid_beyond_vmid_size() {
    use vmsa_model::ViolationKind::RegisterProgramming;
    let d = Config::default;
    let (k, all) = kinds_of(&stage2_trace(vtcr_39(false), 0x0102_0000_0001_0000), d());
    assert_eq!(k, vec![RegisterProgramming], "{all}");
    assert!(all.contains("VS 0"), "{all}");
    // With 16-bit VMIDs the same value is fine.
    let (k, all) = kinds_of(&stage2_trace(vtcr_39(true), 0x0102_0000_0001_0000), d());
    assert!(k.is_empty(), "{all}");
}

/// VTTBR_EL2.BADDR's bits below the root table's alignment are RES0 (4 KiB
/// for one root page, 8 KiB for two concatenated ones).
#[test]
fn register_rule_baddr_below_root_alignment() {
    use vmsa_model::ViolationKind::RegisterProgramming;
    let d = Config::default;
    let (k, all) = kinds_of(&stage2_trace(vtcr_39(false), 0x10010), d());
    assert_eq!(k, vec![RegisterProgramming], "{all}");
    assert!(all.contains("bits [11:1]"), "{all}");
    // A 40-bit IPA space from level 1 takes two concatenated pages: BADDR
    // bit 12 is RES0 then.
    let vtcr_40 = 24 | 1 << 6;
    let (k, all) = kinds_of(&stage2_trace(vtcr_40, 0x10000), d());
    assert!(k.is_empty(), "{all}");
    let (k, all) = kinds_of(&stage2_trace(vtcr_40, 0x11000), d());
    assert_eq!(k, vec![RegisterProgramming], "{all}");
    assert!(all.contains("bits [12:1]"), "{all}");
}

/// Inconsistent stage 2 geometries: too many concatenated root pages, a
/// reserved SL0, too few IPA bits for the start level.
#[test]
fn register_rule_inconsistent_vtcr() {
    use vmsa_model::ViolationKind::RegisterProgramming;
    for (vtcr, what) in [
        (0x10, "262144 concatenated"),
        (16 | 3 << 6, "SL0 0b11 is reserved"),
        (40 | 2 << 6, "too small for a walk starting at level 0"),
        (10, "outside the 16 to 48 bits"),
    ] {
        let (k, all) = kinds_of(&stage2_trace(vtcr, 0x10000), Config::default());
        assert_eq!(k, vec![RegisterProgramming], "{vtcr:#x}: {all}");
        assert!(all.contains(what), "{vtcr:#x}: {all}");
    }
}

/// TTBR0_EL2[63:48]: RES0 with HCR_EL2.E2H 0, the EL2&0 regime's ASID
/// with E2H 1.
#[test]
fn register_rule_ttbr0_el2_asid_without_e2h() {
    use vmsa_model::ViolationKind::RegisterProgramming;
    let el2 = |hcr: u64| {
        format!(
            "(sysreg-write (id 0) (tid 0) (sysreg hcr_el2) (value {hcr:#x}))\n\
             (sysreg-write (id 1) (tid 0) (sysreg tcr_el2) (value 0x10))\n\
             (mem-init (id 2) (tid 0) (address 0x10000) (size 0x1000))\n\
             (sysreg-write (id 3) (tid 0) (sysreg ttbr0_el2) (value 0x5000000010000))\n"
        )
    };
    let (k, all) = kinds_of(&el2(1), Config::default());
    assert_eq!(k, vec![RegisterProgramming], "{all}");
    assert!(all.contains("E2H 0"), "{all}");
    let (k, all) = kinds_of(&el2(1 | 1 << 34), Config::default());
    assert!(k.is_empty(), "{all}");
}

/// `mem-free` ends memory: a live table in it, or a live entry mapping it,
/// is a use after free; freeing memory nothing uses is not.
#[test]
fn mem_free_of_live_tables_and_mapped_data() {
    use vmsa_model::ViolationKind::UseAfterFree;
    // Root 0x10000 (level 0, TCR_EL2 T0SZ 16) -> 0x11000 -> 0x12000 ->
    // 0x13000, whose entry 0 maps the page 0x40000000.
    let setup = "(sysreg-write (id 0) (tid 0) (sysreg tcr_el2) (value 0x10))\n\
                 (mem-init (id 1) (tid 0) (address 0x10000) (size 0x4000))\n\
                 (mem-write (id 2) (tid 0) (mem-order plain) (address 0x10000) (value 0x11003))\n\
                 (mem-write (id 3) (tid 0) (mem-order plain) (address 0x11000) (value 0x12003))\n\
                 (mem-write (id 4) (tid 0) (mem-order plain) (address 0x12000) (value 0x13003))\n\
                 (mem-write (id 5) (tid 0) (mem-order plain) (address 0x13000) (value 0x40000743))\n\
                 (sysreg-write (id 6) (tid 0) (sysreg ttbr0_el2) (value 0x10000))\n";
    let d = Config::default;
    let (k, all) = kinds_of(setup, d());
    assert!(k.is_empty(), "{all}");
    let (k, all) = kinds_of(
        &format!("{setup}(mem-free (id 7) (tid 0) (address 0x13000) (size 0x1000))\n"),
        d(),
    );
    assert_eq!(k, vec![UseAfterFree], "{all}");
    let (k, all) = kinds_of(
        &format!("{setup}(mem-free (id 7) (tid 0) (address 0x40000000) (size 0x1000))\n"),
        d(),
    );
    assert_eq!(k, vec![UseAfterFree], "{all}");
    assert!(all.contains("still maps it"), "{all}");
    let (k, all) = kinds_of(
        &format!("{setup}(mem-free (id 7) (tid 0) (address 0x50000000) (size 0x1000))\n"),
        d(),
    );
    assert!(k.is_empty(), "{all}");
    // After an unmap completed with TLBIs, freeing both is clean.
    let (k, all) = kinds_of(
        &format!(
            "{setup}(mem-write (id 7) (tid 0) (mem-order plain) (address 0x12000) (value 0))\n\
             (barrier (id 8) (tid 0) dsb (kind ish))\n\
             (tlbi (id 9) (tid 0) alle2is)\n\
             (barrier (id 10) (tid 0) dsb (kind ish))\n\
             (mem-free (id 11) (tid 0) (address 0x13000) (size 0x1000))\n\
             (mem-free (id 12) (tid 0) (address 0x40000000) (size 0x1000))\n"
        ),
        d(),
    );
    assert!(k.is_empty(), "{all}");
}

/// A trace that builds a four-level table at 0x10000 mapping VA
/// 0xffff_0000_0000_0000 (the upper range's first page) to 0x40000000 with
/// a non-global entry after the register writes `regs`, installs it with
/// `install` (an empty lower-range root sits at 0x20000), then unmaps it
/// with `maintenance` between two DSBs.
fn upper_unmap(regs: &str, install: &str, maintenance: &str) -> String {
    format!(
        "{regs}\
         (mem-init (id 10) (tid 0) (address 0x10000) (size 0x4000))\n\
         (mem-init (id 11) (tid 0) (address 0x20000) (size 0x1000))\n\
         (mem-write (id 12) (tid 0) (mem-order plain) (address 0x10000) (value 0x11003))\n\
         (mem-write (id 13) (tid 0) (mem-order plain) (address 0x11000) (value 0x12003))\n\
         (mem-write (id 14) (tid 0) (mem-order plain) (address 0x12000) (value 0x13003))\n\
         (mem-write (id 15) (tid 0) (mem-order plain) (address 0x13000) (value 0x40000f43))\n\
         {install}\
         (mem-write (id 30) (tid 0) (mem-order plain) (address 0x13000) (value 0))\n\
         (barrier (id 31) (tid 0) dsb (kind ish))\n\
         {maintenance}\
         (barrier (id 33) (tid 0) dsb (kind ish))\n"
    )
}

/// The operand of a TLBI by VA for the upper range's first page with
/// `asid`: VA[55:12] in [43:0].
fn upper_operand(asid: u64) -> u64 {
    asid << 48 | (0xffff_0000_0000_0000u64 >> 12) & ((1 << 44) - 1)
}

/// TTBR1_EL1 (EL1&0, TCR_EL1.A1 0: the ASID is TTBR0_EL1's) and, with
/// HCR_EL2.E2H 1, TTBR1_EL2 of the EL2&0 regime with ASIDs: both are walked
/// from a trace, and an unmap there needs the TLBI by the upper VA with the
/// right ASID.
#[test]
fn ttbr1_and_el2_host_regimes_from_traces() {
    use vmsa_model::ViolationKind::StaleTranslation;
    let el1_regs = "(sysreg-write (id 1) (tid 0) (sysreg tcr_el1) (value 0x100010))\n";
    let el1_install = "(sysreg-write (id 20) (tid 0) (sysreg ttbr0_el1) (value 0x5000000020000))\n\
                       (sysreg-write (id 21) (tid 0) (sysreg ttbr1_el1) (value 0x10000))\n";
    let el2_regs = "(sysreg-write (id 1) (tid 0) (sysreg hcr_el2) (value 0x400000000))\n\
                    (sysreg-write (id 2) (tid 0) (sysreg tcr_el2) (value 0x100010))\n";
    let el2_install = "(sysreg-write (id 20) (tid 0) (sysreg ttbr0_el2) (value 0x7000000020000))\n\
                       (sysreg-write (id 21) (tid 0) (sysreg ttbr1_el2) (value 0x10000))\n";
    let tlbi =
        |op: &str, operand: u64| format!("(tlbi (id 32) (tid 0) {op} (value {operand:#x}))\n");
    for (regs, install, op, asid, other) in [
        (el1_regs, el1_install, "vae1is", 5, 6),
        (el2_regs, el2_install, "vae2is", 7, 8),
    ] {
        let run = |maintenance: &str| {
            kinds_of(&upper_unmap(regs, install, maintenance), Config::default())
        };
        let (k, all) = run(&tlbi(op, upper_operand(asid)));
        assert!(k.is_empty(), "{op}: {all}");
        let (k, all) = run("");
        assert_eq!(k, vec![StaleTranslation], "{op}: {all}");
        assert!(all.contains("0xffff000000000000"), "{op}: {all}");
        // Another ASID, or the lower range's VA, misses the entry.
        let (k, all) = run(&tlbi(op, upper_operand(other)));
        assert_eq!(k, vec![StaleTranslation], "{op}: {all}");
        let (k, all) = run(&tlbi(op, upper_operand(asid) & !(1 << 43)));
        assert_eq!(k, vec![StaleTranslation], "{op}: {all}");
    }
    // Without E2H, TTBR1_EL2 is walked by nothing: the unmap needs no TLBI.
    let no_e2h = "(sysreg-write (id 1) (tid 0) (sysreg hcr_el2) (value 0))\n\
                  (sysreg-write (id 2) (tid 0) (sysreg tcr_el2) (value 0x10))\n";
    let (k, all) = kinds_of(&upper_unmap(no_e2h, el2_install, ""), Config::default());
    // TTBR0_EL2's ASID is RES0 then: that alone is reported.
    assert_eq!(
        k,
        vec![vmsa_model::ViolationKind::RegisterProgramming],
        "{all}"
    );
}

/// With [`Config::locks`]: a descriptor owned by one PE alone
/// (`set_pte_thread_owner`) is written by that PE only; a lock is taken by
/// one PE at a time and released by its holder.
#[test]
fn lock_discipline_thread_owners_and_lock_pairs() {
    use vmsa_model::ViolationKind::LockDiscipline;
    let locks = Config {
        locks: true,
        ..Config::default()
    };
    // A stage 2 root 0x10000 locked by 0x9000, installed; PE 1 owns the
    // descriptor 0x10008 alone.
    let setup = "(mem-init (id 0) (tid 0) (address 0x10000) (size 0x1000))\n\
                 (hint (id 1) (tid 0) (kind set_root_lock) (location 0x10000) (value 0x9000))\n\
                 (sysreg-write (id 2) (tid 0) (sysreg vttbr_el2) (value 0x10000))\n\
                 (hint (id 3) (tid 0) (kind set_pte_thread_owner) (location 0x10008) (value 1))\n";
    let write = |tid: u32| {
        format!("(mem-write (id 4) (tid {tid}) (mem-order plain) (address 0x10008) (value 0))\n")
    };
    let (k, all) = kinds_of(&format!("{setup}{}", write(1)), locks.clone());
    assert!(k.is_empty(), "{all}");
    let (k, all) = kinds_of(&format!("{setup}{}", write(0)), locks.clone());
    assert_eq!(k, vec![LockDiscipline], "{all}");
    assert!(all.contains("PE 1 owns alone"), "{all}");
    // trylock takes the lock like lock; a second taker, or a release by a
    // PE that does not hold it, breaks the discipline.
    let pairs = [
        (
            "(trylock (id 5) (tid 0) (address 0x9000))\n(unlock (id 6) (tid 0) (address 0x9000))\n",
            false,
        ),
        (
            "(lock (id 5) (tid 0) (address 0x9000))\n(trylock (id 6) (tid 1) (address 0x9000))\n",
            true,
        ),
        (
            "(lock (id 5) (tid 0) (address 0x9000))\n(unlock (id 6) (tid 1) (address 0x9000))\n",
            true,
        ),
        ("(unlock (id 6) (tid 1) (address 0x9000))\n", true),
    ];
    for (text, bad) in pairs {
        let (k, all) = kinds_of(&format!("{setup}{text}"), locks.clone());
        assert_eq!(k.contains(&LockDiscipline), bad, "{text}: {all}");
        let (k, all) = kinds_of(&format!("{setup}{text}"), Config::default());
        assert!(k.is_empty(), "{text}: {all}");
    }
    // A write to the root under its lock, taken with trylock, is clean.
    let (k, all) = kinds_of(
        &format!(
            "{setup}(trylock (id 5) (tid 0) (address 0x9000))\n\
             (mem-write (id 6) (tid 0) (mem-order plain) (address 0x10000) (value 0))\n\
             (unlock (id 7) (tid 0) (address 0x9000))\n"
        ),
        locks,
    );
    assert!(k.is_empty(), "{all}");
}

/// Bogus sizes and addresses take one pass, without overflow or panic.
#[test]
fn huge_releases_end() {
    let text = "(mem-init (id 0) (tid 0) (address 0x10000) (size 0x1000))\n\
                (mem-free (id 1) (tid 0) (address 0x0) (size 0xffffffffffffffff))\n\
                (release-data (id 3) (tid 0) (address 0xfffffffffffff000) (size 0xffffffffffffffff))\n\
                (tlbi (id 4) (tid 0) vae2is (addr 0xffffffffffffffff) (level 3))\n";
    let (k, all) = kinds_of(text, Config::default());
    assert!(k.is_empty(), "{all}");
    // A region past the top of the address space is not a region.
    let wraps =
        "(mem-free (id 2) (tid 0) (address 0xfffffffffffff000) (size 0xffffffffffffffff))\n";
    let e = check(wraps.as_bytes(), Config::default())
        .err()
        .unwrap_or_else(|| panic!("refused"));
    assert!(e.to_string().contains("wraps past the top"), "{e}");
}
