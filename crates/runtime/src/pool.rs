//! A small persistent thread pool for intra-op parallelism (std only).
//!
//! [`ThreadPool::run`] executes `job(i)` for every task `i` in `0..tasks`
//! on the calling thread and the pool's workers, and returns when all are
//! done. Which thread runs which task is not fixed, so callers split work
//! such that every output element is computed by exactly one task with the
//! same operations in the same order whatever the thread count: results
//! are then bit-identical for any number of threads.
//!
//! The pool a run uses is made *current* on the calling thread with
//! [`ThreadPool::install`]; code deep inside a run (the sgemm microkernel
//! entry, called from generated code) finds it with [`current`]. While a
//! thread executes tasks of a parallel region no pool is current on it, so
//! nested parallel calls run serially instead of waiting on a busy pool.
//!
//! Workers spin briefly after a job (back-to-back kernels are the common
//! case) and then sleep on a condition variable.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// A parallel job: called once per task index.
pub type Job = Arc<dyn Fn(usize) + Send + Sync>;

/// Spin iterations a worker waits for the next job before sleeping.
const SPIN: usize = 1 << 14;

struct Region {
    job: Job,
    tasks: usize,
    /// The next task index to hand out.
    next: AtomicUsize,
    /// Tasks finished.
    done: AtomicUsize,
}

impl Region {
    /// Runs tasks until none is left.
    fn work(&self) {
        let _in = InRegion::enter();
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.tasks {
                return;
            }
            (self.job)(i);
            self.done.fetch_add(1, Ordering::Release);
        }
    }
}

#[derive(Default)]
struct State {
    /// Bumped for every new region.
    generation: u64,
    region: Option<Arc<Region>>,
    shutdown: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// Mirrors `State::generation` for lock-free spinning.
    generation: AtomicUsize,
    /// Workers waiting on `wake` (changed only under `state`'s lock), so
    /// that a region finding every worker spinning skips the wake-up
    /// system call.
    sleepers: AtomicUsize,
}

/// A fixed set of worker threads (the calling thread counts as one).
pub struct ThreadPool {
    threads: usize,
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// One region at a time.
    dispatch: Mutex<()>,
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool")
            .field("threads", &self.threads)
            .finish()
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<ThreadPool>>> = const { RefCell::new(None) };
    static IN_REGION: Cell<bool> = const { Cell::new(false) };
}

/// Marks this thread as running tasks of a region while alive.
struct InRegion(bool);

impl InRegion {
    fn enter() -> InRegion {
        InRegion(IN_REGION.with(|c| c.replace(true)))
    }
}

impl Drop for InRegion {
    fn drop(&mut self) {
        IN_REGION.with(|c| c.set(self.0));
    }
}

/// The pool installed on this thread, when it has more than one thread and
/// this thread is not already running tasks of a parallel region.
pub fn current() -> Option<Arc<ThreadPool>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Restores the previously current pool when dropped.
struct Restore(Option<Arc<ThreadPool>>);

impl Drop for Restore {
    fn drop(&mut self) {
        let prev = self.0.take();
        CURRENT.with(|c| *c.borrow_mut() = prev);
    }
}

fn set_current(p: Option<Arc<ThreadPool>>) -> Restore {
    Restore(CURRENT.with(|c| std::mem::replace(&mut *c.borrow_mut(), p)))
}

impl ThreadPool {
    /// A pool of `threads` threads in all (`threads - 1` workers are
    /// spawned; 0 counts as 1).
    pub fn new(threads: usize) -> ThreadPool {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            generation: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
        });
        let workers = (1..threads)
            .map(|i| {
                let s = shared.clone();
                std::thread::Builder::new()
                    .name(format!("varc-worker-{i}"))
                    .spawn(move || worker(&s))
                    .expect("spawning a varc worker thread")
            })
            .collect();
        ThreadPool {
            threads,
            shared,
            workers,
            dispatch: Mutex::new(()),
        }
    }

    /// Threads in all, the caller included.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f` with this pool current on the calling thread (see
    /// [`current`]); a one-thread pool is not made current.
    pub fn install<R>(self: &Arc<Self>, f: impl FnOnce() -> R) -> R {
        let _restore = set_current((self.threads > 1).then(|| self.clone()));
        f()
    }

    /// Runs `job(i)` for `i` in `0..tasks` across the pool and returns when
    /// every task has finished. No pool is current on a thread while it
    /// runs tasks, and a region started from inside a task runs serially
    /// on that thread. A panicking task aborts
    /// the process (tasks are generated code and microkernels, which do not
    /// unwind).
    pub fn run(&self, tasks: usize, job: Job) {
        if tasks == 0 {
            return;
        }
        let _serial = set_current(None);
        if self.threads == 1 || tasks == 1 || IN_REGION.with(Cell::get) {
            (0..tasks).for_each(|i| job(i));
            return;
        }
        let _one = self.dispatch.lock().unwrap_or_else(|e| e.into_inner());
        let region = Arc::new(Region {
            job,
            tasks,
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
        });
        {
            let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            st.generation += 1;
            st.region = Some(region.clone());
            self.shared
                .generation
                .store(st.generation as usize, Ordering::Release);
        }
        // A worker counts itself a sleeper under the lock before it checks
        // the generation and waits, so one that will sleep through this
        // region is counted by now (the lock orders it before the update
        // above) and one counted after it sees the new generation.
        if self.shared.sleepers.load(Ordering::Acquire) > 0 {
            self.shared.wake.notify_all();
        }
        region.work();
        let mut spins = 0usize;
        while region.done.load(Ordering::Acquire) < tasks {
            if spins < SPIN {
                std::hint::spin_loop();
                spins += 1;
            } else {
                std::thread::yield_now();
            }
        }
        // Workers that pick the region up late find no task left.
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        st.region = None;
    }
}

