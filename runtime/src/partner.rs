//! A second thread held for the length of a step (`with_partner`): the
//! products and element-wise loops the step splits in two hand their
//! second half to a thread that is already running, not to one of rayon's
//! that must first be woken. A small model's step splits a few products
//! of some tens of microseconds each, and waking a sleeping thread for
//! each cost about as much as the half it took over.
//!
//! A half is posted, not handed over: the partner claims it, or the step's
//! thread takes it back when it is done with its own half and the partner
//! has not (the partner may still be waking, or its thread busy elsewhere).
//! So the step never waits on a partner that is not running its half, and
//! its first product, posted while the partner wakes, is not run serially.
//!
//! Either thread spins while it waits, but parks once it has waited `SPIN`:
//! on a machine with as many cores as threads, a thread the system stops
//! for a while (to run something else on its core) can then move to the
//! core the waiting one leaves idle, instead of waiting for its own. Both
//! spinning, such steps took 2–3 times their usual time, one in twenty.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering, fence};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long a thread spins waiting before it parks: far longer than the
/// gaps between the halves of a step's products, far shorter than the
/// time slices of a system's scheduler.
const SPIN: Duration = Duration::from_micros(200);

/// The longest a parked thread sleeps before it looks again (for rayon's
/// work, which does not wake it).
const PARKED: Duration = Duration::from_millis(1);

/// A half posted to the partner.
type Job<'a> = &'a (dyn Fn() + Sync);

/// What the step's thread and its partner share. Between halves the
/// partner runs rayon's pending work (the image parts of a convolution
/// inside the step, say), so it takes no thread from them.
struct Partner {
    /// The posted half; `claimed()` while the partner runs it; null when
    /// there is none.
    job: AtomicPtr<Job<'static>>,
    /// The last half the partner ran panicked.
    panicked: AtomicBool,
    /// The step is over: the partner returns.
    finished: AtomicBool,
    /// The partner's thread, once it serves, and whether it is parked.
    partner_thread: OnceLock<Thread>,
    partner_parked: AtomicBool,
    /// The step's thread, and whether it is parked waiting for a claimed half.
    step_thread: Thread,
    step_parked: AtomicBool,
}

/// Spins while `waiting()`, then parks (flagged by `parked`, for whoever
/// ends the wait to unpark this thread, and for `limit` at most at a time)
/// until it is not.
fn wait(waiting: impl Fn() -> bool, parked: &AtomicBool, limit: Duration) {
    let since = Instant::now();
    while waiting() {
        if since.elapsed() < SPIN {
            std::hint::spin_loop();
            continue;
        }
        // Flagged before the last look, so that whoever ends the wait after
        // it sees the flag (both sequentially consistent) and unparks.
        parked.store(true, Ordering::SeqCst);
        if waiting() {
            std::thread::park_timeout(limit);
        }
        parked.store(false, Ordering::SeqCst);
    }
}

/// Unparks `thread` if `parked` says it is (after the write that ends its wait).
fn wake(thread: Option<&Thread>, parked: &AtomicBool) {
    fence(Ordering::SeqCst);
    if parked.load(Ordering::SeqCst)
        && let Some(thread) = thread
    {
        thread.unpark();
    }
}

thread_local! {
    /// The partner of the step this thread is running, if any.
    static PARTNER: Cell<*const Partner> = const { Cell::new(std::ptr::null()) };
}

/// Whether some step has a partner: one at a time, so rayon always keeps
/// a thread for the work steps hand it (two steps on two threads, each
/// holding a partner, would leave none on a two-thread pool).
static PARTNERED: AtomicBool = AtomicBool::new(false);

/// The mark of a half the partner has claimed (no half lives at this
/// address: it is the lowest a `Job` could have, never a real one).
fn claimed() -> *mut Job<'static> {
    std::ptr::NonNull::dangling().as_ptr()
}

