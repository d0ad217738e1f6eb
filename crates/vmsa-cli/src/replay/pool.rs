//! Runs several consumers over one stream of chunks on a few threads:
//! each consumer takes every chunk, in order, and a thread free to work
//! takes whichever consumer is furthest behind. The policies' models of
//! one replay are the consumers: what they cost differs by up to ten times
//! (a policy that completes every TLBI with its own DSB does far more),
//! so a fixed split of them between the threads leaves one waiting for
//! the other.
//!
//! Memory stays bounded: the producer waits while [`QUEUED`] chunks are
//! held, a chunk being dropped once every consumer has taken it. A
//! consumer that panics ends the run: the other threads and the producer
//! stop waiting, and the panic reaches the caller.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;

/// Chunks held at most (the slowest consumer's backlog).
pub const QUEUED: usize = 4;

struct State<C> {
    /// Chunks `first ..` not yet taken by every consumer.
    chunks: VecDeque<Arc<Vec<C>>>,
    first: usize,
    /// Per consumer: the next chunk it takes, and whether a thread is
    /// running it.
    next: Vec<usize>,
    busy: Vec<bool>,
    /// The producer has no more.
    ended: bool,
    /// A consumer panicked: everyone stops.
    abandoned: bool,
}

struct Shared<C> {
    state: Mutex<State<C>>,
    changed: Condvar,
}

impl<C> Shared<C> {
    fn lock(&self) -> MutexGuard<'_, State<C>> {
        // Nothing panics while holding it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Marks the run abandoned if its thread unwinds.
struct Abandon<'a, C>(&'a Shared<C>);

impl<C> Drop for Abandon<'_, C> {
    fn drop(&mut self) {
        if thread::panicking() {
            self.0.lock().abandoned = true;
            self.0.changed.notify_all();
        }
    }
}

/// Runs `run` for every consumer of `consumers` over every chunk `produce`
/// hands to its sender, each consumer's chunks in order, on `threads`
/// threads (at least one) while `produce` runs on this one. Returns the
/// consumers, in their order.
///
/// # Panics
/// If `run` panics (after the other threads have stopped).
pub fn run<T, C, P, R>(consumers: Vec<T>, threads: usize, produce: P, run: R) -> Vec<T>
where
    T: Send,
    C: Send + Sync,
    P: FnOnce(&mut dyn FnMut(Vec<C>)),
    R: Fn(&mut T, &[C]) + Sync,
{
    let n = consumers.len();
    let shared = Shared {
        state: Mutex::new(State {
            chunks: VecDeque::new(),
            first: 0,
            next: vec![0; n],
            busy: vec![false; n],
            ended: false,
            abandoned: false,
        }),
        changed: Condvar::new(),
    };
    let slots: Vec<Mutex<T>> = consumers.into_iter().map(Mutex::new).collect();
    thread::scope(|s| {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| s.spawn(|| work(&shared, &slots, &run)))
            .collect();
        {
            let _abandon = Abandon(&shared);
            let mut send = |chunk: Vec<C>| {
                let mut st = shared.lock();
                while st.chunks.len() >= QUEUED && !st.abandoned {
                    st = shared.changed.wait(st).unwrap_or_else(|e| e.into_inner());
                }
                if st.abandoned {
                    // Nobody will take it.
                    return;
                }
                st.chunks.push_back(Arc::new(chunk));
                shared.changed.notify_all();
            };
            produce(&mut send);
            shared.lock().ended = true;
            shared.changed.notify_all();
        }
        for w in workers {
            if let Err(p) = w.join() {
                std::panic::resume_unwind(p);
            }
        }
    });
    slots
        .into_iter()
        .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
        .collect()
}

/// One thread's loop: take the consumer furthest behind that has a chunk
/// to take and no thread on it, run it, until every consumer has taken
/// every chunk.
fn work<T, C, R>(shared: &Shared<C>, slots: &[Mutex<T>], run: &R)
where
    R: Fn(&mut T, &[C]),
{
    let _abandon = Abandon(shared);
    let mut st = shared.lock();
    loop {
        if st.abandoned {
            return;
        }
        let end = st.first + st.chunks.len();
        let pick = (0..slots.len())
            .filter(|&i| !st.busy[i] && st.next[i] < end)
            .min_by_key(|&i| (st.next[i], i));
        let Some(i) = pick else {
            if st.ended && st.next.iter().all(|&k| k == end) {
                return;
            }
            st = shared.changed.wait(st).unwrap_or_else(|e| e.into_inner());
            continue;
        };
        st.busy[i] = true;
        let chunk = st.chunks[st.next[i] - st.first].clone();
        drop(st);
        {
            let mut consumer = slots[i].lock().unwrap_or_else(|e| e.into_inner());
            run(&mut consumer, &chunk);
        }
        st = shared.lock();
        st.busy[i] = false;
        st.next[i] += 1;
        // Chunks every consumer has taken go.
        let low = st.next.iter().copied().min().unwrap_or(0);
        while st.first < low {
            st.chunks.pop_front();
            st.first += 1;
        }
        shared.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Every consumer sees every chunk in order, whatever they cost; no
    /// more than `QUEUED` chunks are held at once.
    #[test]
    fn every_consumer_takes_every_chunk_in_order() {
        let live = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        struct Chunk<'a>(usize, &'a AtomicUsize);
        impl Drop for Chunk<'_> {
            fn drop(&mut self) {
                self.1.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let consumers: Vec<(usize, Vec<usize>)> = (0..7).map(|i| (i, Vec::new())).collect();
        let out = run(
            consumers,
            2,
            |send| {
                for k in 0..50 {
                    let now = live.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    send(vec![Chunk(k, &live)]);
                }
            },
            |(i, seen): &mut (usize, Vec<usize>), chunk: &[Chunk]| {
                // Consumer 0 is ten times dearer than the others.
                let spin = if *i == 0 { 20_000 } else { 2_000 };
                std::hint::black_box((0..spin).sum::<u64>());
                seen.push(chunk[0].0);
            },
        );
        for (i, (j, seen)) in out.iter().enumerate() {
            assert_eq!(i, *j);
            assert_eq!(*seen, (0..50).collect::<Vec<_>>(), "consumer {i}");
        }
        // One being filled, QUEUED held.
        assert!(most.load(Ordering::SeqCst) <= QUEUED + 1);
        assert_eq!(live.load(Ordering::SeqCst), 0);
    }

    /// A consumer that panics ends the run with its panic, not a hang
    /// (under a watchdog: a hang fails the test).
    #[test]
    fn a_panic_ends_the_run() {
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let r = std::panic::catch_unwind(|| {
                run(
                    vec![0u32, 1, 2],
                    2,
                    |send| {
                        for k in 0..100u32 {
                            send(vec![k]);
                        }
                    },
                    |i: &mut u32, chunk: &[u32]| {
                        if *i == 1 && chunk[0] == 3 {
                            panic!("consumer 1 fails at chunk 3");
                        }
                    },
                )
            });
            let msg = r
                .err()
                .and_then(|e| e.downcast_ref::<&str>().map(|m| m.to_string()));
            let _ = tx.send(msg);
        });
        let msg = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the run ended within a minute");
        assert_eq!(msg.as_deref(), Some("consumer 1 fails at chunk 3"));
    }
}
