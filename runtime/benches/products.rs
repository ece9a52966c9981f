//! The runtime's sgemm kernels, on every instruction set this CPU runs,
//! against matrixmultiply on the same products: W1's and W2's, each the
//! share of a training step one core runs (the step splits its large
//! products in two), and a library's first product over rows of images
//! (mostly zeros, which the kernels skip); and a product of four rows
//! against large weights (VGG-16's dense layers, a replica's rows at batch
//! 8), which the runtime runs as dot products, not through the kernels;
//! and an LSTM's (`models/lstm_mnist.nn`, a replica's 32 rows): a time
//! step's product with the state, its gradient, and the recurrent weight's
//! gradient over all the steps' rows.
//! One thread, rounds interleaved, medians.
//!
//!   cargo bench -p nnc-runtime --bench products [-- ROUNDS]
//!
//! matrixmultiply picks its own kernel for the CPU (AVX-512 where there
//! is one). Timing the runtime's kernels on each instruction set on one
//! machine catches a change that helps the one the machine prefers and
//! hurts the other.

use std::time::Instant;

use nnc_runtime::{Epilogue, Isa, product, product_with};

/// A product `m × k` by `k × n` with each operand's (row, column) strides,
/// as the compiled step calls it (weights are `[out, in]`).
struct Shape {
    name: &'static str,
    dims: (usize, usize, usize),
    a: (usize, usize),
    b: (usize, usize),
    /// What a holds: values everywhere, or rows of images (`images`).
    images: bool,
}

const SHAPES: [Shape; 13] = [
    Shape { name: "W1 forward, half", dims: (64, 784, 64), a: (784, 1), b: (1, 784), images: false },
    Shape { name: "W1 weight gradient, half", dims: (128, 64, 392), a: (1, 128), b: (784, 1), images: false },
    Shape { name: "W1 logits", dims: (64, 128, 10), a: (128, 1), b: (1, 128), images: false },
    Shape { name: "W2 forward 1, half", dims: (256, 784, 512), a: (784, 1), b: (1, 784), images: false },
    Shape { name: "W2 forward 2, half", dims: (256, 1024, 512), a: (1024, 1), b: (1, 1024), images: false },
    Shape { name: "W2 weight gradient 2, half", dims: (512, 256, 1024), a: (1, 1024), b: (1024, 1), images: false },
    Shape { name: "W2 input gradient 1, half", dims: (256, 1024, 512), a: (1024, 1), b: (1024, 1), images: false },
    Shape { name: "W2 gradient through the logits", dims: (256, 10, 1024), a: (10, 1), b: (1024, 1), images: false },
    Shape { name: "MNIST MLP forward, image rows", dims: (512, 784, 128), a: (784, 1), b: (1, 784), images: true },
    Shape { name: "VGG-16 dense 2 forward, 4 rows", dims: (4, 4096, 4096), a: (4096, 1), b: (1, 4096), images: false },
    Shape { name: "LSTM step, state product", dims: (32, 128, 512), a: (128, 1), b: (1, 128), images: false },
    Shape { name: "LSTM step, state gradient", dims: (32, 512, 128), a: (512, 1), b: (128, 1), images: false },
    Shape { name: "LSTM recurrent weight grad", dims: (512, 864, 128), a: (1, 512), b: (128, 1), images: false },
];

/// Rows up to which the runtime's own product (`Engine::Runtime`) is timed
/// too: it runs them on this thread as dot products (larger products it
/// may split over the threads).
const FEW_ROWS: usize = 4;

/// Who multiplies: one of the runtime's kernels, the runtime's product as
/// compiled code calls it, or matrixmultiply.
#[derive(Clone, Copy)]
enum Engine {
    Kernels(Isa),
    Runtime,
    Matrixmultiply,
}

impl Engine {
    fn name(self) -> String {
        match self {
            Engine::Kernels(isa) => format!("nnc {isa:?}"),
            Engine::Runtime => "nnc product".to_string(),
            Engine::Matrixmultiply => "matrixmultiply".to_string(),
        }
    }
}

/// Values spread over [-1, 1), different for each seed.
fn values(len: usize, seed: usize) -> Vec<f32> {
    (0..len).map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0 - 1.0).collect()
}

