//! The streaming reader.
//!
//! Reading is two passes over each record's bytes, both without heap
//! allocation in the common case: a scanner finds where the record ends
//! (balancing parentheses, skipping strings, counting lines), working in
//! the reader's own buffer; then a tokenizer splits the record into at most
//! [`MAX_ITEMS`] bare atoms and `(key value)` fields, kept as offsets into
//! the record, and the record kind picks its fields out of those. Only a
//! record that straddles two fills of the underlying buffer is copied (into
//! one reused `Vec`).

use std::fmt;
use std::io::BufRead;

use vmsa::tlbi::TlbiOp;

use crate::event::{Barrier, Domain, Event, Hint, Origin, Reg};

/// Most bare atoms, and most `(key value)` fields, one record may have.
pub const MAX_ITEMS: usize = 12;

/// One record of a trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// `seq` is the record's `id`; `line` the line on which it starts.
    pub origin: Origin,
    /// The issuing PE (the record's `tid`).
    pub pe: usize,
    /// What it did.
    pub event: Event,
}

/// Why a trace could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// Line of the offending text (1-based).
    pub line: u64,
    /// What was wrong.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

fn error(line: u64, message: impl Into<String>) -> ParseError {
    ParseError {
        line,
        message: message.into(),
    }
}

/// Reads records one at a time from a Casemate trace. Also an
/// [`Iterator`] over `Result<Record, ParseError>`.
///
/// After an error the reader carries on with the next record where it can
/// (a malformed record has been consumed whole; after unbalanced
/// parentheses it resumes at the next line); end of input inside a record
/// and read errors end the iteration.
pub struct Reader<R: BufRead> {
    inner: R,
    /// The bytes of a record that straddles two fills of `inner`.
    spill: Vec<u8>,
    /// Line of the next byte to scan (1-based).
    line: u64,
    /// Skip to the end of the current line before looking for a record.
    skip_line: bool,
    done: bool,
}

impl<R: BufRead> Reader<R> {
    /// A reader of `r`. Give it a large buffer (e.g. a 1 MiB
    /// [`std::io::BufReader`]) for speed.
    pub fn new(r: R) -> Self {
        Reader {
            inner: r,
            spill: Vec::new(),
            line: 1,
            skip_line: false,
            done: false,
        }
    }

    /// The line the reader has reached: after the last record returned,
    /// or, at the end, the number of lines plus one if the input ended with
    /// a newline.
    pub fn line(&self) -> u64 {
        self.line
    }

    /// The next record, `None` at the end of the input.
    pub fn next_record(&mut self) -> Option<Result<Record, ParseError>> {
        if self.done {
            return None;
        }
        match self.find_start() {
            Ok(true) => {}
            Ok(false) => {
                self.done = true;
                return None;
            }
            Err(e) => return Some(Err(e)),
        }
        Some(self.scan_record())
    }

    fn read_error(&mut self, e: std::io::Error) -> ParseError {
        self.done = true;
        error(self.line, format!("read error: {e}"))
    }

