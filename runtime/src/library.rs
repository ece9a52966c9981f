//! The C interface of the libraries `nnc build` writes.
//!
//! The object file nnc generates holds a model's forward passes (compiled
//! for a large batch, a small one and one row), its weights and a `Description` of
//! them. Its `NAME_create`, `NAME_predict` and `NAME_destroy` pass that
//! description to the functions here, which own everything generic: the
//! scratch arena, the input preprocessing, splitting rows into batches and
//! turning class scores into probabilities, exactly as `nnc predict` does.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use rayon::prelude::*;

use crate::gemm::Isa;
use crate::simd::compiled_for_isa;
use crate::{Arena, Hypers, PARALLEL_ELEMENTS, softmax_rows, zeroed};

/// A compiled forward pass: `run(store, scratch, input, target, hyper)`.
pub type ForwardFn = unsafe extern "C" fn(*mut f32, *mut f32, *const f32, *const f32, *const f32);

/// `Pass::output` when the prediction is the (preprocessed) input itself.
pub const OUTPUT_IS_INPUT: usize = usize::MAX;

/// One forward pass and what it needs.
#[repr(C)]
pub struct Pass {
    pub run: ForwardFn,
    /// Rows per call.
    pub rows: usize,
    /// f32 elements of scratch the pass uses.
    pub scratch_len: usize,
    /// Offset in scratch where the pass leaves its prediction, or `OUTPUT_IS_INPUT`.
    pub output: usize,
}

/// A built model, as the generated object lays it out.
#[repr(C)]
pub struct Description {
    /// Parameters and buffers, laid out as the passes expect (read only).
    pub weights: *const f32,
    /// Per input feature: x' = (x − shift) / divisor, the checkpoint's preprocessing.
    pub shift: *const f32,
    pub divisor: *const f32,
    /// Input values per row.
    pub features: usize,
    /// Output values per row.
    pub outputs: usize,
    /// The outputs that are class scores returned as probabilities: each
    /// a run of columns of the output row (`softmax_count` of them).
    pub softmax: *const Columns,
    pub softmax_count: usize,
    /// Non-zero when the batched passes spread their images (convolution
    /// and pooling) over rayon's threads: products too small to thread well.
    pub parallel_images: usize,
    /// The passes, most rows first; the last runs one row.
    pub passes: [Pass; PASSES],
}

/// A run of `width` columns of an output row, from column `start`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Columns {
    pub start: usize,
    pub width: usize,
}

/// How many forward passes a library holds.
pub const PASSES: usize = 4;

/// Rows of the middle and the small batch: what is left after the large
/// batches runs through passes of these many rows, then one row at a
/// time (a remainder of 2,000 rows is 3 + 7 calls, not 31 of 64 rows,
/// each of which packs the weights again).
pub const MIDDLE_BATCH: usize = 512;
pub const SMALL_BATCH: usize = 64;

/// Rows per call of each pass of a library whose large batch is `batch`.
pub fn pass_rows(batch: usize) -> [usize; PASSES] {
    [batch, MIDDLE_BATCH.min(batch), SMALL_BATCH.min(batch), 1]
}

/// Which pass predicts the next rows when `left` rows are left: the first
/// (most rows) that does not run past them.
pub fn next_pass(rows: [usize; PASSES], left: usize) -> usize {
    rows.iter().position(|&r| r <= left).unwrap_or(PASSES - 1)
}

/// Return codes of `NAME_predict` (the header names them).
pub const OK: i32 = 0;
pub const NULL_POINTER: i32 = 1;
pub const NO_ROWS: i32 = 2;
pub const WRONG_CONTEXT: i32 = 3;
pub const TOO_MANY_ROWS: i32 = 4;

/// One caller's working memory, allocated once by `create`.
pub struct Context {
    description: *const Description,
    /// The memory of the passes run on the calling thread.
    worker: Worker,
    /// The memory of passes run beside them, and the two threads passes
    /// side by side run on (`share`): had by the first call that shares.
    beside: Option<(Worker, [rayon::ThreadPool; 2])>,
    /// A forward pass reads no hyperparameters but the weights' version;
    /// the step signature has them.
    hyper: Hypers,
}

