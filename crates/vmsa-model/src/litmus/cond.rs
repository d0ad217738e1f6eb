//! The final condition: `1:X0=1 & ~(2:X2=0) | *x = 1`.

use super::setup::{eval, Layout};
use super::Error;

/// A final condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cond {
    /// Register `reg` of thread `thread` holds `value`.
    Reg {
        /// Thread.
        thread: usize,
        /// Register number.
        reg: u8,
        /// Expected value.
        value: u64,
    },
    /// The 64-bit word at physical address `pa` holds `value`.
    Mem {
        /// Location.
        pa: u64,
        /// Expected value.
        value: u64,
    },
    /// Negation.
    Not(Box<Cond>),
    /// Conjunction.
    And(Box<Cond>, Box<Cond>),
    /// Disjunction.
    Or(Box<Cond>, Box<Cond>),
    /// `true`.
    True,
}

impl Cond {
    /// Evaluates the condition on final registers and memory.
    pub fn holds(&self, reg: &dyn Fn(usize, u8) -> u64, mem: &dyn Fn(u64) -> u64) -> bool {
        match self {
            Cond::Reg {
                thread,
                reg: r,
                value,
            } => reg(*thread, *r) == *value,
            Cond::Mem { pa, value } => mem(*pa) == *value,
            Cond::Not(c) => !c.holds(reg, mem),
            Cond::And(a, b) => a.holds(reg, mem) && b.holds(reg, mem),
            Cond::Or(a, b) => a.holds(reg, mem) || b.holds(reg, mem),
            Cond::True => true,
        }
    }
}

/// Parses a condition.
pub fn parse(src: &str, layout: &Layout) -> Result<Cond, Error> {
    let toks = tokenize(src);
    let mut p = Parser { toks, i: 0, layout };
    let c = p.or()?;
    if p.i != p.toks.len() {
        return Err(Error::Parse(format!("trailing text in condition `{src}`")));
    }
    Ok(c)
}

fn tokenize(src: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0;
    for c in src.chars() {
        match c {
            '(' if !cur.trim().is_empty() => {
                // A function call inside a value.
                depth += 1;
                cur.push(c);
            }
            ')' if depth > 0 => {
                depth -= 1;
                cur.push(c);
            }
            '&' | '|' | '~' | '(' | ')' | '=' if depth == 0 => {
                if !cur.trim().is_empty() {
                    out.push(cur.trim().to_string());
                }
                cur.clear();
                out.push(c.to_string());
            }
            _ => cur.push(c),
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

struct Parser<'a> {
    toks: Vec<String>,
    i: usize,
    layout: &'a Layout,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&str> {
        self.toks.get(self.i).map(String::as_str)
    }

    fn next(&mut self) -> Result<String, Error> {
        let t = self
            .toks
            .get(self.i)
            .cloned()
            .ok_or_else(|| Error::Parse("condition ends early".into()))?;
        self.i += 1;
        Ok(t)
    }

    fn or(&mut self) -> Result<Cond, Error> {
        let mut c = self.and()?;
        while self.peek() == Some("|") {
            self.i += 1;
            c = Cond::Or(Box::new(c), Box::new(self.and()?));
        }
        Ok(c)
    }

    fn and(&mut self) -> Result<Cond, Error> {
        let mut c = self.unary()?;
        while self.peek() == Some("&") {
            self.i += 1;
            c = Cond::And(Box::new(c), Box::new(self.unary()?));
        }
        Ok(c)
    }

    fn unary(&mut self) -> Result<Cond, Error> {
        match self.peek() {
            Some("~") => {
                self.i += 1;
                Ok(Cond::Not(Box::new(self.unary()?)))
            }
            Some("(") => {
                self.i += 1;
                let c = self.or()?;
                if self.next()? != ")" {
                    return Err(Error::Parse("expected `)` in condition".into()));
                }
                Ok(c)
            }
            _ => self.atom(),
        }
    }

    fn atom(&mut self) -> Result<Cond, Error> {
        let lhs = self.next()?;
        if lhs == "true" {
            return Ok(Cond::True);
        }
        if self.next()? != "=" {
            return Err(Error::Parse(format!("expected `=` after `{lhs}`")));
        }
        let value = eval(self.layout, &self.next()?)?;
        if let Some(loc) = lhs.strip_prefix('*') {
            let loc = loc.trim();
            let pa = if let Some(&pa) = self.layout.pas.get(loc) {
                pa
            } else if let Some(&va) = self.layout.vas.get(loc) {
                self.layout
                    .initial_pa(va)
                    .ok_or_else(|| Error::Unsupported(format!("final value of unmapped `{loc}`")))?
            } else {
                return Err(Error::Parse(format!("unknown location `{loc}`")));
            };
            return Ok(Cond::Mem { pa, value });
        }
        let (t, r) = lhs
            .split_once(':')
            .ok_or_else(|| Error::Parse(format!("expected `thread:register`, got `{lhs}`")))?;
        let thread = t
            .trim()
            .parse()
            .map_err(|_| Error::Parse(format!("bad thread in `{lhs}`")))?;
        let r = r.trim().to_ascii_uppercase();
        let reg = r
            .strip_prefix('X')
            .or_else(|| r.strip_prefix('R'))
            .or_else(|| r.strip_prefix('W'))
            .and_then(|n| n.parse::<u8>().ok())
            .filter(|&n| n <= 30)
            .ok_or_else(|| Error::Unsupported(format!("register `{r}` in the final condition")))?;
        Ok(Cond::Reg { thread, reg, value })
    }
}
