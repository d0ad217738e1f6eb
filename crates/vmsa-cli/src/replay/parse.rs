//! Reading strace output, as a stream.
//!
//! Accepted: `strace -f -tt -e trace=... -o FILE` (every line starts with
//! the pid), plain `strace -f` on standard error (`[pid N] ` before the
//! lines of every process but the first), and plain `strace` (no pid at
//! all); with or without timestamps (`-t`, `-tt`, `-ttt`, `-r`) and call
//! durations (`-T`). `<unfinished ...>` lines are joined with the
//! `<... NAME resumed>` line of the same pid.
//!
//! What is what:
//!
//! - a call of a syscall the replay knows (see [`KNOWN`]) whose arguments
//!   parse is yielded as an [`Event`]; failed calls (`= -1 ENOMEM (...)`,
//!   `= ?`) are counted and skipped;
//! - a call of any other syscall is counted (by name) and skipped;
//! - `+++ exited with N +++` / `+++ killed by SIG +++` end the pid;
//!   `--- SIG... ---` lines are counted;
//! - any other text line is *unknown*: counted and skipped;
//! - calls that give address space back (`munmap`, `madvise`) take
//!   effect, in the order of events, where they started: another thread's
//!   `mmap` that completes before their `<... resumed>` line may already
//!   have been given what they freed; every other call takes effect where
//!   it returned (its result is known there);
//! - **malformed** input is an error naming the line: binary data (NUL or
//!   other control bytes, invalid UTF-8), a line over [`MAX_LINE`] bytes,
//!   or a call of a known syscall whose arguments cannot be parsed
//!   (unbalanced parentheses or quotes, a missing argument, a number that
//!   is not one).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::io::{self, BufRead};

/// The longest line accepted (a recognised call never comes close: strace
/// abbreviates strings and arrays).
pub const MAX_LINE: usize = 1 << 20;

/// The syscalls the replay understands.
pub const KNOWN: &[&str] = &[
    "mmap",
    "mmap2",
    "munmap",
    "mprotect",
    "pkey_mprotect",
    "mremap",
    "brk",
    "madvise",
    "clone",
    "clone3",
    "fork",
    "vfork",
    "execve",
    "execveat",
    "exit_group",
    "exit",
];

/// `PROT_*` bits.
pub mod prot {
    /// `PROT_READ`.
    pub const READ: u8 = 1;
    /// `PROT_WRITE`.
    pub const WRITE: u8 = 2;
    /// `PROT_EXEC`.
    pub const EXEC: u8 = 4;
}

/// `MAP_*` bits (Linux's generic values).
pub mod map {
    /// `MAP_SHARED`.
    pub const SHARED: u32 = 0x01;
    /// `MAP_PRIVATE`.
    pub const PRIVATE: u32 = 0x02;
    /// `MAP_FIXED`.
    pub const FIXED: u32 = 0x10;
    /// `MAP_ANONYMOUS`.
    pub const ANONYMOUS: u32 = 0x20;
    /// `MAP_FIXED_NOREPLACE`.
    pub const FIXED_NOREPLACE: u32 = 0x10_0000;
}

/// `MREMAP_*` bits.
pub mod mremap {
    /// `MREMAP_MAYMOVE`.
    pub const MAYMOVE: u32 = 1;
    /// `MREMAP_FIXED`.
    pub const FIXED: u32 = 2;
    /// `MREMAP_DONTUNMAP`.
    pub const DONTUNMAP: u32 = 4;
}

/// `CLONE_*` bits the replay looks at.
pub mod clone {
    /// `CLONE_VM`: the child shares the address space.
    pub const VM: u64 = 0x100;
    /// `CLONE_VFORK`: the parent waits until the child execs or exits.
    pub const VFORK: u64 = 0x4000;
    /// `CLONE_THREAD`: the child is a thread of the parent's process.
    pub const THREAD: u64 = 0x1_0000;
}

/// What `madvise` asks for, as far as the tables are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Advice {
    /// `MADV_DONTNEED` (and `MADV_REMOVE`, `MADV_DONTNEED_LOCKED`): the
    /// pages are dropped; the next touch finds zero-filled ones.
    DontNeed,
    /// Anything else: no change to the tables.
    Other,
}

/// A call the replay acts on, with its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// `mmap` / `mmap2`.
    Mmap {
        /// Address hint (`NULL`: 0).
        addr: u64,
        /// Length in bytes.
        len: u64,
        /// `prot::*` bits.
        prot: u8,
        /// `map::*` bits.
        flags: u32,
        /// The file descriptor (-1 for anonymous mappings).
        fd: i64,
    },
    /// `munmap`.
    Munmap {
        /// Start.
        addr: u64,
        /// Length in bytes.
        len: u64,
    },
    /// `mprotect` / `pkey_mprotect`.
    Mprotect {
        /// Start.
        addr: u64,
        /// Length in bytes.
        len: u64,
        /// `prot::*` bits.
        prot: u8,
    },
    /// `mremap`.
    Mremap {
        /// Old start.
        old: u64,
        /// Old length.
        old_len: u64,
        /// New length.
        new_len: u64,
        /// `mremap::*` bits.
        flags: u32,
        /// `MREMAP_FIXED`'s new address.
        new_addr: Option<u64>,
    },
    /// `brk` (`NULL`: 0, a query).
    Brk {
        /// Requested break.
        addr: u64,
    },
    /// `madvise`.
    Madvise {
        /// Start.
        addr: u64,
        /// Length in bytes.
        len: u64,
        /// What was asked.
        advice: Advice,
    },
    /// `clone`, `clone3`, `fork`, `vfork`: the result is the child's id.
    Clone {
        /// `clone::*` bits (`fork`: none; `vfork`: `VM | VFORK`).
        flags: u64,
    },
    /// `execve` / `execveat`: a new program image.
    Execve,
    /// `exit_group`: every thread of the process ends.
    ExitGroup,
    /// `exit`: the calling thread ends.
    Exit,
}