/// What one thread's passes write.
struct Worker {
    /// Working memory of the largest pass; each pass uses its start.
    scratch: Arena,
    /// A batch of preprocessed input rows, or None when the preprocessing
    /// leaves every value as it is and the passes read the caller's rows.
    input: Option<Vec<f32>>,
}

impl Worker {
    /// Memory for the passes of `d`, or None when it cannot be had.
    fn new(d: &Description) -> Option<Worker> {
        let most = |field: fn(&Pass) -> usize| d.passes.iter().map(field).max().unwrap_or(0).max(1);
        // SAFETY: the generated object's shift and divisor hold `features` values each.
        let (shift, divisor) = unsafe { preprocessing(d) };
        // (x − (+0)) / 1 is x, bit for bit (x − (−0) would turn −0 into +0).
        let unchanged = shift.iter().all(|&s| s.to_bits() == 0) && divisor.iter().all(|&v| v == 1.0);
        let input = match unchanged {
            true => None,
            false => Some(most(|p| p.rows).checked_mul(d.features).and_then(zeroed)?),
        };
        Some(Worker { scratch: Arena::zeroed(most(|p| p.scratch_len))?, input })
    }
}

/// The per-feature shift and divisor of `d`'s preprocessing.
///
/// # Safety
/// `d.shift` and `d.divisor` point to `d.features` values each.
unsafe fn preprocessing(d: &Description) -> (&[f32], &[f32]) {
    // SAFETY: the caller's contract.
    unsafe { (std::slice::from_raw_parts(d.shift, d.features), std::slice::from_raw_parts(d.divisor, d.features)) }
}

/// Allocates a context for the model `description` describes.
///
/// # Safety
/// `description` is null or points to a valid `Description` that outlives the context.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nnc_library_create(description: *const Description) -> *mut Context {
    // SAFETY: the caller passes the generated object's own description.
    let Some(d) = (unsafe { description.as_ref() }) else {
        return std::ptr::null_mut();
    };
    if d.parallel_images != 0 {
        // Results are the same bits whether the parts run in parallel or not.
        crate::set_parallel_images(true);
    }
    // Memory that is not there is a NULL context, never an abort of the caller.
    let Some(worker) = Worker::new(d) else {
        return std::ptr::null_mut();
    };
    // The weights are the library's read-only data: what is made from them is kept.
    let hyper = Hypers { weights: crate::READ_ONLY, ..Hypers::default() };
    let context = Context { description, worker, beside: None, hyper };
    Box::into_raw(Box::new(context))
}

/// Frees a context (null is allowed and does nothing).
///
/// # Safety
/// `context` is null or came from `nnc_library_create` and is not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nnc_library_destroy(context: *mut Context) {
    if !context.is_null() {
        // SAFETY: the caller hands back a context `create` boxed.
        drop(unsafe { Box::from_raw(context) });
    }
}

