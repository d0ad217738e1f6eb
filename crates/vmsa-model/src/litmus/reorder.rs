//! The reorderings of ordinary memory accesses Arm permits within a
//! thread, as program variants: every order of a thread's instructions
//! that keeps
//!
//! - register dependencies (address, data, and every other read/write of
//!   a register or of NZCV),
//! - accesses to possibly the same location in order,
//! - `DMB` (full: every access; `ST`: stores; `LD`: earlier loads against
//!   later accesses),
//! - acquire loads before later accesses, release stores after earlier
//!   ones,
//! - and everything else (`DSB`, `ISB`, `TLBI`, `MSR`, `MRS`, `SVC`,
//!   `ERET`, ...) in place relative to every other instruction.
//!
//! Branches: a thread with a branch is not reordered; if it has two data
//! accesses the rules above would let swap, it is reported unsupported.
//! Handlers are not reordered.

use std::collections::BTreeSet;

use super::asm::{AluOp, Block, DmbKind, Instr, Offset, Operand, ZR};
use super::parse::ThreadSpec;
use super::setup::Layout;
use super::Error;

/// At most this many variants per thread.
pub const MAX_VARIANTS: usize = 200;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Registers only.
    Pure,
    Load {
        acquire: bool,
    },
    Store {
        release: bool,
    },
    Dmb(DmbKind),
    /// Ordered against everything.
    Fixed,
}

fn kind(i: &Instr) -> Kind {
    match *i {
        Instr::Alu { .. } | Instr::Mov { .. } | Instr::Ubfx { .. } | Instr::Csel { .. } => {
            Kind::Pure
        }
        Instr::Ldr { acquire, .. } => Kind::Load { acquire },
        Instr::Str { release, .. } => Kind::Store { release },
        Instr::Dmb(k) => Kind::Dmb(k),
        _ => Kind::Fixed,
    }
}

const FLAGS: u8 = 32;

/// Registers read and written (NZCV as register 32).
fn regs(i: &Instr) -> (Vec<u8>, Vec<u8>) {
    let op = |o: Operand| match o {
        Operand::Reg(r, _) => vec![r],
        Operand::Imm(_) => vec![],
    };
    let off = |o: Offset| match o {
        Offset::Reg(r, _) => vec![r],
        Offset::Imm(_) => vec![],
    };
    let (mut r, mut w) = match *i {
        Instr::Ldr {
            rt, base, offset, ..
        } => ([vec![base], off(offset)].concat(), vec![rt]),
        Instr::Str {
            rt, base, offset, ..
        } => ([vec![rt, base], off(offset)].concat(), vec![]),
        Instr::Alu {
            rd, rn, op2, flags, ..
        } => (
            [vec![rn], op(op2)].concat(),
            if flags { vec![rd, FLAGS] } else { vec![rd] },
        ),
        Instr::Mov { rd, src } => (op(src), vec![rd]),
        Instr::Ubfx { rd, rn, .. } => (vec![rn], vec![rd]),
        Instr::Csel { rd, rn, rm, .. } => (vec![rn, rm, FLAGS], vec![rd]),
        Instr::Cbz { rt, .. } => (vec![rt], vec![]),
        Instr::BCond { .. } => (vec![FLAGS], vec![]),
        Instr::Tlbi { rt, .. } | Instr::Msr { rt, .. } => (vec![rt], vec![]),
        Instr::Mrs { rt, .. } => (vec![], vec![rt]),
        _ => (vec![], vec![]),
    };
    r.retain(|&x| x != ZR);
    w.retain(|&x| x != ZR);
    (r, w)
}

