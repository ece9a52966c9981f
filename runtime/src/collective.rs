//! The collective generated code calls: the sum of a buffer over every
//! process training together. The runtime knows nothing of how processes
//! talk; the program that trains data-parallel installs the sum
//! (`set_all_reduce`; `nnc` does so under MPI). Alone, a buffer's sum is
//! itself.
//!
//! A step starts each sum as soon as its input is computed
//! (`nnc_all_reduce_start`) and waits for every started sum just before the
//! first reader of one (`nnc_all_reduce_wait`). With a background thread
//! installed, the sums run there, in the order they were started, while the
//! step goes on: a network's transfer of one layer's gradient overlaps the
//! backward pass of the layers below it. Without one, a start is the whole sum.
#![allow(unsafe_code)]

use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Mutex, OnceLock};

use crate::routines::{slice, slice_mut};

/// Writes into `sum` the element-wise sum of `x` over every process.
pub type AllReduce = fn(x: &[f32], sum: &mut [f32]);

static ALL_REDUCE: OnceLock<AllReduce> = OnceLock::new();
static BACKGROUND: OnceLock<Mutex<Background>> = OnceLock::new();

/// Installs the sum, to run on a thread of its own when `background`;
/// false if one was installed already (it stays).
pub fn set_all_reduce(sum: AllReduce, background: bool) -> bool {
    if ALL_REDUCE.set(sum).is_err() {
        return false;
    }
    if background {
        let _ = BACKGROUND.set(Mutex::new(Background::spawn(sum)));
    }
    true
}

/// `sum` = Σ over processes of `x` (a copy of `x` when none was installed),
/// or over the members of the `ThreadTeam` this thread works for.
pub fn all_reduce(x: &[f32], sum: &mut [f32]) {
    if let Some((team, rank)) = MEMBER.get() {
        assert_eq!(x.len(), sum.len());
        let part = Part { x: x.as_ptr(), sum: sum.as_mut_ptr(), len: x.len() };
        // SAFETY: `ThreadTeam::member` keeps the team borrowed while this
        // thread works for it; the part's buffers are borrowed until the sum returns.
        return unsafe { &*team }.sum(rank, &[part]);
    }
    match ALL_REDUCE.get() {
        Some(reduce) => reduce(x, sum),
        None => sum.copy_from_slice(x),
    }
}

thread_local! {
    /// The team this thread is a member of (`ThreadTeam::member`), and its rank.
    static MEMBER: Cell<Option<(*const ThreadTeam, usize)>> = const { Cell::new(None) };
    /// The input of a sum written over it, copied to reduce into its place.
    static INPUT_COPY: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// A member's sums started since the last wait, all exchanged at the wait.
    static STARTED: RefCell<Started> = const { RefCell::new(Started { jobs: Vec::new(), parts: Vec::new(), spare: Vec::new() }) };
}

/// A `ThreadTeam` member's started sums, and buffers kept from earlier steps.
struct Started {
    jobs: Vec<Job>,
    /// The jobs as the exchange reads them, rebuilt at each wait.
    parts: Vec<Part>,
    /// Input copies of finished jobs, to be reused: the last job's first,
    /// so that the next step, starting its sums in the same order, pops
    /// each the buffer of its own size (a buffer of another size is grown,
    /// into fresh pages, or left too large).
    spare: Vec<Vec<f32>>,
}

/// A copy of `x` in a buffer from `spare` when there is one.
fn copy_reusing(spare: &mut Vec<Vec<f32>>, x: &[f32]) -> Vec<f32> {
    let mut copy = spare.pop().unwrap_or_default();
    copy.clear();
    copy.extend_from_slice(x);
    copy
}

/// One value of a `ThreadTeam` sum: `len` values from `x`, their sum over
/// the members to `sum`.
#[derive(Clone, Copy)]
struct Part {
    x: *const f32,
    sum: *mut f32,
    len: usize,
}