/// Predicts `rows` rows of `input` (raw features, row-major) into `output`
/// (`outputs` values per row): large batches, then small ones, then one
/// row at a time (`next_pass`).
///
/// # Safety
/// `input` holds `rows · features` values and `output` `rows · outputs`;
/// `context` came from `nnc_library_create` and no other thread is using it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nnc_library_predict(
    description: *const Description,
    context: *mut Context,
    input: *const f32,
    rows: usize,
    output: *mut f32,
) -> i32 {
    if description.is_null() || context.is_null() || input.is_null() || output.is_null() {
        return NULL_POINTER;
    }
    if rows == 0 {
        return NO_ROWS;
    }
    // SAFETY: checked non-null above; the caller's contract covers validity.
    let (d, context) = unsafe { (&*description, &mut *context) };
    if !std::ptr::eq(context.description, description) {
        return WRONG_CONTEXT;
    }
    // No buffer holds more than isize::MAX bytes: a larger count is a caller's mistake.
    let fits =
        |width: usize| rows.checked_mul(width).and_then(|n| n.checked_mul(4)).is_some_and(|b| b <= isize::MAX as usize);
    if !fits(d.features) || !fits(d.outputs) {
        return TOO_MANY_ROWS;
    }
    // SAFETY: the caller's contract: input and output hold `rows` rows.
    let (input, output) = unsafe {
        (std::slice::from_raw_parts(input, rows * d.features), std::slice::from_raw_parts_mut(output, rows * d.outputs))
    };
    let rows_per_pass = d.passes.each_ref().map(|p| p.rows);
    let hyper = context.hyper;
    let run_rows = |worker: &mut Worker, input: &[f32], output: &mut [f32]| {
        let rows = input.len() / d.features.max(1);
        let mut done = 0;
        while done < rows {
            let pass = &d.passes[next_pass(rows_per_pass, rows - done)];
            let n = pass.rows.max(1);
            let x = &input[done * d.features..(done + n) * d.features];
            let y = &mut output[done * d.outputs..(done + n) * d.outputs];
            // SAFETY: the description's arrays and passes are the generated object's own.
            unsafe { worker.run(d, &hyper, pass, x, y) };
            done += n;
        }
    };
    // Two large passes or more run on two threads side by side (`share`).
    // A pass run alone spreads its work over the threads and hands it over
    // at every product, convolution and pooling; passes side by side hand
    // over nothing (LeNet's library predicted 131-138 k rows/s one pass
    // after another, 162-165 k two side by side).
    let large = d.passes[0].rows.max(1);
    let shared = rows >= 2 * large && rayon::current_num_threads() > 1;
    if shared && context.beside.is_none() {
        // Without the memory or the threads the passes run one after
        // another, as they can.
        context.beside = Worker::new(d).zip(two_threads());
    }
    let Context { worker, beside, .. } = context;
    let mut run_all = || match beside.as_mut().filter(|_| shared) {
        Some((beside, threads)) => {
            // Each whole large pass is a part, and so are the rows after
            // them: every row runs in the same pass at the same place as
            // one after another (the same bits).
            let split = rows / large * large;
            let (x, x_rest) = input.split_at(split * d.features);
            let (y, y_rest) = output.split_at_mut(split * d.outputs);
            let parts = x.chunks(large * d.features).zip(y.chunks_mut(large * d.outputs));
            let parts = parts.chain([(x_rest, y_rest)]).collect();
            share((worker, beside), threads, parts, &|worker, (x, y)| run_rows(worker, x, y));
        }
        None => run_rows(worker, input, output),
    };
    if rows >= POOL_ROWS {
        // Many rows run on a thread of rayon's pool, as the command line's
        // passes do: their products and image parts then start without
        // handing each part over from this thread and sleeping until it is done.
        let job = OnPool(run_all);
        rayon::scope(move |_| job.run());
    } else {
        run_all();
    }
    OK
}

/// Two pools of one thread each, for `share`.
fn two_threads() -> Option<[rayon::ThreadPool; 2]> {
    let pool = |i: usize| {
        rayon::ThreadPoolBuilder::new().num_threads(1).thread_name(move |_| format!("nnc-library-{i}")).build().ok()
    };
    Some([pool(0)?, pool(1)?])
}