impl Partner {
    /// Runs posted halves (and rayon's work) until the step is over,
    /// parking when there has been none for `SPIN`.
    fn serve(&self) {
        self.partner_thread.get_or_init(std::thread::current);
        loop {
            let job = self.job.load(Ordering::SeqCst);
            if !job.is_null() && job != claimed() {
                if self.job.compare_exchange(job, claimed(), Ordering::Acquire, Ordering::Relaxed).is_ok() {
                    // SAFETY: `join` keeps a claimed half alive until it sees null.
                    let run = unsafe { *job };
                    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).is_err() {
                        self.panicked.store(true, Ordering::Relaxed);
                    }
                    self.job.store(std::ptr::null_mut(), Ordering::SeqCst);
                    wake(Some(&self.step_thread), &self.step_parked);
                }
            } else if self.finished.load(Ordering::SeqCst) {
                return;
            } else {
                // Idle until a half is posted, the step ends or rayon's work ran.
                let idle = || {
                    let job = self.job.load(Ordering::SeqCst);
                    (job.is_null() || job == claimed())
                        && !self.finished.load(Ordering::SeqCst)
                        && rayon::yield_now() != Some(rayon::Yield::Executed)
                };
                wait(idle, &self.partner_parked, PARKED);
            }
        }
    }

    /// Unparks the partner if it is parked (after a half is posted or the step ends).
    fn wake_partner(&self) {
        wake(self.partner_thread.get(), &self.partner_parked);
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
        panicked: AtomicBool::new(false),
        finished: AtomicBool::new(false),
        partner_thread: OnceLock::new(),
        partner_parked: AtomicBool::new(false),
        step_thread: std::thread::current(),
        step_parked: AtomicBool::new(false),
    };
    /// Ends the partnership however the step ends (a panic too), so the
    /// scope below can return.
    struct Finish<'a>(&'a Partner);
    impl Drop for Finish<'_> {
        fn drop(&mut self) {
            PARTNER.set(std::ptr::null());
            self.0.finished.store(true, Ordering::SeqCst);
            self.0.wake_partner();
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

/// This thread's step's partner, if it has one.
fn partner<'a>() -> Option<&'a Partner> {
    // SAFETY: a partner set for this thread outlives the step it runs,
    // which every caller is inside.
    unsafe { PARTNER.get().as_ref() }
}

/// Whether this thread's step has a partner (`join` offers it halves).
pub(crate) fn partnered() -> bool {
    partner().is_some()
}

/// Runs `first` here and `second` beside it: offered to the step's partner
/// when this thread has one (and run here after `first` if the partner has
/// not claimed it by then), else through `rayon::join`.
pub(crate) fn join(first: impl FnOnce() + Send, second: impl Fn() + Sync + Send) {
    let Some(partner) = partner() else {
        rayon::join(first, second);
        return;
    };
    let job: Job = &second;
    // The half's lifetime is erased; `Offer` keeps it alive until it is
    // taken back or has run.
    let posted = std::ptr::from_ref(&job).cast_mut().cast::<Job<'static>>();
    let null = std::ptr::null_mut();
    if partner.job.compare_exchange(null, posted, Ordering::SeqCst, Ordering::Relaxed).is_err() {
        // A half is already offered (a join inside a half): run both here.
        first();
        second();
        return;
    }
    partner.wake_partner();
    /// The offered half, taken back unless the partner has claimed it,
    /// else waited for, however `first` ends: it borrows this frame.
    struct Offer<'a>(&'a Partner, *mut Job<'static>);
    impl Offer<'_> {
        /// Whether the half was taken back before the partner claimed it.
        fn take_back(&self) -> bool {
            let null = std::ptr::null_mut();
            self.0.job.compare_exchange(self.1, null, Ordering::Acquire, Ordering::Relaxed).is_ok()
        }
    }
    impl Drop for Offer<'_> {
        fn drop(&mut self) {
            if !self.take_back() {
                wait(|| !self.0.job.load(Ordering::SeqCst).is_null(), &self.0.step_parked, PARKED);
            }
        }
    }
    {
        let offer = Offer(partner, posted);
        first();
        if offer.take_back() {
            second();
        }
    }
    assert!(!partner.panicked.swap(false, Ordering::Relaxed), "the half of a product on the step's partner panicked");
}

