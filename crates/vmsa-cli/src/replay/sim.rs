//! Replays a trace's events through host-managed guest stage 1 tables on
//! the model (the elfuse design): every traced process is an address
//! space with its own table (a model of its own), every thread a vCPU on a
//! PE of that model, and every call one batch served for the calling vCPU,
//! whose shim runs the TLB maintenance the request asks for (the table's
//! effects are issued on that vCPU's PE, then the batch is flushed).
//!
//! Between its calls each vCPU touches a few pages of the ranges it
//! mapped or changed last (reads; writes where writable; instruction
//! fetches where executable), so that entries are warm and stricter stale
//! ones cost spurious faults; a touch of a page with no contents yet (lazy
//! population) is a fault the host serves by mapping it.
//!
//! What the trace asks is the same under every policy, so it is worked
//! out once: the [`Driver`] turns events into [`Command`]s (table
//! operations, vCPUs loaded and put, accesses), and one [`Models`] per
//! policy carries them out on its models.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use vmsa::plan::{Invalidator, Purpose, Space as PlanSpace};
use vmsa::report::Change;
use vmsa::{Barrier, Effects};
use vmsa_model::cost::{Costs, Profile};

use super::parse::{clone, prot, Advice, Call, Event, What};
use super::space::{pages, perm_of, Op, Populate, Skip, Space, PAGE};
use crate::compare::workloads::{Env, Placement};
use crate::compare::{driver, policies};

/// How a replay runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// PEs in each model (PE 0 is the host; vCPUs run on 1 and up).
    pub pes: usize,
    /// When pages get contents.
    pub populate: Populate,
    /// Pages each vCPU touches after each of its calls.
    pub touch: usize,
}

/// What the replay did, the same for every policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Calls not replayed, per syscall name.
    pub skipped: BTreeMap<&'static str, u64>,
    /// Address spaces (processes, and images after execve) replayed.
    pub spaces: u64,
    /// Threads (vCPUs) seen.
    pub threads: u64,
    /// Pids that showed up without a clone the trace names.
    pub untraced_pids: u64,
    /// Most vCPUs one space ran on at once.
    pub max_vcpus: u64,
    /// Pages a call found mapped although the trace never mapped them (the
    /// image and stack set up by execve), added as read/write.
    pub implicit_pages: u64,
    /// Pages given contents when touched (lazy population).
    pub faulted_pages: u64,
    /// Table operations (map, unmap, protect runs).
    pub table_ops: u64,
    /// Batches (calls and faults that changed the table).
    pub batches: u64,
    /// Page accesses by vCPUs.
    pub accesses: u64,
}

/// The result of one replay under one policy.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Costs, summed over the spaces.
    pub costs: Costs,
    /// Violations, summed over the spaces.
    pub violations: u64,
    /// What was replayed.
    pub stats: Stats,
    /// The first few violations, for debugging.
    pub first_violations: Vec<String>,
    /// Flushes of the `freebsd` baseline replaced by a whole-ASID TLBI
    /// (see [`FREEBSD_PAGE_CAP`]).
    pub capped: u64,
}

/// The most 4 KiB pages one flush of the `freebsd` baseline may name one
/// by one in a replay (1 GiB, the most `vmsa compare`'s workloads give it).
pub const FREEBSD_PAGE_CAP: u64 = 1 << 18;

/// The `freebsd` baseline with a cap: it names every 4 KiB page of every
/// change, with no threshold, and the library reports a page-table page
/// that an unmap emptied as one change over all the table mapped (up to
/// 512 GiB in a 48-bit space: 2^27 TLBIs). FreeBSD's pmap invalidates a
/// freed page-table page with one `pmap_invalidate_page` (`_pmap_unwire_l3`),
/// so such a flush is replayed as one whole-ASID invalidation instead (and
/// counted).
struct CappedFreeBsd {
    inner: Box<dyn Invalidator>,
    capped: Arc<AtomicU64>,
}

impl Invalidator for CappedFreeBsd {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn invalidate(
        &self,
        space: &PlanSpace,
        purpose: Purpose,
        changes: &[Change],
        mapped: &mut dyn FnMut() -> u64,
        fx: &mut dyn Effects,
    ) -> bool {
        let pages: u64 = changes
            .iter()
            .filter(|c| purpose == Purpose::BreakBeforeMake || vmsa::plan::may_be_stale(c))
            .map(|c| c.range.end.saturating_sub(c.range.start) / PAGE)
            .fold(0, u64::saturating_add);
        if pages <= FREEBSD_PAGE_CAP {
            return self.inner.invalidate(space, purpose, changes, mapped, fx);
        }
        self.capped.fetch_add(1, Ordering::Relaxed);
        let (op, operand) = space.whole();
        fx.barrier(Barrier::DsbIsh);
        fx.tlbi(op, operand);
        fx.barrier(Barrier::DsbIsh);
        true
    }
}

