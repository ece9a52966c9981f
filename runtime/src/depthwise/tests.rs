//! Depthwise and grouped convolutions, through the routines generated code
//! calls (which pick the kernels), against the reference loops; the
//! depthwise kernels in each instruction set's vectors against each other;
//! and the same bits whether a batch's images run on one thread or several.

use crate::gemm::Isa;
use crate::kernels::{self, Epilogue, Taps, Window};
use crate::spatial::{nnc_conv2d, nnc_conv2d_grad_input, nnc_conv2d_grad_weight, set_parallel_images};

fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0 - 1.0).collect()
}

fn assert_close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{what}[{i}]: {x} vs {y}");
    }
}

/// A convolution to test: its window, filters and groups.
#[derive(Clone, Copy)]
struct Case {
    win: Window,
    filters: usize,
    groups: usize,
}

impl Case {
    /// `groups` groups of `per_group` channels, `multiplier` filters per
    /// group, over `batch` images of `height × width`.
    fn new(
        (batch, groups, per_group, multiplier): (usize, usize, usize, usize),
        (height, width): (usize, usize),
        rows: Taps,
        cols: Taps,
    ) -> Case {
        let win = Window { batch, channels: groups * per_group, height, width, rows, cols };
        Case { win, filters: groups * multiplier, groups }
    }

    fn lens(&self) -> (usize, usize, usize) {
        let win = self.win;
        let image = win.batch * win.channels * win.height * win.width;
        let filter = self.filters * win.channels / self.groups * win.area();
        (image, filter, win.batch * self.filters * win.out_height() * win.out_width())
    }

    /// The routines' forward pass (bias, ReLU), input and weight gradients.
    fn run(&self, x: &[f32], w: &[f32], g: &[f32], bias: &[f32]) -> [Vec<f32>; 3] {
        let (image, filter, out) = self.lens();
        let (f, groups, win) = (self.filters, self.groups, &self.win);
        let (mut y, mut dx, mut dw) = (vec![0.0; out], vec![0.0; image], vec![0.0; filter]);
        nnc_conv2d(x.as_ptr(), w.as_ptr(), y.as_mut_ptr(), win, f, groups, bias.as_ptr(), 1, crate::UNVERSIONED, 0);
        nnc_conv2d_grad_input(w.as_ptr(), g.as_ptr(), dx.as_mut_ptr(), win, f, groups, std::ptr::null(), 0);
        nnc_conv2d_grad_weight(x.as_ptr(), g.as_ptr(), dw.as_mut_ptr(), win, f, groups);
        [y, dx, dw]
    }
}

fn taps(kernel: usize, stride: usize, padding: usize, dilation: usize) -> Taps {
    Taps { kernel, stride, padding, dilation }
}

/// Depthwise (one channel per group, one or more filters each) and
/// grouped convolutions of every kernel the routines pick between:
/// strides, dilations, padding wider than the kernel, one-row kernels
/// (a `conv1d`), odd sizes, and groups large enough for the direct and
/// Winograd kernels.
fn cases() -> Vec<Case> {
    let three = taps(3, 1, 1, 1);
    vec![
        Case::new((3, 8, 1, 1), (9, 7), three, three),
        Case::new((2, 5, 1, 2), (11, 10), taps(5, 2, 2, 1), taps(5, 2, 2, 1)),
        Case::new((2, 4, 1, 3), (8, 13), taps(3, 1, 2, 2), taps(2, 3, 0, 1)),
        Case::new((5, 6, 1, 1), (1, 17), taps(1, 1, 0, 1), taps(4, 1, 3, 1)),
        Case::new((1, 3, 1, 1), (4, 4), taps(3, 1, 4, 3), taps(3, 1, 4, 3)),
        Case::new((3, 2, 3, 2), (9, 9), three, three),
        Case::new((2, 4, 2, 3), (10, 7), taps(3, 2, 1, 1), taps(2, 1, 0, 2)),
        Case::new((2, 2, 32, 32), (6, 6), three, three),
    ]
}

#[test]
fn grouped_convolutions_match_the_reference_loops() {
    for (i, case) in cases().iter().enumerate() {
        let (image, filter, out) = case.lens();
        let (x, w, g, bias) = (values(image, 1), values(filter, 2), values(out, 3), values(case.filters, 4));
        let [y, dx, dw] = case.run(&x, &w, &g, &bias);

        let (win, f, groups) = (case.win, case.filters, case.groups);
        let mut expected = vec![0.0; out];
        kernels::conv2d(&x, &w, &mut expected, win, f, groups);
        let plane = win.out_height() * win.out_width();
        for (j, v) in expected.iter_mut().enumerate() {
            *v = (*v + bias[j / plane % f]).max(0.0);
        }
        let (mut dx_ref, mut dw_ref) = (vec![0.0; image], vec![0.0; filter]);
        kernels::conv2d_backward(&x, &w, &g, &mut dx_ref, &mut dw_ref, win, (f, groups));

        if crate::depthwise::applies(win.channels, groups) {
            // The same terms in the same order: the same bits.
            assert_eq!(y, expected, "case {i}: forward");
            assert_eq!(dx, dx_ref, "case {i}: input gradient");
        } else {
            assert_close(&y, &expected, &format!("case {i}: forward"));
            assert_close(&dx, &dx_ref, &format!("case {i}: input gradient"));
        }
        assert_close(&dw, &dw_ref, &format!("case {i}: weight gradient"));
    }
}

#[test]
fn grouped_convolutions_give_the_same_bits_on_any_thread_count() {
    for case in cases() {
        let (image, filter, out) = case.lens();
        let (x, w, g, bias) = (values(image, 5), values(filter, 6), values(out, 7), values(case.filters, 8));
        set_parallel_images(false);
        let alone = case.run(&x, &w, &g, &bias);
        set_parallel_images(true);
        let spread = case.run(&x, &w, &g, &bias);
        set_parallel_images(false);
        assert_eq!(alone, spread);
    }
}

/// The depthwise kernels compiled for every instruction set this CPU has,
/// and for none: the forward pass and input gradient give the same bits
/// in each, the weight gradient the same sums.
#[test]
fn depthwise_kernels_give_the_same_bits_in_every_instruction_set() {
    let isas: Vec<Option<Isa>> = Isa::available().into_iter().map(Some).chain([None]).collect();
    for case in cases().iter().filter(|case| super::applies(case.win.channels, case.groups)) {
        let win = Window { batch: 1, ..case.win };
        let (image, filter, out) = Case { win, ..*case }.lens();
        let (x, w, g, bias) = (values(image, 9), values(filter, 10), values(out, 11), values(case.filters, 12));
        let epilogue = Epilogue { bias: Some(&bias), relu: true };
        let results: Vec<[Vec<f32>; 3]> = isas
            .iter()
            .map(|&isa| {
                let (mut y, mut dx, mut dw) = (vec![0.0; out], vec![0.0; image], vec![0.0; filter]);
                super::forward_on(isa, (&w, case.filters, &x, win, epilogue), &mut y);
                super::input_gradient_on(isa, (&w, case.filters, &g, win), &mut dx);
                super::weight_gradient_on(isa, (&x, case.filters, &g, win), &mut dw);
                [y, dx, dw]
            })
            .collect();
        assert!(results.windows(2).all(|pair| pair[0] == pair[1]), "{isas:?}");
    }
}