/// One thing the trace says happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum What {
    /// A successful call and its result (`exit`/`exit_group`: 0).
    Call {
        /// The syscall's name as traced.
        name: &'static str,
        /// The call.
        call: Call,
        /// The value returned.
        result: u64,
    },
    /// A clone-family call started (`<unfinished ...>`): its child may
    /// show up before the call returns.
    CloneStarted {
        /// The flags, when the unfinished part shows them.
        flags: Option<u64>,
    },
    /// The pid is gone (`+++ exited ... +++`, `+++ killed ... +++`).
    Gone,
    /// The pid is the one the earlier lines without a pid (`from`, 0)
    /// were (plain `strace -f`).
    Renamed {
        /// The pid used so far.
        from: u32,
    },
}

/// An event of one pid at one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The line (1-based) that completed it.
    pub line: u64,
    /// The pid (0 for lines with none).
    pub pid: u32,
    /// What happened.
    pub what: What,
}

/// Counts for one syscall name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Count {
    /// Calls traced (a joined unfinished/resumed pair counts once).
    pub calls: u64,
    /// Calls that failed (or never returned a value).
    pub failed: u64,
    /// Calls not replayed for another reason (unknown syscall, addresses
    /// out of range, ...).
    pub skipped: u64,
}

/// The mix of calls in a trace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mix {
    /// Lines read.
    pub lines: u64,
    /// Per syscall name.
    pub calls: BTreeMap<String, Count>,
    /// Lines that are neither calls nor exit or signal lines.
    pub unknown_lines: u64,
    /// Signal lines (`--- SIG... ---`).
    pub signals: u64,
    /// `+++ exited/killed +++` lines.
    pub exits: u64,
    /// `<... resumed>` lines with no `<unfinished ...>` before them, and
    /// `<unfinished ...>` lines never resumed.
    pub unmatched: u64,
}

impl Mix {
    fn count(&mut self, name: &str) -> &mut Count {
        if !self.calls.contains_key(name) {
            self.calls.insert(name.to_string(), Count::default());
        }
        self.calls.get_mut(name).expect("just inserted")
    }

    /// Counts one call of `name` skipped by the replay.
    pub fn skip(&mut self, name: &str) {
        self.count(name).skipped += 1;
    }

    /// Calls of every name.
    pub fn total(&self) -> Count {
        self.calls.values().fold(Count::default(), |a, c| Count {
            calls: a.calls + c.calls,
            failed: a.failed + c.failed,
            skipped: a.skipped + c.skipped,
        })
    }
}

/// Why the input cannot be replayed.
#[derive(Debug)]
pub enum ParseError {
    /// Reading failed.
    Io(io::Error),
    /// A malformed line.
    Malformed {
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        why: String,
    },
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Io(e) => write!(f, "{e}"),
            ParseError::Malformed { line, why } => write!(f, "line {line}: {why}"),
        }
    }
}

impl std::error::Error for ParseError {}

impl From<io::Error> for ParseError {
    fn from(e: io::Error) -> Self {
        ParseError::Io(e)
    }
}

/// A call waiting for its `<... resumed>` line.
#[derive(Clone, Debug)]
struct Pending {
    name: String,
    /// The arguments before `<unfinished ...>`.
    args: String,
    /// It holds a place in the queue (it takes effect where it started).
    placed: bool,
}

/// Calls that take effect where they start (they only give address space
/// back, and their arguments are all known then).
const EARLY: &[&str] = &["munmap", "madvise"];

/// A place in the event queue.
#[derive(Clone, Debug)]
enum Slot {
    Ready(Event),
    /// The place of an early call of this pid, not yet resumed.
    Waiting(u32),
}

/// Reads strace output from `R` line by line and yields [`Event`]s; the
/// mix of calls is in [`Parser::mix`] (complete once the iterator has
/// returned `None`). After an error the iterator ends.
pub struct Parser<R> {
    reader: R,
    line: u64,
    pending: HashMap<u32, Pending>,
    mix: Mix,
    buf: Vec<u8>,
    /// The start of a line that strace broke with a message of its own
    /// (`... strace: Process N attached`), continued on the next line.
    carry: String,
    /// Lines without a pid were seen (plain `strace -f` leaves the first
    /// process's lines unprefixed until it has a second one).
    unprefixed: bool,
    /// Pids strace announced as attached (children).
    attached: Vec<u32>,
    /// The pid of the unprefixed lines' process, once known.
    alias: Option<u32>,
    /// Events still to yield, in order; a waiting slot holds back those
    /// after it until its call resumes.
    queue: VecDeque<Slot>,
    done: bool,
}

impl<R: BufRead> Parser<R> {
    /// A parser reading `reader`.
    pub fn new(reader: R) -> Self {
        Parser {
            reader,
            line: 0,
            pending: HashMap::new(),
            mix: Mix::default(),
            buf: Vec::new(),
            carry: String::new(),
            unprefixed: false,
            attached: Vec::new(),
            alias: None,
            queue: VecDeque::new(),
            done: false,
        }
    }

    /// The mix of calls read so far.
    pub fn mix(&self) -> &Mix {
        &self.mix
    }

