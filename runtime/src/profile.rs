//! Where a compiled step's time goes (`nnc bench --kernels`): a step
//! compiled to be profiled calls `nnc_profile_mark(step, k)` as it starts
//! its kernel k, and once more after its last; the time from one mark to
//! the next on the same thread is kernel k's. A mark costs a lock and a
//! clock read, well under a microsecond, so only profiled steps make them.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// A profiled step's kernels and the marks its runs have made.
struct Step {
    kernels: Vec<Kernel>,
    /// (thread, kernel, when), in the order they were made.
    marks: Vec<(u64, usize, Instant)>,
}

/// Every step registered in this process.
static STEPS: Mutex<Vec<Step>> = Mutex::new(Vec::new());

thread_local! {
    /// This thread's number among those that mark.
    static THREAD: Cell<u64> = const { Cell::new(u64::MAX) };
}

/// The number of the calling thread (given out on its first mark).
fn thread() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    THREAD.with(|t| {
        if t.get() == u64::MAX {
            t.set(NEXT.fetch_add(1, Ordering::Relaxed));
        }
        t.get()
    })
}

/// A kernel of a profiled step: what it is (as the plan lists it), and
/// the multiply-adds it makes when it is a matrix product (else 0).
#[derive(Debug, Clone, PartialEq)]
pub struct Kernel {
    pub label: String,
    pub multiply_adds: u64,
}

/// Registers a step about to be compiled with a mark before each of its
/// `kernels`, in order; returns the number its marks give.
pub fn register(kernels: Vec<Kernel>) -> usize {
    let mut steps = STEPS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    steps.push(Step { kernels, marks: Vec::new() });
    steps.len() - 1
}

/// Marks the start of kernel `kernel` of the registered step `step` (or
/// its end, after its last kernel).
#[unsafe(no_mangle)]
pub extern "C" fn nnc_profile_mark(step: usize, kernel: usize) {
    let at = Instant::now();
    let thread = thread();
    let mut steps = STEPS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(step) = steps.get_mut(step) {
        step.marks.push((thread, kernel, at));
    }
}

/// One kernel of a profiled step and the times (µs) its runs took.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelTimes {
    pub kernel: Kernel,
    pub micros: Vec<f64>,
}

/// Each registered step that ran since the last call, its kernels'
/// times (the marks are forgotten, the steps stay registered). Steps with
/// the same kernels (one per replica of a split batch) are merged.
pub fn take() -> Vec<Vec<KernelTimes>> {
    let mut steps = STEPS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut out: Vec<Vec<KernelTimes>> = Vec::new();
    for step in steps.iter_mut().filter(|s| !s.marks.is_empty()) {
        let times = kernel_times(&step.kernels, &std::mem::take(&mut step.marks));
        match out.iter_mut().find(|o| o.iter().map(|k| &k.kernel).eq(step.kernels.iter())) {
            Some(same) => same.iter_mut().zip(times).for_each(|(a, b)| a.micros.extend(b.micros)),
            None => out.push(times),
        }
    }
    out
}

/// The time from each mark of kernel k to the same thread's next mark,
/// when that is of kernel k + 1 (a run cut short leaves no time).
fn kernel_times(kernels: &[Kernel], marks: &[(u64, usize, Instant)]) -> Vec<KernelTimes> {
    let mut out: Vec<KernelTimes> =
        kernels.iter().map(|kernel| KernelTimes { kernel: kernel.clone(), micros: Vec::new() }).collect();
    let mut last: Vec<(u64, usize, Instant)> = Vec::new();
    for &(thread, kernel, at) in marks {
        match last.iter_mut().find(|(t, _, _)| *t == thread) {
            Some(previous) => {
                let (_, k, since) = *previous;
                if kernel == k + 1
                    && let Some(times) = out.get_mut(k)
                {
                    times.micros.push(at.duration_since(since).as_secs_f64() * 1e6);
                }
                *previous = (thread, kernel, at);
            }
            None => last.push((thread, kernel, at)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Each kernel's time runs from its mark to the next on the same
    /// thread; marks of another thread between them do not cut it, and a
    /// step that stopped early leaves its kernel without a time.
    #[test]
    fn a_kernel_lasts_from_its_mark_to_the_next_on_its_thread() {
        let t0 = Instant::now();
        let at = |us: u64| t0 + Duration::from_micros(us);
        let kernels = ["matmul", "elementwise"].map(|label| Kernel { label: label.into(), multiply_adds: 0 });
        let marks = [
            (0, 0, at(0)),
            (1, 0, at(5)),
            (0, 1, at(100)),
            (1, 1, at(205)),
            (0, 2, at(110)),
            (1, 2, at(225)),
            // A run that stops after its first kernel's mark.
            (0, 0, at(500)),
            (0, 0, at(1000)),
            (0, 1, at(1030)),
        ];
        let times = kernel_times(&kernels, &marks);
        assert_eq!(times[0].kernel.label, "matmul");
        assert_eq!(times[0].micros, vec![100.0, 200.0, 30.0]);
        assert_eq!(times[1].micros, vec![10.0, 20.0]);
    }
}