/// Runs `run(worker, part)` for every part, the two workers side by side,
/// each on a thread of its own (`threads`) and taking the next part as
/// soon as it is free: a core that something else holds up (another
/// program, the caller's own threads) takes fewer parts instead of holding
/// the call up. Each runs its parts alone: work split inside a part and
/// taken by the other worker would tie the two together again. The MNIST
/// MLP's library over 10,000 rows beside a busy loop on one core ran at
/// 1.12-1.52 M rows/s in two fixed halves whose passes split their work
/// over rayon's threads, and at 1.85-2.01 M so (3.0-3.1 M either way
/// alone). Each worker has its own memory; the parts hand nothing over.
fn share<W, P>(
    (first, second): (&mut W, &mut W),
    threads: &[rayon::ThreadPool; 2],
    parts: Vec<P>,
    run: &dyn Fn(&mut W, P),
) {
    let parts: Vec<Mutex<Option<P>>> = parts.into_iter().map(|part| Mutex::new(Some(part))).collect();
    let next = AtomicUsize::new(0);
    let take = |worker: &mut W| {
        // Each index is handed out once; the lock only moves the part out.
        while let Some(slot) = parts.get(next.fetch_add(1, Ordering::Relaxed)) {
            if let Some(part) = slot.lock().unwrap_or_else(PoisonError::into_inner).take() {
                run(worker, part);
            }
        }
    };
    let take = &take;
    let (here, there) = (OnPool(move || take(first)), OnPool(move || take(second)));
    let [one, other] = threads;
    rayon::join(move || one.install(move || here.run()), move || other.install(move || there.run()));
}

/// A call's work, moved to a thread of rayon's pool for the call.
struct OnPool<F>(F);

// SAFETY: the calling thread waits inside `rayon::scope` (and `rayon::join`)
// until the work is done, so what it borrows stays valid; two workers run
// side by side touch only their own memory and the rows of the parts they
// take; the description's pointers are the generated object's read-only data.
unsafe impl<F> Send for OnPool<F> {}

impl<F: FnOnce()> OnPool<F> {
    fn run(self) {
        (self.0)()
    }
}

/// Calls with at least this many rows move to rayon's pool (the move costs
/// about as much as a batch-1 pass).
const POOL_ROWS: usize = 16;

impl Worker {
    /// One pass over `x` (exactly `pass.rows` rows) into `y`.
    ///
    /// # Safety
    /// `d` is this context's description; its pointers are valid for its sizes.
    unsafe fn run(&mut self, d: &Description, hyper: &Hypers, pass: &Pass, x: &[f32], y: &mut [f32]) {
        let Worker { scratch, input } = self;
        let input: &[f32] = match input {
            None => x,
            Some(input) => {
                // SAFETY: the caller's contract.
                let (shift, divisor) = unsafe { preprocessing(d) };
                let input = &mut input[..x.len()];
                let scale = |(x, input): (&[f32], &mut [f32])| match Isa::detect() {
                    Some(isa) => scale_rows_for(isa, x, input, shift, divisor),
                    None => scale_rows(x, input, shift, divisor),
                };
                if x.len() >= PARALLEL_ELEMENTS {
                    let chunk = d.features.max(1) * SCALED_ROWS_AT_ONCE;
                    x.par_chunks(chunk).zip(input.par_chunks_mut(chunk)).for_each(scale);
                } else {
                    scale((x, input));
                }
                input
            }
        };
        // SAFETY: the pass reads the weights, `input` (pass.rows rows) and
        // writes only its scratch (sized by scratch_len at create); it never
        // writes the weights, which the generated object keeps read-only.
        unsafe {
            (pass.run)(
                d.weights.cast_mut(),
                scratch.as_mut_ptr(),
                input.as_ptr(),
                std::ptr::null(),
                std::ptr::from_ref(hyper).cast(),
            )
        };
        let scores = if pass.output == OUTPUT_IS_INPUT {
            &input[..y.len()]
        } else {
            &scratch[pass.output..pass.output + y.len()]
        };
        // SAFETY: the description's `softmax_count` runs of columns.
        let softmax = unsafe { std::slice::from_raw_parts(d.softmax, d.softmax_count) };
        match softmax {
            [] => y.copy_from_slice(scores),
            [whole] if *whole == (Columns { start: 0, width: d.outputs }) => softmax_rows(scores, y, d.outputs),
            // Some outputs of several (so a row holds at least one value).
            runs => {
                y.copy_from_slice(scores);
                for (scores, y) in scores.chunks_exact(d.outputs).zip(y.chunks_exact_mut(d.outputs)) {
                    for run in runs {
                        let columns = run.start..run.start + run.width;
                        softmax_rows(&scores[columns.clone()], &mut y[columns], run.width);
                    }
                }
            }
        }
    }
}