/// The part of a range the step's thread takes in `split_by_speed` (an
/// `f32`'s bits). It follows the two threads' speeds: on a shared machine
/// one core can run a third slower than the other for seconds at a time
/// (the host's other tenants), and a step split in fixed halves then waits
/// on that core in every product. On a 2-vCPU Zen 3 EPYC, W2's mean step
/// was shorter following the share than in fixed halves in 20 of 21 runs
/// of `nnc bench models/mlp_wide.nn` (the two alternated step by step), by
/// up to 6.6 % (median 1.6 %); its median step was shorter in 10 (by up
/// to 6.5 %) and longer in 6 (by up to 1.5 %).
static STEP_SHARE: AtomicU32 = AtomicU32::new(0x3f00_0000); // 0.5

/// How many splits the share takes to follow a change of speeds (by about
/// two thirds): W2's step splits eight products, and a slow core stays
/// slow for tens of steps or more, while one split's times can be off (an
/// interrupt).
const SHARE_FOLLOWS: f32 = 8.0;

/// The share of a split one measurement may ask for at most (and, for the
/// partner, at least): a half stalled by the system asks for far more.
const SHARE_BOUND: f32 = 0.75;

/// Runs `run(0, at)` here and `run(at, length)` beside it (`join`), with
/// `at` a multiple of `align` inside the range (which is longer than
/// `align`). With a partner, `at` gives this thread the share of the range
/// the two threads' recent speeds call for (`STEP_SHARE`), and the split's
/// own times move that share; otherwise the halves are equal. The callers'
/// parts compute the same values wherever the range is cut.
pub(crate) fn split_by_speed(length: usize, align: usize, run: impl Fn(usize, usize) + Sync + Send) {
    debug_assert!(length > align && align > 0);
    let partnered = partnered();
    let share = if partnered { f32::from_bits(STEP_SHARE.load(Ordering::Relaxed)) } else { 0.5 };
    let last = (length - 1) / align * align;
    let at = ((length as f32 * share / align as f32).round() as usize * align).clamp(align, last);
    // Nanoseconds each part ran; the second's only when it ran beside.
    let (here, beside) = (AtomicU64::new(0), AtomicU64::new(0));
    let timed = |(start, end): (usize, usize), time: &AtomicU64, keep: bool| {
        let since = Instant::now();
        run(start, end);
        if keep {
            time.store(since.elapsed().as_nanos().max(1) as u64, Ordering::Relaxed);
        }
    };
    // The second part runs beside unless it runs on this (partnered) thread.
    join(|| timed((0, at), &here, true), || timed((at, length), &beside, !self::partnered()));
    let (here, beside) = (here.into_inner() as f32, beside.into_inner() as f32);
    if partnered && beside > 0.0 {
        let (speed_here, speed_beside) = (at as f32 / here, (length - at) as f32 / beside);
        let asked = (speed_here / (speed_here + speed_beside)).clamp(1.0 - SHARE_BOUND, SHARE_BOUND);
        STEP_SHARE.store((share + (asked - share) / SHARE_FOLLOWS).to_bits(), Ordering::Relaxed);
    }
}