/// Threads of one process that each run a copy of a training step on
/// their part of the batch and sum their gradients and batch statistics
/// (data-parallel over the cores, as MPI is over processes). A sum is an
/// exchange through shared memory: each member adds its share of the
/// values, in rank order, and writes it to every member's result, so all
/// get the same bits. Small sums a step starts (its biases' gradients) are
/// exchanged together, at its wait; a large one at once, in place, which
/// spares copying it to exchange later (`SUM_AT_START`). Members wait for
/// each other spinning: a sum is microseconds apart from the next.
pub struct ThreadTeam {
    members: usize,
    /// Each member's parts (pointer and count) while a sum is under way.
    parts: Vec<AtomicUsize>,
    counts: Vec<AtomicUsize>,
    /// The barrier: members arrived, and how many times it has opened.
    arrived: AtomicUsize,
    opened: AtomicUsize,
}

impl ThreadTeam {
    pub fn new(members: usize) -> ThreadTeam {
        let slots = || (0..members).map(|_| AtomicUsize::new(0)).collect();
        ThreadTeam {
            members,
            parts: slots(),
            counts: slots(),
            arrived: AtomicUsize::new(0),
            opened: AtomicUsize::new(0),
        }
    }

    /// Runs `work` on this thread as member `rank`: every sum it asks for is
    /// over the team. Each member must ask for the same sums in the same
    /// order (copies of one step do).
    pub fn member<R>(&self, rank: usize, work: impl FnOnce() -> R) -> R {
        assert!(rank < self.members);
        /// Puts the thread's previous membership back, also when `work` unwinds.
        struct Restore(Option<(*const ThreadTeam, usize)>);
        impl Drop for Restore {
            fn drop(&mut self) {
                MEMBER.set(self.0);
            }
        }
        let _restore = Restore(MEMBER.replace(Some((std::ptr::from_ref(self), rank))));
        work()
    }

    /// Each part's `sum` = Σ over members of their part's `x`, in rank order.
    fn sum(&self, rank: usize, parts: &[Part]) {
        self.parts[rank].store(parts.as_ptr() as usize, Ordering::Relaxed);
        self.counts[rank].store(parts.len(), Ordering::Relaxed);
        self.wait();
        // SAFETY: each member's parts stay borrowed until the barrier below.
        let parts_of = |r: usize| unsafe {
            std::slice::from_raw_parts(
                self.parts[r].load(Ordering::Relaxed) as *const Part,
                self.counts[r].load(Ordering::Relaxed),
            )
        };
        let same = |other: &[Part]| other.len() == parts.len() && other.iter().zip(parts).all(|(a, b)| a.len == b.len);
        assert!((0..self.members).all(|r| same(parts_of(r))), "members summed different values");
        let mut total = [0.0f32; SUM_CHUNK];
        for (j, part) in parts.iter().enumerate() {
            // This member's share of the values, a chunk at a time: summed
            // on the stack, then written to every member's result (so a
            // member's input may be its result).
            let (first, end) = (part.len * rank / self.members, part.len * (rank + 1) / self.members);
            for start in (first..end).step_by(SUM_CHUNK) {
                let total = &mut total[..SUM_CHUNK.min(end - start)];
                let len = total.len();
                // SAFETY: every member's part j holds `len` values (checked)
                // in its input and its result, borrowed until the barrier
                // below; only this member touches this range of them, and
                // no input slice lives on when a result slice is made.
                let input = |r: usize| unsafe { std::slice::from_raw_parts(parts_of(r)[j].x.add(start), len) };
                total.copy_from_slice(input(0));
                for r in 1..self.members {
                    total.iter_mut().zip(input(r)).for_each(|(t, &v)| *t += v);
                }
                for r in 0..self.members {
                    // SAFETY: as for the inputs.
                    unsafe { std::slice::from_raw_parts_mut(parts_of(r)[j].sum.add(start), len) }
                        .copy_from_slice(total);
                }
            }
        }
        self.wait();
    }

