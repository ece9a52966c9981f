//! The loss: its kind, what it compares, whether the shapes and target kinds
//! fit, and lints on the layer that produces the prediction.

use super::*;
use crate::check::args::Bound;

/// What a loss compares: its call, and the prediction and target with their names.
struct Compared<'a> {
    call: &'a Call,
    prediction: (&'a Ident, &'a Incoming),
    target: (&'a Ident, &'a Incoming),
}

impl ModelChecker<'_> {
    /// Every loss term (`loss = a + 0.5 * b`, or several `loss =` lines):
    /// the model minimises their weighted sum.
    pub(super) fn losses(&mut self) -> Vec<LossSpec> {
        let losses = self.ast.losses.clone();
        if losses.is_empty() {
            self.missing_loss();
        }
        let checked: Vec<(LossSpec, Span)> =
            losses.iter().filter_map(|decl| self.loss(decl).map(|spec| (spec, decl.span))).collect();
        for (i, (spec, span)) in checked.iter().enumerate() {
            let same = |(other, _): &&(LossSpec, Span)| {
                (other.kind, other.prediction, other.target) == (spec.kind, spec.prediction, spec.target)
            };
            if let Some((_, first)) = checked[..i].iter().find(same) {
                self.diags.push(messages::duplicate_loss(*span, *first));
            }
        }
        checked.into_iter().map(|(spec, _)| spec).collect()
    }

    fn missing_loss(&mut self) {
        // A model ending in an RBM needs no loss: CD (or annealing on its
        // reconstruction error) trains it.
        let ends_in_rbm = self.nodes.last().is_some_and(|n| matches!(n.layer, Layer::Rbm { .. }));
        let optimizer_needs_no_loss = self.ast.trains.iter().flat_map(|t| &t.settings).any(|s| {
            s.key.name == "optimizer"
                && matches!(&s.value, Value::Call(c) if c.name.name == "cd" || (c.name.name == "anneal" && ends_in_rbm))
        });
        if !optimizer_needs_no_loss && !self.ast.inputs.is_empty() {
            self.diags.push(messages::missing_loss(&self.ast.name));
        }
    }

    fn loss(&mut self, decl: &crate::ast::Loss) -> Option<LossSpec> {
        let call = &decl.call;
        let weight = match &decl.weight {
            Some(n) if n.value > 0.0 && n.value <= f64::from(f32::MAX) => n.value,
            Some(n) => {
                self.diags.push(messages::out_of_range(n, "weight", "a number > 0"));
                return None;
            }
            None => 1.0,
        };
        let kind = match call.name.name.as_str() {
            "mse" => LossKind::Mse,
            "cross_entropy" => LossKind::CrossEntropy,
            "binary_cross_entropy" => LossKind::BinaryCrossEntropy,
            other => {
                let known = ["mse", "cross_entropy", "binary_cross_entropy"];
                self.diags.push(messages::unknown_loss(&call.name, did_you_mean(other, known)));
                return None;
            }
        };
        let args = Args::match_call(call, &["prediction", "target", "weights"], &["prediction", "target"], self.diags);
        let mut resolve = |key: &str| -> Option<(Ident, ValueRef, Incoming)> {
            match args.value(key)? {
                Value::Name(id) => self.use_value(id).map(|(v, i)| (id.clone(), v, i)),
                v => {
                    self.diags.push(messages::wrong_type(v, key, "the name of a value"));
                    None
                }
            }
        };
        let (prediction, target) = (resolve("prediction"), resolve("target"));
        let ((pred_name, prediction, pred_info), (target_name, target, target_info)) = (prediction?, target?);
        let target_kind = match target {
            ValueRef::Target(t) => Some(self.targets[t].kind.clone()),
            _ => None,
        };
        let class_weights = args.floats("weights", Bound::NonNegative, self.diags);
        let compared = Compared { call, prediction: (&pred_name, &pred_info), target: (&target_name, &target_info) };
        if !self.loss_fits(kind, target_kind.as_ref(), compared) {
            return None;
        }
        if let (Some(weights), Some(value)) = (&class_weights, args.value("weights")) {
            let classes = match target_kind {
                Some(TargetKind::Class(k)) => Some(k),
                _ => None,
            };
            if classes != Some(weights.len()) || weights.iter().all(|&w| w == 0.0) || weights.len() > MAX_CLASS_WEIGHTS
            {
                self.diags.push(messages::class_weights_mismatch(value, call, weights, (classes, MAX_CLASS_WEIGHTS)));
                return None;
            }
        }
        let spec = LossSpec { kind, prediction, target, class_weights, weight, span: decl.span };
        self.lint_prediction(&spec, &pred_name);
        Some(spec)
    }

    /// Whether the loss `kind` can compare the prediction with the target
    /// (reported when not).
    fn loss_fits(&mut self, kind: LossKind, target_kind: Option<&TargetKind>, compared: Compared) -> bool {
        let Compared { call, prediction: (pred_name, pred_info), target: (target_name, target_info) } = compared;
        // `loss(y, p)`: the declared target was passed as the prediction.
        if target_kind.is_none() && self.targets.iter().any(|t| t.name == pred_name.name) {
            self.diags.push(messages::loss_arguments_swapped(call, pred_name, target_name));
            return false;
        }
        match (kind, target_kind) {
            (LossKind::CrossEntropy, Some(TargetKind::Class(k))) => {
                if pred_info.shape != vec![*k] {
                    self.diags.push(messages::loss_shape(pred_name, pred_info, target_name, &[*k], "class scores"));
                    return false;
                }
            }
            (LossKind::CrossEntropy, _) => {
                self.diags.push(messages::loss_target_kind(call, target_name, target_info.producer, "class(K)", "mse"));
                return false;
            }
            (LossKind::Mse | LossKind::BinaryCrossEntropy, Some(TargetKind::Class(_))) => {
                self.diags.push(messages::loss_target_kind(
                    call,
                    target_name,
                    target_info.producer,
                    "real[...] or binary[...]",
                    "cross_entropy",
                ));
                return false;
            }
            _ => {
                if pred_info.shape != target_info.shape {
                    self.diags.push(messages::loss_shape(
                        pred_name,
                        pred_info,
                        target_name,
                        &target_info.shape,
                        "values",
                    ));
                    return false;
                }
            }
        }
        true
    }

    fn lint_prediction(&mut self, loss: &LossSpec, pred_name: &Ident) {
        let ValueRef::Node(n) = loss.prediction else { return };
        let producer = &self.nodes[n];
        match (&producer.layer, loss.kind) {
            (Layer::Activation(Activation::Softmax), LossKind::CrossEntropy) => {
                self.diags.push(messages::double_softmax(producer.span, loss.span));
            }
            (Layer::Dropout { .. }, _) => self.diags.push(messages::dropout_at_output(producer.span, pred_name)),
            (Layer::Activation(Activation::Sigmoid), LossKind::BinaryCrossEntropy) => {}
            (_, LossKind::BinaryCrossEntropy) => {
                self.diags.push(messages::bce_without_sigmoid(producer.span, loss.span));
            }
            _ => {}
        }
    }
}
