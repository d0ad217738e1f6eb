//! isla's TOML litmus format: `page_table_setup`, `[thread.N]` with
//! `code` and `[thread.N.reset]`, `[section.*]` handlers at addresses, and
//! `[final] assertion`.

use std::collections::HashMap;

use super::asm::{assemble, parse_int, Block, SysReg};
use super::cond::{self, Cond};
use super::setup::{self, Layout};
use super::Error;

/// Where thread `n`'s program is placed (instruction fetch is not
/// translated, so any address out of the tests' way does).
pub fn thread_base(n: usize) -> u64 {
    0x1_0000_0000 + n as u64 * 0x10_0000
}

/// What a register the reset values do not set holds at the start: not
/// zero (the tests mean a register they do not set to be unknown, and
/// read a zero only when it was written; e.g. `S.RT.ro+dsb-tlbiis-dsb+dsb-isb`
/// would be trivially allowed with zeroed registers), the register number
/// in the low bits.
pub const UNSET: u64 = 0x0bad_0000_0000_0000;

/// One thread's program and initial state.
#[derive(Clone, Debug)]
pub struct ThreadSpec {
    /// The program.
    pub block: Block,
    /// Initial general-purpose registers.
    pub regs: [u64; 31],
    /// Initial system registers.
    pub sys: Vec<(SysReg, u64)>,
    /// Initial exception level (0 unless `PSTATE.EL` says otherwise).
    pub el: u8,
    /// Initial `PSTATE.SP` (SP_ELx selected).
    pub sp: bool,
}

/// A parsed test.
#[derive(Clone, Debug)]
pub struct Test {
    /// `name`.
    pub name: String,
    /// Memory, tables and names.
    pub layout: Layout,
    /// The threads, by number.
    pub threads: Vec<ThreadSpec>,
    /// Handlers and other code at fixed addresses.
    pub sections: Vec<Block>,
    /// The final condition.
    pub cond: Cond,
}

fn str_of<'a>(t: &'a toml::Table, key: &str) -> Option<&'a str> {
    t.get(key).and_then(|v| v.as_str())
}

/// Parses a test from TOML text.
pub fn parse(src: &str) -> Result<Test, Error> {
    let doc: toml::Table = src
        .parse()
        .map_err(|e: toml::de::Error| Error::Parse(format!("TOML: {}", e.message())))?;
    let name = str_of(&doc, "name").unwrap_or("?").to_string();
    if let Some(a) = str_of(&doc, "arch") {
        if a != "AArch64" {
            return Err(Error::Unsupported(format!("architecture {a}")));
        }
    }
    let symbolic: Vec<String> = doc
        .get("symbolic")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let setup_src = str_of(&doc, "page_table_setup")
        .ok_or_else(|| Error::Unsupported("no `page_table_setup`".into()))?;
    let mut layout = setup::build(setup_src, &symbolic)?;

    let threads_t = doc
        .get("thread")
        .and_then(|v| v.as_table())
        .ok_or_else(|| Error::Parse("no [thread.N]".into()))?;
    let mut labels = HashMap::new();
    let mut numbered = Vec::new();
    for (k, v) in threads_t {
        let n: usize = k
            .parse()
            .map_err(|_| Error::Parse(format!("thread name `{k}` is not a number")))?;
        if n > 8 {
            return Err(Error::Unsupported(format!(
                "thread {n} (more than 9 threads)"
            )));
        }
        let t = v
            .as_table()
            .ok_or_else(|| Error::Parse(format!("[thread.{n}] is not a table")))?;
        let code =
            str_of(t, "code").ok_or_else(|| Error::Parse(format!("thread {n} has no code")))?;
        let block = assemble(code, thread_base(n), &mut labels)?;
        numbered.push((n, block, t.get("reset").and_then(|r| r.as_table()).cloned()));
    }
    numbered.sort_by_key(|x| x.0);
    if numbered.iter().enumerate().any(|(i, x)| x.0 != i) {
        return Err(Error::Parse("threads must be numbered 0, 1, ...".into()));
    }
    let mut sections = Vec::new();
    if let Some(secs) = doc.get("section").and_then(|v| v.as_table()) {
        for (k, v) in secs {
            let t = v
                .as_table()
                .ok_or_else(|| Error::Parse(format!("[section.{k}] is not a table")))?;
            let addr = str_of(t, "address")
                .and_then(parse_int)
                .ok_or_else(|| Error::Parse(format!("section {k} has no address")))?;
            let code = str_of(t, "code")
                .ok_or_else(|| Error::Parse(format!("section {k} has no code")))?;
            sections.push(assemble(code, addr, &mut labels)?);
        }
    }
    layout.labels = labels;

    let mut threads = Vec::new();
    for (n, block, reset) in numbered {
        let mut spec = ThreadSpec {
            block,
            regs: core::array::from_fn(|r| UNSET | r as u64),
            sys: Vec::new(),
            el: 0,
            sp: false,
        };
        for (k, v) in reset.iter().flatten() {
            if k == "__isla_monomorphize_writes" {
                // A hint to isla's solver, not a register.
                continue;
            }
            let text = v
                .as_str()
                .ok_or_else(|| Error::Parse(format!("thread {n} reset `{k}` is not a string")))?;
            let value = setup::eval(&layout, text)?;
            let upper = k.to_ascii_uppercase();
            if let Some(r) = upper
                .strip_prefix('R')
                .or_else(|| upper.strip_prefix('X'))
                .and_then(|r| r.parse::<u8>().ok())
                .filter(|&r| r <= 30)
            {
                spec.regs[r as usize] = value;
            } else if upper == "PSTATE.EL" {
                spec.el = value as u8;
                if spec.el > 2 {
                    return Err(Error::Unsupported(format!(
                        "thread {n} starting at EL{}",
                        spec.el
                    )));
                }
            } else if upper == "PSTATE.SP" {
                spec.sp = value & 1 == 1;
            } else if let Some(r) = SysReg::from_name(k) {
                if matches!(r, SysReg::VttbrEl2 | SysReg::Ttbr0El2) {
                    return Err(Error::Unsupported(format!(
                        "{} (stage 2 / EL2 regime)",
                        r.name()
                    )));
                }
                spec.sys.push((r, value));
            } else {
                return Err(Error::Unsupported(format!("reset of `{k}`")));
            }
        }
        threads.push(spec);
    }
    let final_t = doc
        .get("final")
        .and_then(|v| v.as_table())
        .ok_or_else(|| Error::Parse("no [final]".into()))?;
    let assertion =
        str_of(final_t, "assertion").ok_or_else(|| Error::Parse("no final assertion".into()))?;
    let cond = cond::parse(assertion, &layout)?;
    Ok(Test {
        name,
        layout,
        threads,
        sections,
        cond,
    })
}
