use super::*;
use crate::kernels::Taps;

fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0 - 1.0).collect()
}

/// A ReLU's gradient fused into the input gradient gives the bits of the
/// input gradient times [y > 0] on every path the input gradient takes:
/// Winograd over several blocks of tiles, the direct kernel (5×5), the
/// unfolded product (stride 2), groups, and depthwise; y has zeros,
/// negative and positive values, and the batch spans several parts.
#[test]
fn a_fused_relu_gradient_zeroes_the_input_gradient_where_the_relu_was_not_positive() {
    // (channels, height, width, kernel, stride, padding, filters, groups)
    let cases = [
        (32, 70, 37, 3, 1, 1, 40, 1),
        (32, 9, 7, 3, 1, 0, 33, 1),
        (6, 11, 10, 5, 1, 2, 8, 1),
        (5, 9, 8, 3, 2, 1, 7, 1),
        (64, 12, 13, 3, 1, 1, 64, 2),
        (8, 10, 9, 3, 1, 1, 8, 8),
    ];
    for (channels, height, width, kernel, stride, padding, filters, groups) in cases {
        let taps = Taps { kernel, stride, padding, dilation: 1 };
        let win = Window { batch: 3, channels, height, width, rows: taps, cols: taps };
        let (_, image, filter, out) = unsafe { conv_sizes(&win, filters, groups) };
        let (w, g) = (values(filter, 1), values(out, 2));
        // A ReLU's outputs: a third zeros, the rest of both signs (a
        // gradient must be zeroed where y ≤ 0, not only where y < 0).
        let y: Vec<f32> = values(image, 3).iter().enumerate().map(|(i, &v)| if i % 3 == 0 { 0.0 } else { v }).collect();
        let run = |positive: *const f32| {
            let mut dx = vec![f32::NAN; image];
            nnc_conv2d_grad_input(w.as_ptr(), g.as_ptr(), dx.as_mut_ptr(), &win, filters, groups, positive, 0);
            dx
        };
        let (plain, fused) = (run(std::ptr::null()), run(y.as_ptr()));
        let expected: Vec<f32> = plain.iter().zip(&y).map(|(&d, &y)| d * if y > 0.0 { 1.0 } else { 0.0 }).collect();
        let case =
            format!("{channels}×{height}×{width}, k{kernel} s{stride} p{padding}, {filters} filters, {groups} groups");
        assert!(
            plain.iter().all(|v| v.is_finite()) && plain.iter().filter(|&&v| v != 0.0).count() > image / 2,
            "{case}"
        );
        for (i, (a, e)) in fused.iter().zip(&expected).enumerate() {
            assert_eq!(a.to_bits(), e.to_bits(), "{case} [{i}]: {a} vs {e}");
        }
    }
}
