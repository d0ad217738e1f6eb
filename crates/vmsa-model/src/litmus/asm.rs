//! The AArch64 subset the VMSA litmus tests use, parsed from their text.
//!
//! Registers are numbered 0 to 30; 31 is `XZR` as a source (reads zero)
//! and a discarded destination.

use std::collections::HashMap;

use vmsa::tlbi::TlbiOp;

use super::Error;
use crate::event::{Barrier, Domain};

/// `XZR`.
pub const ZR: u8 = 31;

/// A second source operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operand {
    /// A register (optionally shifted left).
    Reg(u8, u32),
    /// An immediate.
    Imm(u64),
}

/// The offset of a load or store address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offset {
    /// `[Xn, #imm]` (or none).
    Imm(u64),
    /// `[Xn, Xm{, LSL #s}]`.
    Reg(u8, u32),
}

/// Data-processing operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AluOp {
    /// `ADD`.
    Add,
    /// `SUB` (and `SUBS`, `CMP`).
    Sub,
    /// `AND`.
    And,
    /// `ORR`.
    Orr,
    /// `EOR`.
    Eor,
    /// `LSL`.
    Lsl,
    /// `LSR`.
    Lsr,
}

/// Condition codes of `B.cond` and `CSEL`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cond {
    /// Equal (Z).
    Eq,
    /// Not equal.
    Ne,
    /// Unsigned higher or same (C).
    Hs,
    /// Unsigned lower.
    Lo,
    /// Unsigned higher.
    Hi,
    /// Unsigned lower or same.
    Ls,
    /// Signed greater or equal.
    Ge,
    /// Signed less than.
    Lt,
    /// Signed greater than.
    Gt,
    /// Signed less or equal.
    Le,
}

/// The system registers the tests read and write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SysReg {
    /// Exception link register, EL1.
    ElrEl1,
    /// Exception link register, EL2.
    ElrEl2,
    /// Saved program status, EL1.
    SpsrEl1,
    /// Saved program status, EL2.
    SpsrEl2,
    /// Exception syndrome, EL1.
    EsrEl1,
    /// Exception syndrome, EL2.
    EsrEl2,
    /// Fault address, EL1.
    FarEl1,
    /// Fault address, EL2.
    FarEl2,
    /// Faulting IPA, EL2.
    HpfarEl2,
    /// Vector base, EL1.
    VbarEl1,
    /// Vector base, EL2.
    VbarEl2,
    /// EL1&0 stage 1 base and ASID.
    Ttbr0El1,
    /// EL1&0 stage 1 upper-range base (kept, not walked).
    Ttbr1El1,
    /// EL2 stage 1 base.
    Ttbr0El2,
    /// Stage 2 base and VMID.
    VttbrEl2,
}

impl SysReg {
    /// Every register, indexed by `as usize`.
    pub const ALL: [SysReg; 15] = [
        SysReg::ElrEl1,
        SysReg::ElrEl2,
        SysReg::SpsrEl1,
        SysReg::SpsrEl2,
        SysReg::EsrEl1,
        SysReg::EsrEl2,
        SysReg::FarEl1,
        SysReg::FarEl2,
        SysReg::HpfarEl2,
        SysReg::VbarEl1,
        SysReg::VbarEl2,
        SysReg::Ttbr0El1,
        SysReg::Ttbr1El1,
        SysReg::Ttbr0El2,
        SysReg::VttbrEl2,
    ];