/// The address each access uses, where it is known before running (from
/// reset values and register arithmetic on them).
fn static_addresses(spec: &ThreadSpec) -> Vec<Option<u64>> {
    let mut known: Vec<Option<u64>> = spec.regs.iter().map(|&v| Some(v)).collect();
    known.push(Some(0));
    let get = |k: &Vec<Option<u64>>, r: u8| if r == ZR { Some(0) } else { k[r as usize] };
    let mut out = Vec::new();
    for i in &spec.block.code {
        let mut addr = None;
        match *i {
            Instr::Ldr { base, offset, .. } | Instr::Str { base, offset, .. } => {
                let o = match offset {
                    Offset::Imm(v) => Some(v),
                    Offset::Reg(r, sh) => get(&known, r).map(|v| v << sh),
                };
                addr = get(&known, base).zip(o).map(|(b, o)| b.wrapping_add(o));
            }
            Instr::Mov { rd, src } if rd != ZR => {
                known[rd as usize] = match src {
                    Operand::Imm(v) => Some(v),
                    Operand::Reg(r, sh) => get(&known, r).map(|v| v << sh),
                };
            }
            Instr::Alu {
                op, rd, rn, op2, ..
            } if rd != ZR => {
                let b = match op2 {
                    Operand::Imm(v) => Some(v),
                    Operand::Reg(r, sh) => get(&known, r).map(|v| v << sh),
                };
                let same = matches!(op2, Operand::Reg(r, 0) if r == rn);
                known[rd as usize] = match (op, get(&known, rn), b) {
                    (AluOp::Eor | AluOp::Sub, _, _) if same => Some(0),
                    (_, Some(a), Some(b)) => Some(match op {
                        AluOp::Add => a.wrapping_add(b),
                        AluOp::Sub => a.wrapping_sub(b),
                        AluOp::And => a & b,
                        AluOp::Orr => a | b,
                        AluOp::Eor => a ^ b,
                        AluOp::Lsl => a.wrapping_shl(b as u32),
                        AluOp::Lsr => a.wrapping_shr(b as u32),
                    }),
                    _ => None,
                };
            }
            _ => {
                for w in regs(i).1 {
                    if w != FLAGS {
                        known[w as usize] = None;
                    }
                }
            }
        }
        out.push(addr);
    }
    out
}

/// The pages an address may reach: its own page (it may be a table page
/// or identity-mapped) and what it is or may be mapped to.
fn locations(layout: &Layout, va: u64) -> BTreeSet<u64> {
    let page = va & !0xfff;
    let mut s = layout.may_map.get(&page).cloned().unwrap_or_default();
    if let Some(pa) = layout.initial_pa(va) {
        s.insert(pa & !0xfff);
    }
    s.insert(page);
    s
}

/// Whether instruction `a` must stay before the later `b`.
fn ordered(prog: &[Instr], addrs: &[Option<u64>], layout: &Layout, a: usize, b: usize) -> bool {
    let (ia, ib) = (&prog[a], &prog[b]);
    let (ra, wa) = regs(ia);
    let (rb, wb) = regs(ib);
    let meets = |x: &[u8], y: &[u8]| x.iter().any(|r| y.contains(r));
    if meets(&wa, &rb) || meets(&ra, &wb) || meets(&wa, &wb) {
        return true;
    }
    let (ka, kb) = (kind(ia), kind(ib));
    match (ka, kb) {
        (Kind::Fixed, _) | (_, Kind::Fixed) => true,
        (Kind::Pure, _) | (_, Kind::Pure) => false,
        (Kind::Dmb(_), Kind::Dmb(_)) => true,
        (Kind::Dmb(k), x) => match k {
            DmbKind::Full | DmbKind::Loads => true,
            DmbKind::Stores => matches!(x, Kind::Store { .. }),
        },
        (x, Kind::Dmb(k)) => match k {
            DmbKind::Full => true,
            DmbKind::Stores => matches!(x, Kind::Store { .. }),
            DmbKind::Loads => matches!(x, Kind::Load { .. }),
        },
        (x, y) => {
            if matches!(x, Kind::Load { acquire: true })
                || matches!(y, Kind::Store { release: true })
                || matches!(
                    (x, y),
                    (Kind::Store { release: true }, Kind::Load { acquire: true })
                )
            {
                return true;
            }
            match (addrs[a], addrs[b]) {
                (Some(p), Some(q)) => !locations(layout, p).is_disjoint(&locations(layout, q)),
                _ => true,
            }
        }
    }
}

/// The variants of thread `spec`'s program (the original first).
pub fn variants(spec: &ThreadSpec, layout: &Layout) -> Result<Vec<Block>, Error> {
    let prog = &spec.block.code;
    let n = prog.len();
    let addrs = static_addresses(spec);
    let before: Vec<Vec<usize>> = (0..n)
        .map(|b| {
            (0..b)
                .filter(|&a| ordered(prog, &addrs, layout, a, b))
                .collect()
        })
        .collect();
    let has_branch = prog.iter().any(Instr::is_branch);
    if has_branch {
        let acc = |i: usize| matches!(kind(&prog[i]), Kind::Load { .. } | Kind::Store { .. });
        // Transitive order through everything, then look for a free pair.
        let mut reach = vec![vec![false; n]; n];
        for (b, preds) in before.iter().enumerate() {
            for &a in preds {
                reach[a][b] = true;
                for row in reach.iter_mut().take(a) {
                    if row[a] {
                        row[b] = true;
                    }
                }
            }
        }
        // A store after a branch is ordered after what the branch depends
        // on (a control dependency); a load is not.
        let store = |i: usize| matches!(kind(&prog[i]), Kind::Store { .. });
        for b in 0..n {
            for a in 0..b {
                if acc(a)
                    && acc(b)
                    && !reach[a][b]
                    && !(store(b) && prog[a..b].iter().any(Instr::is_branch))
                {
                    return Err(Error::Unsupported(
                        "depends on relaxed ordering of ordinary accesses (reorderable accesses in a thread with branches)".into(),
                    ));
                }
            }
        }
        return Ok(vec![spec.block.clone()]);
    }
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut order = Vec::new();
    let mut done = vec![false; n];
    topo(prog, &before, &mut done, &mut order, &mut out, &mut seen)?;
    // The original order first.
    let blocks = out
        .into_iter()
        .map(|ord: Vec<usize>| Block {
            base: spec.block.base,
            code: ord.iter().map(|&i| prog[i]).collect(),
            text: ord.iter().map(|&i| spec.block.text[i].clone()).collect(),
        })
        .collect();
    Ok(blocks)
}