    /// Skips blank space and `!` verdict lines up to the `(` that opens the
    /// next record, leaving it unconsumed. `Ok(false)` at end of input.
    fn find_start(&mut self) -> Result<bool, ParseError> {
        loop {
            let buf = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.read_error(e)),
            };
            if buf.is_empty() {
                return Ok(false);
            }
            let mut i = 0;
            let mut found = false;
            let mut bad = None;
            while i < buf.len() {
                let b = buf[i];
                if self.skip_line {
                    match buf[i..].iter().position(|&c| c == b'\n') {
                        Some(n) => {
                            i += n + 1;
                            self.line += 1;
                            self.skip_line = false;
                            continue;
                        }
                        None => {
                            i = buf.len();
                            break;
                        }
                    }
                }
                match b {
                    b'\n' => self.line += 1,
                    b' ' | b'\t' | b'\r' => {}
                    b'!' => self.skip_line = true,
                    b'(' => {
                        found = true;
                        break;
                    }
                    _ => {
                        bad = Some(b);
                        i += 1;
                        break;
                    }
                }
                i += 1;
            }
            self.inner.consume(i);
            if let Some(b) = bad {
                self.skip_line = true;
                let message = if b == b')' {
                    "unbalanced parentheses: ')' with no record open".to_string()
                } else {
                    format!("expected '(' to start a record, found {}", describe_byte(b))
                };
                return Err(error(self.line, message));
            }
            if found {
                return Ok(true);
            }
        }
    }

    /// Scans the record whose `(` is next in the input up to its closing
    /// `)`, consumes it and parses it.
    fn scan_record(&mut self) -> Result<Record, ParseError> {
        let start_line = self.line;
        let mut depth = 0u32;
        let mut in_str = false;
        let mut escaped = false;
        self.spill.clear();
        loop {
            let buf = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.read_error(e)),
            };
            if buf.is_empty() {
                self.done = true;
                return Err(error(
                    start_line,
                    "unbalanced parentheses: the input ends inside this record",
                ));
            }
            let mut end = None;
            let mut i = 0;
            while i < buf.len() {
                let b = buf[i];
                if CLASS[b as usize] != 0 {
                    if in_str {
                        if escaped {
                            escaped = false;
                        } else if b == b'\\' {
                            escaped = true;
                        } else if b == b'"' {
                            in_str = false;
                        } else if b == b'\n' {
                            self.line += 1;
                        }
                    } else {
                        match b {
                            b'(' => {
                                depth += 1;
                                if depth > 2 {
                                    // Fields hold atoms only: a missing ')'
                                    // has swallowed the next record's start.
                                    let line = self.line;
                                    self.inner.consume(i + 1);
                                    self.skip_line = true;
                                    return Err(error(
                                        line,
                                        format!(
                                            "unbalanced parentheses: '(' inside a field \
                                             (is a ')' missing in the record starting \
                                             on line {start_line}?)"
                                        ),
                                    ));
                                }
                            }
                            b')' => {
                                depth -= 1;
                                if depth == 0 {
                                    end = Some(i);
                                    break;
                                }
                            }
                            b'"' => in_str = true,
                            b'\n' => self.line += 1,
                            _ => {}
                        }
                    }
                } else if escaped {
                    escaped = false;
                }
                i += 1;
            }
            match end {
                Some(e) => {
                    let result = if self.spill.is_empty() {
                        parse_record(&buf[..=e], start_line)
                    } else {
                        self.spill.extend_from_slice(&buf[..=e]);
                        parse_record(&self.spill, start_line)
                    };
                    self.inner.consume(e + 1);
                    return result;
                }
                None => {
                    let n = buf.len();
                    self.spill.extend_from_slice(buf);
                    self.inner.consume(n);
                }
            }
        }
    }
}

impl<R: BufRead> Iterator for Reader<R> {
    type Item = Result<Record, ParseError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_record()
    }
}

/// Bytes the record scanner must look at (the rest it skips).
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    t[b'(' as usize] = 1;
    t[b')' as usize] = 1;
    t[b'"' as usize] = 1;
    t[b'\\' as usize] = 1;
    t[b'\n' as usize] = 1;
    t
};

fn describe_byte(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("'{}'", b as char)
    } else {
        format!("byte {b:#04x}")
    }
}

/// A token: `rec[start..end]`; for a field, `key` is the key's span.
#[derive(Clone, Copy, Default)]
struct Item {
    key: (u32, u32),
    start: u32,
    end: u32,
    quoted: bool,
}

/// The tokens of one record.
struct Fields<'a> {
    rec: &'a [u8],
    line: u64,
    keyed: [Item; MAX_ITEMS],
    n_keyed: usize,
    keyed_used: u32,
    bare: [Item; MAX_ITEMS],
    n_bare: usize,
    next_bare: usize,
}

fn is_delim(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b'(' | b')' | b'"')
}