    /// The register's architectural name.
    pub fn name(self) -> &'static str {
        match self {
            SysReg::ElrEl1 => "ELR_EL1",
            SysReg::ElrEl2 => "ELR_EL2",
            SysReg::SpsrEl1 => "SPSR_EL1",
            SysReg::SpsrEl2 => "SPSR_EL2",
            SysReg::EsrEl1 => "ESR_EL1",
            SysReg::EsrEl2 => "ESR_EL2",
            SysReg::FarEl1 => "FAR_EL1",
            SysReg::FarEl2 => "FAR_EL2",
            SysReg::HpfarEl2 => "HPFAR_EL2",
            SysReg::VbarEl1 => "VBAR_EL1",
            SysReg::VbarEl2 => "VBAR_EL2",
            SysReg::Ttbr0El1 => "TTBR0_EL1",
            SysReg::Ttbr1El1 => "TTBR1_EL1",
            SysReg::Ttbr0El2 => "TTBR0_EL2",
            SysReg::VttbrEl2 => "VTTBR_EL2",
        }
    }

    /// Parses a register name (case-insensitive).
    pub fn from_name(s: &str) -> Option<SysReg> {
        SysReg::ALL
            .into_iter()
            .find(|r| r.name().eq_ignore_ascii_case(s))
    }
}

/// Which accesses a `DMB` orders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmbKind {
    /// Loads and stores.
    Full,
    /// `ST`: stores against stores.
    Stores,
    /// `LD`: loads against later loads and stores.
    Loads,
}

/// One instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Instr {
    /// `LDR`, `LDAR` (acquire), `LDAPR` (acquire-PC, treated as acquire).
    Ldr {
        /// Destination.
        rt: u8,
        /// Base register.
        base: u8,
        /// Offset.
        offset: Offset,
        /// Load-acquire.
        acquire: bool,
    },
    /// `STR`, `STLR` (release).
    Str {
        /// Source.
        rt: u8,
        /// Base register.
        base: u8,
        /// Offset.
        offset: Offset,
        /// Store-release.
        release: bool,
    },
    /// `ADD`, `SUB(S)`, `AND`, `ORR`, `EOR`, `LSL`, `LSR`; `CMP` is a
    /// `SUBS` to `XZR`.
    Alu {
        /// Operation.
        op: AluOp,
        /// Destination.
        rd: u8,
        /// First source.
        rn: u8,
        /// Second source.
        op2: Operand,
        /// Sets NZCV (`SUBS`, `CMP`).
        flags: bool,
    },
    /// `MOV`.
    Mov {
        /// Destination.
        rd: u8,
        /// Source.
        src: Operand,
    },
    /// `UBFX Xd, Xn, #lsb, #width`.
    Ubfx {
        /// Destination.
        rd: u8,
        /// Source.
        rn: u8,
        /// Lowest bit.
        lsb: u32,
        /// Width.
        width: u32,
    },
    /// `CSEL Xd, Xn, Xm, cond`.
    Csel {
        /// Destination.
        rd: u8,
        /// Taken when the condition holds.
        rn: u8,
        /// Otherwise.
        rm: u8,
        /// Condition.
        cond: Cond,
    },
    /// `CBZ` / `CBNZ`.
    Cbz {
        /// Tested register.
        rt: u8,
        /// `CBNZ`.
        nonzero: bool,
        /// Target address.
        target: u64,
    },
    /// `B.cond`.
    BCond {
        /// Condition.
        cond: Cond,
        /// Target address.
        target: u64,
    },
    /// `B`.
    B {
        /// Target address.
        target: u64,
    },
    /// A barrier (`DSB`, `DMB` other than the kinds below, `ISB`).
    Barrier(Barrier),
    /// `DMB` of a kind.
    Dmb(DmbKind),
    /// `TLBI <op>{, Xt}`.
    Tlbi {
        /// Operation.
        op: TlbiOp,
        /// Operand register (`XZR` when none).
        rt: u8,
    },
    /// `MSR <reg>, Xt`.
    Msr {
        /// Register.
        reg: SysReg,
        /// Source.
        rt: u8,
    },
    /// `MRS Xt, <reg>`.
    Mrs {
        /// Destination.
        rt: u8,
        /// Register.
        reg: SysReg,
    },
    /// `SVC #imm`.
    Svc,
    /// `HVC #imm`.
    Hvc,
    /// `ERET`.
    Eret,
    /// `NOP`, and cache maintenance (`DC`, `IC`), which the tests use on
    /// memory the model treats as coherent.
    Nop,
}

