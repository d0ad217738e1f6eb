//! Depth-first search over the interleavings and translation choices.

use super::asm::Block;
use super::exec::{Code, State, MAX_STEPS};
use super::parse::Test;
use super::Error;

/// What one search found.
#[derive(Debug, Default)]
pub struct Search {
    /// The trace of an execution satisfying the final condition.
    pub found: Option<Vec<String>>,
    /// States visited.
    pub states: usize,
    /// Some execution was cut at [`MAX_STEPS`] instructions of a thread.
    pub cut: bool,
    /// The state budget ran out.
    pub over: bool,
}

struct Dfs<'a> {
    test: &'a Test,
    /// Fingerprints of the states already explored.
    seen: std::collections::HashSet<u64>,
    code: Code,
    budget: usize,
    out: Search,
}

/// Searches `test` with the thread programs `programs` for an execution
/// satisfying the final condition, visiting at most `budget` states.
pub fn search(test: &Test, programs: &[Block], budget: usize) -> Result<Search, Error> {
    let mut init = State::initial(test);
    for (th, p) in init.threads.iter_mut().zip(programs) {
        th.pc = Some(p.base);
    }
    let mut d = Dfs {
        test,
        code: Code::new(test, programs),
        seen: std::collections::HashSet::new(),
        budget,
        out: Search::default(),
    };
    d.dfs(init)?;
    Ok(d.out)
}

impl Dfs<'_> {
    /// Runs every thread's register-only instructions: they commute with
    /// the other threads' steps, so one order of them is enough.
    fn normalize(&mut self, mut s: State) -> Result<Option<State>, Error> {
        loop {
            let Some(t) = (0..s.threads.len()).find(|&t| s.next_is_local(&self.code, t)) else {
                return Ok(Some(s));
            };
            if s.threads[t].steps >= MAX_STEPS {
                self.out.cut = true;
                return Ok(None);
            }
            let mut next = s.step(&self.code, t)?;
            match next.pop() {
                Some(n) if next.is_empty() => s = n,
                _ => return Err(Error::Unsupported("nondeterministic local step".into())),
            }
        }
    }

    fn dfs(&mut self, s: State) -> Result<bool, Error> {
        let Some(s) = self.normalize(s)? else {
            return Ok(false);
        };
        if !self.seen.insert(s.fingerprint()) {
            // Explored from another interleaving: nothing new below.
            return Ok(false);
        }
        self.out.states += 1;
        if self.out.states > self.budget {
            self.out.over = true;
            return Ok(false);
        }
        let runnable: Vec<usize> = (0..s.threads.len())
            .filter(|&t| s.threads[t].pc.is_some())
            .collect();
        if runnable.is_empty() {
            let reg = |t: usize, r: u8| s.threads.get(t).map_or(0, |th| th.x[r as usize]);
            let mem = |pa: u64| s.mem.get(&pa).copied().unwrap_or(0);
            if self.test.cond.holds(&reg, &mem) {
                self.out.found = Some(s.trace.clone());
                return Ok(true);
            }
            return Ok(false);
        }
        for t in runnable {
            if s.threads[t].steps >= MAX_STEPS {
                self.out.cut = true;
                continue;
            }
            for child in s.step(&self.code, t)? {
                if self.dfs(child)? {
                    return Ok(true);
                }
                if self.out.over {
                    return Ok(false);
                }
            }
        }
        Ok(false)
    }
}