    /// Runs `work` with every member's `mine`, in rank order, once all
    /// have given theirs, and returns once every member's `work` has
    /// returned: what each `mine` borrows stays as it is until then.
    pub(crate) fn together<T: Sync, R>(&self, rank: usize, mine: &T, work: impl FnOnce(Members<'_, T>) -> R) -> R {
        self.parts[rank].store(std::ptr::from_ref(mine) as usize, Ordering::Relaxed);
        self.wait();
        let result = work(Members { slots: &self.parts, values: PhantomData });
        self.wait();
        result
    }

    /// Returns once every member has called it as often as this one.
    pub(crate) fn wait(&self) {
        let opened = self.opened.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.members {
            self.arrived.store(0, Ordering::Relaxed);
            self.opened.fetch_add(1, Ordering::AcqRel);
            return;
        }
        let mut spins = 0u32;
        while self.opened.load(Ordering::Acquire) == opened {
            if spins < SPINS {
                std::hint::spin_loop();
                spins += 1;
            } else {
                // A member held up (fewer cores than members): give it the core.
                std::thread::yield_now();
            }
        }
    }
}

/// Busy-waits before a waiting member yields its core.
const SPINS: u32 = 1 << 16;

/// Values a member sums at a time, on its stack.
const SUM_CHUNK: usize = 1024;

/// Values from which a team member's started sum runs at once rather than
/// at the wait: copying a large input to sum later costs a pass over it
/// and memory to keep it in (VGG-16's replicas copied and kept 553 MB of
/// gradients each), more than the members' meeting, while a small one is
/// cheaper to copy and exchange with the others at the wait.
const SUM_AT_START: usize = 1 << 16;

/// One started sum: a copy of its input, and where the sum goes.
struct Job {
    x: Vec<f32>,
    sum: *mut f32,
}

// SAFETY: `sum` points into the running step's buffers, which the plan
// leaves alone until the step waits for the job (`nnc_all_reduce_wait`).
unsafe impl Send for Job {}

/// The thread that runs started sums in order, and what the step knows of it.
struct Background {
    jobs: Sender<Job>,
    /// Each finished job's input buffer, to be reused.
    finished: Receiver<Vec<f32>>,
    pending: usize,
    spare: Vec<Vec<f32>>,
}

impl Background {
    fn spawn(reduce: AllReduce) -> Background {
        let (jobs, queue) = channel::<Job>();
        let (done, finished) = channel();
        std::thread::spawn(move || {
            for job in queue {
                // SAFETY: the step's buffer holds x.len() values and nothing else touches it until the wait.
                reduce(&job.x, unsafe { slice_mut(job.sum, job.x.len()) });
                if done.send(job.x).is_err() {
                    break;
                }
            }
        });
        Background { jobs, finished, pending: 0, spare: Vec::new() }
    }

    fn start(&mut self, x: &[f32], sum: *mut f32) {
        let copy = copy_reusing(&mut self.spare, x);
        self.jobs.send(Job { x: copy, sum }).expect("the all-reduce thread ended");
        self.pending += 1;
    }

