use std::cell::Cell;
use std::thread::LocalKey;

use super::*;

/// A spread of values in [-1, 1) from an index.
pub(super) fn value(i: usize, seed: usize) -> f32 {
    ((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0 - 1.0
}

/// A row-major `rows × cols` matrix as an operand read from the copy
/// `stored`, which holds it as it is or transposed.
pub(super) fn operand(
    matrix: &[f32],
    (rows, cols): (usize, usize),
    transposed: bool,
    stored: &mut Vec<f32>,
) -> Operand {
    *stored = if transposed {
        (0..rows * cols).map(|i| matrix[i % rows * cols + i / rows]).collect()
    } else {
        matrix.to_vec()
    };
    let (r, c) = if transposed { (1, rows as isize) } else { (cols as isize, 1) };
    Operand { ptr: stored.as_ptr(), rows: r, cols: c }
}

/// c = a·b (+ c when `accumulate`, c starting at its index's value), each
/// operand read as it is or from its transpose, with a test switch of a
/// skipping mechanism (`switch`) set to `on` for its length: c's bits.
pub(super) fn product_bits(
    isa: Isa,
    (m, k, n): (usize, usize, usize),
    (a, ta): (&[f32], bool),
    (b, tb): (&[f32], bool),
    accumulate: bool,
    (switch, on): (&'static LocalKey<Cell<bool>>, bool),
) -> Vec<u32> {
    let (mut stored_a, mut stored_b) = (Vec::new(), Vec::new());
    let a = operand(a, (m, k), ta, &mut stored_a);
    let b = operand(b, (k, n), tb, &mut stored_b);
    let mut c: Vec<f32> = (0..m * n).map(|i| value(i, 3)).collect();
    switch.set(on);
    // SAFETY: a holds m × k and b k × n through their strides; c holds m × n.
    unsafe { gemm(isa, (m, k, n), a, b, (c.as_mut_ptr(), n), accumulate, Epilogue::default()) };
    switch.set(true);
    c.iter().map(|v| v.to_bits()).collect()
}

/// A product of a b read in place has the bits of the same product
/// packed by `gemm`: k of one block and of several, n of whole panels
/// and not, rows of several blocks and a short one, b's rows padded.
#[test]
fn a_product_read_in_place_has_gemms_bits() {
    let values = |n: usize, seed: usize| -> Vec<f32> { (0..n).map(|i| value(i, seed)).collect() };
    for isa in Isa::available() {
        for (m, k, n) in [(13, 40, 96), (30, 700, 50), (12, 256, 7), (5, 513, 33)] {
            let (a, b) = (values(m * k, 1), values(k * n, 2));
            // b's rows padded to whole panels of 32, the padding NaN (its lanes are not stored).
            let ldb = n.next_multiple_of(32);
            let mut padded = vec![f32::NAN; k * ldb];
            for (row, values) in padded.chunks_exact_mut(ldb).zip(b.chunks_exact(n)) {
                row[..n].copy_from_slice(values);
            }
            let (mut expected, mut c) = (vec![f32::NAN; m * n], vec![f32::NAN; m * n]);
            let operand = |v: &[f32], rows: usize| Operand { ptr: v.as_ptr(), rows: rows as isize, cols: 1 };
            // SAFETY: a holds m × k, b k × n (padded to ldb), c m × n, all row-major.
            unsafe {
                let plain = Epilogue::default();
                gemm(isa, (m, k, n), operand(&a, k), operand(&b, n), (expected.as_mut_ptr(), n), false, plain);
                multiply_in_place(isa, (m, k, n), operand(&a, k), (padded.as_ptr(), ldb), c.as_mut_ptr());
            }
            let same = c.iter().zip(&expected).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "{isa:?} {m}×{k}×{n}");
        }
    }
}

/// A product over k = 0 is zero, whatever c held (no block of k writes
/// it), and its epilogue still applies: the bias, then the ReLU.
#[test]
fn an_empty_sum_writes_zeros() {
    let bias = [1.5, -2.0, 0.25];
    for isa in Isa::available() {
        for (epilogue, expected) in [
            (Epilogue::default(), [0.0; 3]),
            (Epilogue { bias: Some(&bias), relu: false }, bias),
            (Epilogue { bias: Some(&bias), relu: true }, [1.5, 0.0, 0.25]),
        ] {
            let mut c = vec![f32::NAN; 6];
            let empty = Operand { ptr: [0.0f32; 1].as_ptr(), rows: 0, cols: 1 };
            // SAFETY: with k = 0 neither operand is read; c holds 2 × 3.
            unsafe { gemm(isa, (2, 0, 3), empty, empty, (c.as_mut_ptr(), 3), false, epilogue) };
            assert_eq!(c, [expected, expected].concat(), "{isa:?}");
        }
    }
}
