//! isla's page-table setup language, and the expressions of register
//! reset values and final conditions.
//!
//! The supported subset builds one EL1&0 stage 1 tree (4 KiB granule,
//! 48-bit VA, level 0 root at [`ROOT`]) and, when the test declares
//! `intermediate` addresses, a stage 2 tree (level 0 root at [`S2_ROOT`],
//! VMID 0) that maps every physical name, table page and code page at the
//! same IPA and the intermediate names as the setup says: `physical`,
//! `intermediate`, `virtual`, `x |-> pa`, `x |-> ipa`, `ipa |-> pa`,
//! `x |-> invalid`, `... with [AP = 0bNN] and default`, `x ?-> ...`
//! (alternatives: they only name descriptors, the tables are built for
//! every address anyway), `*pa = n`, `identity N with code|default`, and
//! `option default_tables = true`. Table pages are identity-mapped so that
//! tests may store to them (as isla maps them). Explicit tables
//! (`s1table`, `s2table`, `at level`, `table(..)`, `raw(..)`, `assert`)
//! are reported unsupported.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::asm::parse_int;
use super::Error;

/// The stage 1 root table (`page_table_base`).
pub const ROOT: u64 = 0x20_0000;
/// The stage 2 root table (`s2_page_table_base`).
pub const S2_ROOT: u64 = 0x30_0000;
/// Where intermediate physical addresses start; each gets its own page.
const IPA_BASE: u64 = 0xc000_0000;
/// Where symbolic virtual addresses start; each gets its own 2 MiB.
const VA_BASE: u64 = 0x4000_0000;
/// Where physical addresses start; each gets its own page.
const PA_BASE: u64 = 0x8000_0000;

/// Stage 1 page descriptor attributes isla uses by default: not global
/// (nG, so ASID-based invalidation removes them), AF, Inner Shareable,
/// AttrIndx 0, and AP = 0b01 (read/write at EL1 and EL0).
const PAGE_ATTRS: u64 = 1 << 11 | 1 << 10 | 0b11 << 8;

/// A stage 1 level 3 page descriptor for `oa` with `ap`.
pub fn page_desc(oa: u64, ap: u64) -> u64 {
    oa & 0x0000_ffff_ffff_f000 | PAGE_ATTRS | (ap & 0b11) << 6 | 0b11
}

/// A stage 2 level 3 page descriptor for `oa`: AF, Inner Shareable,
/// S2AP = 0b11 (read/write), MemAttr 0b1111 (Normal write-back).
pub fn s2_page_desc(oa: u64) -> u64 {
    oa & 0x0000_ffff_ffff_f000 | 1 << 10 | 0b11 << 8 | 0b11 << 6 | 0b1111 << 2 | 0b11
}

/// Which tree a table operation is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tree {
    /// EL1&0 stage 1.
    Stage1,
    /// Stage 2.
    Stage2,
}

impl Tree {
    fn root(self) -> u64 {
        match self {
            Tree::Stage1 => ROOT,
            Tree::Stage2 => S2_ROOT,
        }
    }
}

/// The memory and tables a test starts with, and the names it uses.
#[derive(Clone, Debug, Default)]
pub struct Layout {
    /// Virtual addresses by name.
    pub vas: HashMap<String, u64>,
    /// Physical addresses by name.
    pub pas: HashMap<String, u64>,
    /// Intermediate physical addresses by name.
    pub ipas: HashMap<String, u64>,
    /// Stage 2 is enabled (the test declares intermediate addresses).
    pub stage2: bool,
    /// Initial memory, 64-bit words by physical address.
    pub mem: BTreeMap<u64, u64>,
    /// The pages holding translation tables.
    pub tables: BTreeSet<u64>,
    /// Output pages each virtual page may map to (`|->` and `?->`), for
    /// the alias analysis of reordering.
    pub may_map: HashMap<u64, BTreeSet<u64>>,
    /// Code labels (`L0:`) and their addresses.
    pub labels: HashMap<String, u64>,
    next_table: u64,
    next_s2_table: u64,
}

impl Layout {
    /// A layout with the root table only.
    fn new() -> Self {
        let mut l = Layout {
            next_table: ROOT + 0x1000,
            next_s2_table: S2_ROOT + 0x1000,
            ..Layout::default()
        };
        l.tables.insert(ROOT);
        l
    }

    fn read(&self, pa: u64) -> u64 {
        self.mem.get(&pa).copied().unwrap_or(0)
    }

