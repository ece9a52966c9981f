//! A second thread held for the length of a step (`with_partner`): the
//! products and element-wise loops the step splits in two hand their
//! second half to a thread that is already running, not to one of rayon's
//! that must first be woken. A small model's step splits a few products
//! of some tens of microseconds each, and waking a sleeping thread for
//! each cost about as much as the half it took over.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

/// A half posted to the partner.
type Job<'a> = &'a (dyn Fn() + Sync);

/// What the step's thread and its partner share.
struct Partner {
    /// The posted half, until the partner has run it (then null).
    job: AtomicPtr<Job<'static>>,
    /// The partner is serving: halves posted from now on are run.
    started: AtomicBool,
    /// The last posted half panicked.
    panicked: AtomicBool,
    /// The step is over: the partner returns.
    finished: AtomicBool,
}

thread_local! {
    /// The partner of the step this thread is running, if any.
    static PARTNER: Cell<*const Partner> = const { Cell::new(std::ptr::null()) };
}

/// Whether some step has a partner: one at a time, so rayon always keeps
/// a thread for the work steps hand it (two steps on two threads, each
/// holding a partner, would leave none on a two-thread pool).
static PARTNERED: AtomicBool = AtomicBool::new(false);

impl Partner {
    /// Runs posted halves until the step is over.
    fn serve(&self) {
        self.started.store(true, Ordering::Release);
        loop {
            let job = self.job.load(Ordering::Acquire);
            if !job.is_null() {
                // SAFETY: `join` keeps the half alive until it sees null.
                let run = unsafe { *job };
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).is_err() {
                    self.panicked.store(true, Ordering::Relaxed);
                }
                self.job.store(std::ptr::null_mut(), Ordering::Release);
            } else if self.finished.load(Ordering::Acquire) {
                return;
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// Runs `step` on this thread with a partner spinning on another of
/// rayon's threads for its length, when rayon has two or more and no other
/// step is partnered (the partner holds one thread: what a step on a
/// thread outside the pool hands to rayon itself needs another, and on a
/// thread of the pool runs there). Otherwise `step` runs alone.
pub fn with_partner<R>(step: impl FnOnce() -> R) -> R {
    if rayon::current_num_threads() < 2 || PARTNERED.swap(true, Ordering::Acquire) {
        return step();
    }
    let partner = Partner {
        job: AtomicPtr::new(std::ptr::null_mut()),
        started: AtomicBool::new(false),
        panicked: AtomicBool::new(false),
        finished: AtomicBool::new(false),
    };
    /// Ends the partnership however the step ends (a panic too), so the
    /// scope below can return.
    struct Finish<'a>(&'a Partner);
    impl Drop for Finish<'_> {
        fn drop(&mut self) {
            PARTNER.set(std::ptr::null());
            self.0.finished.store(true, Ordering::Release);
        }
    }
    let result = rayon::in_place_scope(|scope| {
        scope.spawn(|_| partner.serve());
        let _finish = Finish(&partner);
        PARTNER.set(&partner);
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(step))
    });
    PARTNERED.store(false, Ordering::Release);
    result.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// This thread's step's partner, once it is serving.
fn serving_partner<'a>() -> Option<&'a Partner> {
    // SAFETY: a partner set for this thread outlives the step it runs,
    // which every caller is inside.
    unsafe { PARTNER.get().as_ref() }.filter(|p| p.started.load(Ordering::Acquire))
}

/// Whether this thread's step has a partner serving (`join` hands it halves).
pub(crate) fn serving() -> bool {
    serving_partner().is_some()
}

/// Runs `first` here and `second` beside it: on the step's partner when
/// this thread has one serving, else through `rayon::join` (a partner not
/// yet serving may wait on a thread that waits on this one).
pub(crate) fn join(first: impl FnOnce() + Send, second: impl Fn() + Sync + Send) {
    let Some(partner) = serving_partner() else {
        rayon::join(first, second);
        return;
    };
    let job: Job = &second;
    /// Waits for the partner to finish the half, however `first` ends:
    /// the half borrows this frame.
    struct Wait<'a>(&'a Partner);
    impl Drop for Wait<'_> {
        fn drop(&mut self) {
            while !self.0.job.load(Ordering::Acquire).is_null() {
                std::hint::spin_loop();
            }
        }
    }
    // The half's lifetime is erased; `Wait` keeps it alive until it has run.
    let posted = std::ptr::from_ref(&job).cast_mut().cast::<Job<'static>>();
    partner.job.store(posted, Ordering::Release);
    {
        let _wait = Wait(partner);
        first();
    }
    assert!(!partner.panicked.swap(false, Ordering::Relaxed), "the half of a product on the step's partner panicked");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Halves run on the partner (another thread) when there is one, and
    /// here otherwise; both halves' work is done; a second step that
    /// starts while one is partnered runs alone instead of waiting; and a
    /// panicking half panics the step's thread, after which steps partner
    /// again.
    #[test]
    fn a_step_hands_second_halves_to_its_partner() {
        if rayon::current_num_threads() < 2 {
            return;
        }
        let here = std::thread::current().id();
        let step = || {
            let (sums, threads) = (Mutex::new(Vec::new()), Mutex::new(Vec::new()));
            for i in 0..100u64 {
                join(
                    || sums.lock().expect("sums").push(i),
                    || {
                        sums.lock().expect("sums").push(1000 + i);
                        threads.lock().expect("threads").push(std::thread::current().id());
                    },
                );
            }
            let mut sums = sums.into_inner().expect("sums");
            sums.sort_unstable();
            assert_eq!(sums, (0..100).chain(1000..1100).collect::<Vec<_>>());
            threads.into_inner().expect("threads")
        };
        let beside = with_partner(|| {
            assert!(!PARTNER.get().is_null(), "partnered");
            // A second step, on another thread, meanwhile: it runs alone.
            let alone = std::thread::spawn(move || {
                with_partner(|| {
                    assert!(PARTNER.get().is_null(), "alone");
                    step()
                })
            });
            alone.join().expect("second step");
            step()
        });
        // One partner ran every second half, not this thread.
        assert!(beside[0] != here && beside.iter().all(|&t| t == beside[0]), "{beside:?}");
        assert!(PARTNER.get().is_null());
        let panicked = std::panic::catch_unwind(|| with_partner(|| join(|| (), || panic!("half"))));
        assert!(panicked.is_err());
        assert!(!PARTNERED.load(Ordering::Acquire));
        assert_eq!(with_partner(|| 7), 7);
    }
}