fn worker(s: &Shared) {
    let _serial = set_current(None);
    let mut seen = 0u64;
    loop {
        // Spin a little for the next region, then sleep.
        let mut spins = 0;
        while s.generation.load(Ordering::Acquire) as u64 == seen && spins < SPIN {
            std::hint::spin_loop();
            spins += 1;
        }
        let region = {
            let mut st = s.state.lock().unwrap_or_else(|e| e.into_inner());
            while st.generation == seen && !st.shutdown {
                s.sleepers.fetch_add(1, Ordering::AcqRel);
                st = s.wake.wait(st).unwrap_or_else(|e| e.into_inner());
                s.sleepers.fetch_sub(1, Ordering::AcqRel);
            }
            if st.shutdown {
                return;
            }
            seen = st.generation;
            st.region.clone()
        };
        if let Some(r) = region {
            let r = std::panic::AssertUnwindSafe(r);
            if std::panic::catch_unwind(|| r.work()).is_err() {
                std::process::abort();
            }
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        {
            let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            st.shutdown = true;
        }
        self.shared.wake.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Splits `0..n` into at most `parts` contiguous ranges of near-equal
/// length whose boundaries are multiples of `align` (the last range takes
/// the rest): range `i` of [`ranges`].
pub fn range(n: usize, parts: usize, align: usize, i: usize) -> (usize, usize) {
    let align = align.max(1);
    let units = n.div_ceil(align);
    let parts = parts.clamp(1, units.max(1));
    let (q, r) = (units / parts, units % parts);
    let lo = i * q + i.min(r);
    let hi = lo + q + usize::from(i < r);
    ((lo * align).min(n), (hi * align).min(n))
}

/// How many ranges [`range`] makes.
pub fn range_count(n: usize, parts: usize, align: usize) -> usize {
    parts.clamp(1, n.div_ceil(align.max(1)).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn every_task_runs_once() {
        for threads in [1, 2, 3] {
            let pool = ThreadPool::new(threads);
            for tasks in [0, 1, 2, 7, 100] {
                let hits: Arc<Vec<AtomicU64>> =
                    Arc::new((0..tasks).map(|_| AtomicU64::new(0)).collect());
                let h = hits.clone();
                pool.run(
                    tasks,
                    Arc::new(move |i| {
                        h[i].fetch_add(1, Ordering::Relaxed);
                    }),
                );
                assert!(hits.iter().all(|x| x.load(Ordering::Relaxed) == 1));
            }
        }
    }

    #[test]
    fn sleeping_workers_are_woken() {
        // Regions that start after the workers went to sleep must still
        // reach them (the dispatcher skips the wake-up only when no worker
        // sleeps). Tasks last long enough that a woken worker takes some;
        // a few rounds absorb a machine too busy to schedule it at once.
        let pool = ThreadPool::new(2);
        let woke = (0..5).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(30));
            let ids = Arc::new(Mutex::new(std::collections::HashSet::new()));
            let i2 = ids.clone();
            pool.run(
                16,
                Arc::new(move |_| {
                    i2.lock().unwrap().insert(std::thread::current().id());
                    std::thread::sleep(std::time::Duration::from_millis(3));
                }),
            );
            ids.lock().unwrap().len() == 2
        });
        assert!(woke, "the sleeping worker never took a task");
    }

    #[test]
    fn nested_regions_run_serially() {
        let pool = Arc::new(ThreadPool::new(2));
        let sum = Arc::new(AtomicU64::new(0));
        let (p2, s2) = (pool.clone(), sum.clone());
        pool.install(|| {
            assert!(current().is_some());
            p2.clone().run(
                4,
                Arc::new(move |i| {
                    assert!(current().is_none());
                    let s3 = s2.clone();
                    p2.run(
                        3,
                        Arc::new(move |j| {
                            s3.fetch_add((i * 3 + j) as u64, Ordering::Relaxed);
                        }),
                    );
                }),
            );
        });
        assert!(current().is_none());
        assert_eq!(sum.load(Ordering::Relaxed), (0..12).sum::<u64>());
    }

    #[test]
    fn ranges_cover_without_overlap() {
        for n in [0, 1, 5, 31, 32, 33, 1000] {
            for parts in [1, 2, 3, 8] {
                for align in [1, 4, 32] {
                    let c = range_count(n, parts, align);
                    let mut at = 0;
                    for i in 0..c {
                        let (lo, hi) = range(n, parts, align, i);
                        assert_eq!(lo, at);
                        assert!(hi >= lo);
                        assert!(lo % align == 0 || lo == n);
                        at = hi;
                    }
                    assert_eq!(at, n, "n {n} parts {parts} align {align}");
                }
            }
        }
    }
}
