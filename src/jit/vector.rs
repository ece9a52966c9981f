//! Element-wise math on f32x4 in Cranelift IR: exp by range reduction and a
//! polynomial, and sigmoid, tanh, the normal distribution function,
//! softplus and the selects built on it. No libm calls.
// The polynomial coefficients are quoted as published (Cephes), digits and all.
#![allow(clippy::excessive_precision)]

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value, types};
use cranelift_frontend::FunctionBuilder;

const V: types::Type = types::F32X4;
const I: types::Type = types::I32X4;

pub fn splat(b: &mut FunctionBuilder, x: f32) -> Value {
    let c = b.ins().f32const(x);
    b.ins().splat(V, c)
}

fn splat_i(b: &mut FunctionBuilder, x: u32) -> Value {
    let c = b.ins().iconst(types::I32, i64::from(x as i32));
    b.ins().splat(I, c)
}

fn to_int(b: &mut FunctionBuilder, x: Value) -> Value {
    b.ins().bitcast(I, MemFlagsData::new(), x)
}

fn to_float(b: &mut FunctionBuilder, x: Value) -> Value {
    b.ins().bitcast(V, MemFlagsData::new(), x)
}

/// A lane mask (all ones where `a cc b`) as f32x4.
pub fn mask(b: &mut FunctionBuilder, cc: FloatCC, a: Value, c: Value) -> Value {
    let m = b.ins().fcmp(cc, a, c);
    to_float(b, m)
}

/// `m ? a : c` lane by lane.
pub fn select(b: &mut FunctionBuilder, m: Value, a: Value, c: Value) -> Value {
    let x = b.ins().band(a, m);
    let y = b.ins().band_not(c, m);
    b.ins().bor(x, y)
}

/// `x > 0 ? a : c`
pub fn select_positive(b: &mut FunctionBuilder, x: Value, a: Value, c: Value) -> Value {
    let zero = splat(b, 0.0);
    let m = mask(b, FloatCC::GreaterThan, x, zero);
    select(b, m, a, c)
}

/// eˣ: ≈1 ulp wherever the result is a normal f32; +inf above 88.7228,
/// 0 where the result would be subnormal (below −87.3365), NaN kept.
pub fn exp(b: &mut FunctionBuilder, x: Value) -> Value {
    // Above 88, scale by 2ⁿ⁻¹·2 so the exponent field never overflows.
    let eighty_eight = splat(b, 88.0);
    let high = mask(b, FloatCC::GreaterThan, x, eighty_eight);
    // Clamp on the bit pattern: one signed and one unsigned integer min.
    let xi = to_int(b, x);
    let hi = splat_i(b, 88.7228f32.to_bits());
    let xi = b.ins().smin(xi, hi);
    let lo = splat_i(b, (-87.3365f32).to_bits());
    let xi = b.ins().umin(xi, lo);
    let xc = to_float(b, xi);
    // eˣ = 2ⁿ·eʳ with n = round(x·log₂e); rounding happens in the mantissa of 1.5·2²³.
    let (log2e, magic) = (splat(b, std::f32::consts::LOG2_E), splat(b, 12582912.0));
    let t = b.ins().fma(xc, log2e, magic);
    let n = b.ins().fsub(t, magic);
    let (c1, c2) = (splat(b, -0.693359375), splat(b, 2.12194440e-4));
    let r = b.ins().fma(n, c1, xc);
    let r = b.ins().fma(n, c2, r);
    let mut p = splat(b, 1.9875691500E-4);
    for c in [1.3981999507E-3, 8.3334519073E-3, 4.1665795894E-2, 1.6666665459E-1, 5.0000001201E-1] {
        let c = splat(b, c);
        p = b.ins().fma(p, r, c);
    }
    let r2 = b.ins().fmul(r, r);
    let y = b.ins().fma(p, r2, r);
    let one = splat(b, 1.0);
    let y = b.ins().fadd(y, one);
    let ti = to_int(b, t);
    let (bias, bias_high) = (splat_i(b, 127), splat_i(b, 126));
    let high_i = to_int(b, high);
    let keep = b.ins().band_not(bias, high_i);
    let lower = b.ins().band(bias_high, high_i);
    let bias = b.ins().bor(keep, lower);
    let e = b.ins().iadd(ti, bias);
    let e = b.ins().ishl_imm_u(e, 23);
    let scale = to_float(b, e);
    let y = b.ins().fmul(y, scale);
    let two = splat(b, 2.0);
    let factor = select(b, high, two, one);
    let y = b.ins().fmul(y, factor);
    // Saturate like f32::exp, and let NaN through.
    let (big, inf) = (splat(b, 88.7228), splat(b, f32::INFINITY));
    let m = mask(b, FloatCC::GreaterThan, x, big);
    let y = select(b, m, inf, y);
    let (small, zero) = (splat(b, -87.3365), splat(b, 0.0));
    let m = mask(b, FloatCC::LessThan, x, small);
    let y = select(b, m, zero, y);
    let m = mask(b, FloatCC::Unordered, x, x);
    select(b, m, x, y)
}