/// Adds `b` into `a`.
fn add_costs(a: &mut Costs, b: &Costs) {
    a.events += b.events;
    a.writes += b.writes;
    for (&op, &n) in &b.tlbi {
        *a.tlbi.entry(op).or_insert(0) += n;
    }
    a.dsb += b.dsb;
    a.dsb_light += b.dsb_light;
    a.isb += b.isb;
    a.collateral += b.collateral;
    a.spurious_faults += b.spurious_faults;
    a.refill_walks += b.refill_walks;
}

/// One address space (on its own model in each [`Models`]).
struct Proc {
    space: Space,
    /// Its number in the commands.
    id: usize,
    /// Threads per PE.
    load: Vec<u32>,
    /// Live pids using it.
    live: u32,
    rng: u64,
}

struct Thread {
    proc: usize,
    pe: usize,
    tgid: u32,
    /// Ranges this thread mapped or changed last, newest first.
    recent: VecDeque<(u64, u64)>,
}

/// How many recent ranges a thread remembers.
const RECENT: usize = 4;

/// What a vCPU does at a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Touch {
    /// Reads it.
    Read,
    /// Writes it.
    Write,
    /// Fetches an instruction from it.
    Exec,
}

/// What the replay asks of one policy's models, in order: the trace's
/// events as table operations and accesses, the same under every policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// A new address space, numbered by creation from 0, on a model of its
    /// own with a vCPU running it on PE 1.
    NewSpace,
    /// PE `pe` starts running space `proc`.
    Load {
        /// The space.
        proc: usize,
        /// The PE.
        pe: usize,
    },
    /// PE `pe` stops running space `proc`.
    Put {
        /// The space.
        proc: usize,
        /// The PE.
        pe: usize,
    },
    /// A batch of table operations (a call, a fault) issued on `pe`
    /// begins: its operations follow as [`Command::Op`]s, then
    /// [`Command::EndBatch`].
    Batch {
        /// The space.
        proc: usize,
        /// The issuing PE.
        pe: usize,
    },
    /// One table operation of the batch.
    Op {
        /// The space.
        proc: usize,
        /// The operation.
        op: Op,
    },
    /// The batch ends.
    EndBatch {
        /// The space.
        proc: usize,
    },
    /// The vCPU on `pe` accesses `page`.
    Touch {
        /// The space.
        proc: usize,
        /// The PE.
        pe: usize,
        /// The page.
        page: u64,
        /// How.
        how: Touch,
    },
    /// Space `proc` ends: a last flush, and its model's results counted.
    End {
        /// The space.
        proc: usize,
    },
}

impl Command {
    /// The space it is about (`None` for [`Command::NewSpace`], which makes
    /// the next one).
    fn space(&self) -> Option<usize> {
        match *self {
            Command::NewSpace => None,
            Command::Load { proc, .. }
            | Command::Put { proc, .. }
            | Command::Batch { proc, .. }
            | Command::Op { proc, .. }
            | Command::EndBatch { proc }
            | Command::Touch { proc, .. }
            | Command::End { proc } => Some(proc),
        }
    }
}

/// Turns a trace's events into [`Command`]s, the same for every policy:
/// processes, threads and their vCPUs, each space's contents and the
/// table operations their changes need, the pages touched.
pub struct Driver {
    opts: Options,
    procs: Vec<Option<Proc>>,
    threads: HashMap<u32, Thread>,
    /// Clone-family calls started and not yet returned: (parent, flags).
    pending_clones: Vec<(u32, Option<u64>)>,
    first_pid: Option<u32>,
    stats: Stats,
    /// Commands not yet taken.
    out: Vec<Command>,
}

impl Driver {
    /// A driver for a replay run with `opts`.
    pub fn new(opts: Options) -> Self {
        Driver {
            opts,
            procs: Vec::new(),
            threads: HashMap::new(),
            pending_clones: Vec::new(),
            first_pid: None,
            stats: Stats::default(),
            out: Vec::new(),
        }
    }

    /// The commands made since the last call.
    pub fn commands(&mut self) -> &mut Vec<Command> {
        &mut self.out
    }