/// Held by each test that partners a step: one step at a time can have a
/// partner, and `STEP_SHARE` is the partnered steps' alone.
#[cfg(test)]
pub(crate) static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Sets the step's thread's share of the next `split_by_speed`.
#[cfg(test)]
pub(crate) fn set_step_share(share: f32) {
    STEP_SHARE.store(share.to_bits(), Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::{Arc, Mutex};
    use std::thread::ThreadId;
    use std::time::{Duration, Instant};

    /// Joins 100 pairs of halves that record their values and the threads
    /// of the second halves; with `meet`, each first half waits (up to a
    /// minute) for its second half to start, so a serving partner claims
    /// every one. Checks both halves of every pair ran.
    fn joins(meet: bool) -> Vec<ThreadId> {
        let (sums, threads) = (Mutex::new(Vec::new()), Mutex::new(Vec::new()));
        for i in 0..100u64 {
            let started = AtomicBool::new(false);
            join(
                || {
                    let since = Instant::now();
                    while meet && !started.load(Ordering::Acquire) && since.elapsed() < Duration::from_secs(60) {
                        std::hint::spin_loop();
                    }
                    sums.lock().expect("sums").push(i);
                },
                || {
                    started.store(true, Ordering::Release);
                    sums.lock().expect("sums").push(1000 + i);
                    threads.lock().expect("threads").push(std::thread::current().id());
                },
            );
        }
        let mut sums = sums.into_inner().expect("sums");
        sums.sort_unstable();
        assert_eq!(sums, (0..100).chain(1000..1100).collect::<Vec<_>>());
        threads.into_inner().expect("threads")
    }

    /// Halves run on the partner (another thread) when it claims them;
    /// both halves' work is done; a second step that starts while one is
    /// partnered runs alone instead of waiting; and a panicking half
    /// panics the step's thread, after which steps partner again.
    #[test]
    fn a_step_hands_second_halves_to_its_partner() {
        if rayon::current_num_threads() < 2 {
            return;
        }
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let here = std::thread::current().id();
        let beside = with_partner(|| {
            assert!(!PARTNER.get().is_null(), "partnered");
            // A second step, on another thread, meanwhile: it runs alone.
            let alone = std::thread::spawn(move || {
                with_partner(|| {
                    assert!(PARTNER.get().is_null(), "alone");
                    joins(false)
                })
            });
            alone.join().expect("second step");
            joins(true)
        });
        // One partner ran every second half, not this thread.
        assert!(beside[0] != here && beside.iter().all(|&t| t == beside[0]), "{beside:?}");
        assert!(PARTNER.get().is_null());
        let panicked = std::panic::catch_unwind(|| with_partner(|| join(|| (), || panic!("half"))));
        assert!(panicked.is_err());
        assert!(!PARTNERED.load(Ordering::Acquire));
        assert_eq!(with_partner(|| 7), 7);
    }

    /// A thread that waits longer than `SPIN` parks, and `wake` after the
    /// write that ends its wait unparks it (it would otherwise sleep for
    /// the hour it was given), from before or after it parks.
    #[test]
    fn a_parked_waiter_is_woken_when_its_wait_ends() {
        for delay in [Duration::ZERO, SPIN * 10] {
            let (done, parked) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
            let (sender, woken) = std::sync::mpsc::channel();
            let waiter = {
                let (done, parked) = (Arc::clone(&done), Arc::clone(&parked));
                std::thread::spawn(move || {
                    wait(|| !done.load(Ordering::SeqCst), &parked, Duration::from_secs(3600));
                    sender.send(()).expect("send");
                })
            };
            std::thread::sleep(delay);
            done.store(true, Ordering::SeqCst);
            wake(Some(waiter.thread()), &parked);
            assert!(woken.recv_timeout(Duration::from_secs(60)).is_ok(), "still parked after {delay:?}");
            waiter.join().expect("waiter");
        }
    }

    /// A partner that has parked (no half posted for longer than `SPIN`)
    /// still claims the halves posted after.
    #[test]
    fn a_parked_partner_claims_the_halves_posted_later() {
        if rayon::current_num_threads() < 2 {
            return;
        }
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let here = std::thread::current().id();
        let beside = with_partner(|| {
            std::thread::sleep(SPIN * 10);
            joins(true)
        });
        assert!(beside.iter().all(|&t| t != here), "{beside:?}");
    }

    /// Rayon's work inside a step (an image's parallel parts, say) is
    /// taken by the partner between halves: it does not hold its thread
    /// idle while the step's thread does that work alone.
    #[test]
    fn the_partner_runs_rayons_work_between_halves() {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // The step on a thread of a two-thread pool: its partner holds the other.
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("pool");
        let (here, beside) = pool.install(|| {
            let here = std::thread::current().id();
            let beside = with_partner(|| {
                let started = AtomicBool::new(false);
                let (_, beside) = rayon::join(
                    || {
                        // Waits (up to a minute) for the other half to start elsewhere.
                        let since = Instant::now();
                        while !started.load(Ordering::Acquire) && since.elapsed() < Duration::from_secs(60) {
                            std::hint::spin_loop();
                        }
                    },
                    || {
                        started.store(true, Ordering::Release);
                        std::thread::current().id()
                    },
                );
                beside
            });
            (here, beside)
        });
        assert_ne!(beside, here);
    }

    /// A step whose partner cannot start (the pool's other thread is busy
    /// until the step is over) takes every half back and runs it itself.
    #[test]
    fn a_step_takes_back_the_halves_of_a_partner_that_never_starts() {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("pool");
        let (busy, release) = (AtomicUsize::new(0), AtomicBool::new(false));
        pool.in_place_scope(|scope| {
            // Occupies one of the two threads until the step releases it.
            scope.spawn(|_| {
                busy.store(1, Ordering::Release);
                while !release.load(Ordering::Acquire) {
                    std::hint::spin_loop();
                }
            });
            let (busy, release) = (&busy, &release);
            pool.install(move || {
                while busy.load(Ordering::Acquire) == 0 {
                    std::hint::spin_loop();
                }
                let here = std::thread::current().id();
                let threads = with_partner(|| {
                    assert!(!PARTNER.get().is_null(), "partnered");
                    let threads = joins(false);
                    release.store(true, Ordering::Release);
                    threads
                });
                assert!(threads.iter().all(|&t| t == here), "{threads:?}");
            });
        });
    }

    /// The parts `split_by_speed` gives `run`, in order.
    fn parts(length: usize, align: usize) -> Vec<(usize, usize)> {
        let parts = Mutex::new(Vec::new());
        split_by_speed(length, align, |start, end| parts.lock().expect("parts").push((start, end)));
        let mut parts = parts.into_inner().expect("parts");
        parts.sort_unstable();
        parts
    }

    /// Without a partner a range splits in halves; with one, where the
    /// share says (at a multiple of the alignment); and a partner three
    /// times slower than this thread moves the share toward this thread.
    #[test]
    fn a_split_follows_the_speeds_of_the_two_threads() {
        if rayon::current_num_threads() < 2 {
            return;
        }
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        set_step_share(0.7);
        assert_eq!(parts(1000, 10), [(0, 500), (500, 1000)]);
        let beside = with_partner(|| {
            assert!(partnered());
            set_step_share(0.7);
            assert_eq!(parts(1000, 16), [(0, 704), (704, 1000)]);
            set_step_share(0.5);
            // Each unit takes a microsecond here and three on the partner;
            // this thread's part waits (a minute at most) for the partner's
            // to start, so that the partner claims it.
            let beside = AtomicUsize::new(0);
            for _ in 0..100 {
                let started = AtomicBool::new(false);
                split_by_speed(1000, 10, |start, end| {
                    let on_partner = !partnered();
                    if on_partner {
                        started.store(true, Ordering::Release);
                        beside.fetch_add(1, Ordering::Relaxed);
                    }
                    let since = Instant::now();
                    while !on_partner && !started.load(Ordering::Acquire) && since.elapsed() < Duration::from_secs(60) {
                        std::hint::spin_loop();
                    }
                    let units = (end - start) as u64 * if on_partner { 3 } else { 1 };
                    let since = Instant::now();
                    while since.elapsed() < Duration::from_micros(units) {
                        std::hint::spin_loop();
                    }
                });
            }
            beside.into_inner()
        });
        let share = f32::from_bits(STEP_SHARE.load(Ordering::Relaxed));
        set_step_share(0.5);
        assert_eq!(beside, 100, "the partner ran every second part");
        // Each split asks for three quarters, and after 100 the share is
        // there but for the last few splits (a busy machine may stretch one).
        assert!(share > 0.6, "{share}");
    }
}