impl<'a> Fields<'a> {
    fn text(&self, span: (u32, u32)) -> &'a [u8] {
        &self.rec[span.0 as usize..span.1 as usize]
    }

    fn value(&self, item: Item) -> &'a [u8] {
        self.text((item.start, item.end))
    }

    /// The line of byte `at` of the record.
    fn line_at(&self, at: usize) -> u64 {
        self.line + self.rec[..at].iter().filter(|&&b| b == b'\n').count() as u64
    }

    fn error_at(&self, at: usize, message: impl Into<String>) -> ParseError {
        error(self.line_at(at), message)
    }

    fn skip_space(&self, p: &mut usize) {
        while *p < self.rec.len() && matches!(self.rec[*p], b' ' | b'\t' | b'\r' | b'\n') {
            *p += 1;
        }
    }

    /// An atom or string at `*p` (which is neither space nor a parenthesis).
    fn atom(&self, p: &mut usize) -> Result<Item, ParseError> {
        let start = *p;
        if self.rec[start] == b'"' {
            let mut q = start + 1;
            loop {
                match self.rec.get(q) {
                    None => return Err(self.error_at(start, "unterminated string")),
                    Some(b'\\') => q += 2,
                    Some(b'"') => break,
                    Some(_) => q += 1,
                }
            }
            *p = q + 1;
            return Ok(Item {
                start: start as u32 + 1,
                end: q as u32,
                quoted: true,
                ..Item::default()
            });
        }
        let mut q = start;
        while q < self.rec.len() && !is_delim(self.rec[q]) {
            q += 1;
        }
        *p = q;
        Ok(Item {
            start: start as u32,
            end: q as u32,
            ..Item::default()
        })
    }

    /// Splits `rec` (from its `(` to its `)`) into the record name and its
    /// items.
    fn tokenize(rec: &'a [u8], line: u64) -> Result<(Self, &'a [u8]), ParseError> {
        if rec.len() > u32::MAX as usize {
            return Err(error(line, "record too long"));
        }
        let mut f = Fields {
            rec,
            line,
            keyed: [Item::default(); MAX_ITEMS],
            n_keyed: 0,
            keyed_used: 0,
            bare: [Item::default(); MAX_ITEMS],
            n_bare: 0,
            next_bare: 0,
        };
        let last = rec.len() - 1; // the closing ')'
        let mut p = 1;
        f.skip_space(&mut p);
        if p >= last || matches!(rec[p], b'(' | b'"') {
            return Err(f.error_at(p.min(last), "expected a record name after '('"));
        }
        let name = f.atom(&mut p)?;
        let name = f.value(name);
        loop {
            f.skip_space(&mut p);
            if p >= last {
                break;
            }
            if rec[p] == b'(' {
                let open = p;
                p += 1;
                f.skip_space(&mut p);
                if p >= last || matches!(rec[p], b'(' | b')' | b'"') {
                    return Err(f.error_at(open, "expected a field name after '('"));
                }
                let key = f.atom(&mut p)?;
                f.skip_space(&mut p);
                if rec[p] == b')' {
                    return Err(f.error_at(
                        open,
                        format!(
                            "field ({}) has no value",
                            String::from_utf8_lossy(f.value(key))
                        ),
                    ));
                }
                let mut item = f.atom(&mut p)?;
                f.skip_space(&mut p);
                if rec[p] != b')' {
                    return Err(f.error_at(
                        open,
                        format!(
                            "field ({}) has more than one value",
                            String::from_utf8_lossy(f.value(key))
                        ),
                    ));
                }
                p += 1;
                item.key = (key.start, key.end);
                if f.n_keyed == MAX_ITEMS {
                    return Err(f.error_at(open, "too many fields"));
                }
                f.keyed[f.n_keyed] = item;
                f.n_keyed += 1;
            } else {
                let at = p;
                let item = f.atom(&mut p)?;
                if f.n_bare == MAX_ITEMS {
                    return Err(f.error_at(at, "too many fields"));
                }
                f.bare[f.n_bare] = item;
                f.n_bare += 1;
            }
        }
        Ok((f, name))
    }

    fn keyed(&mut self, key: &[u8]) -> Option<Item> {
        for i in 0..self.n_keyed {
            let item = self.keyed[i];
            if self.keyed_used & (1 << i) == 0 && self.text(item.key).eq_ignore_ascii_case(key) {
                self.keyed_used |= 1 << i;
                return Some(item);
            }
        }
        None
    }

    fn next_bare(&mut self) -> Option<Item> {
        let item = self
            .bare
            .get(self.next_bare)
            .filter(|_| self.next_bare < self.n_bare)?;
        self.next_bare += 1;
        Some(*item)
    }

    fn peek_bare(&self) -> Option<Item> {
        (self.next_bare < self.n_bare).then(|| self.bare[self.next_bare])
    }

    /// Field `key`: given as `(key value)`, or else the next bare atom.
    fn field(&mut self, key: &[u8]) -> Option<Item> {
        self.keyed(key).or_else(|| self.next_bare())
    }

    fn missing(&self, key: &str) -> ParseError {
        error(self.line, format!("missing field ({key} ...)"))
    }

    fn require(&mut self, key: &str) -> Result<Item, ParseError> {
        self.field(key.as_bytes()).ok_or_else(|| self.missing(key))
    }

    fn unquoted(&self, item: Item, what: &str) -> Result<&'a [u8], ParseError> {
        if item.quoted {
            return Err(self.error_at(
                item.start as usize - 1,
                format!("{what}: unexpected string"),
            ));
        }
        Ok(self.value(item))
    }

    fn hex(&self, item: Item, what: &str) -> Result<u64, ParseError> {
        let text = self.unquoted(item, what)?;
        parse_hex(text).map_err(|why| {
            self.error_at(
                item.start as usize,
                format!("{what}: {why}: '{}'", String::from_utf8_lossy(text)),
            )
        })
    }

    fn decimal(&self, item: Item, what: &str) -> Result<u64, ParseError> {
        let text = self.unquoted(item, what)?;
        parse_decimal(text).map_err(|why| {
            self.error_at(
                item.start as usize,
                format!("{what}: {why}: '{}'", String::from_utf8_lossy(text)),
            )
        })
    }

    fn require_hex(&mut self, key: &str) -> Result<u64, ParseError> {
        let item = self.require(key)?;
        self.hex(item, key)
    }

    /// A keyword, lower-cased into `buf` (empty if too long: no keyword
    /// is).
    fn word<'b>(
        &self,
        item: Item,
        what: &str,
        buf: &'b mut [u8; 32],
    ) -> Result<&'b [u8], ParseError> {
        let text = self.unquoted(item, what)?;
        Ok(lower(text, buf))
    }

    fn unknown(&self, item: Item, what: &str) -> ParseError {
        self.error_at(
            item.start as usize,
            format!(
                "unknown {what} '{}'",
                String::from_utf8_lossy(self.value(item))
            ),
        )
    }

    fn unknown_expected(&self, item: Item, what: &str, expected: &str) -> ParseError {
        let mut e = self.unknown(item, what);
        e.message.push_str(" (expected ");
        e.message.push_str(expected);
        e.message.push(')');
        e
    }

    /// Errors if anything was not used.
    fn finish(&self) -> Result<(), ParseError> {
        for i in 0..self.n_keyed {
            if self.keyed_used & (1 << i) == 0 {
                let item = self.keyed[i];
                return Err(self.error_at(
                    item.key.0 as usize,
                    format!(
                        "unexpected field ({} ...)",
                        String::from_utf8_lossy(self.text(item.key))
                    ),
                ));
            }
        }
        if let Some(item) = self.peek_bare() {
            return Err(self.error_at(
                item.start as usize,
                format!("unexpected '{}'", String::from_utf8_lossy(self.value(item))),
            ));
        }
        Ok(())
    }
}