    /// What the replay did so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The end of the capture: every space is torn down.
    pub fn finish(&mut self) {
        for i in 0..self.procs.len() {
            self.finish_proc(i);
        }
    }

    /// A new process with `space`, its first thread `pid` on PE 1.
    fn new_proc(&mut self, pid: u32, space: Space) -> usize {
        let pes = self.opts.pes.max(2);
        let mut load = vec![0; pes];
        load[1] = 1;
        let proc = Proc {
            space,
            id: self.procs.len(),
            load,
            live: 1,
            rng: 0x9e37_79b9_7f4a_7c15 ^ u64::from(pid),
        };
        self.out.push(Command::NewSpace);
        self.procs.push(Some(proc));
        let i = self.procs.len() - 1;
        self.threads.insert(
            pid,
            Thread {
                proc: i,
                pe: 1,
                tgid: pid,
                recent: VecDeque::new(),
            },
        );
        self.stats.spaces += 1;
        self.stats.threads += 1;
        self.stats.max_vcpus = self.stats.max_vcpus.max(1);
        // A forked space's table is filled before the child runs.
        self.apply(i, 1);
        i
    }

    /// A new thread `pid` of process `proc` (on `pe`, or the least loaded
    /// vCPU PE).
    fn add_thread(&mut self, pid: u32, proc: usize, tgid: u32, pe: Option<usize>) {
        let Some(p) = self.procs[proc].as_mut() else {
            return;
        };
        let pe = pe.unwrap_or_else(|| {
            (1..p.load.len())
                .min_by_key(|&i| (p.load[i], i))
                .unwrap_or(1)
        });
        if p.load[pe] == 0 {
            self.out.push(Command::Load { proc: p.id, pe });
        }
        p.load[pe] += 1;
        p.live += 1;
        let running = p.load.iter().filter(|&&n| n > 0).count() as u64;
        self.stats.max_vcpus = self.stats.max_vcpus.max(running);
        self.stats.threads += 1;
        self.threads.insert(
            pid,
            Thread {
                proc,
                pe,
                tgid,
                recent: VecDeque::new(),
            },
        );
    }

    /// Thread `pid` ends: its vCPU stops running the space; the space
    /// ends with its last thread.
    fn remove_thread(&mut self, pid: u32) {
        let Some(t) = self.threads.remove(&pid) else {
            return;
        };
        let Some(p) = self.procs[t.proc].as_mut() else {
            return;
        };
        p.load[t.pe] = p.load[t.pe].saturating_sub(1);
        if p.load[t.pe] == 0 {
            self.out.push(Command::Put {
                proc: p.id,
                pe: t.pe,
            });
        }
        p.live = p.live.saturating_sub(1);
        if p.live == 0 {
            self.finish_proc(t.proc);
        }
    }

    /// The space ends.
    fn finish_proc(&mut self, proc: usize) {
        if let Some(p) = self.procs[proc].take() {
            self.out.push(Command::End { proc: p.id });
        }
    }

    /// Applies what the space's last changes need to its table, as one
    /// batch issued on `pe`.
    fn apply(&mut self, proc: usize, pe: usize) {
        let Some(p) = self.procs[proc].as_mut() else {
            return;
        };
        let ops = p.space.ops();
        if ops.is_empty() {
            return;
        }
        self.stats.table_ops += ops.len() as u64;
        self.stats.batches += 1;
        let proc = p.id;
        self.out.push(Command::Batch { proc, pe });
        self.out
            .extend(ops.into_iter().map(|op| Command::Op { proc, op }));
        self.out.push(Command::EndBatch { proc });
    }

    /// The thread for `pid`, created if the trace has not shown it yet.
    fn thread(&mut self, pid: u32, exec: bool) -> u32 {
        if self.threads.contains_key(&pid) {
            return pid;
        }
        let first = *self.first_pid.get_or_insert(pid);
        let root = self
            .threads
            .get(&first)
            .map(|t| (t.proc, t.tgid))
            .filter(|&(i, _)| self.procs[i].is_some());
        if exec || (self.pending_clones.is_empty() && root.is_none()) {
            // A new program (or the first process): its own space.
            let populate = self.opts.populate;
            self.new_proc(pid, Space::new(populate));
        } else if let Some(&(parent, flags)) = self.pending_clones.first() {
            // The child of a clone that has not returned yet.
            self.pending_clones.remove(0);
            self.clone_child(parent, flags.unwrap_or(clone::VM | clone::THREAD), pid);
        } else if let Some((proc, tgid)) = root {
            // No clone names it: a thread of the first process.
            self.stats.untraced_pids += 1;
            self.add_thread(pid, proc, tgid, None);
        }
        pid
    }

