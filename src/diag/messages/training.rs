//! Losses, training settings, lints, lowering and data.

use super::*;

pub fn loss_shape(pred: &Ident, pred_info: &Incoming, target: &Ident, target_shape: &[usize], what: &str) -> Diag {
    Diag::error(
        "nnc::loss::shape",
        "the prediction and the target have different shapes",
        pred.span,
        format!("prediction is {}, target needs {} {what}", shape_text(&pred_info.shape), shape_text(target_shape)),
    )
    .with_note(pred_info.producer, format!("prediction produced here: {}", derived(pred_info)))
    .with_note(target.span, format!("target {}", shape_text(target_shape)))
    .with_help(format!("make the last layer produce {}", shape_text(target_shape)))
}

/// `loss(target, prediction)`: the arguments in the wrong order.
pub fn loss_arguments_swapped(call: &Call, target: &Ident, prediction: &Ident) -> Diag {
    Diag::error(
        "nnc::loss::swapped",
        format!("`{}` takes the prediction first, then the target", call.name.name),
        call.span,
        format!("`{}` is a target, `{}` is not", target.name, prediction.name),
    )
    .with_help(format!("write `{}({}, {})`", call.name.name, prediction.name, target.name))
}

pub fn loss_target_kind(call: &Call, target: &Ident, declared: Span, expected: &str, instead: &str) -> Diag {
    Diag::error(
        "nnc::loss::target",
        format!("`{}` does not fit this target", call.name.name),
        target.span,
        format!("`{}` needs a target of type {expected}", call.name.name),
    )
    .with_note(declared, "target declared here")
    .with_help(format!("use `{instead}` for this target, or change the target's type"))
}

/// `weights = […]` on a loss: one weight per class of a `class(K)` target,
/// not all zero, for at most `most` classes.
pub fn class_weights_mismatch(
    value: &Value,
    call: &Call,
    weights: &[f64],
    (classes, most): (Option<usize>, usize),
) -> Diag {
    let (label, help) = match classes {
        Some(k) if k == weights.len() && k > most => {
            (format!("{k} weights"), format!("class weights are taken for at most {most} classes"))
        }
        Some(k) if k == weights.len() => (
            "every weight is 0, so no row would count".to_string(),
            "give the classes you care about a weight above 0".to_string(),
        ),
        Some(k) => (
            format!("{} weights for {k} classes", weights.len()),
            format!("give one weight per class, in class order: {k} numbers"),
        ),
        None => (
            format!("`{}` has no classes to weigh", call.name.name),
            "class weights go with `cross_entropy` over a `class(K)` target; for a binary target, declare it \
             `class(2)` and use `cross_entropy`"
                .to_string(),
        ),
    };
    Diag::error("nnc::loss::weights", "these class weights do not fit the target", value.span(), label).with_help(help)
}

pub fn cd_without_rbm(span: Span) -> Diag {
    Diag::error(
        "nnc::train::cd",
        "contrastive divergence trains `rbm` layers, and this model has none",
        span,
        "optimizer = cd(…)",
    )
    .with_help("add an `rbm(hidden = …)` layer or choose another optimizer")
}

pub fn patience_without_validation(span: Span) -> Diag {
    Diag::error(
        "nnc::train::patience_without_validation",
        "early stopping needs validation rows",
        span,
        "`patience` watches the validation loss, and there is none",
    )
    .with_help("hold rows out for it: add `validation = 0.1` (the test rows must stay unseen)")
}

pub fn rbm_without_cd(span: Span) -> Diag {
    Diag::warning(
        "nnc::lint::rbm_untrained",
        "`rbm` layers are trained by contrastive divergence, which is not enabled",
        span,
        "no `pretrain` and no `optimizer = cd(…)`",
    )
    .with_help("add `pretrain = cd(k = 1, epochs = 5)` for a deep belief network")
}

pub fn double_softmax(softmax: Span, loss: Span) -> Diag {
    Diag::warning("nnc::lint::double_softmax", "softmax is applied twice", softmax, "this softmax")
        .with_note(loss, "cross_entropy applies softmax itself")
        .with_help("remove `softmax` and feed the raw scores to cross_entropy")
}

/// A stack of saturating activations whose derivatives multiply to next
/// to nothing, from the first (`first`) to the last (`last`).
pub fn vanishing_gradients(first: Span, last: Span, derivation: &str) -> Diag {
    Diag::warning(
        "nnc::lint::vanishing_gradients",
        "the gradient vanishes before it reaches this layer",
        first,
        derivation.to_string(),
    )
    .with_note(last, "the last saturating layer before the loss")
    .with_help(
        "use relu (or leaky_relu, elu, gelu) in the hidden layers, put batchnorm between them, or use fewer layers",
    )
}

