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

/// `sum` = Σ over processes of `x` (a copy of `x` when none was installed).
pub fn all_reduce(x: &[f32], sum: &mut [f32]) {
    match ALL_REDUCE.get() {
        Some(reduce) => reduce(x, sum),
        None => sum.copy_from_slice(x),
    }
}

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
        let mut copy = self.spare.pop().unwrap_or_default();
        copy.clear();
        copy.extend_from_slice(x);
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
    match BACKGROUND.get() {
        Some(background) => {
            // SAFETY: x holds n values; the job copies them before the step goes on.
            let x = unsafe { slice(x, n) };
            background.lock().unwrap_or_else(|e| e.into_inner()).start(x, y);
        }
        None if std::ptr::eq(x, y) => {
            // The plan wrote the sum over its input: reduce a copy.
            // SAFETY: y holds n values.
            let y = unsafe { slice_mut(y, n) };
            let x = y.to_vec();
            all_reduce(&x, y);
        }
        None => {
            // SAFETY: x and y hold n values each, and do not overlap (distinct buffers of the plan).
            let (x, y) = unsafe { (slice(x, n), slice_mut(y, n)) };
            all_reduce(x, y);
        }
    }
}

/// Waits for every sum started so far.
#[unsafe(no_mangle)]
pub extern "C" fn nnc_all_reduce_wait() {
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