    /// `parent` made child `pid` with clone `flags`.
    fn clone_child(&mut self, parent: u32, flags: u64, pid: u32) {
        if self.threads.contains_key(&pid) {
            return;
        }
        let Some(t) = self.threads.get(&parent) else {
            let populate = self.opts.populate;
            self.new_proc(pid, Space::new(populate));
            return;
        };
        let (proc, pe, tgid) = (t.proc, t.pe, t.tgid);
        if flags & clone::VM != 0 {
            let tgid = if flags & clone::THREAD != 0 {
                tgid
            } else {
                pid
            };
            // A vfork child runs on its parent's vCPU while the parent
            // waits.
            let pe = (flags & clone::VFORK != 0).then_some(pe);
            self.add_thread(pid, proc, tgid, pe);
        } else if let Some(p) = self.procs[proc].as_ref() {
            let space = p.space.fork();
            self.new_proc(pid, space);
        }
    }

    /// Thread `from` turns out to be pid `to`.
    fn rename(&mut self, from: u32, to: u32) {
        if self.threads.contains_key(&to) {
            return;
        }
        if let Some(t) = self.threads.remove(&from) {
            self.threads.insert(to, t);
        }
        for t in self.threads.values_mut() {
            if t.tgid == from {
                t.tgid = to;
            }
        }
        for (parent, _) in &mut self.pending_clones {
            if *parent == from {
                *parent = to;
            }
        }
        if self.first_pid == Some(from) {
            self.first_pid = Some(to);
        }
    }

    fn skip(&mut self, name: &'static str) {
        *self.stats.skipped.entry(name).or_insert(0) += 1;
    }

    fn remember(&mut self, pid: u32, range: (u64, u64)) {
        if range.0 >= range.1 {
            return;
        }
        if let Some(t) = self.threads.get_mut(&pid) {
            t.recent.retain(|&r| r != range);
            t.recent.push_front(range);
            t.recent.truncate(RECENT);
        }
    }

    /// The next event of the capture.
    pub fn event(&mut self, ev: &Event) {
        match &ev.what {
            What::CloneStarted { flags } => {
                self.thread(ev.pid, false);
                self.pending_clones.push((ev.pid, *flags));
            }
            What::Gone => self.remove_thread(ev.pid),
            What::Renamed { from } => self.rename(*from, ev.pid),
            What::Call { name, call, result } => self.call(ev.pid, name, call, *result),
        }
    }

    fn call(&mut self, pid: u32, name: &'static str, call: &Call, result: u64) {
        let pid = self.thread(pid, matches!(call, Call::Execve));
        let Some(t) = self.threads.get(&pid) else {
            self.skip(name);
            return;
        };
        let (proc, pe) = (t.proc, t.pe);
        let mut touched = None;
        let r: Result<(), Skip> = match *call {
            Call::Mmap { len, prot, .. } => {
                touched = Some((result, result.saturating_add(len)));
                self.space(proc)
                    .map_or(Ok(()), |s| s.mmap(result, len, prot))
            }
            Call::Munmap { addr, len } => self.space(proc).map_or(Ok(()), |s| s.munmap(addr, len)),
            Call::Mprotect { addr, len, prot } => {
                touched = Some((addr, addr.saturating_add(len)));
                self.covered(proc, pe, addr, len).and_then(|()| {
                    self.space(proc)
                        .map_or(Ok(()), |s| s.mprotect(addr, len, prot))
                })
            }
            Call::Mremap {
                old,
                old_len,
                new_len,
                flags,
                ..
            } => {
                touched = Some((result, result.saturating_add(new_len)));
                self.covered(proc, pe, old, old_len).and_then(|()| {
                    self.space(proc)
                        .map_or(Ok(()), |s| s.mremap(old, old_len, new_len, flags, result))
                })
            }
            Call::Brk { .. } => match self.space(proc).map(|s| s.brk(result)) {
                Some(Ok(grown)) => {
                    touched = grown;
                    Ok(())
                }
                Some(Err(e)) => Err(e),
                None => Ok(()),
            },
            Call::Madvise { addr, len, advice } => match advice {
                Advice::DontNeed => self.space(proc).map_or(Ok(()), |s| s.dontneed(addr, len)),
                Advice::Other => Ok(()),
            },
            Call::Clone { flags } => {
                if let Some(i) = self.pending_clones.iter().position(|&(p, _)| p == pid) {
                    self.pending_clones.remove(i);
                }
                if result > 0 && result <= u64::from(u32::MAX) {
                    self.clone_child(pid, flags, result as u32);
                }
                Ok(())
            }
            Call::Execve => {
                self.execve(pid);
                return;
            }
            Call::ExitGroup => {
                let tgid = self.threads.get(&pid).map(|t| t.tgid);
                let group: Vec<u32> = self
                    .threads
                    .iter()
                    .filter(|(_, t)| Some(t.tgid) == tgid)
                    .map(|(&p, _)| p)
                    .collect();
                for p in group {
                    self.remove_thread(p);
                }
                return;
            }
            Call::Exit => {
                self.remove_thread(pid);
                return;
            }
        };
        match r {
            Ok(()) => {
                self.apply(proc, pe);
                if let Some((s, e)) = touched {
                    if let Ok(range) = pages(s, e.saturating_sub(s)) {
                        self.remember(pid, range);
                    }
                }
            }
            Err(_) => {
                // Nothing changed (the checks come first).
                self.skip(name);
            }
        }
        self.touch(pid);
    }