/// `rows` rows of 28 × 28 images, each a disc of values on a zero
/// background near the middle (a fifth of each row nonzero, as in
/// MNIST's digits), its centre and radius varying from row to row.
fn images(rows: usize) -> Vec<f32> {
    let spread = values(rows * 784, 3);
    (0..rows * 784)
        .map(|i| {
            let (row, pixel) = (i / 784, i % 784);
            let (y, x) = ((pixel / 28) as isize, (pixel % 28) as isize);
            let (cy, cx) = (12 + (row * 7 % 5) as isize, 12 + (row * 3 % 5) as isize);
            let radius = 4 + (row % 6) as isize;
            let inside = (y - cy).pow(2) + (x - cx).pow(2) <= radius * radius;
            if inside { spread[i].abs() + 0.01 } else { 0.0 }
        })
        .collect()
}

/// The element count an operand of `rows × cols` with these strides spans.
fn span((rows, cols): (usize, usize), (rs, cs): (usize, usize)) -> usize {
    (rows - 1) * rs + (cols - 1) * cs + 1
}

/// Seconds per call of `engine` on `shape`, over calls for about 20 ms.
fn seconds_per_call(engine: Engine, shape: &Shape, (a, b, c): (&[f32], &[f32], &mut [f32])) -> f64 {
    let (m, k, n) = shape.dims;
    let call = |c: &mut [f32]| match engine {
        Engine::Kernels(isa) => {
            product_with(isa, shape.dims, a, shape.a, b, shape.b, c, Epilogue::default()).expect("the operands fit")
        }
        Engine::Runtime => {
            product(shape.dims, a, shape.a, b, shape.b, c, Epilogue::default()).expect("the operands fit")
        }
        Engine::Matrixmultiply => {
            let s = |x: usize| x as isize;
            // SAFETY: `span` sized a and b for these strides; c holds m·n values.
            #[allow(unsafe_code)]
            unsafe {
                matrixmultiply::sgemm(
                    m,
                    k,
                    n,
                    1.0,
                    a.as_ptr(),
                    s(shape.a.0),
                    s(shape.a.1),
                    b.as_ptr(),
                    s(shape.b.0),
                    s(shape.b.1),
                    0.0,
                    c.as_mut_ptr(),
                    s(n),
                    1,
                )
            }
        }
    };
    call(c);
    let start = Instant::now();
    call(c);
    let calls = (0.02 / start.elapsed().as_secs_f64().max(1e-7)).clamp(1.0, 10_000.0) as usize;
    let start = Instant::now();
    for _ in 0..calls {
        call(c);
    }
    start.elapsed().as_secs_f64() / calls as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(5).max(1);
    let kernels: Vec<Engine> = Isa::available().into_iter().map(Engine::Kernels).collect();
    println!("one thread, {rounds} interleaved rounds, medians; time per call and GMAC/s (of the dense product)");
    for shape in &SHAPES {
        let runtime = (shape.dims.0 <= FEW_ROWS).then_some(Engine::Runtime);
        let engines: Vec<Engine> = kernels.iter().copied().chain(runtime).chain([Engine::Matrixmultiply]).collect();
        let (m, k, n) = shape.dims;
        let a = if shape.images { images(m) } else { values(span((m, k), shape.a), 1) };
        let b = values(span((k, n), shape.b), 2);
        let mut c = vec![0.0f32; m * n];
        let mut times = vec![Vec::new(); engines.len()];
        for _ in 0..rounds {
            for (engine, times) in engines.iter().zip(&mut times) {
                times.push(seconds_per_call(*engine, shape, (&a, &b, &mut c)));
            }
        }
        let medians: Vec<f64> = times.into_iter().map(median).collect();
        let reference = medians[medians.len() - 1];
        println!("{} ({m} × {k} × {n}):", shape.name);
        for (engine, seconds) in engines.iter().zip(&medians) {
            let gmacs = (m * k * n) as f64 / seconds / 1e9;
            let ratio = reference / seconds;
            println!(
                "  {:16} {:9.1} µs {:6.1} GMAC/s  {ratio:5.2}× matrixmultiply",
                engine.name(),
                seconds * 1e6,
                gmacs
            );
        }
    }
}
