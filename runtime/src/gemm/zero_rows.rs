//! Rows of a packed panel of b that are all zero, skipped by the kernel: a
//! weight gradient `gᵀ·x` has the layer's inputs as its right operand, and
//! for raw images (a dark border) a third of a 32-column panel's rows are
//! zero at batch 256 (MNIST).
//!
//! Skipping a zero row leaves out `a(i, p)·0` from each chain, which adds
//! nothing when a's values are finite (`blocked` checks each packed block
//! of rows): the same multiply-adds in the same order, the same bits but
//! for the sign of a zero sum (as in `sparse`).
#![allow(unsafe_code)]

use crate::simd::Vector;

/// A panel is walked when at most this share of its rows (in eighths) is
/// nonzero: a walked row costs its index's load, and the lists their pass.
const WALKED_EIGHTHS: usize = 6;

/// The nonzero rows of each panel of a packed block of b.
#[derive(Default)]
pub(super) struct Walks {
    /// Row indices, panel after panel.
    rows: Vec<u16>,
    /// Each panel's (first, count) in `rows`, or `None` to run dense.
    spans: Vec<Option<(usize, usize)>>,
}

impl Walks {
    /// Lists the nonzero rows of the `panels` panels (`kc` rows of `width`
    /// values each, one after another) from `block`, replacing earlier lists.
    ///
    /// # Safety
    /// `block` holds the panels; the caller is compiled for `V`'s
    /// instruction set.
    #[inline(always)]
    pub(super) unsafe fn list<V: Vector>(&mut self, block: *const f32, (panels, kc, width): (usize, usize, usize)) {
        self.rows.clear();
        self.spans.clear();
        for panel in 0..panels {
            let first = self.rows.len();
            for p in 0..kc {
                // SAFETY: the caller's contract: row p of the panel.
                if !unsafe { is_zero::<V>(block.add((panel * kc + p) * width), width) } {
                    self.rows.push(p as u16);
                }
            }
            let count = self.rows.len() - first;
            if count * 8 > kc * WALKED_EIGHTHS {
                self.rows.truncate(first);
                self.spans.push(None);
            } else {
                self.spans.push(Some((first, count)));
            }
        }
    }

    /// Panel `panel`'s nonzero rows, if it is walked.
    pub(super) fn of(&self, panel: usize) -> Option<&[u16]> {
        self.spans[panel].map(|(first, count)| &self.rows[first..first + count])
    }
}

/// Whether zero rows are skipped (tests turn it off on their thread to
/// compare with the dense kernel).
pub(super) fn skipped() -> bool {
    #[cfg(test)]
    {
        tests::SKIPPED.get()
    }
    #[cfg(not(test))]
    {
        true
    }
}

/// Whether a product's right operand is worth listing: at least a quarter
/// of its first panel's rows (`kc` of `width` values) zero. A dense b pays
/// for this one count.
///
/// # Safety
/// As for `Walks::list`, for one panel.
#[inline(always)]
pub(super) unsafe fn worth_listing<V: Vector>(panel: *const f32, (kc, width): (usize, usize)) -> bool {
    // SAFETY: the caller's contract.
    let zeros = (0..kc).filter(|&p| unsafe { is_zero::<V>(panel.add(p * width), width) }).count();
    zeros * 4 >= kc
}

/// Whether the `width` values from `row` are all zero (±0).
///
/// # Safety
/// `row` holds `width` values, a whole number of `V`'s vectors.
#[inline(always)]
unsafe fn is_zero<V: Vector>(row: *const f32, width: usize) -> bool {
    // SAFETY: the caller's contract.
    (0..width).step_by(V::LANES).all(|l| unsafe { V::nonzeros(row.add(l)) } == 0)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::super::Isa;
    use super::super::tests::{product_bits, value};
    use super::{Walks, worth_listing};

    thread_local! {
        /// `super::skipped`, for this thread's products.
        pub(super) static SKIPPED: Cell<bool> = const { Cell::new(true) };
    }

    /// Products whose b has zero rows in each panel (+0 and −0; k in
    /// uneven blocks, ragged blocks of rows, a narrow last panel, more
    /// columns than one packed block) give the dense kernel's bits, with a
    /// finite, and with an infinity and a NaN in a (which the zero rows
    /// meet), on each kernel this CPU runs.
    #[test]
    fn skipped_zero_rows_give_the_dense_kernels_bits() {
        for isa in Isa::available() {
            for dims @ (m, k, n) in [(30, 300, 100), (13, 64, 96), (25, 600, 1050), (12, 40, 33)] {
                let b: Vec<f32> = (0..k * n)
                    .map(|i| match ((i / n + i % n / 32) % 3, (i / n + i % n / 16) % 7) {
                        (0, _) => 0.0,
                        (_, 0) => -0.0,
                        _ => value(i, 2),
                    })
                    .collect();
                let mut a: Vec<f32> = (0..m * k).map(|i| value(i, 1)).collect();
                for case in ["finite", "an infinity and a NaN"] {
                    if case != "finite" {
                        (a[3 * k], a[(m - 1) * k + k / 2]) = (f32::INFINITY, f32::NAN);
                    }
                    for (ta, tb, accumulate) in [(false, false, false), (true, false, true), (false, true, false)] {
                        let operands = ((&a[..], ta), (&b[..], tb));
                        let skipped = product_bits(isa, dims, operands.0, operands.1, accumulate, (&SKIPPED, true));
                        let dense = product_bits(isa, dims, operands.0, operands.1, accumulate, (&SKIPPED, false));
                        assert_eq!(skipped, dense, "{isa:?} {dims:?} {case}, a transposed {ta}, b transposed {tb}");
                    }
                }
            }
        }
    }

    /// A panel's list holds exactly its rows with a nonzero value; a panel
    /// with too few zero rows runs dense; a dense first panel is not worth
    /// listing.
    #[test]
    fn lists_hold_the_nonzero_rows() {
        use std::arch::x86_64::__m256;
        if !Isa::available().contains(&Isa::Avx2) {
            return;
        }
        let (kc, width) = (16, 16);
        // Panel 0: rows 0, 5 and 9 nonzero (one value each); panel 1: all rows.
        let mut block = vec![0.0f32; 2 * kc * width];
        for (p, l) in [(0, 3), (5, 15), (9, 8)] {
            block[p * width + l] = 1.0;
        }
        block[kc * width..].fill(-2.0);
        let mut walks = Walks::default();
        // SAFETY: the block holds two panels of kc rows of width values; the CPU has AVX2.
        unsafe {
            walks.list::<__m256>(block.as_ptr(), (2, kc, width));
            assert_eq!(walks.of(0), Some(&[0u16, 5, 9][..]));
            assert_eq!(walks.of(1), None);
            assert!(worth_listing::<__m256>(block.as_ptr(), (kc, width)));
            assert!(!worth_listing::<__m256>(block[kc * width..].as_ptr(), (kc, width)));
        }
    }
}