    /// Reads one line into `self.buf` (without the newline); false at the
    /// end of the input.
    fn read_line(&mut self) -> Result<bool, ParseError> {
        self.buf.clear();
        let mut any = false;
        loop {
            let chunk = match self.reader.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            if chunk.is_empty() {
                return Ok(any);
            }
            any = true;
            let (take, end) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            let body = if end { &chunk[..take - 1] } else { chunk };
            if self.buf.len() + body.len() > MAX_LINE {
                return Err(ParseError::Malformed {
                    line: self.line + 1,
                    why: format!("line longer than {MAX_LINE} bytes (binary data?)"),
                });
            }
            self.buf.extend_from_slice(body);
            self.reader.consume(take);
            if end {
                return Ok(true);
            }
        }
    }

    fn malformed(&self, why: impl Into<String>) -> ParseError {
        ParseError::Malformed {
            line: self.line,
            why: why.into(),
        }
    }

    /// Parses the line in `self.buf`, queueing its events.
    fn parse_line(&mut self) -> Result<(), ParseError> {
        if let Some(&b) = self
            .buf
            .iter()
            .find(|&&b| b < 0x20 && b != b'\t' && b != b'\r' || b == 0x7f)
        {
            return Err(self.malformed(format!(
                "binary data (byte {b:#04x}); strace output is text"
            )));
        }
        let buf = std::mem::take(&mut self.buf);
        let text = match std::str::from_utf8(&buf) {
            Ok(t) => t,
            Err(e) => {
                return Err(self.malformed(format!(
                    "binary data (not UTF-8 at byte {}); strace output is text",
                    e.valid_up_to()
                )))
            }
        };
        let r = self.parse_text(text);
        self.buf = buf;
        r
    }

    fn parse_text(&mut self, text: &str) -> Result<(), ParseError> {
        // Plain `strace -f` writes its own messages into the middle of a
        // call's line when a process is attached; the call continues on the
        // next line.
        if let Some(at) = text.find("strace: Process ") {
            let tail = text[at..].trim_end();
            if let Some(pid) = tail["strace: Process ".len()..]
                .split(' ')
                .next()
                .and_then(|n| n.parse().ok())
            {
                self.attached.push(pid);
            }
            if at > 0 && (tail.ends_with(" attached") || tail.ends_with(" detached")) {
                self.carry.push_str(&text[..at]);
                return Ok(());
            }
        }
        let joined;
        let text = if self.carry.is_empty() {
            text.trim()
        } else {
            joined = format!("{}{}", std::mem::take(&mut self.carry), text);
            joined.trim()
        };
        if text.is_empty() {
            return Ok(());
        }
        let (prefix, body) = split_prefix(text);
        let pid = match prefix {
            None => {
                if body.starts_with("+++ ")
                    || body.starts_with("<... ")
                    || split_call(body).is_some()
                {
                    self.unprefixed = true;
                }
                self.alias.unwrap_or(0)
            }
            Some(pid) => {
                self.learn_alias(pid);
                pid
            }
        };
        if let Some(rest) = body.strip_prefix("+++ ") {
            self.mix.exits += 1;
            if rest.starts_with("exited") || rest.starts_with("killed") {
                self.drop_pending(pid);
                self.push(Event {
                    line: self.line,
                    pid,
                    what: What::Gone,
                });
            }
            return Ok(());
        }
        if body.starts_with("--- ") {
            self.mix.signals += 1;
            return Ok(());
        }
        if let Some(rest) = body.strip_prefix("<... ") {
            let Some(end) = rest.find(" resumed>") else {
                self.mix.unknown_lines += 1;
                return Ok(());
            };
            let name = &rest[..end];
            let tail = &rest[end + " resumed>".len()..];
            if self.pending.get(&pid).is_some_and(|p| p.name != name) {
                self.drop_pending(pid);
            }
            let Some(p) = self.pending.remove(&pid) else {
                self.mix.unmatched += 1;
                self.mix.count(name).calls += 1;
                self.mix.count(name).skipped += 1;
                return Ok(());
            };
            let joined = format!("{}{}", p.args.trim_end(), tail.trim_start());
            let ev = self.call(pid, &p.name, &joined)?;
            if p.placed {
                let at = self
                    .queue
                    .iter()
                    .position(|s| matches!(s, Slot::Waiting(w) if *w == pid));
                match (at, ev) {
                    (Some(i), Some(ev)) => self.queue[i] = Slot::Ready(ev),
                    (Some(i), None) => {
                        self.queue.remove(i);
                    }
                    (None, ev) => self.queue.extend(ev.map(Slot::Ready)),
                }
            } else if let Some(ev) = ev {
                self.push(ev);
            }
            return Ok(());
        }
        let Some((name, args)) = split_call(body) else {
            self.mix.unknown_lines += 1;
            return Ok(());
        };
        if let Some(partial) = args.strip_suffix("<unfinished ...>") {
            // Checked now, so that a broken call is reported at its line.
            if KNOWN.contains(&name) && scan(partial).unbalanced_close {
                return Err(self.malformed(format!("unbalanced parentheses in {name} call")));
            }
            self.drop_pending(pid);
            if matches!(name, "clone" | "clone3" | "fork" | "vfork") {
                let flags = match name {
                    "fork" => Some(0),
                    "vfork" => Some(clone::VM | clone::VFORK),
                    _ => find_flags(partial).and_then(|f| clone_flags(f).ok()),
                };
                self.push(Event {
                    line: self.line,
                    pid,
                    what: What::CloneStarted { flags },
                });
            }
            let placed = EARLY.contains(&name);
            if placed {
                self.queue.push_back(Slot::Waiting(pid));
            }
            self.pending.insert(
                pid,
                Pending {
                    name: name.to_string(),
                    args: partial.to_string(),
                    placed,
                },
            );
            return Ok(());
        }
        if let Some(ev) = self.call(pid, name, args)? {
            self.push(ev);
        }
        Ok(())
    }