fn lower<'b>(text: &[u8], buf: &'b mut [u8; 32]) -> &'b [u8] {
    if text.len() > buf.len() {
        return &buf[..0];
    }
    for (d, s) in buf.iter_mut().zip(text) {
        *d = s.to_ascii_lowercase();
    }
    &buf[..text.len()]
}

/// Hexadecimal, with or without `0x`.
fn parse_hex(text: &[u8]) -> Result<u64, &'static str> {
    let digits = match text {
        [b'0', b'x' | b'X', rest @ ..] => rest,
        _ => text,
    };
    if digits.is_empty() {
        return Err("expected a hexadecimal number");
    }
    let mut v: u64 = 0;
    for &c in digits {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return Err("expected a hexadecimal number"),
        };
        if v >> 60 != 0 {
            return Err("number does not fit in 64 bits");
        }
        v = (v << 4) | d as u64;
    }
    Ok(v)
}

fn parse_decimal(text: &[u8]) -> Result<u64, &'static str> {
    if text.is_empty() {
        return Err("expected a decimal number");
    }
    let mut v: u64 = 0;
    for &c in text {
        if !c.is_ascii_digit() {
            return Err("expected a decimal number");
        }
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add((c - b'0') as u64))
            .ok_or("number does not fit in 64 bits")?;
    }
    Ok(v)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    MemWrite,
    MemRead,
    MemInit,
    MemSet,
    Barrier,
    Tlbi,
    SysReg,
    Hint,
    Lock,
    Unlock,
    ReleaseData,
    Complete,
}

impl Kind {
    fn from_name(name: &[u8]) -> Option<Kind> {
        let mut buf = [0u8; 32];
        Some(match lower(name, &mut buf) {
            b"mem-write" => Kind::MemWrite,
            b"mem-read" => Kind::MemRead,
            b"mem-init" => Kind::MemInit,
            b"mem-set" => Kind::MemSet,
            b"barrier" => Kind::Barrier,
            b"tlbi" => Kind::Tlbi,
            b"sysreg-write" | b"msr" => Kind::SysReg,
            b"hint" => Kind::Hint,
            b"lock" => Kind::Lock,
            b"unlock" => Kind::Unlock,
            b"release-data" => Kind::ReleaseData,
            b"complete" => Kind::Complete,
            _ => return None,
        })
    }

    /// Most fields after id, tid and src in the positional form.
    fn max_positional(self) -> usize {
        match self {
            Kind::MemWrite | Kind::MemSet | Kind::Hint => 3,
            Kind::MemRead
            | Kind::MemInit
            | Kind::Barrier
            | Kind::Tlbi
            | Kind::SysReg
            | Kind::ReleaseData => 2,
            Kind::Lock | Kind::Unlock => 1,
            Kind::Complete => 0,
        }
    }

    /// Whether the first positional field is a keyword, never a number.
    fn starts_with_word(self) -> bool {
        matches!(
            self,
            Kind::MemWrite | Kind::Barrier | Kind::Tlbi | Kind::SysReg | Kind::Hint
        )
    }
}