/// eˣ − 1 without the cancellation of `exp(x) − 1` near 0, where that
/// keeps only the digits of 1's neighbours (even from a correctly rounded
/// eˣ, an error of 2.2e-4 of the result at x = −1e-4, 6.1e-4 at −3e-5).
/// For |x| < ln 2 / 2, x + x²·q(x) with q the Taylor series of
/// (eˣ − 1 − x)/x² to x⁸ (what it drops is below 2⁻²⁶ of the result
/// there); beyond, `exp(x) − 1`, whose result is then at least 0.29 from
/// zero, so the subtraction loses nothing. NaN kept.
pub fn expm1(b: &mut FunctionBuilder, x: Value) -> Value {
    let mut q = splat(b, 1.0 / 3_628_800.0);
    for factorial in [362_880.0, 40_320.0, 5_040.0, 720.0, 120.0, 24.0, 6.0, 2.0] {
        let c = splat(b, 1.0 / factorial);
        q = b.ins().fma(q, x, c);
    }
    let x2 = b.ins().fmul(x, x);
    let near = b.ins().fma(x2, q, x);
    let e = exp(b, x);
    let one = splat(b, 1.0);
    let far = b.ins().fsub(e, one);
    let ax = abs(b, x);
    let half_ln2 = splat(b, std::f32::consts::LN_2 / 2.0);
    let m = mask(b, FloatCC::LessThan, ax, half_ln2);
    select(b, m, near, far)
}

/// 1/(1 + e⁻ˣ)
pub fn sigmoid(b: &mut FunctionBuilder, x: Value) -> Value {
    let neg = b.ins().fneg(x);
    let e = exp(b, neg);
    let one = splat(b, 1.0);
    let d = b.ins().fadd(one, e);
    b.ins().fdiv(one, d)
}

/// |x|, by clearing the sign bit with a constant, which a loop keeps in
/// a register (Cranelift's `fabs` builds its mask again at every use).
pub fn abs(b: &mut FunctionBuilder, x: Value) -> Value {
    let xi = to_int(b, x);
    let abs_mask = splat_i(b, 0x7fff_ffff);
    let ai = b.ins().band(xi, abs_mask);
    to_float(b, ai)
}

/// Φ(x) = erfc(−x/√2)/2, the standard normal distribution function. erfc of
/// |x|/√2 by the Chebyshev fit of Numerical Recipes (`erfcc`: relative error
/// below 1.2e-7 for every argument), so the left tail keeps its digits;
/// Φ(x) = 1 − Φ(−x) on the right.
pub fn normal_cdf(b: &mut FunctionBuilder, x: Value) -> Value {
    let ax = abs(b, x);
    let k = splat(b, std::f32::consts::FRAC_1_SQRT_2);
    let z = b.ins().fmul(ax, k);
    let (half, one) = (splat(b, 0.5), splat(b, 1.0));
    let d = b.ins().fma(z, half, one);
    let t = b.ins().fdiv(one, d);
    let mut p = splat(b, 0.17087277);
    for c in
        [-0.82215223, 1.48851587, -1.13520398, 0.27886807, -0.18628806, 0.09678418, 0.37409196, 1.00002368, -1.26551223]
    {
        let c = splat(b, c);
        p = b.ins().fma(p, t, c);
    }
    let nz = b.ins().fneg(z);
    let arg = b.ins().fma(nz, z, p);
    let e = exp(b, arg);
    let erfc = b.ins().fmul(t, e);
    let lower = b.ins().fmul(erfc, half);
    let upper = b.ins().fsub(one, lower);
    select_positive(b, x, upper, lower)
}