    fn space(&mut self, proc: usize) -> Option<&mut Space> {
        self.procs[proc].as_mut().map(|p| &mut p.space)
    }

    /// Covers what a call says is mapped, as a batch of its own.
    fn covered(&mut self, proc: usize, pe: usize, addr: u64, len: u64) -> Result<(), Skip> {
        let Some(s) = self.space(proc) else {
            return Ok(());
        };
        let added = s.cover(addr, len)?;
        if added > 0 {
            self.stats.implicit_pages += added;
            self.apply(proc, pe);
        }
        Ok(())
    }

    fn execve(&mut self, pid: u32) {
        let Some(t) = self.threads.get_mut(&pid) else {
            return;
        };
        t.recent.clear();
        let (proc, pe) = (t.proc, t.pe);
        let shared = self.procs[proc].as_ref().is_some_and(|p| p.live > 1);
        if shared {
            // A vfork child (or one thread of several) leaves for an image
            // of its own.
            self.remove_thread(pid);
            let populate = self.opts.populate;
            self.new_proc(pid, Space::new(populate));
        } else {
            if let Some(s) = self.space(proc) {
                s.reset();
            }
            self.apply(proc, pe);
            if let Some(t) = self.threads.get_mut(&pid) {
                t.tgid = pid;
            }
        }
    }

    fn next_rng(x: &mut u64) -> u64 {
        *x ^= *x >> 12;
        *x ^= *x << 25;
        *x ^= *x >> 27;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// The vCPU of `pid` touches pages of its recent ranges.
    fn touch(&mut self, pid: u32) {
        let Some(t) = self.threads.get(&pid) else {
            return;
        };
        if t.recent.is_empty() || self.opts.touch == 0 {
            return;
        }
        let (proc, pe) = (t.proc, t.pe);
        let recent: Vec<(u64, u64)> = t.recent.iter().copied().collect();
        for i in 0..self.opts.touch {
            let (s, e) = recent[i % recent.len()];
            let Some(p) = self.procs[proc].as_mut() else {
                return;
            };
            let n = (e - s) / PAGE;
            let page = s + Self::next_rng(&mut p.rng) % n.max(1) * PAGE;
            let Some(bits) = p.space.prot_at(page).filter(|&b| perm_of(b).is_some()) else {
                continue;
            };
            if p.space.entry(page).is_none() {
                if !p.space.fault(page) {
                    continue;
                }
                self.stats.faulted_pages += 1;
                self.apply(proc, pe);
            }
            let Some(p) = self.procs[proc].as_ref() else {
                return;
            };
            let proc_id = p.id;
            let mut touch = |how| {
                self.out.push(Command::Touch {
                    proc: proc_id,
                    pe,
                    page,
                    how,
                });
                self.stats.accesses += 1;
            };
            touch(Touch::Read);
            if bits & prot::WRITE != 0 {
                touch(Touch::Write);
            }
            if bits & prot::EXEC != 0 {
                touch(Touch::Exec);
            }
        }
    }
}

/// One policy's models, one per address space, carrying out [`Command`]s.
pub struct Models<'a> {
    opts: Options,
    policy: &'a str,
    profile: &'a Profile,
    /// By space number; `None` once ended.
    envs: Vec<Option<Env>>,
    out: Outcome,
    /// Flushes of the `freebsd` baseline capped (see [`CappedFreeBsd`]).
    capped: Arc<AtomicU64>,
}

