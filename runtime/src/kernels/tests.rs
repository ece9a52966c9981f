use super::*;

/// `x`'s planes with `p` values of `fill` added on each side.
fn padded(x: &[f64], (planes, h, w): (usize, usize, usize), p: usize, fill: f64) -> Vec<f64> {
    let (ph, pw) = (h + 2 * p, w + 2 * p);
    let mut out = vec![fill; planes * ph * pw];
    for (plane, values) in x.chunks_exact(h * w).enumerate() {
        for (r, row) in values.chunks_exact(w).enumerate() {
            out[(plane * ph + r + p) * pw + p..][..w].copy_from_slice(row);
        }
    }
    out
}

/// The inverse of `padded`: each plane's values inside its padding.
fn inside_padding(x: &[f64], (planes, h, w): (usize, usize, usize), p: usize) -> Vec<f64> {
    let pw = w + 2 * p;
    let plane = (h + 2 * p) * pw;
    (0..planes).flat_map(|c| (0..h).flat_map(move |r| x[c * plane + (r + p) * pw + p..][..w].to_vec())).collect()
}

/// Padded pooling is pooling over the input padded by hand, with −∞ for
/// a maximum and zeros for a mean; its gradient is that pooling's, the
/// padding's share dropped. Every window, stride and padding up to half
/// the window, on planes of odd and even sizes.
#[test]
fn padded_pooling_is_pooling_of_the_padded_input() {
    let (planes, mut state) = (3, 7u64);
    let mut random = || {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    for (h, w) in [(1, 1), (2, 5), (5, 4), (7, 7)] {
        for kernel in 1..=4 {
            for stride in 1..=3 {
                for p in 1..=kernel / 2 {
                    if kernel > h + 2 * p || kernel > w + 2 * p {
                        continue;
                    }
                    let taps = Taps { kernel, stride, padding: p, dilation: 1 };
                    let win = Window { batch: 1, channels: planes, height: h, width: w, rows: taps, cols: taps };
                    let by_hand = Taps { padding: 0, ..taps };
                    let wide = Window { height: h + 2 * p, width: w + 2 * p, rows: by_hand, cols: by_hand, ..win };
                    let x: Vec<f64> = (0..planes * h * w).map(|_| random()).collect();
                    let outputs = planes * win.out_height() * win.out_width();
                    assert_eq!((win.out_height(), win.out_width()), (wide.out_height(), wide.out_width()));
                    let g: Vec<f64> = (0..outputs).map(|_| random()).collect();
                    for max in [true, false] {
                        let xp = padded(&x, (planes, h, w), p, if max { f64::NEG_INFINITY } else { 0.0 });
                        let (mut y, mut reference) = (vec![0.0; outputs], vec![0.0; outputs]);
                        pool(&x, &mut y, win, max);
                        pool(&xp, &mut reference, wide, max);
                        let case = format!("{h}×{w}, kernel {kernel}, stride {stride}, padding {p}, max {max}");
                        assert_eq!(y, reference, "{case}");
                        let (mut dx, mut dxp) = (vec![f64::NAN; x.len()], vec![f64::NAN; xp.len()]);
                        pool_backward(&x, &g, &mut dx, win, (max, false));
                        pool_backward(&xp, &g, &mut dxp, wide, (max, false));
                        assert_eq!(dx, inside_padding(&dxp, (planes, h, w), p), "{case}");
                    }
                }
            }
        }
    }
}