impl Instr {
    /// Whether the instruction is a branch.
    pub fn is_branch(&self) -> bool {
        matches!(
            self,
            Instr::Cbz { .. } | Instr::BCond { .. } | Instr::B { .. }
        )
    }
}

/// A block of code at an address: a thread's program or a handler.
#[derive(Clone, Debug)]
pub struct Block {
    /// Address of the first instruction.
    pub base: u64,
    /// The instructions, 4 bytes apart.
    pub code: Vec<Instr>,
    /// The source text of each instruction (for witnesses).
    pub text: Vec<String>,
}

/// Assembles `src` at `base`; `labels` receives the block's labels (with
/// their trailing `:`) and their addresses.
pub fn assemble(src: &str, base: u64, labels: &mut HashMap<String, u64>) -> Result<Block, Error> {
    // First pass: labels.
    let mut lines = Vec::new();
    for raw in src.lines() {
        let mut line = raw;
        for c in ["//", ";"] {
            if let Some(i) = line.find(c) {
                line = &line[..i];
            }
        }
        let mut line = line.trim();
        while let Some(i) = line.find(':') {
            let (label, rest) = line.split_at(i);
            let label = label.trim();
            if label.is_empty() || label.contains(char::is_whitespace) {
                break;
            }
            let addr = base + 4 * lines.len() as u64;
            labels.insert(format!("{label}:"), addr);
            line = rest[1..].trim();
        }
        if !line.is_empty() {
            lines.push(line.to_string());
        }
    }
    let mut code = Vec::new();
    for line in &lines {
        code.push(parse_instr(line, labels)?);
    }
    Ok(Block {
        base,
        code,
        text: lines,
    })
}

fn bad(line: &str, why: &str) -> Error {
    Error::Asm(format!("{why}: `{line}`"))
}

fn unsupported(what: String) -> Error {
    Error::Unsupported(what)
}

/// Parses an integer: decimal, `0x`, `0b`, with an optional `#`.
pub fn parse_int(s: &str) -> Option<u64> {
    let s = s.trim().trim_start_matches('#').trim();
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let v = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(&h.replace('_', ""), 16).ok()?
    } else if let Some(b) = s.strip_prefix("0b").or_else(|| s.strip_prefix("0B")) {
        u64::from_str_radix(&b.replace('_', ""), 2).ok()?
    } else {
        s.parse().ok()?
    };
    Some(if neg { v.wrapping_neg() } else { v })
}

/// Parses `Xn` / `Wn` / `XZR` / `WZR`.
fn reg(s: &str) -> Option<u8> {
    let s = s.trim().to_ascii_uppercase();
    if s == "XZR" || s == "WZR" {
        return Some(ZR);
    }
    let n: u8 = s
        .strip_prefix('X')
        .or_else(|| s.strip_prefix('W'))?
        .parse()
        .ok()?;
    (n <= 30).then_some(n)
}