/// Every topological order, pure instructions scheduled as soon as they
/// can be (their position does not change what memory sees).
fn topo(
    prog: &[Instr],
    before: &[Vec<usize>],
    done: &mut Vec<bool>,
    order: &mut Vec<usize>,
    out: &mut Vec<Vec<usize>>,
    seen: &mut BTreeSet<Vec<usize>>,
) -> Result<(), Error> {
    let n = prog.len();
    let ready = |done: &Vec<bool>, i: usize| !done[i] && before[i].iter().all(|&a| done[a]);
    // Pure instructions first, deterministically.
    let mut pushed = Vec::new();
    while let Some(i) = (0..n).find(|&i| ready(done, i) && kind(&prog[i]) == Kind::Pure) {
        done[i] = true;
        order.push(i);
        pushed.push(i);
    }
    if order.len() == n {
        if seen.insert(order.clone()) {
            if out.len() >= MAX_VARIANTS {
                return Err(Error::Unsupported(format!(
                    "too many reorderings of a thread (>{MAX_VARIANTS})"
                )));
            }
            out.push(order.clone());
        }
    } else {
        for i in 0..n {
            if ready(done, i) {
                done[i] = true;
                order.push(i);
                topo(prog, before, done, order, out, seen)?;
                order.pop();
                done[i] = false;
            }
        }
    }
    for i in pushed.into_iter().rev() {
        done[i] = false;
        order.pop();
    }
    Ok(())
}

/// Whether a handler's access may be reordered with an access thread
/// `spec` made before the exception: exception entry is a context
/// synchronization event, not a memory barrier, so an access before a
/// faulting instruction or `SVC` with no barrier between them may be
/// performed after an access of the handler to another location.
pub fn handler_reorderable(spec: &ThreadSpec, sections: &[Block], layout: &Layout) -> bool {
    use super::asm::SysReg;
    let vbars: Vec<u64> = spec
        .sys
        .iter()
        .filter(|(r, _)| matches!(r, SysReg::VbarEl1 | SysReg::VbarEl2))
        .map(|&(_, v)| v)
        .collect();
    // The handlers' accesses, at the addresses the reset values give.
    let mut handler_addrs = Vec::new();
    for b in sections
        .iter()
        .filter(|b| vbars.iter().any(|&v| (v..v + 0x800).contains(&b.base)))
    {
        let as_thread = ThreadSpec {
            block: b.clone(),
            ..spec.clone()
        };
        for (i, a) in b.code.iter().zip(static_addresses(&as_thread)) {
            if matches!(kind(i), Kind::Load { .. } | Kind::Store { .. }) {
                handler_addrs.push(a);
            }
        }
    }
    if handler_addrs.is_empty() {
        return false;
    }
    let prog = &spec.block.code;
    let addrs = static_addresses(spec);
    for (e, ins) in prog.iter().enumerate() {
        let raises = matches!(kind(ins), Kind::Load { .. } | Kind::Store { .. })
            || matches!(ins, Instr::Svc);
        if !raises {
            continue;
        }
        for b in (0..e).rev() {
            match kind(&prog[b]) {
                Kind::Fixed | Kind::Dmb(DmbKind::Full) => break,
                Kind::Load { acquire: true } => break,
                Kind::Load { .. } | Kind::Store { .. } => {
                    let free = handler_addrs.iter().any(|h| match (addrs[b], *h) {
                        (Some(p), Some(q)) => {
                            locations(layout, p).is_disjoint(&locations(layout, q))
                        }
                        _ => false,
                    });
                    if free {
                        return true;
                    }
                }
                _ => {}
            }
        }
    }
    false
}
