//! The element-wise functions of one tensor (`Unary`) and their
//! derivatives as vector code, for the fused element-wise kernels: one arm
//! per function, the maths above it.

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{InstBuilder, Value};
use cranelift_frontend::FunctionBuilder;

use super::codegen::Emitter;
use super::vector::{self, splat};
use crate::ir::Unary;

/// v = 2√(2/π)(x + 0.044715x³)
fn gelu_tanh_arg(b: &mut FunctionBuilder, x: Value) -> Value {
    let x2 = b.ins().fmul(x, x);
    let k = splat(b, crate::shape::GELU_CUBIC as f32);
    let one = splat(b, 1.0);
    let inner = b.ins().fma(x2, k, one);
    let xi = b.ins().fmul(x, inner);
    let c = splat(b, crate::shape::GELU_TANH_SCALE as f32);
    b.ins().fmul(xi, c)
}

impl Emitter<'_, '_> {
    pub(super) fn unary(&mut self, u: Unary, x: Value) -> Value {
        let b = &mut self.b;
        match u {
            Unary::Identity => x,
            Unary::Relu => {
                let zero = splat(b, 0.0);
                vector::select_positive(b, x, x, zero)
            }
            Unary::LeakyRelu(a) => {
                let k = splat(b, a as f32);
                let ax = b.ins().fmul(x, k);
                vector::select_positive(b, x, x, ax)
            }
            Unary::Elu(a) => {
                let em1 = vector::expm1(b, x);
                let k = splat(b, a as f32);
                let neg = b.ins().fmul(k, em1);
                vector::select_positive(b, x, x, neg)
            }
            Unary::Gelu => {
                let phi = vector::normal_cdf(b, x);
                b.ins().fmul(x, phi)
            }
            Unary::GeluTanh => {
                let v = gelu_tanh_arg(b, x);
                let s = vector::sigmoid(b, v);
                b.ins().fmul(x, s)
            }
            Unary::Silu => {
                let s = vector::sigmoid(b, x);
                b.ins().fmul(x, s)
            }
            Unary::Softplus => vector::softplus(b, x),
            Unary::Sigmoid => vector::sigmoid(b, x),
            Unary::Tanh => vector::tanh(b, x),
            Unary::Exp => vector::exp(b, x),
            Unary::Sqrt => b.ins().sqrt(x),
            Unary::Square => b.ins().fmul(x, x),
            Unary::Neg => b.ins().fneg(x),
            Unary::Scale(c) => {
                let k = splat(b, c as f32);
                b.ins().fmul(x, k)
            }
            Unary::AddConst(c) => {
                let k = splat(b, c as f32);
                b.ins().fadd(x, k)
            }
            Unary::Clamp(lo, hi) => {
                let (lo, hi) = (splat(b, lo as f32), splat(b, hi as f32));
                let y = b.ins().fmax(x, lo);
                b.ins().fmin(y, hi)
            }
            Unary::Beyond(c) => {
                let (ax, k, one) = (vector::abs(b, x), splat(b, c as f32), splat(b, 1.0));
                let beyond = vector::mask(b, FloatCC::GreaterThan, ax, k);
                b.ins().band(one, beyond)
            }
            // Computed by a routine; never reaches an element-wise kernel.
            Unary::Log => x,
        }
    }

