//! Element-wise formulas of one value, as exporters spell an activation ONNX
//! had no op for: gelu is `Div`, `Erf`, `Add` and `Mul` nodes, in an order
//! and with constants that differ from one exporter to the next
//! (`x·0.5·(1 + erf(x/√2))`, `0.5·x·(1 + erf(x·0.7071))`, …). A formula is
//! kept as a tree and recognised by what it computes, not how it is
//! written: it is evaluated over a sweep of inputs and compared with each
//! activation nnc has a formula for.

use std::fmt;

/// A formula of `x`: the nodes read so far.
#[derive(Clone, Debug)]
pub(super) enum Expr {
    X,
    Number(f32),
    Erf(Box<Expr>),
    Tanh(Box<Expr>),
    Binary(Binary, Box<Expr>, Box<Expr>),
}

/// The two-operand element-wise ops a formula may use.
#[derive(Clone, Copy, Debug)]
pub(super) enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
}

impl Binary {
    /// The op of an ONNX node of that name.
    pub(super) fn of(op: &str) -> Option<Binary> {
        Some(match op {
            "Add" => Binary::Add,
            "Sub" => Binary::Sub,
            "Mul" => Binary::Mul,
            "Div" => Binary::Div,
            "Pow" => Binary::Pow,
            _ => return None,
        })
    }

    fn apply(self, a: f64, b: f64) -> f64 {
        match self {
            Binary::Add => a + b,
            Binary::Sub => a - b,
            Binary::Mul => a * b,
            Binary::Div => a / b,
            Binary::Pow => a.powf(b),
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            Binary::Add => "+",
            Binary::Sub => "-",
            Binary::Mul => "*",
            Binary::Div => "/",
            Binary::Pow => "^",
        }
    }
}

impl Expr {
    /// The formula's value at `x`, in f64 (its constants as the file holds them).
    fn eval(&self, x: f64) -> f64 {
        match self {
            Expr::X => x,
            Expr::Number(v) => f64::from(*v),
            Expr::Erf(a) => libm::erf(a.eval(x)),
            Expr::Tanh(a) => a.eval(x).tanh(),
            Expr::Binary(op, a, b) => op.apply(a.eval(x), b.eval(x)),
        }
    }

    /// The activation (as a `.nn` stage) this formula computes, if any:
    /// within float rounding of it at every point of a sweep over
    /// [−10, 10]. gelu's two forms differ by up to 5e-4 there, far above
    /// the 1e-5 allowed, so each is told from the other.
    pub(super) fn activation(&self) -> Option<&'static str> {
        let sweep = (-400..=400).map(|i| f64::from(i) / 40.0);
        let agrees = |f: Activation| {
            sweep.clone().all(|x| {
                let (got, want) = (self.eval(x), f(x));
                (got - want).abs() <= 1e-5 * (1.0 + want.abs())
            })
        };
        KNOWN.into_iter().find(|&(_, f)| agrees(f)).map(|(stage, _)| stage)
    }
}

/// An activation's values, in f64.
type Activation = fn(f64) -> f64;

/// The activations a formula may turn out to be, by their `.nn` stages.
const KNOWN: [(&str, Activation); 2] = [("gelu", gelu), ("gelu(tanh = true)", gelu_tanh)];

/// x·Φ(x): gelu as nnc computes it.
fn gelu(x: f64) -> f64 {
    0.5 * x * (1.0 + libm::erf(x * std::f64::consts::FRAC_1_SQRT_2))
}

/// gelu's tanh form: x·(1 + tanh(√(2/π)·(x + 0.044715x³)))/2.
fn gelu_tanh(x: f64) -> f64 {
    let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044_715 * x * x * x);
    0.5 * x * (1.0 + u.tanh())
}

/// The formula as the error messages show it: `((x*0.5)*(erf((x/1.4142135))+1.0))`.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::X => write!(f, "x"),
            Expr::Number(v) => write!(f, "{v:?}"),
            Expr::Erf(a) => write!(f, "erf({a})"),
            Expr::Tanh(a) => write!(f, "tanh({a})"),
            Expr::Binary(op, a, b) => write!(f, "({a}{}{b})", op.symbol()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x() -> Box<Expr> {
        Box::new(Expr::X)
    }

    fn n(v: f32) -> Box<Expr> {
        Box::new(Expr::Number(v))
    }

    fn op(op: Binary, a: Box<Expr>, b: Box<Expr>) -> Box<Expr> {
        Box::new(Expr::Binary(op, a, b))
    }

    /// PyTorch's spelling of exact gelu, and a rearranged one, are gelu;
    /// the tanh form is told apart; near misses are no activation.
    #[test]
    fn formulas_are_recognised_by_their_values() {
        use Binary::*;
        let erf_of = |arg: Box<Expr>| Box::new(Expr::Erf(arg));
        let torch = op(Mul, op(Mul, x(), op(Add, erf_of(op(Div, x(), n(std::f32::consts::SQRT_2))), n(1.0))), n(0.5));
        assert_eq!(torch.activation(), Some("gelu"));
        assert_eq!(torch.to_string(), "((x*(erf((x/1.4142135))+1.0))*0.5)");
        let rearranged =
            op(Mul, op(Mul, n(0.5), x()), op(Sub, n(1.0), erf_of(op(Mul, x(), n(-std::f32::consts::FRAC_1_SQRT_2)))));
        assert_eq!(rearranged.activation(), Some("gelu"));
        let cube = op(Pow, x(), n(3.0));
        let inner = op(Mul, n(0.797_884_6), op(Add, x(), op(Mul, n(0.044_715), cube)));
        let tanh = op(Mul, op(Mul, n(0.5), x()), op(Add, n(1.0), Box::new(Expr::Tanh(inner))));
        assert_eq!(tanh.activation(), Some("gelu(tanh = true)"));
        // A different constant: x/1.5 inside erf is not gelu.
        let off = op(Mul, op(Mul, x(), op(Add, erf_of(op(Div, x(), n(1.5))), n(1.0))), n(0.5));
        assert_eq!(off.activation(), None);
        assert_eq!(op(Mul, x(), n(0.5)).activation(), None);
    }
}