    /// With plain `strace -f`, the first `[pid N]` line of a pid strace did
    /// not announce as attached is the first process's: its unprefixed
    /// lines were pid N all along.
    fn learn_alias(&mut self, pid: u32) {
        if !self.unprefixed || self.alias.is_some() || self.attached.contains(&pid) {
            return;
        }
        self.alias = Some(pid);
        if let Some(p) = self.pending.remove(&0) {
            self.pending.insert(pid, p);
        }
        // Events still queued become pid N's, after the renaming.
        let mut first = None;
        for (i, s) in self.queue.iter_mut().enumerate() {
            let p = match s {
                Slot::Waiting(w) => w,
                Slot::Ready(ev) => &mut ev.pid,
            };
            if *p == 0 {
                *p = pid;
                first.get_or_insert(i);
            }
        }
        let renamed = Slot::Ready(Event {
            line: self.line,
            pid,
            what: What::Renamed { from: 0 },
        });
        match first {
            Some(i) => self.queue.insert(i, renamed),
            None => self.queue.push_back(renamed),
        }
    }

    fn push(&mut self, ev: Event) {
        self.queue.push_back(Slot::Ready(ev));
    }

    /// Forgets the call `pid` left unfinished (and its place): it never
    /// returned, as far as the trace says.
    fn drop_pending(&mut self, pid: u32) {
        if let Some(p) = self.pending.remove(&pid) {
            self.mix.unmatched += 1;
            let c = self.mix.count(&p.name);
            c.calls += 1;
            c.failed += 1;
            if p.placed {
                self.queue
                    .retain(|s| !matches!(s, Slot::Waiting(w) if *w == pid));
            }
        }
    }

    /// A complete call: `name` and everything after its `(`; its event if
    /// it is one to replay.
    fn call(&mut self, pid: u32, name: &str, rest: &str) -> Result<Option<Event>, ParseError> {
        let known = KNOWN.iter().copied().find(|&k| k == name);
        self.mix.count(name).calls += 1;
        let Some(known) = known else {
            self.mix.count(name).skipped += 1;
            return Ok(None);
        };
        let s = scan(rest);
        let Some(close) = s.close else {
            let why = if s.open_quote {
                format!("unterminated string in {name} call")
            } else {
                format!("unbalanced parentheses in {name} call")
            };
            return Err(self.malformed(why));
        };
        let args = &rest[..close];
        let after = rest[close + 1..].trim_start();
        let Some(result) = after.strip_prefix('=') else {
            return Err(self.malformed(format!("no result after the {name} call")));
        };
        let result = result.trim_start();
        let value = match parse_result(result) {
            Some(Ok(v)) => Some(v),
            // `= -1 ENOMEM (...)`, `= ?`: no value.
            Some(Err(())) => None,
            None => {
                return Err(self.malformed(format!(
                    "cannot read the result `{}` of the {name} call",
                    result.split_whitespace().next().unwrap_or("")
                )))
            }
        };
        let call =
            parse_args(known, args).map_err(|why| self.malformed(format!("{name} call: {why}")))?;
        let value = match (&call, value) {
            (Call::ExitGroup | Call::Exit, _) => Some(0),
            (_, v) => v,
        };
        match value {
            Some(result) => Ok(Some(Event {
                line: self.line,
                pid,
                what: What::Call {
                    name: known,
                    call,
                    result,
                },
            })),
            None => {
                self.mix.count(name).failed += 1;
                Ok(None)
            }
        }
    }
}