pub fn bias_before_batchnorm(layer: Span, batchnorm: Span, per: &str) -> Diag {
    Diag::warning(
        "nnc::lint::bias_before_batchnorm",
        "this bias has no effect: the batchnorm after it subtracts it again",
        layer,
        format!("adds a bias to each {per} (`bias = true` unless set)"),
    )
    .with_note(batchnorm, format!("subtracts each {per}'s mean over the batch, the bias included"))
    .with_help(
        "write `bias = false` (batchnorm's β is the shift): the bias's gradient is zero but for rounding, \
         which optimizers such as Adam turn into steps of full size",
    )
}

pub fn dropout_at_output(dropout: Span, pred: &Ident) -> Diag {
    Diag::warning(
        "nnc::lint::dropout_output",
        "dropout on the model's output",
        dropout,
        "drops predictions, not features",
    )
    .with_note(pred.span, "used as the prediction")
    .with_help("move dropout before the last layer")
}

pub fn bce_without_sigmoid(producer: Span, loss: Span) -> Diag {
    Diag::warning(
        "nnc::lint::bce_probability",
        "binary_cross_entropy expects probabilities",
        producer,
        "this output is not a sigmoid",
    )
    .with_note(loss, "binary_cross_entropy here")
    .with_help("end the pipeline with `sigmoid`")
}

pub fn decay_with_batchnorm(bn: Span, train: Span) -> Diag {
    Diag::warning(
        "nnc::lint::decay_batchnorm",
        "weight decay together with batchnorm",
        bn,
        "batchnorm makes the preceding weights scale-invariant",
    )
    .with_note(train, "l2 / weight_decay set here")
    .with_help("decay then only raises the effective learning rate; consider removing it")
}

pub fn not_trainable(span: Span, layer: &str) -> Diag {
    Diag::error("nnc::lower::not_trainable", format!("`{layer}` layers cannot be trained yet"), span, "no training implementation for this layer")
        .with_help("`nnc check` and `nnc summary` understand it; training supports dense, conv2d, maxpool, avgpool, maxout, the activations, flatten, reshape and add")
}

pub fn nothing_to_train(span: Span, model: &str) -> Diag {
    Diag::error("nnc::lower::no_loss", format!("model `{model}` has no loss to train"), span, "no `loss = …`")
        .with_help("add a loss; contrastive-divergence training of RBMs is not available yet")
}

pub fn internal(span: Span, what: &str) -> Diag {
    Diag::error("nnc::internal", format!("internal error: {what}"), span, "while compiling this model")
        .with_help("this is a bug in nnc; please report it with the model file")
}

pub fn not_trainable_optimizer(span: Span, what: &str) -> Diag {
    Diag::error("nnc::lower::optimizer", what.to_string(), span, "cannot build the training step")
        .with_help("choose gd, sgd, momentum, nesterov or adam")
}

/// A data file that does not fit the model: names the file and line
/// (`location`), and points at the declaration it disagrees with.
pub fn data_mismatch(location: &str, problem: &str, help: &str, declared: Span, expected: &str) -> Diag {
    Diag::error("nnc::data::mismatch", format!("{location}: {problem}"), declared, expected.to_string())
        .with_help(help.to_string())
}

pub fn non_finite(span: Span, what: &str, epoch: usize, step: usize) -> Diag {
    Diag::error(
        "nnc::train::non_finite",
        format!("training diverged at epoch {epoch}, step {step}"),
        span,
        format!("{what} is the first value of the step that is not a finite number"),
    )
    .with_help("lower the learning rate, add `clip_norm`, or scale the inputs (`scale` / `standardize`)")
}

/// A gradient check of a model too large to hold in f64, even one finite
/// difference at a time.
pub fn gradcheck_memory(span: Span, needs: u64, has: u64) -> Diag {
    let size = crate::shape::bytes_text;
    Diag::error(
        "nnc::gradcheck::memory",
        format!("checking this model's gradients needs about {}, more than this machine's {}", size(needs), size(has)),
        span,
        "the check holds the parameters, every value of the forward and backward passes in f64, and a copy of \
         the tensor a finite difference moves",
    )
    .with_help("check a smaller model of the same layers: fewer units or channels, or a smaller input")
}

/// A training step that cannot fit in this machine's memory; `dominant` is
/// the layer that takes the most, with its share.
/// A step of `needs` bytes over what `limit` says (this machine has, or
/// the N GiB `--max-memory` allows).
pub fn too_much_memory(span: Span, (needs, limit): (u64, &str), batch: usize, (layer, share): (&str, u64)) -> Diag {
    let size = crate::shape::bytes_text;
    Diag::error(
        "nnc::model::memory",
        format!("training this model at batch {batch} needs about {}, more than {limit}", size(needs)),
        span,
        format!(
            "`{layer}` alone takes about {} (its parameters, their gradients and optimizer state, and its outputs)",
            size(share)
        ),
    )
    .with_help("make this layer smaller, or use a smaller batch")
}