    /// The address of the level `level` descriptor for `va` in `tree`,
    /// allocating tables down to it.
    fn slot_in(&mut self, tree: Tree, va: u64, level: u8) -> u64 {
        let mut table = tree.root();
        for l in 0..=level {
            let shift = 12 + 9 * (3 - l as u32);
            let pa = table + ((va >> shift) & 0x1ff) * 8;
            if l == level {
                return pa;
            }
            let d = self.read(pa);
            table = if d & 0b11 == 0b11 {
                d & 0x0000_ffff_ffff_f000
            } else {
                let next = match tree {
                    Tree::Stage1 => &mut self.next_table,
                    Tree::Stage2 => &mut self.next_s2_table,
                };
                let t = *next;
                *next += 0x1000;
                self.tables.insert(t);
                self.mem.insert(pa, t | 0b11);
                t
            };
        }
        unreachable!("the loop returns at `level`")
    }

    fn slot(&mut self, va: u64, level: u8) -> u64 {
        self.slot_in(Tree::Stage1, va, level)
    }

    /// The level `level` descriptor address for `va` in `tree`, if the
    /// tables reach it.
    pub fn pte_in(&self, tree: Tree, va: u64, level: u8) -> Option<u64> {
        let mut table = tree.root();
        for l in 0..=level {
            let shift = 12 + 9 * (3 - l as u32);
            let pa = table + ((va >> shift) & 0x1ff) * 8;
            if l == level {
                return Some(pa);
            }
            let d = self.read(pa);
            if d & 0b11 != 0b11 {
                return None;
            }
            table = d & 0x0000_ffff_ffff_f000;
        }
        None
    }

    /// The stage 1 level `level` descriptor address for `va`.
    pub fn pte(&self, va: u64, level: u8) -> Option<u64> {
        self.pte_in(Tree::Stage1, va, level)
    }

    fn map(&mut self, va: u64, desc: u64) {
        let s = self.slot(va, 3);
        self.mem.insert(s, desc);
    }

    fn map_s2(&mut self, ipa: u64, desc: u64) {
        let s = self.slot_in(Tree::Stage2, ipa, 3);
        self.mem.insert(s, desc);
    }

    /// Where `addr` translates in the initial tables of `tree`.
    fn initial_in(&self, tree: Tree, addr: u64) -> Option<u64> {
        let d = self.read(self.pte_in(tree, addr, 3)?);
        (d & 0b11 == 0b11).then_some(d & 0x0000_ffff_ffff_f000 | addr & 0xfff)
    }

    /// Where `va` translates in the initial tables (through stage 2 when
    /// enabled).
    pub fn initial_pa(&self, va: u64) -> Option<u64> {
        let ipa = self.initial_in(Tree::Stage1, va)?;
        if self.stage2 {
            self.initial_in(Tree::Stage2, ipa)
        } else {
            Some(ipa)
        }
    }
}

fn unsupported(s: impl Into<String>) -> Error {
    Error::Unsupported(s.into())
}

