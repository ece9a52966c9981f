//! How gradients flow back from the loss, judged before any data is read:
//! the chain rule multiplies the derivatives of the activations a gradient
//! passes, and a sigmoid's is at most ¼, so a deep enough stack of them
//! leaves the first layers with almost nothing to learn from; and a bias
//! that a batchnorm subtracts again gets none at all.

use super::*;

/// Below this product of the activations' largest derivatives, the
/// gradient reaching the first layers has vanished.
const VANISHING: f64 = 1e-4;

/// The largest |f'(x)| of an activation over all x, where it is below 1
/// (the activations that saturate); `None` for the others.
fn largest_derivative(activation: &Activation) -> Option<f64> {
    match activation {
        // σ' = σ(1 − σ) ≤ ¼, at 0; softmax's diagonal p(1 − p) likewise.
        Activation::Sigmoid | Activation::Softmax => Some(0.25),
        _ => None,
    }
}

/// The most a gradient can keep on its way from the loss down to a value:
/// the product of the largest derivatives it passes (the best path where
/// paths join, since an `add` lets it through whole), how many saturating
/// layers make it, and the first and last of them. A normalisation starts
/// it afresh.
#[derive(Clone, Copy)]
struct Chain {
    gain: f64,
    count: usize,
    ends: Option<(usize, usize)>,
}

impl ModelChecker<'_> {
    /// Warns when the gradient at the first layers of the path to the loss
    /// can be at most `VANISHING` of the loss's, from the activations alone.
    pub(super) fn vanishing_gradients(&mut self, loss: &LossSpec) {
        let mut chains: Vec<Chain> = Vec::with_capacity(self.nodes.len());
        let start = Chain { gain: 1.0, count: 0, ends: None };
        for (index, node) in self.nodes.iter().enumerate() {
            let best = node
                .inputs
                .iter()
                .filter_map(|v| if let ValueRef::Node(n) = v { chains.get(*n) } else { None })
                .max_by(|a, b| a.gain.total_cmp(&b.gain))
                .copied()
                .unwrap_or(start);
            let chain = match &node.layer {
                Layer::BatchNorm { .. } | Layer::LayerNorm { .. } => start,
                Layer::Activation(a) => match largest_derivative(a) {
                    Some(d) => Chain {
                        gain: best.gain * d,
                        count: best.count + 1,
                        ends: Some((best.ends.map_or(index, |(first, _)| first), index)),
                    },
                    None => best,
                },
                _ => best,
            };
            chains.push(chain);
        }
        let ValueRef::Node(output) = loss.prediction else { return };
        let Some(&Chain { gain, count, ends: Some((first, last)) }) = chains.get(output) else { return };
        if gain >= VANISHING {
            return;
        }
        // Every saturating layer contributes ¼ (σ' ≤ ¼), so the product is ¼ⁿ.
        let derivation = format!(
            "{count} sigmoid-like layers, each f′ ≤ ¼: the gradient keeps at most ¼^{count} = {gain:.1e} by here"
        );
        let (first, last) = (self.nodes[first].span, self.nodes[last].span);
        self.diags.push(messages::vanishing_gradients(first, last, &derivation));
    }

    /// Warns of a dense layer or convolution with a bias whose one reader is
    /// a batchnorm: it subtracts each unit's or channel's mean over the
    /// batch, the bias included, so the bias changes nothing and its
    /// gradient is rounding noise.
    pub(super) fn bias_before_batchnorm(&mut self, losses: &[LossSpec]) {
        let mut found = Vec::new();
        for node in &self.nodes {
            let (Layer::BatchNorm { .. }, [ValueRef::Node(n)]) = (&node.layer, &node.inputs[..]) else { continue };
            let per = match self.nodes[*n].layer {
                Layer::Dense { bias: true, .. } => "unit",
                Layer::Conv1d { bias: true, .. } | Layer::Conv2d { bias: true, .. } => "channel",
                _ => continue,
            };
            let value = ValueRef::Node(*n);
            let readers = self.nodes.iter().filter(|m| m.inputs.contains(&value)).count()
                + losses.iter().filter(|l| l.prediction == value).count();
            if readers == 1 {
                found.push(messages::bias_before_batchnorm(self.nodes[*n].span, node.span, per));
            }
        }
        self.diags.extend(found);
    }
}