/// Splits operands at top-level commas (brackets kept together).
fn operands(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            _ => {}
        }
        if c == ',' && depth == 0 {
            out.push(cur.trim().to_string());
            cur.clear();
        } else {
            cur.push(c);
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

fn cond(s: &str) -> Option<Cond> {
    Some(match s.to_ascii_uppercase().as_str() {
        "EQ" => Cond::Eq,
        "NE" => Cond::Ne,
        "HS" | "CS" => Cond::Hs,
        "LO" | "CC" => Cond::Lo,
        "HI" => Cond::Hi,
        "LS" => Cond::Ls,
        "GE" => Cond::Ge,
        "LT" => Cond::Lt,
        "GT" => Cond::Gt,
        "LE" => Cond::Le,
        _ => return None,
    })
}

fn shift(s: &str) -> Option<u32> {
    let s = s.trim();
    let rest = s
        .strip_prefix("LSL")
        .or_else(|| s.strip_prefix("lsl"))?
        .trim();
    parse_int(rest).filter(|&v| v < 64).map(|v| v as u32)
}

fn operand2(ops: &[String], line: &str) -> Result<Operand, Error> {
    let first = ops.first().ok_or_else(|| bad(line, "missing operand"))?;
    if let Some(r) = reg(first) {
        let sh = match ops.get(1) {
            Some(s) => shift(s).ok_or_else(|| bad(line, "unknown shift"))?,
            None => 0,
        };
        return Ok(Operand::Reg(r, sh));
    }
    parse_int(first)
        .map(Operand::Imm)
        .ok_or_else(|| bad(line, "bad operand"))
}

fn address(s: &str, line: &str) -> Result<(u8, Offset), Error> {
    let inner = s
        .trim()
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .ok_or_else(|| bad(line, "expected [Xn...]"))?;
    let parts = operands(inner);
    let base = parts
        .first()
        .and_then(|p| reg(p))
        .ok_or_else(|| bad(line, "bad base register"))?;
    let offset = match parts.get(1) {
        None => Offset::Imm(0),
        Some(p) => match reg(p) {
            Some(r) => {
                let sh = match parts.get(2) {
                    Some(s) => shift(s).ok_or_else(|| bad(line, "unknown shift"))?,
                    None => 0,
                };
                Offset::Reg(r, sh)
            }
            None => Offset::Imm(parse_int(p).ok_or_else(|| bad(line, "bad offset"))?),
        },
    };
    Ok((base, offset))
}

fn target(s: &str, labels: &HashMap<String, u64>, line: &str) -> Result<u64, Error> {
    let name = format!("{}:", s.trim());
    labels
        .get(&name)
        .copied()
        .ok_or_else(|| bad(line, "unknown label (only backward or same-block labels)"))
}

fn dsb_domain(s: &str) -> Option<(Domain, bool)> {
    Some(match s.to_ascii_uppercase().as_str() {
        "SY" => (Domain::FullSystem, false),
        "ST" => (Domain::FullSystem, true),
        "LD" => (Domain::FullSystem, false),
        "ISH" => (Domain::InnerShareable, false),
        "ISHST" => (Domain::InnerShareable, true),
        "ISHLD" => (Domain::InnerShareable, false),
        "OSH" => (Domain::OuterShareable, false),
        "OSHST" => (Domain::OuterShareable, true),
        "OSHLD" => (Domain::OuterShareable, false),
        "NSH" => (Domain::NonShareable, false),
        "NSHST" => (Domain::NonShareable, true),
        "NSHLD" => (Domain::NonShareable, false),
        _ => return None,
    })
}

/// Parses one instruction. Labels must be known (a forward label is found
/// because [`assemble`] collects them first).
fn parse_instr(line: &str, labels: &HashMap<String, u64>) -> Result<Instr, Error> {
    let (mn, rest) = match line.find(char::is_whitespace) {
        Some(i) => (&line[..i], line[i..].trim()),
        None => (line, ""),
    };
    let mn = mn.to_ascii_uppercase();
    let ops = operands(rest);
    let r = |i: usize| -> Result<u8, Error> {
        ops.get(i)
            .and_then(|o| reg(o))
            .ok_or_else(|| bad(line, "expected a register"))
    };
    Ok(match mn.as_str() {
        "LDR" | "LDAR" | "LDAPR" => {
            let (base, offset) = address(ops.get(1).map_or("", |s| s), line)?;
            if ops.len() > 2 {
                return Err(unsupported(format!("post-indexed load `{line}`")));
            }
            Instr::Ldr {
                rt: r(0)?,
                base,
                offset,
                acquire: mn != "LDR",
            }
        }
        "STR" | "STLR" => {
            let (base, offset) = address(ops.get(1).map_or("", |s| s), line)?;
            if ops.len() > 2 {
                return Err(unsupported(format!("post-indexed store `{line}`")));
            }
            Instr::Str {
                rt: r(0)?,
                base,
                offset,
                release: mn == "STLR",
            }
        }
        "MOV" => Instr::Mov {
            rd: r(0)?,
            src: operand2(&ops[1..], line)?,
        },
        "ADD" | "SUB" | "SUBS" | "AND" | "ORR" | "EOR" | "LSL" | "LSR" => {
            let op = match mn.as_str() {
                "ADD" => AluOp::Add,
                "SUB" | "SUBS" => AluOp::Sub,
                "AND" => AluOp::And,
                "ORR" => AluOp::Orr,
                "EOR" => AluOp::Eor,
                "LSL" => AluOp::Lsl,
                _ => AluOp::Lsr,
            };
            if ops.len() < 3 {
                return Err(bad(line, "expected three operands"));
            }
            Instr::Alu {
                op,
                rd: r(0)?,
                rn: r(1)?,
                op2: operand2(&ops[2..], line)?,
                flags: mn == "SUBS",
            }
        }
        "CMP" => Instr::Alu {
            op: AluOp::Sub,
            rd: ZR,
            rn: r(0)?,
            op2: operand2(&ops[1..], line)?,
            flags: true,
        },
        "UBFX" => Instr::Ubfx {
            rd: r(0)?,
            rn: r(1)?,
            lsb: ops
                .get(2)
                .and_then(|s| parse_int(s))
                .ok_or_else(|| bad(line, "bad lsb"))? as u32,
            width: ops
                .get(3)
                .and_then(|s| parse_int(s))
                .ok_or_else(|| bad(line, "bad width"))? as u32,
        },
        "CSEL" => Instr::Csel {
            rd: r(0)?,
            rn: r(1)?,
            rm: r(2)?,
            cond: ops
                .get(3)
                .and_then(|s| cond(s))
                .ok_or_else(|| bad(line, "bad condition"))?,
        },
        "CBZ" | "CBNZ" => Instr::Cbz {
            rt: r(0)?,
            nonzero: mn == "CBNZ",
            target: target(ops.get(1).map_or("", |s| s), labels, line)?,
        },
        "B" => Instr::B {
            target: target(rest, labels, line)?,
        },
        _ if mn.starts_with("B.") => Instr::BCond {
            cond: cond(&mn[2..]).ok_or_else(|| bad(line, "bad condition"))?,
            target: target(rest, labels, line)?,
        },
        "DSB" => {
            let (domain, stores_only) =
                dsb_domain(rest).ok_or_else(|| bad(line, "unknown DSB option"))?;
            Instr::Barrier(Barrier::Dsb {
                domain,
                stores_only,
            })
        }
        "DMB" => {
            let o = rest.to_ascii_uppercase();
            if dsb_domain(&o).is_none() {
                return Err(bad(line, "unknown DMB option"));
            }
            Instr::Dmb(if o.ends_with("ST") {
                DmbKind::Stores
            } else if o.ends_with("LD") {
                DmbKind::Loads
            } else {
                DmbKind::Full
            })
        }
        "ISB" => Instr::Barrier(Barrier::Isb),
        "TLBI" => {
            let name = ops.first().map_or("", |s| s.as_str());
            let op =
                TlbiOp::from_mnemonic(name).ok_or_else(|| unsupported(format!("TLBI {name}")))?;
            let rt = match ops.get(1) {
                Some(s) => reg(s).ok_or_else(|| bad(line, "bad TLBI operand"))?,
                None => ZR,
            };
            Instr::Tlbi { op, rt }
        }
        "MSR" => {
            let name = ops.first().map_or("", |s| s.as_str());
            let reg_ =
                SysReg::from_name(name).ok_or_else(|| unsupported(format!("MSR to {name}")))?;
            Instr::Msr {
                reg: reg_,
                rt: r(1)?,
            }
        }
        "MRS" => {
            let name = ops.get(1).map_or("", |s| s.as_str());
            let reg_ =
                SysReg::from_name(name).ok_or_else(|| unsupported(format!("MRS from {name}")))?;
            Instr::Mrs {
                rt: r(0)?,
                reg: reg_,
            }
        }
        "SVC" => Instr::Svc,
        "HVC" => Instr::Hvc,
        "ERET" => Instr::Eret,
        "NOP" | "DC" | "IC" => Instr::Nop,
        _ => return Err(unsupported(format!("instruction `{line}`"))),
    })
}