impl<R: BufRead> Iterator for Parser<R> {
    type Item = Result<Event, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(Slot::Ready(_)) = self.queue.front() {
                if let Some(Slot::Ready(ev)) = self.queue.pop_front() {
                    return Some(Ok(ev));
                }
            }
            if self.done {
                // Only places of calls that never resumed can be left.
                self.queue.retain(|s| matches!(s, Slot::Ready(_)));
                if self.queue.is_empty() {
                    return None;
                }
                continue;
            }
            match self.read_line() {
                Ok(true) => {
                    self.line += 1;
                    self.mix.lines += 1;
                    if let Err(e) = self.parse_line() {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
                Ok(false) => {
                    self.done = true;
                    // Calls that never resumed.
                    let pids: Vec<u32> = self.pending.keys().copied().collect();
                    for pid in pids {
                        self.drop_pending(pid);
                    }
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

/// Splits `[pid N] ` or `N ` and a timestamp off the line: (pid, body).
fn split_prefix(text: &str) -> (Option<u32>, &str) {
    let mut pid = None;
    let mut rest = text;
    if let Some(r) = rest.strip_prefix("[pid") {
        let r = r.trim_start();
        let digits = r.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && r[digits..].starts_with(']') {
            pid = Some(r[..digits].parse().unwrap_or(u32::MAX));
            rest = r[digits + 1..].trim_start();
        }
    } else {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && rest[digits..].starts_with([' ', '\t']) {
            pid = Some(rest[..digits].parse().unwrap_or(u32::MAX));
            rest = rest[digits..].trim_start();
        }
    }
    // A timestamp: digits with ':' or '.' (-t, -tt, -ttt, -r).
    let token = rest.split([' ', '\t']).next().unwrap_or("");
    if token.len() < rest.len()
        && token.bytes().any(|b| b == b':' || b == b'.')
        && token
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b':' || b == b'.')
    {
        rest = rest[token.len()..].trim_start();
    }
    (pid, rest)
}

/// `name(rest`: the name (a syscall identifier) and what follows the `(`.
fn split_call(body: &str) -> Option<(&str, &str)> {
    let open = body.find('(')?;
    let name = &body[..open];
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    ok.then(|| (name, &body[open + 1..]))
}

/// What a scan of a call's text found.
struct Scan {
    /// Byte offset of the `)` closing the call's `(`.
    close: Option<usize>,
    /// A `)`, `]` or `}` with nothing open before it.
    unbalanced_close: bool,
    /// The text ends inside a string.
    open_quote: bool,
}

/// Scans the text after a call's `(`: strings (with escapes) are skipped,
/// brackets of every kind counted.
fn scan(text: &str) -> Scan {
    let mut depth: Vec<u8> = Vec::new();
    let mut in_str = false;
    let mut esc = false;
    for (i, b) in text.bytes().enumerate() {
        if in_str {
            if esc {
                esc = false;
            } else if b == b'\\' {
                esc = true;
            } else if b == b'"' {
                in_str = false;
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'(' | b'[' | b'{' => depth.push(b),
            b')' | b']' | b'}' => {
                let want = match b {
                    b')' => b'(',
                    b']' => b'[',
                    _ => b'{',
                };
                match depth.pop() {
                    None if b == b')' => {
                        return Scan {
                            close: Some(i),
                            unbalanced_close: false,
                            open_quote: false,
                        }
                    }
                    Some(open) if open == want => {}
                    _ => {
                        return Scan {
                            close: None,
                            unbalanced_close: true,
                            open_quote: false,
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Scan {
        close: None,
        unbalanced_close: false,
        open_quote: in_str,
    }
}

/// The top-level comma-separated arguments.
fn split_args(args: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut in_str = false;
    let mut esc = false;
    let mut start = 0;
    for (i, b) in args.bytes().enumerate() {
        if in_str {
            if esc {
                esc = false;
            } else if b == b'\\' {
                esc = true;
            } else if b == b'"' {
                in_str = false;
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            b',' if depth == 0 => {
                out.push(args[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    let last = args[start..].trim();
    if !last.is_empty() || !out.is_empty() {
        out.push(last);
    }
    out
}

/// The result of a call: `Some(Ok(value))`, `Some(Err(()))` for a failure
/// or no value (`-1 ENOMEM (...)`, `?`), `None` when it is not a result.
fn parse_result(text: &str) -> Option<Result<u64, ()>> {
    let token = text.split_whitespace().next()?;
    if token == "?" {
        return Some(Err(()));
    }
    if let Some(neg) = token.strip_prefix('-') {
        number(neg)?;
        return Some(Err(()));
    }
    // `3</path>` (strace -y) and the like: the number before `<`.
    let token = token.split('<').next().unwrap_or(token);
    number(token).map(Ok)
}

/// A number as strace prints it: decimal, `0x` hex, `0` octal-looking
/// decimals, or `NULL`.
fn number(text: &str) -> Option<u64> {
    let t = text.trim();
    if t == "NULL" {
        return Some(0);
    }
    if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        return u64::from_str_radix(hex, 16).ok();
    }
    if t.len() > 1 && t.starts_with('0') && t.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return u64::from_str_radix(&t[1..], 8).ok();
    }
    t.parse().ok()
}

/// A numeric argument (with an optional `/* comment */` after it).
fn num_arg(args: &[&str], i: usize, what: &str) -> Result<u64, String> {
    let a = args
        .get(i)
        .ok_or_else(|| format!("missing argument {} ({what})", i + 1))?;
    let a = strip_comment(a);
    number(a).ok_or_else(|| format!("argument {} ({what}) `{a}` is not a number", i + 1))
}

fn strip_comment(a: &str) -> &str {
    match a.find("/*") {
        Some(i) => a[..i].trim(),
        None => a.trim(),
    }
}

/// An `A|B|0x40` flag set: the bits of the names `lookup` knows, plus
/// numbers; unknown names are ignored.
fn flag_set(text: &str, lookup: impl Fn(&str) -> Option<u64>) -> Result<u64, String> {
    let text = strip_comment(text);
    if text.is_empty() {
        return Err("empty flags".into());
    }
    let mut bits = 0;
    for token in text.split('|') {
        let token = token.trim();
        if token.is_empty() {
            return Err(format!("bad flags `{text}`"));
        }
        if let Some(n) = number(token) {
            bits |= n;
        } else if token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'<' || b == b'>')
        {
            // Names like `1<<MAP_HUGE_SHIFT` or ones this reader does not
            // know carry no meaning for the tables.
            bits |= lookup(token).unwrap_or(0);
        } else {
            return Err(format!("bad flag `{token}`"));
        }
    }
    Ok(bits)
}

fn prot_bits(text: &str) -> Result<u8, String> {
    flag_set(text, |n| match n {
        "PROT_NONE" => Some(0),
        "PROT_READ" => Some(prot::READ as u64),
        "PROT_WRITE" => Some(prot::WRITE as u64),
        "PROT_EXEC" => Some(prot::EXEC as u64),
        _ => None,
    })
    .map(|b| (b & 7) as u8)
}

fn map_bits(text: &str) -> Result<u32, String> {
    flag_set(text, |n| match n {
        "MAP_SHARED" | "MAP_SHARED_VALIDATE" => Some(map::SHARED as u64),
        "MAP_PRIVATE" => Some(map::PRIVATE as u64),
        "MAP_FIXED" => Some(map::FIXED as u64),
        "MAP_ANONYMOUS" | "MAP_ANON" => Some(map::ANONYMOUS as u64),
        "MAP_FIXED_NOREPLACE" => Some(map::FIXED_NOREPLACE as u64),
        _ => None,
    })
    .map(|b| b as u32)
}

fn mremap_bits(text: &str) -> Result<u32, String> {
    flag_set(text, |n| match n {
        "MREMAP_MAYMOVE" => Some(mremap::MAYMOVE as u64),
        "MREMAP_FIXED" => Some(mremap::FIXED as u64),
        "MREMAP_DONTUNMAP" => Some(mremap::DONTUNMAP as u64),
        _ => None,
    })
    .map(|b| b as u32)
}

fn clone_flags(text: &str) -> Result<u64, String> {
    flag_set(text, |n| match n {
        "CLONE_VM" => Some(clone::VM),
        "CLONE_VFORK" => Some(clone::VFORK),
        "CLONE_THREAD" => Some(clone::THREAD),
        _ => None,
    })
    .map(|b| b & (clone::VM | clone::VFORK | clone::THREAD))
}

/// The text of `flags=...` in a clone or clone3 argument list.
fn find_flags(args: &str) -> Option<&str> {
    let mut from = 0;
    while let Some(i) = args[from..].find("flags=") {
        let at = from + i;
        // A whole word: not `exit_flags=` or the like.
        let ok = at == 0
            || !args.as_bytes()[at - 1].is_ascii_alphanumeric() && args.as_bytes()[at - 1] != b'_';
        let value = &args[at + "flags=".len()..];
        if ok {
            let end = value.find([',', '}', ')']).unwrap_or(value.len());
            return Some(value[..end].trim());
        }
        from = at + 1;
    }
    None
}

fn advice(text: &str) -> Result<Advice, String> {
    let t = strip_comment(text);
    let n = match t {
        "MADV_DONTNEED" | "MADV_REMOVE" | "MADV_DONTNEED_LOCKED" => return Ok(Advice::DontNeed),
        _ => number(t),
    };
    match n {
        // MADV_DONTNEED, MADV_REMOVE, MADV_DONTNEED_LOCKED.
        Some(4 | 9 | 24) => Ok(Advice::DontNeed),
        Some(_) => Ok(Advice::Other),
        None if !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') => {
            Ok(Advice::Other)
        }
        None => Err(format!("bad advice `{t}`")),
    }
}

fn want(args: &[&str], n: usize) -> Result<(), String> {
    if args.len() < n {
        Err(format!("{} argument(s), expected {n}", args.len()))
    } else {
        Ok(())
    }
}

/// The arguments of a known call.
fn parse_args(name: &str, args: &str) -> Result<Call, String> {
    let a = split_args(args);
    Ok(match name {
        "mmap" | "mmap2" => {
            want(&a, 6)?;
            Call::Mmap {
                addr: num_arg(&a, 0, "address")?,
                len: num_arg(&a, 1, "length")?,
                prot: prot_bits(a[2]).map_err(|e| format!("argument 3: {e}"))?,
                flags: map_bits(a[3]).map_err(|e| format!("argument 4: {e}"))?,
                fd: {
                    let t = strip_comment(a[4]);
                    let t = t.split('<').next().unwrap_or(t);
                    match t.strip_prefix('-') {
                        Some(n) => number(n).map(|n| -(n.min(i64::MAX as u64) as i64)),
                        None => number(t).map(|n| n.min(i64::MAX as u64) as i64),
                    }
                    .ok_or_else(|| format!("argument 5 (fd) `{t}` is not a number"))?
                },
            }
        }
        "munmap" => {
            want(&a, 2)?;
            Call::Munmap {
                addr: num_arg(&a, 0, "address")?,
                len: num_arg(&a, 1, "length")?,
            }
        }
        "mprotect" | "pkey_mprotect" => {
            want(&a, 3)?;
            Call::Mprotect {
                addr: num_arg(&a, 0, "address")?,
                len: num_arg(&a, 1, "length")?,
                prot: prot_bits(a[2]).map_err(|e| format!("argument 3: {e}"))?,
            }
        }
        "mremap" => {
            want(&a, 4)?;
            let flags = mremap_bits(a[3]).map_err(|e| format!("argument 4: {e}"))?;
            let new_addr = if a.len() > 4 {
                Some(num_arg(&a, 4, "new address")?)
            } else {
                None
            };
            Call::Mremap {
                old: num_arg(&a, 0, "old address")?,
                old_len: num_arg(&a, 1, "old length")?,
                new_len: num_arg(&a, 2, "new length")?,
                flags,
                new_addr: new_addr.filter(|_| flags & mremap::FIXED != 0),
            }
        }
        "brk" => {
            want(&a, 1)?;
            Call::Brk {
                addr: num_arg(&a, 0, "address")?,
            }
        }
        "madvise" => {
            want(&a, 3)?;
            Call::Madvise {
                addr: num_arg(&a, 0, "address")?,
                len: num_arg(&a, 1, "length")?,
                advice: advice(a[2]).map_err(|e| format!("argument 3: {e}"))?,
            }
        }
        "clone" | "clone3" => {
            let flags = match find_flags(args) {
                Some(f) => clone_flags(f).map_err(|e| format!("flags: {e}"))?,
                None => return Err("no flags=".into()),
            };
            Call::Clone { flags }
        }
        "fork" => Call::Clone { flags: 0 },
        "vfork" => Call::Clone {
            flags: clone::VM | clone::VFORK,
        },
        "execve" | "execveat" => Call::Execve,
        "exit_group" => Call::ExitGroup,
        "exit" => Call::Exit,
        other => return Err(format!("{other} is not replayed")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(text: &str) -> (Vec<Event>, Mix) {
        let mut p = Parser::new(text.as_bytes());
        let ev: Vec<Event> = p.by_ref().map(|e| e.unwrap()).collect();
        (ev, p.mix().clone())
    }

    fn error(text: &[u8]) -> String {
        let p = Parser::new(text);
        let mut last = None;
        for e in p {
            if let Err(e) = e {
                last = Some(e.to_string());
            }
        }
        last.expect("an error")
    }

    #[test]
    fn mmap_with_pid_and_timestamp() {
        let (ev, mix) = events(
            "12345 10:00:00.123456 mmap(NULL, 8192, PROT_READ|PROT_WRITE, \
             MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000001000\n",
        );
        assert_eq!(
            ev,
            [Event {
                line: 1,
                pid: 12345,
                what: What::Call {
                    name: "mmap",
                    call: Call::Mmap {
                        addr: 0,
                        len: 8192,
                        prot: prot::READ | prot::WRITE,
                        flags: map::PRIVATE | map::ANONYMOUS,
                        fd: -1,
                    },
                    result: 0x7f00_0000_1000,
                },
            }]
        );
        assert_eq!(mix.calls["mmap"].calls, 1);
    }

    #[test]
    fn prefixes_and_timestamps() {
        for line in [
            "munmap(0x1000, 4096) = 0",
            "7 munmap(0x1000, 4096) = 0",
            "[pid 7] munmap(0x1000, 4096) = 0",
            "[pid  7] 10:00:01 munmap(0x1000, 4096) = 0 <0.000010>",
            "7 1700000000.123456 munmap(0x1000, 4096) = 0",
            "     0.000123 munmap(0x1000, 4096) = 0",
        ] {
            let (ev, _) = events(line);
            assert_eq!(ev.len(), 1, "{line}");
            assert!(
                matches!(
                    ev[0].what,
                    What::Call {
                        call: Call::Munmap {
                            addr: 0x1000,
                            len: 4096
                        },
                        ..
                    }
                ),
                "{line}: {ev:?}"
            );
        }
    }

    #[test]
    fn unfinished_and_resumed_join_by_pid() {
        let text = "\
1 mmap(NULL, 134217728, PROT_NONE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE, -1, 0 <unfinished ...>
2 mprotect(0x7000, 4096, PROT_READ <unfinished ...>
1 <... mmap resumed>) = 0x7fb1b0000000
2 <... mprotect resumed>) = 0
3 <... munmap resumed>) = 0
";
        let (ev, mix) = events(text);
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].pid, 1);
        assert_eq!(ev[0].line, 3);
        assert!(matches!(
            ev[0].what,
            What::Call {
                call: Call::Mmap {
                    len: 134_217_728,
                    prot: 0,
                    ..
                },
                result: 0x7fb1_b000_0000,
                ..
            }
        ));
        assert!(matches!(
            ev[1].what,
            What::Call {
                call: Call::Mprotect {
                    addr: 0x7000,
                    prot: prot::READ,
                    ..
                },
                ..
            }
        ));
        assert_eq!(mix.unmatched, 1);
        assert_eq!(mix.calls["mmap"].calls, 1);
        assert_eq!(mix.calls["munmap"].skipped, 1);
    }

    #[test]
    fn resumed_with_arguments_after_it() {
        let (ev, _) = events(
            "5 madvise(0x7f0000000000, 8192 <unfinished ...>\n\
             5 <... madvise resumed>, MADV_DONTNEED) = 0\n",
        );
        assert!(matches!(
            ev[0].what,
            What::Call {
                call: Call::Madvise {
                    advice: Advice::DontNeed,
                    len: 8192,
                    ..
                },
                ..
            }
        ));
    }

    #[test]
    fn failed_calls_and_unknown_lines_are_counted() {
        let text = "\
1 mmap(NULL, 1099511627776, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = -1 ENOMEM (Cannot allocate memory)
1 execve(\"/nope\", [\"nope\"], 0x7ffc /* 3 vars */) = -1 ENOENT (No such file or directory)
1 openat(AT_FDCWD, \"/etc/ld.so.cache\", O_RDONLY|O_CLOEXEC) = 3
strace: Process 9 attached
hello world
1 --- SIGCHLD {si_signo=SIGCHLD, si_code=CLD_EXITED, si_pid=2} ---
1 +++ exited with 0 +++
";
        let (ev, mix) = events(text);
        assert_eq!(
            ev,
            [Event {
                line: 7,
                pid: 1,
                what: What::Gone
            }]
        );
        assert_eq!(mix.calls["mmap"].failed, 1);
        assert_eq!(mix.calls["execve"].failed, 1);
        assert_eq!(mix.calls["openat"].skipped, 1);
        assert_eq!(mix.unknown_lines, 2);
        assert_eq!(mix.signals, 1);
        assert_eq!(mix.exits, 1);
        assert_eq!(mix.lines, 7);
    }

    #[test]
    fn clone_and_clone3_flags() {
        let text = "\
9 clone3({flags=CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|CLONE_THREAD|CLONE_SYSVSEM, child_tid=0x7f, parent_tid=0x7f, exit_signal=0, stack=0x7f, stack_size=0x7ffe80, tls=0x7f} => {parent_tid=[10]}, 88) = 10
9 clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|CLONE_CHILD_SETTID|SIGCHLD, child_tidptr=0x7f) = 11
9 vfork() = 12
9 clone3({flags=CLONE_VM|CLONE_VFORK, exit_signal=SIGCHLD, stack=0x7f, stack_size=0x9000} <unfinished ...>
9 <... clone3 resumed> => {parent_tid=[0]}, 88) = 13
";
        let (ev, _) = events(text);
        let flags: Vec<(u64, u64)> = ev
            .iter()
            .filter_map(|e| match e.what {
                What::Call {
                    call: Call::Clone { flags },
                    result,
                    ..
                } => Some((flags, result)),
                _ => None,
            })
            .collect();
        assert_eq!(
            flags,
            [
                (clone::VM | clone::THREAD, 10),
                (0, 11),
                (clone::VM | clone::VFORK, 12),
                (clone::VM | clone::VFORK, 13)
            ]
        );
        assert!(ev.iter().any(|e| e.what
            == What::CloneStarted {
                flags: Some(clone::VM | clone::VFORK)
            }));
    }

    #[test]
    fn mremap_and_brk_and_flags() {
        let (ev, _) = events(
            "mremap(0x7f0000000000, 8192, 16384, MREMAP_MAYMOVE|MREMAP_FIXED, 0x7f1000000000) = 0x7f1000000000\n\
             mremap(0x7f0000000000, 8192, 4096, 0) = 0x7f0000000000\n\
             brk(NULL) = 0x5000000\n\
             mmap(0x10000, 4096, 0x7 /* PROT_??? */, MAP_SHARED|MAP_FIXED|MAP_HUGETLB|0x40000, 3</tmp/x>, 0) = 0x10000\n",
        );
        assert!(matches!(
            ev[0].what,
            What::Call {
                call: Call::Mremap {
                    new_len: 16384,
                    flags: 3,
                    new_addr: Some(0x7f10_0000_0000),
                    ..
                },
                ..
            }
        ));
        assert!(matches!(
            ev[1].what,
            What::Call {
                call: Call::Mremap { new_addr: None, .. },
                ..
            }
        ));
        assert!(matches!(
            ev[2].what,
            What::Call {
                call: Call::Brk { addr: 0 },
                result: 0x500_0000,
                ..
            }
        ));
        assert!(matches!(
            ev[3].what,
            What::Call {
                call: Call::Mmap {
                    prot: 7,
                    fd: 3,
                    flags,
                    ..
                },
                ..
            } if flags & map::FIXED != 0 && flags & map::SHARED != 0
        ));
    }

    #[test]
    fn malformed_known_calls_name_their_line() {
        let e = error(b"1 brk(NULL) = 0x1000\n1 mmap(NULL, 4096, PROT_READ = 0x1000\n");
        assert_eq!(e, "line 2: unbalanced parentheses in mmap call");
        let e = error(b"munmap(0x1000) = 0\n");
        assert!(
            e.starts_with("line 1: munmap call: 1 argument(s), expected 2"),
            "{e}"
        );
        let e = error(b"\n\nmprotect(0x1000, lots, PROT_READ) = 0\n");
        assert!(
            e.starts_with("line 3: mprotect call: argument 2 (length)"),
            "{e}"
        );
        let e = error(b"mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, -1, 0)) = 0x1000\n");
        // The `)` closes the call; what follows is not a result.
        assert_eq!(e, "line 1: no result after the mmap call");
        let e = error(b"execve(\"/bin/sh, [\"sh\"]) = 0\n");
        assert_eq!(e, "line 1: unterminated string in execve call");
        let e = error(b"1 mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, -1, 0) = zebra\n");
        assert!(e.contains("cannot read the result"), "{e}");
        let e = error(b"1 mmap(NULL, 4096, PROT_READ], 0 <unfinished ...>\n");
        assert_eq!(e, "line 1: unbalanced parentheses in mmap call");
    }

    #[test]
    fn unknown_calls_may_be_anything() {
        let (ev, mix) = events("frobnicate(((( = ?\nwrite(1, \"a)\", 2) = 2\n");
        assert!(ev.is_empty());
        assert_eq!(mix.calls["frobnicate"].skipped, 1);
        assert_eq!(mix.calls["write"].skipped, 1);
    }

    #[test]
    fn binary_data_is_an_error() {
        assert_eq!(
            error(b"brk(NULL) = 0x1000\n\x7fELF\x02\x01\x01\0\0\n"),
            "line 2: binary data (byte 0x7f); strace output is text"
        );
        assert!(error(b"munmap(0x1000, 4096) = 0\n\xff\xfe\n").starts_with("line 2: binary data"));
        let long = vec![b'a'; MAX_LINE + 10];
        assert!(error(&long).contains("longer than"));
    }

    #[test]
    fn strings_with_parentheses_and_quotes() {
        let (ev, _) =
            events("execve(\"/bin/a(b\", [\"x\\\")\", \"y\"...], 0x7ffd /* 2 vars */) = 0\n");
        assert!(matches!(
            ev[0].what,
            What::Call {
                call: Call::Execve,
                ..
            }
        ));
    }

    #[test]
    fn exits_and_never_resumed_calls() {
        let (ev, mix) = events(
            "3 exit_group(0) = ?\n3 +++ exited with 0 +++\n4 +++ killed by SIGKILL +++\n\
             5 mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, 3, 0 <unfinished ...>\n",
        );
        assert!(matches!(
            ev[0].what,
            What::Call {
                call: Call::ExitGroup,
                ..
            }
        ));
        assert_eq!(ev[1].what, What::Gone);
        assert_eq!(ev[2].what, What::Gone);
        assert_eq!(mix.unmatched, 1);
        assert_eq!(mix.calls["mmap"].failed, 1);
    }
}