impl<'a> Models<'a> {
    /// Models under `policy`, priced by `profile` where the policy looks at
    /// prices (vmsa's planner).
    pub fn new(policy: &'a str, profile: &'a Profile, opts: Options) -> Self {
        Models {
            opts,
            policy,
            profile,
            envs: Vec::new(),
            out: Outcome::default(),
            capped: Arc::new(AtomicU64::new(0)),
        }
    }

    fn new_env(&self) -> Env {
        let pes = self.opts.pes.max(2);
        let mut policy = policies::make(self.policy, driver::capabilities(), self.profile, pes);
        if self.policy == vmsa_baselines::FREEBSD.name {
            policy = Box::new(CappedFreeBsd {
                inner: policy,
                capped: self.capped.clone(),
            });
        }
        Env::new(
            false,
            pes,
            Placement::On(vec![1]),
            policy,
            self.policy == policies::ORACLE.name,
            policies::gathers(self.policy),
        )
    }

    /// Carries out one command.
    pub fn run(&mut self, c: &Command) {
        let Some(proc) = c.space() else {
            let env = self.new_env();
            self.envs.push(Some(env));
            return;
        };
        let Some(env) = self.envs.get_mut(proc).and_then(Option::as_mut) else {
            return;
        };
        match *c {
            Command::NewSpace => {}
            Command::Load { pe, .. } => env.vcpu_load(pe),
            Command::Put { pe, .. } => env.vcpu_put(pe),
            Command::Batch { pe, .. } => env.set_issuer(pe),
            Command::Op { op, .. } => {
                match op {
                    Op::Map {
                        start,
                        end,
                        frame,
                        perm,
                    } => env.map(start, end, frame, perm, false),
                    Op::Unmap { start, end } => env.unmap(start, end),
                    Op::Protect { start, end, perm } => env.protect(start, end, perm),
                }
                env.end_op();
            }
            Command::EndBatch { .. } => env.end_batch(),
            Command::Touch { pe, page, how, .. } => match how {
                Touch::Read => env.touch_on(pe, &[page], false),
                Touch::Write => env.touch_on(pe, &[page], true),
                Touch::Exec => env.exec_on(pe, &[page]),
            },
            Command::End { .. } => {
                // A last completion point; the results are counted and the
                // model goes.
                env.flush();
                add_costs(&mut self.out.costs, env.m.costs());
                let v = env.m.violations();
                self.out.violations += v.len() as u64;
                for v in v
                    .iter()
                    .take(3usize.saturating_sub(self.out.first_violations.len()))
                {
                    self.out.first_violations.push(v.to_string());
                }
                self.envs[proc] = None;
            }
        }
    }

    /// What the models found, with `stats` (the [`Driver`]'s) for what was
    /// replayed.
    pub fn finish(mut self, stats: &Stats) -> Outcome {
        self.out.stats = stats.clone();
        self.out.capped = self.capped.load(Ordering::Relaxed);
        self.out
    }
}

/// Replays `events` under `policy`, priced by `profile` where the policy
/// looks at prices (vmsa's planner).
#[cfg(test)]
pub fn replay(events: &[Event], policy: &str, profile: &Profile, opts: Options) -> Outcome {
    let mut r = Replay::new(policy, profile, opts);
    for ev in events {
        r.event(ev);
    }
    r.finish()
}

/// A replay fed one event at a time (so that a capture streams through
/// it): what the tests' `replay` does at once, in steps. A [`Driver`] and
/// one [`Models`].
pub struct Replay<'a> {
    driver: Driver,
    models: Models<'a>,
}

impl<'a> Replay<'a> {
    /// A replay under `policy`, priced by `profile`.
    pub fn new(policy: &'a str, profile: &'a Profile, opts: Options) -> Self {
        Replay {
            driver: Driver::new(opts),
            models: Models::new(policy, profile, opts),
        }
    }

    /// The next event of the capture.
    pub fn event(&mut self, ev: &Event) {
        self.driver.event(ev);
        self.run();
    }

    fn run(&mut self) {
        for c in self.driver.commands().drain(..) {
            self.models.run(&c);
        }
    }

    /// The end of the capture: every space is torn down.
    pub fn finish(mut self) -> Outcome {
        self.driver.finish();
        self.run();
        self.models.finish(self.driver.stats())
    }
}