    /// f′(x) given operands 0 = x and 1 = y = f(x).
    pub(super) fn derivative(&mut self, u: Unary, arg: &mut dyn FnMut(&mut Self, usize) -> Value) -> Value {
        match u {
            Unary::Identity | Unary::AddConst(_) => splat(&mut self.b, 1.0),
            Unary::Beyond(_) => splat(&mut self.b, 0.0),
            Unary::Neg => splat(&mut self.b, -1.0),
            Unary::Scale(c) => splat(&mut self.b, c as f32),
            Unary::Relu | Unary::LeakyRelu(_) => {
                let x = arg(self, 0);
                let slope = if let Unary::LeakyRelu(a) = u { a as f32 } else { 0.0 };
                let (one, s) = (splat(&mut self.b, 1.0), splat(&mut self.b, slope));
                vector::select_positive(&mut self.b, x, one, s)
            }
            Unary::Elu(a) => {
                let (x, y) = (arg(self, 0), arg(self, 1));
                let k = splat(&mut self.b, a as f32);
                let neg = self.b.ins().fadd(y, k);
                let one = splat(&mut self.b, 1.0);
                vector::select_positive(&mut self.b, x, one, neg)
            }
            // Φ(x) + x·φ(x),  φ(x) = e^(−x²/2)/√(2π)
            Unary::Gelu => {
                let x = arg(self, 0);
                let b = &mut self.b;
                let phi = vector::normal_cdf(b, x);
                let minus_half = splat(b, -0.5);
                let hx = b.ins().fmul(x, minus_half);
                let arg = b.ins().fmul(hx, x);
                let e = vector::exp(b, arg);
                let k = splat(b, (0.5 * std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2) as f32);
                let density = b.ins().fmul(e, k);
                b.ins().fma(x, density, phi)
            }
            // s + x·s(1 − s)·v′,  s = σ(v),  v′ = 2√(2/π)(1 + 3·0.044715x²)
            Unary::GeluTanh => {
                let x = arg(self, 0);
                let b = &mut self.b;
                let v = gelu_tanh_arg(b, x);
                let s = vector::sigmoid(b, v);
                let one = splat(b, 1.0);
                let q = b.ins().fsub(one, s);
                let sq = b.ins().fmul(s, q);
                let x2 = b.ins().fmul(x, x);
                let k3 = splat(b, (3.0 * crate::shape::GELU_CUBIC) as f32);
                let inner = b.ins().fma(x2, k3, one);
                let c = splat(b, crate::shape::GELU_TANH_SCALE as f32);
                let dv = b.ins().fmul(inner, c);
                let xsq = b.ins().fmul(x, sq);
                b.ins().fma(xsq, dv, s)
            }
            // σ(x)(1 + x(1 − σ(x)))
            Unary::Silu => {
                let x = arg(self, 0);
                let b = &mut self.b;
                let s = vector::sigmoid(b, x);
                let one = splat(b, 1.0);
                let q = b.ins().fsub(one, s);
                let inner = b.ins().fma(x, q, one);
                b.ins().fmul(s, inner)
            }
            // σ(x)
            Unary::Softplus => {
                let x = arg(self, 0);
                vector::sigmoid(&mut self.b, x)
            }
            Unary::Sigmoid => {
                let y = arg(self, 1);
                let one = splat(&mut self.b, 1.0);
                let q = self.b.ins().fsub(one, y);
                self.b.ins().fmul(y, q)
            }
            Unary::Tanh => {
                let y = arg(self, 1);
                let one = splat(&mut self.b, 1.0);
                let y2 = self.b.ins().fmul(y, y);
                self.b.ins().fsub(one, y2)
            }
            Unary::Exp => arg(self, 1),
            Unary::Sqrt => {
                let y = arg(self, 1);
                let half = splat(&mut self.b, 0.5);
                self.b.ins().fdiv(half, y)
            }
            Unary::Square => {
                let x = arg(self, 0);
                let two = splat(&mut self.b, 2.0);
                self.b.ins().fmul(two, x)
            }
            Unary::Log => {
                let x = arg(self, 0);
                let one = splat(&mut self.b, 1.0);
                self.b.ins().fdiv(one, x)
            }
            Unary::Clamp(lo, hi) => {
                let x = arg(self, 0);
                let (lo, hi) = (splat(&mut self.b, lo as f32), splat(&mut self.b, hi as f32));
                let above = vector::mask(&mut self.b, FloatCC::GreaterThan, x, lo);
                let below = vector::mask(&mut self.b, FloatCC::LessThan, x, hi);
                let inside = self.b.ins().band(above, below);
                let one = splat(&mut self.b, 1.0);
                self.b.ins().band(one, inside)
            }
        }
    }
}