/// Builds the layout from the setup text and the `symbolic` names.
pub fn build(setup: &str, symbolic: &[String]) -> Result<Layout, Error> {
    let mut l = Layout::new();
    let mut next_va = VA_BASE;
    let mut next_pa = PA_BASE;
    let mut new_va = |l: &mut Layout, name: &str| {
        if !l.vas.contains_key(name) {
            l.vas.insert(name.to_string(), next_va);
            next_va += 0x20_0000;
        }
    };
    for s in symbolic {
        new_va(&mut l, s);
    }
    let stmts: Vec<String> = setup
        .split(';')
        .map(|s| {
            s.lines()
                .map(|l| l.split("//").next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    // Declarations first, so mappings may name later declarations.
    for st in &stmts {
        let words: Vec<&str> = st.split_whitespace().collect();
        match words.first().copied() {
            Some("physical") => {
                for w in &words[1..] {
                    if !l.pas.contains_key(*w) {
                        l.pas.insert(w.to_string(), next_pa);
                        next_pa += 0x1000;
                    }
                }
            }
            Some("intermediate") => {
                l.stage2 = true;
                for w in &words[1..] {
                    if !l.ipas.contains_key(*w) {
                        let ipa = IPA_BASE + 0x1000 * l.ipas.len() as u64;
                        l.ipas.insert(w.to_string(), ipa);
                    }
                }
            }
            Some("virtual") => {
                for w in &words[1..] {
                    new_va(&mut l, w);
                }
            }
            Some("aligned") if words.get(2) == Some(&"virtual") => {
                for w in &words[3..] {
                    new_va(&mut l, w);
                }
            }
            _ => {}
        }
    }
    for st in stmts.iter().filter(|s| s.starts_with("assert")) {
        assume(&mut l, st)?;
    }
    let mut identities = Vec::new();
    let mut invalid_l2 = Vec::new();
    for st in &stmts {
        let words: Vec<&str> = st.split_whitespace().collect();
        match words.first().copied() {
            Some("physical" | "virtual" | "aligned" | "intermediate") => continue,
            Some("s1table" | "s2table") => {
                return Err(unsupported("explicit tables (`s1table`/`s2table`)"))
            }
            Some("assert") => continue,
            Some("option") => {
                if st.contains("default_tables") && st.contains("false") {
                    return Err(unsupported("`option default_tables = false`"));
                }
                continue;
            }
            Some("identity") => {
                let addr = words
                    .get(1)
                    .and_then(|w| parse_int(w))
                    .ok_or_else(|| unsupported(format!("identity mapping `{st}`")))?;
                l.map(addr, page_desc(addr, 0b01));
                identities.push(addr);
                continue;
            }
            _ => {}
        }
        if let Some(rest) = st.strip_prefix('*') {
            let (lhs, rhs) = rest
                .split_once('=')
                .ok_or_else(|| Error::Parse(format!("bad setup statement `{st}`")))?;
            let value =
                parse_int(rhs).ok_or_else(|| unsupported(format!("initial value `{st}`")))?;
            let lhs = lhs.trim();
            let pa = if let Some(&pa) = l.pas.get(lhs) {
                pa
            } else if let Some(&va) = l.vas.get(lhs) {
                // The memory the initial tables map it to (the mappings
                // come first in the statements that use this form).
                pending_va_init(&mut l, &stmts, va)?
            } else {
                return Err(Error::Parse(format!("unknown location in `{st}`")));
            };
            l.mem.insert(pa, value);
            continue;
        }
        let (arrow, maybe) = if st.contains("|->") {
            ("|->", false)
        } else if st.contains("?->") {
            ("?->", true)
        } else {
            return Err(unsupported(format!("setup statement `{st}`")));
        };
        let (lhs, rhs) = st.split_once(arrow).expect("checked above");
        let lhs = lhs.trim();
        let rhs = rhs.trim();
        if maybe && !l.ipas.contains_key(lhs) {
            // An alternative: it only names a descriptor a thread may
            // store; the tables reach the entry, the value is the thread's.
            let va = *l.vas.get(lhs).ok_or_else(|| {
                unsupported(format!("mapping of `{lhs}` (not a virtual address)"))
            })?;
            let target = rhs.split_whitespace().next().unwrap_or("");
            if let Some(&pa) = l.pas.get(target).or_else(|| l.ipas.get(target)) {
                l.may_map.entry(va).or_default().insert(pa);
            }
            l.slot(va, 3);
            continue;
        }
        if let Some(v) = rhs.strip_suffix(" at level 2") {
            if v.trim() == "invalid" {
                let va = *l.vas.get(lhs).ok_or_else(|| {
                    unsupported(format!("mapping of `{lhs}` (not a virtual address)"))
                })?;
                invalid_l2.push(va);
                continue;
            }
        }
        if rhs.contains(" at level") || rhs.contains(" as ") {
            return Err(unsupported(format!("`{st}` (levels other than 3)")));
        }
        if let Some(&ipa) = l.ipas.get(lhs) {
            // A stage 2 mapping.
            let desc = if rhs == "invalid" {
                0
            } else if let Some(&pa) = l.pas.get(rhs) {
                s2_page_desc(pa)
            } else {
                return Err(unsupported(format!("stage 2 mapping target in `{st}`")));
            };
            if maybe {
                l.slot_in(Tree::Stage2, ipa, 3);
            } else {
                l.map_s2(ipa, desc);
            }
            continue;
        }
        let va = *l
            .vas
            .get(lhs)
            .ok_or_else(|| unsupported(format!("mapping of `{lhs}` (not a virtual address)")))?;
        let (target, ap) = match rhs.split_once(" with ") {
            None => (rhs, 0b01),
            Some((t, attrs)) => {
                let ap = attrs
                    .split_once("AP =")
                    .or_else(|| attrs.split_once("AP="))
                    .and_then(|(_, r)| parse_int(r.trim().split([']', ' ']).next().unwrap_or("")))
                    .ok_or_else(|| unsupported(format!("attributes in `{st}`")))?;
                (t.trim(), ap)
            }
        };
        let desc = if target == "invalid" {
            0
        } else if let Some(&pa) = l.pas.get(target).or_else(|| l.ipas.get(target)) {
            l.may_map.entry(va).or_default().insert(pa);
            page_desc(pa, ap)
        } else {
            return Err(unsupported(format!("mapping target in `{st}`")));
        };
        if maybe {
            // Only makes sure the tables reach the entry.
            l.slot(va, 3);
        } else {
            l.map(va, desc);
        }
    }
    // Every symbolic address has tables down to level 3 (its `pte3` and
    // `desc3` exist; unmapped, the descriptor is invalid).
    let vas: Vec<u64> = l.vas.values().copied().collect();
    for va in vas {
        l.slot(va, 3);
    }
    // `x |-> invalid at level 2`: after every other mapping, so that no
    // later one re-creates the level 3 table under it.
    for va in invalid_l2 {
        let s = l.slot(va, 2);
        l.mem.insert(s, 0);
    }
    // Identity-map the table pages (which may need more tables).
    let mut done = BTreeSet::new();
    loop {
        let todo: Vec<u64> = l.tables.difference(&done).copied().collect();
        if todo.is_empty() {
            break;
        }
        for t in todo {
            l.map(t, page_desc(t, 0b01));
            l.may_map.entry(t).or_default().insert(t);
            done.insert(t);
        }
    }
    if l.stage2 {
        // Stage 2 maps every physical name, stage 1 table page and code
        // page at the same IPA (explicit stage 2 mappings of them stand).
        let mut same: Vec<u64> = l.pas.values().copied().collect();
        same.extend(l.tables.iter().filter(|&&t| t < S2_ROOT));
        same.extend(identities);
        for pa in same {
            let slot = l.slot_in(Tree::Stage2, pa, 3);
            l.mem.entry(slot).or_insert(s2_page_desc(pa));
        }
    }
    Ok(l)
}

/// A setup `assert`: `assert pa == ipa` makes the intermediate address
/// equal the physical one (before any mapping uses it); `assert x[48..21]
/// != y[48..21]` holds already (every virtual address has its own 2 MiB).
/// Others are unsupported.
fn assume(l: &mut Layout, st: &str) -> Result<(), Error> {
    let body = st.trim_start_matches("assert").trim();
    if let Some((a, b)) = body.split_once("==") {
        let (a, b) = (a.trim(), b.trim());
        let pair = match (l.pas.get(a), l.ipas.get(b), l.pas.get(b), l.ipas.get(a)) {
            (Some(&pa), Some(_), _, _) => Some((b, pa)),
            (_, _, Some(&pa), Some(_)) => Some((a, pa)),
            _ => None,
        };
        if let Some((ipa, pa)) = pair {
            l.ipas.insert(ipa.to_string(), pa);
            return Ok(());
        }
    } else if let Some((a, b)) = body.split_once("!=") {
        let name = |s: &str| {
            s.trim()
                .strip_suffix("[48..21]")
                .map(|n| n.trim().to_string())
        };
        if let (Some(a), Some(b)) = (name(a), name(b)) {
            if let (Some(x), Some(y)) = (l.vas.get(&a), l.vas.get(&b)) {
                if x >> 21 != y >> 21 {
                    return Ok(());
                }
            }
        }
    }
    Err(unsupported(format!("setup `{st}`")))
}

/// `*x = n` for a virtual `x`: the page `x` is mapped to by a `|->` among
/// `stmts` (the initial value goes to the physical page).
fn pending_va_init(l: &mut Layout, stmts: &[String], va: u64) -> Result<u64, Error> {
    for st in stmts {
        if let Some((lhs, rhs)) = st.split_once("|->") {
            if l.vas.get(lhs.trim()) == Some(&va) {
                let t = rhs.split_whitespace().next().unwrap_or("");
                if let Some(&pa) = l.pas.get(t) {
                    return Ok(pa);
                }
            }
        }
    }
    Err(unsupported("initial value of an unmapped virtual address"))
}

/// Evaluates a reset value or a value in a final condition.
pub fn eval(l: &Layout, src: &str) -> Result<u64, Error> {
    let mut p = ExprParser { s: src.trim(), l };
    let v = p.expr()?;
    if !p.s.trim().is_empty() {
        return Err(Error::Parse(format!("trailing text in expression `{src}`")));
    }
    Ok(v)
}

struct ExprParser<'a> {
    s: &'a str,
    l: &'a Layout,
}

impl ExprParser<'_> {
    fn ident(&mut self) -> &str {
        self.s = self.s.trim_start();
        let end = self
            .s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(self.s.len());
        let (a, b) = self.s.split_at(end);
        self.s = b;
        a
    }

    fn eat(&mut self, c: char) -> bool {
        self.s = self.s.trim_start();
        if let Some(r) = self.s.strip_prefix(c) {
            self.s = r;
            true
        } else {
            false
        }
    }

    /// Arguments: `e` or `name=e`, comma-separated.
    fn args(&mut self) -> Result<Vec<(Option<String>, u64)>, Error> {
        let mut out = Vec::new();
        if self.eat(')') {
            return Ok(out);
        }
        loop {
            let save = self.s;
            let name = self.ident().to_string();
            let named = !name.is_empty() && self.eat('=');
            if !named {
                self.s = save;
            }
            let v = self.expr()?;
            out.push((named.then_some(name), v));
            if self.eat(')') {
                return Ok(out);
            }
            if !self.eat(',') {
                return Err(Error::Parse(format!("expected `,` or `)` at `{}`", self.s)));
            }
        }
    }

    fn expr(&mut self) -> Result<u64, Error> {
        let word = self.ident().to_string();
        if word.is_empty() {
            return Err(Error::Parse(format!("expected a value at `{}`", self.s)));
        }
        if !self.eat('(') {
            if let Some(v) = parse_int(&word) {
                return Ok(v);
            }
            if let Some(&v) = self.l.vas.get(&word) {
                return Ok(v);
            }
            if let Some(&v) = self.l.pas.get(&word) {
                return Ok(v);
            }
            if let Some(&v) = self.l.labels.get(&word) {
                return Ok(v);
            }
            if let Some(&v) = self.l.ipas.get(&word) {
                return Ok(v);
            }
            if word == "page_table_base" {
                return Ok(ROOT);
            }
            if word == "s2_page_table_base" && self.l.stage2 {
                return Ok(S2_ROOT);
            }
            return Err(unsupported(format!("value `{word}`")));
        }
        let args = self.args()?;
        let pos = |i: usize| -> Result<u64, Error> {
            args.get(i)
                .map(|a| a.1)
                .ok_or_else(|| Error::Parse(format!("`{word}` needs argument {}", i + 1)))
        };
        let named = |n: &str| args.iter().find(|a| a.0.as_deref() == Some(n)).map(|a| a.1);
        let tree_of = |b: u64| match b {
            ROOT => Ok(Tree::Stage1),
            S2_ROOT => Ok(Tree::Stage2),
            _ => Err(unsupported(format!(
                "`{word}` in a table other than page_table_base and s2_page_table_base"
            ))),
        };
        match word.as_str() {
            "extz" | "exts" => pos(0),
            "page" => Ok(pos(0)? >> 12),
            "asid" => Ok(pos(0)? << 48),
            "bvor" => Ok(pos(0)? | pos(1)?),
            "bvlshr" => Ok(u32::try_from(pos(1)?)
                .ok()
                .and_then(|b| pos(0).ok()?.checked_shr(b))
                .unwrap_or(0)),
            "pte0" | "pte1" | "pte2" | "pte3" | "desc0" | "desc1" | "desc2" | "desc3" => {
                let tree = tree_of(pos(1)?)?;
                let level = word.as_bytes()[word.len() - 1] - b'0';
                let pte = self
                    .l
                    .pte_in(tree, pos(0)?, level)
                    .ok_or_else(|| unsupported(format!("`{word}` of an address without tables")))?;
                if word.starts_with("pte") {
                    Ok(pte)
                } else {
                    Ok(self.l.read(pte))
                }
            }
            "mkdesc3" => {
                let oa = named("oa").ok_or_else(|| unsupported("mkdesc3 without oa"))?;
                Ok(page_desc(oa, named("AP").unwrap_or(0b01)))
            }
            "s2mkdesc3" => {
                let oa = named("oa").ok_or_else(|| unsupported("s2mkdesc3 without oa"))?;
                Ok(s2_page_desc(oa))
            }
            "pa_to_ipa" => pos(0),
            "ttbr" => {
                let base = named("base").ok_or_else(|| unsupported("ttbr without base"))?;
                let tag = named("asid").or(named("vmid")).unwrap_or(0);
                Ok(tag << 48 | base)
            }
            _ => Err(unsupported(format!("function `{word}`"))),
        }
    }
}