    fn wait(&mut self) {
        for _ in 0..std::mem::take(&mut self.pending) {
            let buffer = self.finished.recv().expect("the all-reduce thread ended");
            self.spare.push(buffer);
        }
    }
}

/// Starts `y` = Σ over processes of `x` (n values each); `y` holds the sum
/// once `nnc_all_reduce_wait` returns.
#[unsafe(no_mangle)]
pub extern "C" fn nnc_all_reduce_start(x: *const f32, y: *mut f32, n: usize) {
    if let Some((team, rank)) = MEMBER.get() {
        if n >= SUM_AT_START {
            // SAFETY: `ThreadTeam::member` keeps the team borrowed while this
            // thread works for it; x and y hold n values each (they may be one buffer).
            return unsafe { &*team }.sum(rank, &[Part { x, sum: y, len: n }]);
        }
        // SAFETY: x holds n values, copied before the step goes on.
        let x = unsafe { slice(x, n) };
        return STARTED.with_borrow_mut(|started| {
            let copy = copy_reusing(&mut started.spare, x);
            started.jobs.push(Job { x: copy, sum: y });
        });
    }
    match BACKGROUND.get() {
        Some(background) => {
            // SAFETY: x holds n values; the job copies them before the step goes on.
            let x = unsafe { slice(x, n) };
            background.lock().unwrap_or_else(|e| e.into_inner()).start(x, y);
        }
        None if std::ptr::eq(x, y) => {
            // The plan writes a sum over its input: reduce a copy, in a
            // buffer kept from step to step (a fresh one would fault in
            // its pages at every step).
            // SAFETY: y holds n values.
            let y = unsafe { slice_mut(y, n) };
            INPUT_COPY.with_borrow_mut(|copy| {
                copy.clear();
                copy.extend_from_slice(y);
                all_reduce(copy, y);
            });
        }
        None => {
            // SAFETY: x and y hold n values each, and do not overlap (distinct buffers of the plan).
            let (x, y) = unsafe { (slice(x, n), slice_mut(y, n)) };
            all_reduce(x, y);
        }
    }
}

/// Every member's value in a `ThreadTeam::together` call, in rank order
/// (read from the team's slots, so the call allocates nothing).
pub(crate) struct Members<'a, T> {
    slots: &'a [AtomicUsize],
    values: PhantomData<&'a T>,
}

impl<'a, T> Members<'a, T> {
    pub fn count(&self) -> usize {
        self.slots.len()
    }

    /// Member `rank`'s value.
    pub fn get(&self, rank: usize) -> &'a T {
        // SAFETY: inside `together`, every member's slot holds the `T` it
        // gave, borrowed until the barrier that ends the call.
        unsafe { &*(self.slots[rank].load(Ordering::Relaxed) as *const T) }
    }

    pub fn iter(&self) -> impl Iterator<Item = &'a T> + '_ {
        (0..self.count()).map(|rank| self.get(rank))
    }
}

/// The values `[begin, end)` of `units` (a multiple of `align` apart
/// from the last) that part `index` of `parts` takes.
pub fn part_range(units: usize, align: usize, (index, parts): (usize, usize)) -> (usize, usize) {
    let start = |i: usize| if i == parts { units } else { units * i / parts / align * align };
    (start(index), start(index + 1))
}

/// `work` on the team this thread is a member of, with its rank; None
/// on a thread of no team.
pub(crate) fn as_member<R>(work: impl FnOnce(&ThreadTeam, usize) -> R) -> Option<R> {
    let (team, rank) = MEMBER.get()?;
    // SAFETY: `ThreadTeam::member` keeps the team borrowed while this thread works for it.
    Some(work(unsafe { &*team }, rank))
}

/// Waits until every member of this thread's `ThreadTeam` has come here
/// (returns at once on a thread of no team): replicas sharing one store
/// meet here before each writes its part of the new values.
#[unsafe(no_mangle)]
pub extern "C" fn nnc_team_barrier() {
    if let Some((team, _)) = MEMBER.get() {
        // SAFETY: `ThreadTeam::member` keeps the team borrowed while this thread works for it.
        unsafe { &*team }.wait();
    }
}

