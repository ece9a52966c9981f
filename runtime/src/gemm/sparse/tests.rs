use std::cell::Cell;

use super::super::tests::{operand, product_bits, value};
use super::super::{Isa, Operand, block_is_sparse, find_sparse_blocks, pack, rows_per_block};
use super::{Rows, multiply_rows};

thread_local! {
    /// `super::walked`, for this thread's products.
    pub(super) static WALKED: Cell<bool> = const { Cell::new(true) };
}

/// An index's bits mixed (splitmix64's finalizer): no pattern along rows or columns.
fn mixed(i: usize) -> u64 {
    let mut x = (i as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// `m × k` values mostly zero where every row is (one column in ten
/// nonzero, the next −0) and at a few columns of each row's own, one
/// NaN, and rows 12..24 all nonzero (a dense block among sparse ones).
fn mostly_zeros(m: usize, k: usize) -> Vec<f32> {
    let mut a: Vec<f32> = (0..m * k)
        .map(|i| match (i % k % 10, (i % k + 3 * (i / k)) % 41) {
            (0, _) | (_, 0) => value(i, 1),
            (1, _) => -0.0,
            _ => 0.0,
        })
        .collect();
    a[k + 3] = f32::NAN;
    for i in (12 * k..24 * k).take_while(|&i| i < m * k) {
        a[i] = value(i, 2);
    }
    a
}

/// Which blocks of rows of a (read as it is or from its transpose)
/// walk, every block counted.
fn sparse_blocks(isa: Isa, (m, k, n): (usize, usize, usize), a: &[f32], transposed: bool) -> Vec<bool> {
    use std::arch::x86_64::{__m256, __m512};
    let (mut blocks, mut stored, mut by_rows) = (Vec::new(), Vec::new(), Vec::new());
    let a = operand(a, (m, k), transposed, &mut stored);
    let mr = match isa {
        Isa::Avx512 => rows_per_block::<__m512>(),
        Isa::Avx2 => rows_per_block::<__m256>(),
    };
    // SAFETY: a holds m × k; `isa` runs on this CPU.
    unsafe {
        let walked = match isa {
            Isa::Avx512 => find_sparse_blocks::<__m512>((m, k, n), a, mr, &mut blocks, &mut by_rows),
            Isa::Avx2 => find_sparse_blocks::<__m256>((m, k, n), a, mr, &mut blocks, &mut by_rows),
        };
        assert!(blocks.is_empty() || walked.cols == 1, "a walk reads rows");
        let rows = |b: usize| (mr.min(m - b * mr), k);
        (0..blocks.len())
            .map(|b| match isa {
                Isa::Avx512 => block_is_sparse::<__m512>(walked.at(b * mr, 0), rows(b), &mut blocks[b], false),
                Isa::Avx2 => block_is_sparse::<__m256>(walked.at(b * mr, 0), rows(b), &mut blocks[b], false),
            })
            .collect()
    }
}

/// Sparse blocks of rows (ragged ones, k in uneven blocks, columns past
/// one packed block and not a whole panel, runs of sparse blocks longer
/// than one walk takes) of a row-major or a transposed a give the dense
/// kernel's bits, added to c or not, with b row-major or transposed, and
/// with an infinity and a NaN in b (which zeros of a meet), on each
/// kernel this CPU runs.
#[test]
fn sparse_blocks_have_the_dense_kernels_bits() {
    for isa in Isa::available() {
        for dims @ (m, k, n) in [(30, 785, 130), (13, 300, 67), (40, 64, 64), (25, 1000, 600), (230, 300, 67)] {
            let a = mostly_zeros(m, k);
            for ta in [false, true] {
                let blocks = sparse_blocks(isa, dims, &a, ta);
                assert!(blocks[0] && blocks[1..].contains(&false) == (m > 12), "{isa:?} {dims:?} {ta}: {blocks:?}");
            }
            let mut b: Vec<f32> = (0..k * n).map(|i| value(i, 4)).collect();
            for (weights, case) in [(false, "finite"), (true, "an infinity and a NaN")] {
                if weights {
                    (b[5 * n + 7], b[(k - 1) * n + 3]) = (f32::INFINITY, f32::NAN);
                }
                for (ta, tb, accumulate) in [
                    (false, false, false),
                    (false, true, false),
                    (false, false, true),
                    (true, false, false),
                    (true, true, true),
                ] {
                    let sparse = product_bits(isa, dims, (&a, ta), (&b, tb), accumulate, (&WALKED, true));
                    let dense = product_bits(isa, dims, (&a, ta), (&b, tb), accumulate, (&WALKED, false));
                    assert_eq!(
                        sparse, dense,
                        "{isa:?} {dims:?} {case}, a transposed {ta}, b transposed {tb}, accumulate {accumulate}"
                    );
                }
            }
        }
    }
}

/// A walk of rows says whether it paid: yes for rows mostly zero in the
/// same places, no for dense rows (on which the next blocks are counted).
#[test]
fn a_walk_says_whether_it_paid() {
    use std::arch::x86_64::{__m256, __m512};
    let (m, k, n) = (24, 200, 64);
    let b: Vec<f32> = (0..k * n).map(|i| value(i, 4)).collect();
    let sparse = mostly_zeros(12, k).repeat(2);
    let dense: Vec<f32> = (0..m * k).map(|i| value(i, 5)).collect();
    for isa in Isa::available() {
        let width = 2 * if isa == Isa::Avx512 { 16 } else { 8 };
        let mut panels = vec![0.0; n.div_ceil(width) * width * k];
        let mut c = vec![0.0; m * n];
        // SAFETY: b holds k × n, row-major.
        unsafe {
            pack(Operand { ptr: b.as_ptr(), rows: n as isize, cols: 1 }, (0, k), (0, n), (width, false), &mut panels)
        };
        let mut walk = |a: &[f32]| {
            let (panels, c) = (panels.as_ptr(), c.as_mut_ptr());
            let rows = Rows { a: a.as_ptr(), lda: k, rows: m, panels, width, nc: n, c, ldc: n, accumulate: false };
            let k_blocks = std::iter::once((0, k, 0));
            // SAFETY: a holds m × k, the panels b's one block of k, c m × n; `isa` runs here.
            unsafe {
                match isa {
                    Isa::Avx512 => multiply_rows::<__m512>(rows, k_blocks, &mut Vec::new()),
                    Isa::Avx2 => multiply_rows::<__m256>(rows, k_blocks, &mut Vec::new()),
                }
            }
        };
        assert!(walk(&sparse), "{isa:?}");
        assert!(!walk(&dense), "{isa:?}");
    }
}

/// No block counts as sparse when the first rows are dense (or their
/// zeros are scattered) or c has few columns, whether a is row-major or
/// transposed; a transposed a is counted from more rows than its first
/// block.
#[test]
fn dense_first_rows_or_few_columns_keep_the_dense_kernel() {
    for isa in Isa::available() {
        let dims @ (m, k, n) = (30, 100, 64);
        let a = mostly_zeros(m, k);
        // About one value in three nonzero, scattered: a group of rows walks most of k.
        let scattered: Vec<f32> = (0..m * k).map(|i| f32::from(u8::from(mixed(i) % 1000 < 350))).collect();
        for ta in [false, true] {
            assert!(sparse_blocks(isa, dims, &a, ta).contains(&true));
            assert!(sparse_blocks(isa, (m, k, n - 1), &a, ta).is_empty());
            assert!(sparse_blocks(isa, dims, &scattered, ta).is_empty());
        }
        // Dense first rows, sparse after them: a row-major a's first block
        // decides, a transposed a's first two.
        let dense_first: Vec<f32> = a.iter().enumerate().map(|(i, &x)| if i < 12 * k { 1.0 } else { x }).collect();
        assert!(sparse_blocks(isa, dims, &dense_first, false).is_empty());
        let mr = if isa == Isa::Avx512 { 12 } else { 6 };
        let sparse_after: Vec<f32> = a.iter().enumerate().map(|(i, &x)| if i < mr / 2 * k { 1.0 } else { x }).collect();
        assert!(sparse_blocks(isa, dims, &sparse_after, false).is_empty());
        assert!(sparse_blocks(isa, dims, &sparse_after, true).contains(&true));
    }
}