/// Rows each of rayon's parts scales when a pass's input is split.
const SCALED_ROWS_AT_ONCE: usize = 64;

/// Preprocesses whole rows of raw features: `(raw − shift) / divisor`
/// per feature. Each value is one subtraction and one division, rounded
/// as IEEE says, so the vector width does not change a bit.
#[inline(always)]
fn scale_rows(x: &[f32], input: &mut [f32], shift: &[f32], divisor: &[f32]) {
    let width = shift.len().max(1);
    for (row_in, row) in x.chunks_exact(width).zip(input.chunks_exact_mut(width)) {
        for ((v, &raw), (&shift, &divisor)) in row.iter_mut().zip(row_in).zip(shift.iter().zip(divisor)) {
            *v = (raw - shift) / divisor;
        }
    }
}

compiled_for_isa! {
    /// `scale_rows` in the vectors of `isa` (the baseline's four lanes
    /// made the divisions a sixth of a large MLP's prediction).
    fn scale_rows_for(x: &[f32], input: &mut [f32], shift: &[f32], divisor: &[f32]) {
        scale_rows(x, input, shift, divisor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_run_in_large_batches_then_small_ones_then_alone() {
        let plan = |batch: usize, mut left: usize| {
            let rows = pass_rows(batch);
            let mut passes = Vec::new();
            while left > 0 {
                let n = rows[next_pass(rows, left)];
                passes.push(n);
                left -= n;
            }
            passes
        };
        assert_eq!(plan(4096, 10_000), [[4096; 2].as_slice(), &[512; 3], &[64; 4], &[1; 16]].concat());
        assert_eq!(plan(300, 700), [[300, 300, 64].as_slice(), &[1; 36]].concat());
        assert_eq!(plan(80, 227), [80, 80, 64, 1, 1, 1]);
        assert_eq!(plan(8, 19), [8, 8, 1, 1, 1]);
        assert_eq!(plan(1, 3), [1, 1, 1]);
    }

    /// Every part runs once, and a worker held up in its first part leaves
    /// all the others to the second: neither has a fixed share.
    #[test]
    fn a_held_up_worker_leaves_the_other_parts_to_the_other() {
        use std::sync::mpsc;
        use std::time::Duration;
        let parts = 9;
        let (done, finished) = mpsc::channel();
        let (started, held_started) = mpsc::channel();
        let (finished, held_started) = (Mutex::new(finished), Mutex::new(held_started));
        // Each worker: whether it is the one held up, and the parts it ran.
        let (mut held, mut free) = ((true, Vec::new()), (false, Vec::new()));
        let threads = two_threads().expect("two threads");
        // Waits for a message, with a guard against waiting forever.
        let wait = |from: &Mutex<mpsc::Receiver<()>>| {
            from.lock().unwrap().recv_timeout(Duration::from_secs(60)).expect("the other worker takes parts")
        };
        let run = |(held_up, ran): &mut (bool, Vec<usize>), part| {
            ran.push(part);
            if *held_up && ran.len() == 1 {
                // Held up in its first part until the other has run all the others.
                started.send(()).unwrap();
                (1..parts).for_each(|_| wait(&finished));
            } else if !*held_up {
                if ran.len() == 1 {
                    wait(&held_started);
                }
                done.send(()).unwrap();
            }
        };
        share((&mut held, &mut free), &threads, (0..parts).collect(), &run);
        assert_eq!(held.1.len(), 1, "{held:?} {free:?}");
        let mut all = [held.1, free.1].concat();
        all.sort_unstable();
        assert_eq!(all, (0..parts).collect::<Vec<_>>());
    }
}