/// Waits for every sum started so far.
#[unsafe(no_mangle)]
pub extern "C" fn nnc_all_reduce_wait() {
    if let Some((team, rank)) = MEMBER.get() {
        return STARTED.with_borrow_mut(|Started { jobs, parts, spare }| {
            if jobs.is_empty() {
                return;
            }
            parts.clear();
            parts.extend(jobs.iter().map(|job| Part { x: job.x.as_ptr(), sum: job.sum, len: job.x.len() }));
            // SAFETY: `ThreadTeam::member` keeps the team borrowed while this
            // thread works for it; each job's sum points into the step's
            // buffers, which the plan leaves alone until this wait.
            unsafe { &*team }.sum(rank, parts);
            spare.extend(jobs.drain(..).rev().map(|job| job.x));
        });
    }
    if let Some(background) = BACKGROUND.get() {
        background.lock().unwrap_or_else(|e| e.into_inner()).wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Twice the input: what two processes holding the same values sum to.
    fn double(x: &[f32], sum: &mut [f32]) {
        std::thread::sleep(std::time::Duration::from_millis(2));
        for (s, v) in sum.iter_mut().zip(x) {
            *s = 2.0 * v;
        }
    }

    #[test]
    fn a_thread_team_sums_in_rank_order_and_gives_every_member_the_same_bits() {
        for members in [2, 3] {
            let team = ThreadTeam::new(members);
            // Values whose sum depends on the order of the additions.
            let inputs: Vec<Vec<f32>> = (0..members)
                .map(|r| (0..1001).map(|i| ((i * 7 + r * 13) % 17) as f32 * 0.1 + 1e-7 * (r + i) as f32).collect())
                .collect();
            // Past the size summed at start, and not a whole number of chunks.
            let large_of = |x: &[f32]| x.iter().copied().cycle().take(SUM_AT_START + 3).collect::<Vec<f32>>();
            let sums: Vec<_> = std::thread::scope(|s| {
                let members: Vec<_> = (0..members)
                    .map(|rank| {
                        let (team, x) = (&team, &inputs[rank]);
                        s.spawn(move || {
                            team.member(rank, || {
                                let (mut all, mut few, mut started) = (vec![0.0; x.len()], vec![0.0; 3], vec![0.0; 5]);
                                all_reduce(x, &mut all);
                                // Started sums land by the wait, read their
                                // input at the start and may be in place.
                                few.copy_from_slice(&x[..3]);
                                nnc_all_reduce_start(few.as_ptr(), few.as_mut_ptr(), 3);
                                let mut input = x[..5].to_vec();
                                nnc_all_reduce_start(input.as_ptr(), started.as_mut_ptr(), 5);
                                input.fill(-1.0);
                                // Large ones, summed at once: in place, and
                                // into another buffer from an input the step
                                // then overwrites.
                                let mut large = large_of(x);
                                nnc_all_reduce_start(large.as_ptr(), large.as_mut_ptr(), large.len());
                                let (mut input, mut large_apart) = (large_of(x), vec![0.0; large.len()]);
                                nnc_all_reduce_start(input.as_ptr(), large_apart.as_mut_ptr(), input.len());
                                input.fill(-1.0);
                                nnc_all_reduce_wait();
                                (all, few, started, large, large_apart)
                            })
                        })
                    })
                    .collect();
                members.into_iter().map(|m| m.join().expect("member")).collect()
            });
            let expected: Vec<f32> =
                (0..1001).map(|i| inputs[1..].iter().fold(inputs[0][i], |acc, x| acc + x[i])).collect();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            let large_expected = large_of(&expected);
            for (all, few, started, large, large_apart) in &sums {
                assert_eq!(bits(large), bits(&large_expected), "{members} members, in place");
                assert_eq!(bits(large_apart), bits(&large_expected), "{members} members");
                assert_eq!(bits(all), bits(&expected), "{members} members");
                assert_eq!(bits(few), bits(&expected[..3]), "{members} members");
                assert_eq!(bits(started), bits(&expected[..5]), "{members} members");
            }
            // Outside the team, a sum is over this process alone.
            let mut alone = vec![0.0; 3];
            all_reduce(&inputs[0][..3], &mut alone);
            assert_eq!(alone, inputs[0][..3]);
        }
    }

    #[test]
    fn background_sums_land_by_the_wait_and_read_their_input_at_the_start() {
        let mut background = Background::spawn(double);
        let mut x: Vec<f32> = (0..1000).map(|i| i as f32).collect();
        let (mut a, mut b) = (vec![0.0f32; 1000], vec![0.0f32; 10]);
        background.start(&x, a.as_mut_ptr());
        // The step may overwrite an input once its sum has started.
        x.iter_mut().for_each(|v| *v = -1.0);
        background.start(&x[..10], b.as_mut_ptr());
        background.wait();
        assert!(a.iter().enumerate().all(|(i, &s)| s == 2.0 * i as f32));
        assert!(b.iter().all(|&s| s == -2.0));
        assert_eq!((background.pending, background.spare.len()), (0, 2));
    }
}
