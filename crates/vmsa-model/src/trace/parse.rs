//! The streaming reader.
//!
//! Each record is tokenized in place, in the reader's buffer, in one pass
//! without heap allocation: the tokenizer walks from the record's `(` to
//! its `)`, classifying `(key value)` fields by name as it goes and
//! keeping every token as offsets into the buffer; then the record kind
//! picks its fields. Only a record that straddles the end of the buffered
//! input (or is malformed) takes the slow path: a scanner balances
//! parentheses across refills, copying the record into one reused `Vec`,
//! and the tokenizer runs on the copy.

use std::fmt;
use std::io::BufRead;

use vmsa::tlbi::{OperandKind, TlbiOp};

use crate::event::{Barrier, Domain, Event, Hint, Origin, Reg};

/// Most bare (not `(key value)`) atoms one record may have.
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

#[cold]
/// The `address` and `size` of a region record, which must not wrap past
/// the top of the 64-bit address space (a size from the input can be
/// anything).
fn region(f: &mut Fields<'_>, line: u64) -> Result<(u64, u64), ParseError> {
    let pa = f.require_hex(Key::Address)?;
    let size = f.require_hex(Key::Size)?;
    if pa.checked_add(size).is_none() {
        return Err(error(
            line,
            format!(
                "the region at {pa:#x} of size {size:#x} wraps past the top of the 64-bit \
                 address space"
            ),
        ));
    }
    Ok((pa, size))
}

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
        // Fast path: the whole record is in the buffer and well formed.
        let line = self.line;
        if let Ok(buf) = self.inner.fill_buf() {
            let mut f = Fields::new(buf, line);
            if let Ok(true) = f.tokenize() {
                let (end, newlines) = (f.end, f.newlines);
                let record = f.interpret();
                self.inner.consume(end + 1);
                self.line += newlines;
                return Some(record);
            }
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
                match buf[i] {
                    b'\n' => self.line += 1,
                    b' ' | b'\t' | b'\r' => {}
                    b'!' => self.skip_line = true,
                    b'(' => {
                        found = true;
                        break;
                    }
                    b => {
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

    /// The slow path: scans the record whose `(` is next in the input up to
    /// its closing `)` across refills, consumes it and parses it.
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
                if escaped {
                    escaped = false;
                    if b == b'\n' {
                        self.line += 1;
                    }
                } else if in_str {
                    match b {
                        b'\\' => escaped = true,
                        b'"' => in_str = false,
                        b'\n' => self.line += 1,
                        _ => {}
                    }
                } else {
                    match b {
                        b'(' => {
                            depth += 1;
                            if depth > 2 {
                                // Fields hold atoms only: a missing ')' has
                                // swallowed the next record's start.
                                let line = self.line;
                                self.inner.consume(i + 1);
                                self.skip_line = true;
                                return Err(error(line, unbalanced_field(start_line)));
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
                i += 1;
            }
            match end {
                Some(e) => {
                    let rec = if self.spill.is_empty() {
                        &buf[..=e]
                    } else {
                        self.spill.extend_from_slice(&buf[..=e]);
                        &self.spill[..]
                    };
                    let mut f = Fields::new(rec, start_line);
                    let result = match f.tokenize() {
                        Ok(true) => f.interpret(),
                        Ok(false) => Err(error(start_line, "unbalanced parentheses")),
                        Err(e) => Err(e),
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

fn unbalanced_field(start_line: u64) -> String {
    format!(
        "unbalanced parentheses: '(' inside a field (is a ')' missing in the record \
         starting on line {start_line}?)"
    )
}

fn describe_byte(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("'{}'", b as char)
    } else {
        format!("byte {b:#04x}")
    }
}

/// Bytes that end an atom.
static DELIM: [bool; 256] = {
    let mut t = [false; 256];
    t[b' ' as usize] = true;
    t[b'\t' as usize] = true;
    t[b'\r' as usize] = true;
    t[b'\n' as usize] = true;
    t[b'(' as usize] = true;
    t[b')' as usize] = true;
    t[b'"' as usize] = true;
    t
};

/// A token: `rec[start..end]` (for a string, without the quotes).
#[derive(Clone, Copy, Default)]
struct Item {
    start: u32,
    end: u32,
    quoted: bool,
}

/// The field names of the keyword form.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Key {
    Id,
    Tid,
    Src,
    MemOrder,
    Address,
    Value,
    Size,
    Kind,
    SysReg,
    Location,
    /// `addr` of a TLBI by address (the format's later spelling of `value`).
    Addr,
    /// `level` of a TLBI by address: the TTL hint given apart.
    Level,
}

const N_KEYS: usize = 12;

impl Key {
    fn from_name(text: &[u8]) -> Option<Key> {
        Some(match text {
            b"id" => Key::Id,
            b"tid" | b"thread" => Key::Tid,
            b"src" => Key::Src,
            b"mem-order" => Key::MemOrder,
            b"address" => Key::Address,
            b"value" => Key::Value,
            b"size" => Key::Size,
            b"kind" => Key::Kind,
            b"sysreg" => Key::SysReg,
            b"location" => Key::Location,
            b"addr" => Key::Addr,
            b"level" => Key::Level,
            _ if text.iter().any(u8::is_ascii_uppercase) => {
                let mut buf = [0u8; 32];
                let lowered = lower(text, &mut buf);
                return if lowered.is_empty() {
                    None
                } else {
                    Key::from_name(lowered)
                };
            }
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Key::Id => "id",
            Key::Tid => "tid",
            Key::Src => "src",
            Key::MemOrder => "mem-order",
            Key::Address => "address",
            Key::Value => "value",
            Key::Size => "size",
            Key::Kind => "kind",
            Key::SysReg => "sysreg",
            Key::Location => "location",
            Key::Addr => "addr",
            Key::Level => "level",
        }
    }

    fn bit(self) -> u16 {
        1 << self as u16
    }
}

/// The tokens of one record, as offsets into it.
struct Fields<'a> {
    rec: &'a [u8],
    line: u64,
    name: Item,
    keyed: [Item; N_KEYS],
    present: u16,
    used: u16,
    bare: [Item; MAX_ITEMS],
    n_bare: usize,
    next_bare: usize,
    /// Index of the closing `)` (once tokenized).
    end: usize,
    /// Newlines inside the record (once tokenized).
    newlines: u64,
}

/// `Ok(None)` from the tokenizer: the input ended first.
type Partial<T> = Result<Option<T>, ParseError>;

impl<'a> Fields<'a> {
    fn new(rec: &'a [u8], line: u64) -> Self {
        Fields {
            // Offsets are 32 bits: a longer record is never complete.
            rec: rec.get(..u32::MAX as usize).unwrap_or(rec),
            line,
            name: Item::default(),
            keyed: [Item::default(); N_KEYS],
            present: 0,
            used: 0,
            bare: [Item::default(); MAX_ITEMS],
            n_bare: 0,
            next_bare: 0,
            end: 0,
            newlines: 0,
        }
    }

    #[inline]
    fn value(&self, item: Item) -> &'a [u8] {
        &self.rec[item.start as usize..item.end as usize]
    }

    /// The line of byte `at` of the record.
    fn line_at(&self, at: usize) -> u64 {
        self.line + self.rec[..at].iter().filter(|&&b| b == b'\n').count() as u64
    }

    #[cold]
    fn error_at(&self, at: usize, message: impl Into<String>) -> ParseError {
        error(self.line_at(at), message)
    }

    #[inline(always)]
    fn skip_space(&mut self, p: &mut usize) {
        while let Some(&b) = self.rec.get(*p) {
            match b {
                b' ' | b'\t' | b'\r' => {}
                b'\n' => self.newlines += 1,
                _ => break,
            }
            *p += 1;
        }
    }

    /// The atom or string at `*p` (not space, not a parenthesis).
    #[inline(always)]
    fn atom(&mut self, p: &mut usize) -> Partial<Item> {
        let rec = self.rec;
        let start = *p;
        if rec[start] == b'"' {
            let mut q = start + 1;
            loop {
                match rec.get(q) {
                    None => return Ok(None),
                    Some(b'\\') => {
                        if rec.get(q + 1) == Some(&b'\n') {
                            self.newlines += 1;
                        }
                        q += 2;
                    }
                    Some(b'"') => break,
                    Some(b'\n') => {
                        self.newlines += 1;
                        q += 1;
                    }
                    Some(_) => q += 1,
                }
            }
            *p = q + 1;
            return Ok(Some(Item {
                start: offset(start + 1),
                end: offset(q),
                quoted: true,
            }));
        }
        let mut q = start;
        while q < rec.len() && !DELIM[rec[q] as usize] {
            q += 1;
        }
        if q == rec.len() {
            return Ok(None);
        }
        *p = q;
        Ok(Some(Item {
            start: offset(start),
            end: offset(q),
            quoted: false,
        }))
    }

    /// Splits the record starting at `rec[0]` (its `(`) into its name,
    /// fields and bare atoms, and finds its end. `Ok(false)` if `rec` ends
    /// before the record does.
    fn tokenize(&mut self) -> Result<bool, ParseError> {
        let rec = self.rec;
        let mut p = 1;
        self.skip_space(&mut p);
        match rec.get(p) {
            None => return Ok(false),
            Some(b'(' | b')' | b'"') => {
                return Err(self.error_at(p, "expected a record name after '('"))
            }
            Some(_) => {}
        }
        let Some(name) = self.atom(&mut p)? else {
            return Ok(false);
        };
        self.name = name;
        loop {
            self.skip_space(&mut p);
            match rec.get(p) {
                None => return Ok(false),
                Some(b')') => {
                    self.end = p;
                    return Ok(true);
                }
                Some(b'(') => {
                    let open = p;
                    p += 1;
                    self.skip_space(&mut p);
                    match rec.get(p) {
                        None => return Ok(false),
                        Some(b'(') => return Err(self.error_at(p, unbalanced_field(self.line))),
                        Some(b')' | b'"') => {
                            return Err(self.error_at(open, "expected a field name after '('"))
                        }
                        Some(_) => {}
                    }
                    let Some(key_item) = self.atom(&mut p)? else {
                        return Ok(false);
                    };
                    let key_text = self.value(key_item);
                    let Some(key) = Key::from_name(key_text) else {
                        return Err(self.error_at(
                            open,
                            format!(
                                "unexpected field ({} ...)",
                                String::from_utf8_lossy(key_text)
                            ),
                        ));
                    };
                    self.skip_space(&mut p);
                    match rec.get(p) {
                        None => return Ok(false),
                        Some(b'(') => return Err(self.error_at(p, unbalanced_field(self.line))),
                        Some(b')') => {
                            return Err(
                                self.error_at(open, format!("field ({}) has no value", key.name()))
                            )
                        }
                        Some(_) => {}
                    }
                    let Some(item) = self.atom(&mut p)? else {
                        return Ok(false);
                    };
                    self.skip_space(&mut p);
                    match rec.get(p) {
                        None => return Ok(false),
                        Some(b')') => p += 1,
                        Some(b'(') => return Err(self.error_at(p, unbalanced_field(self.line))),
                        Some(_) => {
                            return Err(self.error_at(
                                open,
                                format!("field ({}) has more than one value", key.name()),
                            ))
                        }
                    }
                    if self.present & key.bit() != 0 {
                        return Err(
                            self.error_at(open, format!("field ({}) given twice", key.name()))
                        );
                    }
                    self.present |= key.bit();
                    self.keyed[key as usize] = item;
                }
                Some(_) => {
                    let at = p;
                    let Some(item) = self.atom(&mut p)? else {
                        return Ok(false);
                    };
                    if self.n_bare == MAX_ITEMS {
                        return Err(self.error_at(at, "too many fields"));
                    }
                    self.bare[self.n_bare] = item;
                    self.n_bare += 1;
                }
            }
        }
    }

    #[inline]
    fn keyed(&mut self, key: Key) -> Option<Item> {
        if (self.present & !self.used) & key.bit() != 0 {
            self.used |= key.bit();
            Some(self.keyed[key as usize])
        } else {
            None
        }
    }

    #[inline]
    fn next_bare(&mut self) -> Option<Item> {
        let item = self.peek_bare()?;
        self.next_bare += 1;
        Some(item)
    }

    #[inline]
    fn peek_bare(&self) -> Option<Item> {
        (self.next_bare < self.n_bare).then(|| self.bare[self.next_bare])
    }

    /// Field `key`: given as `(key value)`, or else the next bare atom.
    #[inline]
    fn field(&mut self, key: Key) -> Option<Item> {
        self.keyed(key).or_else(|| self.next_bare())
    }

    #[cold]
    fn missing(&self, key: Key) -> ParseError {
        error(self.line, format!("missing field ({} ...)", key.name()))
    }

    #[inline]
    fn require(&mut self, key: Key) -> Result<Item, ParseError> {
        self.field(key).ok_or_else(|| self.missing(key))
    }

    #[inline]
    fn unquoted(&self, item: Item, what: &str) -> Result<&'a [u8], ParseError> {
        if item.quoted {
            return Err(self.error_at(
                item.start as usize - 1,
                format!("{what}: unexpected string"),
            ));
        }
        Ok(self.value(item))
    }

    #[inline]
    fn hex(&self, item: Item, what: &str) -> Result<u64, ParseError> {
        let text = self.unquoted(item, what)?;
        parse_hex(text).map_err(|why| {
            self.error_at(
                item.start as usize,
                format!("{what}: {why}: '{}'", String::from_utf8_lossy(text)),
            )
        })
    }

    #[inline]
    fn decimal(&self, item: Item, what: &str) -> Result<u64, ParseError> {
        let text = self.unquoted(item, what)?;
        parse_decimal(text).map_err(|why| {
            self.error_at(
                item.start as usize,
                format!("{what}: {why}: '{}'", String::from_utf8_lossy(text)),
            )
        })
    }

    #[inline]
    fn require_hex(&mut self, key: Key) -> Result<u64, ParseError> {
        let item = self.require(key)?;
        self.hex(item, key.name())
    }

    /// A keyword, lower-cased into `buf` (empty if too long: no keyword
    /// is).
    #[inline]
    fn word<'b>(
        &self,
        item: Item,
        what: &str,
        buf: &'b mut [u8; 32],
    ) -> Result<&'b [u8], ParseError> {
        let text = self.unquoted(item, what)?;
        Ok(lower(text, buf))
    }

    #[cold]
    fn unknown(&self, item: Item, what: &str) -> ParseError {
        self.error_at(
            item.start as usize,
            format!(
                "unknown {what} '{}'",
                String::from_utf8_lossy(self.value(item))
            ),
        )
    }

    #[cold]
    fn unknown_expected(&self, item: Item, what: &str, expected: &str) -> ParseError {
        let mut e = self.unknown(item, what);
        e.message.push_str(" (expected ");
        e.message.push_str(expected);
        e.message.push(')');
        e
    }

    /// Errors if anything was not used.
    fn finish(&self) -> Result<(), ParseError> {
        let unused = self.present & !self.used;
        if unused != 0 {
            let k = unused.trailing_zeros() as usize;
            let key = [
                Key::Id,
                Key::Tid,
                Key::Src,
                Key::MemOrder,
                Key::Address,
                Key::Value,
                Key::Size,
                Key::Kind,
                Key::SysReg,
                Key::Location,
                Key::Addr,
                Key::Level,
            ][k];
            return Err(self.error_at(
                self.keyed[k].start as usize,
                format!("unexpected field ({} ...)", key.name()),
            ));
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

/// An offset into a record ([`Fields::new`] keeps records below 4 GiB).
#[inline(always)]
fn offset(at: usize) -> u32 {
    at as u32
}

#[inline]
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
#[inline]
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

#[inline]
fn parse_decimal(text: &[u8]) -> Result<u64, &'static str> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return Err("expected a decimal number");
    }
    if text.len() < 20 {
        // At most 19 digits: no overflow.
        return Ok(text.iter().fold(0, |v, &c| v * 10 + (c - b'0') as u64));
    }
    text.iter()
        .try_fold(0u64, |v, &c| {
            v.checked_mul(10)?.checked_add((c - b'0') as u64)
        })
        .ok_or("number does not fit in 64 bits")
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
    MemFree,
    Lock,
    TryLock,
    Unlock,
    ReleaseData,
    Complete,
}

impl Kind {
    fn from_name(name: &[u8]) -> Option<Kind> {
        Some(match name {
            b"mem-write" => Kind::MemWrite,
            b"mem-read" => Kind::MemRead,
            b"mem-init" => Kind::MemInit,
            b"mem-set" => Kind::MemSet,
            b"mem-free" => Kind::MemFree,
            b"barrier" => Kind::Barrier,
            b"tlbi" => Kind::Tlbi,
            b"sysreg-write" | b"msr" => Kind::SysReg,
            b"hint" => Kind::Hint,
            b"lock" => Kind::Lock,
            b"trylock" => Kind::TryLock,
            b"unlock" => Kind::Unlock,
            b"release-data" => Kind::ReleaseData,
            b"complete" => Kind::Complete,
            _ if name.iter().any(u8::is_ascii_uppercase) => {
                let mut buf = [0u8; 32];
                let lowered = lower(name, &mut buf);
                return if lowered.is_empty() {
                    None
                } else {
                    Kind::from_name(lowered)
                };
            }
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
            | Kind::MemFree
            | Kind::ReleaseData => 2,
            Kind::Lock | Kind::TryLock | Kind::Unlock => 1,
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

impl Fields<'_> {
    /// Builds the record from its tokens.
    fn interpret(&mut self) -> Result<Record, ParseError> {
        interpret(self)
    }
}

fn interpret(f: &mut Fields<'_>) -> Result<Record, ParseError> {
    let line = f.line;
    let name = f.value(f.name);
    let kind = Kind::from_name(name).ok_or_else(|| {
        error(
            line,
            format!("unknown record '{}'", String::from_utf8_lossy(name)),
        )
    })?;

    // id, tid and src: keyed, or the positional form's first atoms.
    let positional;
    let seq = match f.keyed(Key::Id) {
        Some(item) => {
            positional = false;
            f.decimal(item, "id")?
        }
        None => {
            positional = true;
            let item = f.next_bare().ok_or_else(|| f.missing(Key::Id))?;
            f.decimal(item, "id")?
        }
    };
    let tid = match f.keyed(Key::Tid) {
        Some(item) => item,
        None if positional => f.next_bare().ok_or_else(|| f.missing(Key::Tid))?,
        None => return Err(f.missing(Key::Tid)),
    };
    let tid = f.decimal(tid, "tid")?;
    let pe = usize::try_from(tid).map_err(|_| error(line, "tid too large"))?;
    if f.keyed(Key::Src).is_none() && positional {
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
            let order = f.require(Key::MemOrder)?;
            let release = match f.word(order, "mem-order", &mut buf)? {
                b"plain" => false,
                b"release" => true,
                _ => return Err(f.unknown_expected(order, "mem-order", "plain or release")),
            };
            Event::Write {
                pa: f.require_hex(Key::Address)?,
                value: f.require_hex(Key::Value)?,
                release,
            }
        }
        Kind::MemRead => Event::Read {
            pa: f.require_hex(Key::Address)?,
            value: f.require_hex(Key::Value)?,
        },
        Kind::MemInit => {
            let (pa, size) = region(f, line)?;
            Event::MemInit { pa, size }
        }
        Kind::MemSet => {
            let (pa, size) = region(f, line)?;
            let item = f.require(Key::Value)?;
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
                    if let Some(item) = f.field(Key::Kind) {
                        barrier_option(f, item)?;
                    }
                    Event::Barrier(Barrier::Dmb)
                }
                b"dsb" => {
                    let item = f.require(Key::Kind)?;
                    Event::Barrier(match barrier_option(f, item)? {
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
            // The operand register as `(value Xt)`, or (the format's later
            // spelling) the address and the level apart: `(addr VA)
            // (level L)`, folded into the operand as the instruction takes
            // them (VA[55:12] in [43:0], IPA[51:12] in [39:0], the level
            // as a 4 KiB-granule TTL hint in [47:44]).
            let operand = if let Some(item) = f.keyed(Key::Addr) {
                let addr = f.hex(item, "addr")?;
                let ttl = match f.keyed(Key::Level) {
                    Some(item) => {
                        let level = f.hex(item, "level")?;
                        if level > 3 {
                            return Err(f.error_at(
                                item.start as usize,
                                "level: a translation level is 0 to 3",
                            ));
                        }
                        // Level 0 is no hint for 4 KiB pages (TTL 0b0100 is
                        // reserved): leave TTL 0.
                        if level == 0 {
                            0
                        } else {
                            0b0100 | level
                        }
                    }
                    None => 0,
                };
                let page = match op.operand_kind() {
                    OperandKind::Ipa => addr >> 12 & ((1 << 40) - 1),
                    OperandKind::Range => {
                        return Err(f.error_at(
                            item.start as usize,
                            "addr: a range TLBI takes its operand as (value Xt)",
                        ))
                    }
                    _ => addr >> 12 & ((1 << 44) - 1),
                };
                page | ttl << 44
            } else {
                match f.field(Key::Value) {
                    Some(item) => f.hex(item, "value")?,
                    None => 0,
                }
            };
            Event::Tlbi { op, operand }
        }
        Kind::SysReg => {
            let item = f.require(Key::SysReg)?;
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
                value: f.require_hex(Key::Value)?,
            }
        }
        Kind::Hint => {
            let item = f.require(Key::Kind)?;
            let hint = f.word(item, "kind", &mut buf)?;
            let location = f.require_hex(Key::Location)?;
            let hint = match hint {
                b"set_root_lock" => Hint::SetRootLock {
                    root: location,
                    lock: f.require_hex(Key::Value)?,
                },
                b"set_owner_root" => Hint::SetOwnerRoot {
                    page: location,
                    root: f.require_hex(Key::Value)?,
                },
                b"release_table" => {
                    // The value means nothing; allow it to be left out.
                    if let Some(item) = f.field(Key::Value) {
                        f.hex(item, "value")?;
                    }
                    Hint::ReleaseTable { page: location }
                }
                b"set_pte_thread_owner" => Hint::SetPteThreadOwner {
                    location,
                    value: f.require_hex(Key::Value)?,
                },
                _ => return Err(f.unknown(item, "hint kind")),
            };
            Event::Hint(hint)
        }
        Kind::MemFree => {
            let (pa, size) = region(f, line)?;
            Event::MemFree { pa, size }
        }
        // Casemate traces a `trylock` that took the lock (its record has
        // only the address, like `lock`): the same acquisition.
        Kind::Lock | Kind::TryLock => Event::Lock {
            addr: f.require_hex(Key::Address)?,
        },
        Kind::Unlock => Event::Unlock {
            addr: f.require_hex(Key::Address)?,
        },
        Kind::ReleaseData => Event::ReleaseData {
            pa: f.require_hex(Key::Address)?,
            size: f.require_hex(Key::Size)?,
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
                reg: Reg::HcrEl2,
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

    /// Every record kind Casemate writes (its `trace.c` and checker parser
    /// name `mem-free` and `trylock` besides those of the format page).
    #[test]
    fn trylock_mem_free_and_split_tlbi_operands() {
        assert_eq!(
            ev("(trylock (id 3) (tid 1) (address 242000) (src \"a.c:9\"))"),
            Event::Lock { addr: 0x242000 }
        );
        assert_eq!(ev("(trylock 3 1 42)"), Event::Lock { addr: 0x42 });
        assert_eq!(
            ev("(mem-free (id 4) (tid 0) (address 23f000) (size 1000))"),
            Event::MemFree {
                pa: 0x23f000,
                size: 0x1000
            }
        );
        assert_eq!(
            ev("(mem-free 4 0 \"x\" 23f000 1000)"),
            Event::MemFree {
                pa: 0x23f000,
                size: 0x1000
            }
        );
        // `(addr A) (level L)`: VA[55:12] in [43:0], TTL 0b01LL in [47:44].
        assert_eq!(
            ev("(tlbi (id 5) (tid 0) vae2is (addr 0x40201000) (level 3))"),
            Event::Tlbi {
                op: TlbiOp::Vae2is,
                operand: 0x40201 | 0b0111 << 44
            }
        );
        assert_eq!(
            ev("(tlbi (id 5) (tid 0) ipas2e1is (addr 0x8000_0000))"
                .replace('_', "")
                .as_str()),
            Event::Tlbi {
                op: TlbiOp::Ipas2e1is,
                operand: 0x80000
            }
        );
        // Level 0 is no hint with 4 KiB pages.
        assert_eq!(
            ev("(tlbi (id 5) (tid 0) vae2is (addr 1000) (level 0))"),
            Event::Tlbi {
                op: TlbiOp::Vae2is,
                operand: 1
            }
        );
        let e = err("(tlbi (id 5) (tid 0) vae2is (addr 1000) (level 4))");
        assert!(e.message.contains("level"), "{e}");
        let e = err("(tlbi (id 5) (tid 0) rvae1is (addr 1000))");
        assert!(e.message.contains("range"), "{e}");
        let e = err("(mem-free (id 4) (tid 0) (address 23f000))");
        assert!(e.message.contains("missing field (size"), "{e}");
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