/// Parses one record: `rec` runs from its `(` to its `)`; `line` is the
/// line of the `(`.
pub(crate) fn parse_record(rec: &[u8], line: u64) -> Result<Record, ParseError> {
    let (mut f, name) = Fields::tokenize(rec, line)?;
    let kind = Kind::from_name(name).ok_or_else(|| {
        error(
            line,
            format!("unknown record '{}'", String::from_utf8_lossy(name)),
        )
    })?;

    // id, tid and src: keyed, or the positional form's first atoms.
    let positional;
    let seq = match f.keyed(b"id") {
        Some(item) => {
            positional = false;
            f.decimal(item, "id")?
        }
        None => {
            positional = true;
            let item = f.next_bare().ok_or_else(|| f.missing("id"))?;
            f.decimal(item, "id")?
        }
    };
    let tid = match f.keyed(b"tid").or_else(|| f.keyed(b"thread")) {
        Some(item) => item,
        None if positional => f.next_bare().ok_or_else(|| f.missing("tid"))?,
        None => return Err(f.missing("tid")),
    };
    let tid = f.decimal(tid, "tid")?;
    let pe = usize::try_from(tid).map_err(|_| error(line, "tid too large"))?;
    if f.keyed(b"src").is_none() && positional {
        if let Some(item) = f.peek_bare() {
            let remaining = f.n_bare - f.next_bare;
            if item.quoted
                || remaining > kind.max_positional()
                || (kind.starts_with_word() && f.value(item)[0].is_ascii_digit())
            {
                f.next_bare();
            }
        }
    }

    let mut buf = [0u8; 32];
    let event = match kind {
        Kind::MemWrite => {
            let order = f.require("mem-order")?;
            let release = match f.word(order, "mem-order", &mut buf)? {
                b"plain" => false,
                b"release" => true,
                _ => return Err(f.unknown_expected(order, "mem-order", "plain or release")),
            };
            Event::Write {
                pa: f.require_hex("address")?,
                value: f.require_hex("value")?,
                release,
            }
        }
        Kind::MemRead => Event::Read {
            pa: f.require_hex("address")?,
            value: f.require_hex("value")?,
        },
        Kind::MemInit => Event::MemInit {
            pa: f.require_hex("address")?,
            size: f.require_hex("size")?,
        },
        Kind::MemSet => {
            let pa = f.require_hex("address")?;
            let size = f.require_hex("size")?;
            let item = f.require("value")?;
            let value = f.hex(item, "value")?;
            let byte = u8::try_from(value)
                .map_err(|_| f.error_at(item.start as usize, "value: a byte is at most 0xff"))?;
            Event::MemSet { pa, size, byte }
        }
        Kind::Barrier => {
            let which = f
                .next_bare()
                .ok_or_else(|| error(line, "missing barrier kind (dsb, dmb or isb)"))?;
            match f.word(which, "barrier", &mut buf)? {
                b"isb" => Event::Barrier(Barrier::Isb),
                b"dmb" => {
                    if let Some(item) = f.field(b"kind") {
                        barrier_option(&f, item)?;
                    }
                    Event::Barrier(Barrier::Dmb)
                }
                b"dsb" => {
                    let item = f.require("kind")?;
                    Event::Barrier(match barrier_option(&f, item)? {
                        Some((domain, stores_only)) => Barrier::Dsb {
                            domain,
                            stores_only,
                        },
                        // DSB <dom>LD waits for loads only: it completes
                        // nothing the model tracks, like a DMB.
                        None => Barrier::Dmb,
                    })
                }
                _ => return Err(f.unknown_expected(which, "barrier", "dsb, dmb or isb")),
            }
        }
        Kind::Tlbi => {
            let item = f
                .next_bare()
                .ok_or_else(|| error(line, "missing TLBI operation"))?;
            let text = f.unquoted(item, "TLBI operation")?;
            let op = std::str::from_utf8(text)
                .ok()
                .and_then(tlbi_op)
                .ok_or_else(|| f.unknown(item, "TLBI operation"))?;
            let operand = match f.field(b"value") {
                Some(item) => f.hex(item, "value")?,
                None => 0,
            };
            Event::Tlbi { op, operand }
        }
        Kind::SysReg => {
            let item = f.require("sysreg")?;
            let text = f.unquoted(item, "sysreg")?;
            let reg = std::str::from_utf8(text)
                .ok()
                .and_then(|name| {
                    if name.eq_ignore_ascii_case("ttbr_el2") {
                        // The positional example of the format spells
                        // TTBR0_EL2 this way.
                        Some(Reg::Ttbr0El2)
                    } else {
                        Reg::from_name(name)
                    }
                })
                .ok_or_else(|| f.unknown(item, "system register"))?;
            Event::SysReg {
                reg,
                value: f.require_hex("value")?,
            }
        }
        Kind::Hint => {
            let item = f.require("kind")?;
            let hint = f.word(item, "kind", &mut buf)?;
            let location = f.require_hex("location")?;
            let hint = match hint {
                b"set_root_lock" => Hint::SetRootLock {
                    root: location,
                    lock: f.require_hex("value")?,
                },
                b"set_owner_root" => Hint::SetOwnerRoot {
                    page: location,
                    root: f.require_hex("value")?,
                },
                b"release_table" => {
                    // The value means nothing; allow it to be left out.
                    if let Some(item) = f.field(b"value") {
                        f.hex(item, "value")?;
                    }
                    Hint::ReleaseTable { page: location }
                }
                b"set_pte_thread_owner" => Hint::SetPteThreadOwner {
                    location,
                    value: f.require_hex("value")?,
                },
                _ => return Err(f.unknown(item, "hint kind")),
            };
            Event::Hint(hint)
        }
        Kind::Lock => Event::Lock {
            addr: f.require_hex("address")?,
        },
        Kind::Unlock => Event::Unlock {
            addr: f.require_hex("address")?,
        },
        Kind::ReleaseData => Event::ReleaseData {
            pa: f.require_hex("address")?,
            size: f.require_hex("size")?,
        },
        Kind::Complete => Event::Complete,
    };
    f.finish()?;
    Ok(Record {
        origin: Origin { seq, line },
        pe,
        event,
    })
}