/// log(1 + eˣ) = max(x, 0) + log1p(e⁻ˡˣˡ). With u = 1 + e⁻ˡˣˡ in [1, 2], log u
/// is Cephes' logf on u = m·2ᵏ (m in [√½, √2), k 0 or 1), and
/// log1p(e) = log(u)·e/(u − 1) undoes the rounding of 1 + e (e itself once
/// 1 + e rounds to 1).
pub fn softplus(b: &mut FunctionBuilder, x: Value) -> Value {
    let ax = abs(b, x);
    let nax = b.ins().fneg(ax);
    let e = exp(b, nax);
    let one = splat(b, 1.0);
    let u = b.ins().fadd(one, e);
    let sqrt2 = splat(b, std::f32::consts::SQRT_2);
    let big = mask(b, FloatCC::GreaterThan, u, sqrt2);
    let half = splat(b, 0.5);
    let halved = b.ins().fmul(u, half);
    let m = select(b, big, halved, u);
    let k = b.ins().band(one, big);
    let f = b.ins().fsub(m, one);
    let z = b.ins().fmul(f, f);
    let mut p = splat(b, 7.0376836292E-2);
    for c in [
        -1.1514610310E-1,
        1.1676998740E-1,
        -1.2420140846E-1,
        1.4249322787E-1,
        -1.6668057665E-1,
        2.0000714765E-1,
        -2.4999993993E-1,
        3.3333331174E-1,
    ] {
        let c = splat(b, c);
        p = b.ins().fma(p, f, c);
    }
    let fz = b.ins().fmul(f, z);
    let y = b.ins().fmul(fz, p);
    let c1 = splat(b, -2.12194440e-4);
    let y = b.ins().fma(k, c1, y);
    let minus_half = splat(b, -0.5);
    let y = b.ins().fma(z, minus_half, y);
    let log_u = b.ins().fadd(f, y);
    let ln2_high = splat(b, 0.693359375);
    let log_u = b.ins().fma(k, ln2_high, log_u);
    let d = b.ins().fsub(u, one);
    let scaled = b.ins().fmul(log_u, e);
    let corrected = b.ins().fdiv(scaled, d);
    let zero = splat(b, 0.0);
    let rounded_away = mask(b, FloatCC::Equal, d, zero);
    let log1p = select(b, rounded_away, e, corrected);
    let positive = b.ins().fmax(x, zero);
    b.ins().fadd(positive, log1p)
}

/// tanh: an odd polynomial below |x| = 0.625 (no cancellation near 0), else
/// sign(x)·(1 − 2/(e²ˡˣˡ + 1)).
pub fn tanh(b: &mut FunctionBuilder, x: Value) -> Value {
    let xi = to_int(b, x);
    let abs_mask = splat_i(b, 0x7fff_ffff);
    let ai = b.ins().band(xi, abs_mask);
    let sign = b.ins().band_not(xi, abs_mask);
    let ax = to_float(b, ai);
    let z = b.ins().fmul(x, x);
    let mut p = splat(b, -5.70498872745E-3);
    for c in [2.06390887954E-2, -5.37397155531E-2, 1.33314422036E-1, -3.33332819422E-1] {
        let c = splat(b, c);
        p = b.ins().fma(p, z, c);
    }
    let pz = b.ins().fmul(p, z);
    let small = b.ins().fma(pz, x, x);
    let two = splat(b, 2.0);
    let ax2 = b.ins().fmul(ax, two);
    let e = exp(b, ax2);
    let one = splat(b, 1.0);
    let e1 = b.ins().fadd(e, one);
    let q = b.ins().fdiv(two, e1);
    let big = b.ins().fsub(one, q);
    let bigi = to_int(b, big);
    let signed = b.ins().bor(bigi, sign);
    let big = to_float(b, signed);
    let limit = splat(b, 0.625);
    let m = mask(b, FloatCC::LessThan, ax, limit);
    select(b, m, small, big)
}