/// A DSB/DMB option: `Some((domain, stores_only))`, `None` for the
/// loads-only forms.
fn barrier_option(f: &Fields<'_>, item: Item) -> Result<Option<(Domain, bool)>, ParseError> {
    let mut buf = [0u8; 32];
    Ok(match f.word(item, "kind", &mut buf)? {
        b"ish" => Some((Domain::InnerShareable, false)),
        b"ishst" => Some((Domain::InnerShareable, true)),
        b"nsh" => Some((Domain::NonShareable, false)),
        b"nshst" => Some((Domain::NonShareable, true)),
        b"osh" => Some((Domain::OuterShareable, false)),
        b"oshst" => Some((Domain::OuterShareable, true)),
        b"sy" => Some((Domain::FullSystem, false)),
        b"st" => Some((Domain::FullSystem, true)),
        b"ld" | b"ishld" | b"nshld" | b"oshld" => None,
        _ => return Err(f.unknown(item, "barrier option")),
    })
}

/// A TLBI operation by mnemonic, with a fast path for the common ones.
fn tlbi_op(name: &str) -> Option<TlbiOp> {
    match name {
        "vmalle1is" => Some(TlbiOp::Vmalle1is),
        "ipas2e1is" => Some(TlbiOp::Ipas2e1is),
        "alle1is" => Some(TlbiOp::Alle1is),
        _ => TlbiOp::from_mnemonic(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Result<Record, ParseError> {
        let mut r = Reader::new(text.as_bytes());
        let rec = r.next_record().expect("a record");
        assert!(rec.is_err() || r.next_record().is_none(), "one record only");
        rec
    }

    fn ev(text: &str) -> Event {
        one(text).unwrap_or_else(|e| panic!("{text}: {e}")).event
    }

    fn err(text: &str) -> ParseError {
        match one(text) {
            Ok(r) => panic!("{text}: parsed as {r:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn keyword_form() {
        let r = one(
            "(mem-write (id 11) (tid 2) (mem-order plain) (address 23f000) \
             (value 240003) (src \"examples/tests/good_bbm.c:33\"))",
        )
        .unwrap();
        assert_eq!(r.origin, Origin { seq: 11, line: 1 });
        assert_eq!(r.pe, 2);
        assert_eq!(
            r.event,
            Event::Write {
                pa: 0x23f000,
                value: 0x240003,
                release: false
            }
        );
        assert_eq!(
            ev("(mem-init (id 5) (tid 0) (address 0xaaaadccc5000) (size 0x1000))"),
            Event::MemInit {
                pa: 0xaaaa_dccc_5000,
                size: 0x1000
            }
        );
        assert_eq!(
            ev("(mem-read (id 5) (thread 0) (address 10) (value FF) (src 17))"),
            Event::Read {
                pa: 0x10,
                value: 0xff
            }
        );
        assert_eq!(
            ev("(mem-set (id 5) (tid 0) (address 1000) (size 1000) (value 10))"),
            Event::MemSet {
                pa: 0x1000,
                size: 0x1000,
                byte: 0x10
            }
        );
        assert_eq!(
            ev("(barrier (id 16) (tid 0) dsb (kind ish) (src \"x.c:41\"))"),
            Event::Barrier(Barrier::DSB_ISH)
        );
        assert_eq!(
            ev("(barrier (id 16) (tid 0) dsb (kind ishst))"),
            Event::Barrier(Barrier::DSB_ISHST)
        );
        assert_eq!(
            ev("(barrier (id 16) (tid 0) dsb (kind ishld))"),
            Event::Barrier(Barrier::Dmb)
        );
        assert_eq!(
            ev("(barrier (id 16) (tid 0) dmb (kind ish))"),
            Event::Barrier(Barrier::Dmb)
        );
        assert_eq!(
            ev("(barrier (id 16) (tid 0) isb)"),
            Event::Barrier(Barrier::Isb)
        );
        assert_eq!(
            ev("(tlbi (id 17) (tid 0) alle1is (src \"x.c:42\"))"),
            Event::Tlbi {
                op: TlbiOp::Alle1is,
                operand: 0
            }
        );
        assert_eq!(
            ev("(tlbi (id 14) (tid 0) ipas2e1is (value 0x300000000000))"),
            Event::Tlbi {
                op: TlbiOp::Ipas2e1is,
                operand: 0x3000_0000_0000
            }
        );
        assert_eq!(
            ev("(sysreg-write (id 0) (tid 0) (sysreg vtcr_el2) (value 10))"),
            Event::SysReg {
                reg: Reg::VtcrEl2,
                value: 0x10
            }
        );
        assert_eq!(
            ev("(msr (id 0) (tid 0) (sysreg HCR_EL2) (value 1))"),
            Event::SysReg {
                reg: Reg::Other("hcr_el2"),
                value: 1
            }
        );
        assert_eq!(
            ev("(hint (id 8) (tid 0) (kind set_root_lock) (location 23f000) (value 242000))"),
            Event::Hint(Hint::SetRootLock {
                root: 0x23f000,
                lock: 0x242000
            })
        );
        assert_eq!(
            ev("(hint (id 9) (tid 0) (kind release_table) (location 23f000) (value 0x0))"),
            Event::Hint(Hint::ReleaseTable { page: 0x23f000 })
        );
        assert_eq!(
            ev("(lock (id 14) (tid 0) (address 242000))"),
            Event::Lock { addr: 0x242000 }
        );
        assert_eq!(
            ev("(unlock (id 14) (tid 0) (address 242000))"),
            Event::Unlock { addr: 0x242000 }
        );
        assert_eq!(
            ev("(release-data (id 1) (tid 0) (address 5000) (size 2000))"),
            Event::ReleaseData {
                pa: 0x5000,
                size: 0x2000
            }
        );
        assert_eq!(ev("(complete (id 1) (tid 3))"), Event::Complete);
    }

    #[test]
    fn positional_form() {
        // The examples of the format description.
        let r = one("(mem-write 1 1 \"src\" release 42 93)").unwrap();
        assert_eq!((r.origin.seq, r.pe), (1, 1));
        assert_eq!(
            r.event,
            Event::Write {
                pa: 0x42,
                value: 0x93,
                release: true
            }
        );
        assert_eq!(ev("(lock 2 1 \"src\" 42)"), Event::Lock { addr: 0x42 });
        assert_eq!(
            ev("(msr 3 1 \"src\" TTBR_EL2 93)"),
            Event::SysReg {
                reg: Reg::Ttbr0El2,
                value: 0x93
            }
        );
        assert_eq!(
            ev("(barrier 4 1 \"src\" DSB ISH)"),
            Event::Barrier(Barrier::DSB_ISH)
        );
        assert_eq!(
            ev("(hint 5 1 \"src\" SET_PTE_THREAD_OWNER 42 93)"),
            Event::Hint(Hint::SetPteThreadOwner {
                location: 0x42,
                value: 0x93
            })
        );
        // Without src, or with an integer src.
        assert_eq!(ev("(lock 2 1 42)"), Event::Lock { addr: 0x42 });
        assert_eq!(ev("(lock 2 1 17 42)"), Event::Lock { addr: 0x42 });
        assert_eq!(ev("(barrier 4 1 17 isb)"), Event::Barrier(Barrier::Isb));
        assert_eq!(
            ev("(tlbi 4 1 VAE2IS 1234)"),
            Event::Tlbi {
                op: TlbiOp::Vae2is,
                operand: 0x1234
            }
        );
    }

    #[test]
    fn multi_line_records_skipped_lines_and_line_numbers() {
        let text = "! verdict line (with parens\n\n(mem-init\n  (id 0)\n  (tid 0)\n  \
                    (address 0xaaaaaf200000)\n  (size 0x1000)\n  (src \"a.c:29\"))\n\
                    (barrier\n  (id 9)\n  (tid 0)\n  dsb (kind ish)\n  (src \"a.c:43\"))\n\
                    !OK\n";
        let recs: Vec<Record> = Reader::new(text.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].origin, Origin { seq: 0, line: 3 });
        assert_eq!(recs[1].origin, Origin { seq: 9, line: 9 });
        assert_eq!(recs[1].event, Event::Barrier(Barrier::DSB_ISH));
    }

    #[test]
    fn records_straddling_buffer_fills() {
        let text = "(lock (id 1) (tid 0) (address 42) (src \"a(b)c\\\"d\"))\n".repeat(50);
        for cap in [1, 2, 3, 7, 64] {
            let r = Reader::new(std::io::BufReader::with_capacity(cap, text.as_bytes()));
            let recs: Vec<Record> = r.collect::<Result<_, _>>().unwrap();
            assert_eq!(recs.len(), 50);
            assert_eq!(recs[49].origin.line, 50);
            assert!(recs.iter().all(|r| r.event == Event::Lock { addr: 0x42 }));
        }
    }

    #[test]
    fn errors_name_the_line_and_the_problem() {
        let e = err("(mem-frob (id 1) (tid 0))");
        assert_eq!(e.line, 1);
        assert!(e.message.contains("unknown record 'mem-frob'"), "{e}");
        let e = err("\n\n(tlbi (id 1) (tid 0) vmallfoo)");
        assert_eq!(e.line, 3);
        assert!(
            e.message.contains("unknown TLBI operation 'vmallfoo'"),
            "{e}"
        );
        let e = err("(lock (id 1)\n (tid 0)\n (address 12g4))");
        assert_eq!(e.line, 3);
        assert!(
            e.message.contains("address") && e.message.contains("12g4"),
            "{e}"
        );
        let e = err("(lock (id 1) (tid 0) (address 12345678123456789))");
        assert!(e.message.contains("64 bits"), "{e}");
        let e = err("(lock (id 1) (tid 0))");
        assert!(e.message.contains("missing field (address"), "{e}");
        let e = err("(sysreg-write (id 1) (tid 0) (sysreg foo_el2) (value 1))");
        assert!(
            e.message.contains("unknown system register 'foo_el2'"),
            "{e}"
        );
        let e = err("(lock (id 1) (tid 0) (address 4) (size 5))");
        assert!(e.message.contains("unexpected field (size"), "{e}");
        let e = err("(mem-set (id 1) (tid 0) (address 0) (size 8) (value 100))");
        assert!(e.message.contains("0xff"), "{e}");
        let e = err("(lock (id x1) (tid 0) (address 4))");
        assert!(e.message.contains("id: expected a decimal number"), "{e}");
        let e = err("(mem-write (id 1) (tid 0) (mem-order acquire) (address 0) (value 0))");
        assert!(e.message.contains("unknown mem-order 'acquire'"), "{e}");
        let e = err("(barrier (id 1) (tid 0) dsb)");
        assert!(e.message.contains("missing field (kind"), "{e}");
        let e = err("(hint (id 1) (tid 0) (kind frob) (location 0) (value 0))");
        assert!(e.message.contains("unknown hint kind 'frob'"), "{e}");
        let e = err("(lock (id 1) (tid 0) (address 4 5))");
        assert!(e.message.contains("more than one value"), "{e}");
        let e = err("(lock (id 1) (tid 0) (address))");
        assert!(e.message.contains("no value"), "{e}");
    }

    #[test]
    fn unbalanced_parentheses() {
        // End of input inside a record.
        let mut r = Reader::new("(lock (id 1) (tid 0)\n (address 4)\n".as_bytes());
        let e = r.next_record().unwrap().unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.message.contains("unbalanced parentheses"), "{e}");
        assert!(r.next_record().is_none());
        // A missing ')' runs into the next record.
        let text = "(lock (id 1) (tid 0) (address 4)\n(unlock (id 2) (tid 0) (address 4))\n\
                    (lock (id 3) (tid 0) (address 4))\n";
        let mut r = Reader::new(text.as_bytes());
        let e = r.next_record().unwrap().unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("starting on line 1"), "{e}");
        // Recovery at the next line.
        let rec = r.next_record().unwrap().unwrap();
        assert_eq!(rec.origin, Origin { seq: 3, line: 3 });
        // A stray ')'.
        let mut r = Reader::new("(lock (id 1) (tid 0) (address 4)))\n(complete 2 0)".as_bytes());
        assert!(r.next_record().unwrap().is_ok());
        let e = r.next_record().unwrap().unwrap_err();
        assert!(e.message.contains("')' with no record open"), "{e}");
        assert_eq!(r.next_record().unwrap().unwrap().event, Event::Complete);
        // Text outside records.
        let e = Reader::new("\n  lock".as_bytes())
            .next_record()
            .unwrap()
            .unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("expected '('"), "{e}");
    }
}
