//! Checking the `train { … }` block into a `TrainConfig`.

use crate::ast::{Arg, Call, Ident, TrainBlock, Value};
use crate::check::args::{Args, Bound};
use crate::check::settings::*;
use crate::diag::{Diag, did_you_mean, messages};

/// Gibbs steps of CD-k (each is unrolled into the step's graph).
const GIBBS_STEPS: (usize, usize) = (1, 1_000);
/// Epochs of training or pretraining (as `--epochs` accepts).
const EPOCHS: (usize, usize) = (1, 1_000_000);

pub const SETTINGS: &[&str] = &[
    "optimizer",
    "lr",
    "schedule",
    "batch",
    "epochs",
    "clip_norm",
    "clip_value",
    "l2",
    "weight_decay",
    "seed",
    "validation",
    "patience",
    "warmup",
    "data",
    "scale",
    "standardize",
    "standardize_target",
    "pretrain",
];

pub const OPTIMIZERS: &[(&str, &[&str])] = &[
    ("gd", &["lr"]),
    ("sgd", &["lr", "momentum", "nesterov"]),
    ("momentum", &["lr", "momentum"]),
    ("nesterov", &["lr", "momentum"]),
    ("adam", &["lr", "beta1", "beta2", "eps"]),
    ("anneal", &["temperature", "cooling", "scale"]),
    ("cd", &["k", "lr"]),
];

pub const SCHEDULES: &[(&str, &[&str], &[&str])] = &[
    ("constant", &[], &[]),
    ("step", &["every", "gamma"], &["every"]),
    ("exponential", &["gamma"], &["gamma"]),
    ("cosine", &["min_lr"], &[]),
    ("plateau", &["factor", "patience", "threshold", "min_lr"], &[]),
];

pub const SOURCES: &[(&str, &[&str], &[&str])] = &[
    ("builtin", &["name"], &["name"]),
    ("csv", &["train", "test", "target", "features"], &["train"]),
    ("idx", &["images", "labels", "test_images", "test_labels"], &["images", "labels"]),
];

/// Built-in data sets, compiled into the binary.
pub const BUILTIN_DATA: &[&str] = &["digits", "diabetes"];

/// Checks the settings; absent settings take their documented defaults.
pub fn check_train(blocks: &[TrainBlock], diags: &mut Vec<Diag>) -> TrainConfig {
    let mut config = TrainConfig::default();
    let Some(block) = blocks.first() else { return config };
    for extra in &blocks[1..] {
        diags.push(messages::duplicate_train(extra.span, block.span));
    }
    // The settings read like keyword arguments of a call named `train`.
    let call = Call {
        name: Ident { name: "train".into(), span: block.span },
        args: block
            .settings
            .iter()
            .map(|s| Arg { key: Some(s.key.clone()), value: s.value.clone(), span: s.span })
            .collect(),
        parens: true,
        span: block.span,
    };
    let args = Args::match_call(&call, SETTINGS, &[], diags);
    let mut lr_in_optimizer = None;
    if let Some(value) = args.value("optimizer")
        && let Some((optimizer, lr)) = optimizer(value, diags)
    {
        config.optimizer = optimizer;
        lr_in_optimizer = lr;
    }
    if let (Some(lr), Some(Value::Number(n))) = (lr_in_optimizer, args.value("lr")) {
        diags.push(messages::lr_twice(n.span));
        config.lr = lr;
    } else if let Some(lr) = lr_in_optimizer {
        config.lr = lr;
    } else {
        config.lr = args.float("lr", config.lr, Bound::Positive, diags);
    }
    if let Some(value) = args.value("schedule") {
        config.schedule = schedule(value, diags).unwrap_or(Schedule::Constant);
    }
    config.batch = match args.value("batch") {
        Some(Value::Name(id)) if id.name == "full" => Batch::Full,
        Some(v @ Value::Name(_)) => {
            diags.push(messages::wrong_type(v, "batch", "a whole number or `full`"));
            config.batch
        }
        Some(_) => Batch::Size(args.int("batch", 32, 1, diags)),
        None => config.batch,
    };
    config.epochs = args.count("epochs", config.epochs, EPOCHS, diags);
    config.clip_norm = args.opt_float("clip_norm", Bound::Positive, diags);
    config.clip_value = args.opt_float("clip_value", Bound::Positive, diags);
    config.l2 = args.float("l2", 0.0, Bound::NonNegative, diags);
    config.weight_decay = args.float("weight_decay", 0.0, Bound::NonNegative, diags);
    config.seed = args.int("seed", 0, 0, diags) as u64;
    config.validation = args.float("validation", 0.0, Bound::UnitOpen, diags);
    config.patience = args.opt_int("patience", 1, diags);
    config.warmup = args.count("warmup", 0, (0, EPOCHS.1), diags);
    if let (Some(_), true, Some(value)) = (config.patience, config.validation == 0.0, args.value("patience")) {
        diags.push(messages::patience_without_validation(value.span()));
    }
    if let Some(value) = args.value("data") {
        config.data = data_source(value, diags);
        config.data_span = Some(value.span());
    }
    let standardize = args.bool("standardize", false, diags);
    let scale = args.opt_float("scale", Bound::Positive, diags);
    config.preprocess = match (scale, standardize) {
        (Some(_), true) => {
            if let Some(v) = args.value("standardize") {
                diags.push(messages::scale_and_standardize(v.span()));
            }
            Preprocess::Standardize
        }
        (Some(s), false) => Preprocess::Scale(s),
        (None, true) => Preprocess::Standardize,
        (None, false) => Preprocess::None,
    };
    config.standardize_target = args.bool("standardize_target", false, diags);
    if let Some(value) = args.value("pretrain") {
        config.pretrain = pretrain(value, diags);
    }
    config
}

/// Accepts `name` or `name(args)` and matches it against a catalogue;
/// anything else is refused with `example`, a call of this setting's own.
fn named_call<'a>(
    value: &'a Value,
    (setting, example): (&str, &str),
    catalogue: &[(&'static str, &'static [&'static str], &'static [&'static str])],
    diags: &mut Vec<Diag>,
) -> Option<(&'static str, Args<'a>)> {
    let call = match value {
        Value::Call(c) => c,
        Value::Name(id) => {
            // A bare name is a call without arguments; build it in place.
            let found = catalogue.iter().find(|(n, _, _)| *n == id.name);
            return match found {
                Some((name, params, required)) => {
                    Some((name, Args::match_args(id, id.span, &[], params, required, diags)))
                }
                None => {
                    let suggestion = did_you_mean(&id.name, catalogue.iter().map(|(n, _, _)| *n));
                    diags.push(messages::unknown_choice(id, setting, catalogue.iter().map(|(n, _, _)| *n), suggestion));
                    None
                }
            };
        }
        other => {
            diags.push(messages::wrong_type(other, setting, &format!("a name or a call like `{example}`")));
            return None;
        }
    };
    match catalogue.iter().find(|(n, _, _)| *n == call.name.name) {
        Some((name, params, required)) => Some((name, Args::match_call(call, params, required, diags))),
        None => {
            let suggestion = did_you_mean(&call.name.name, catalogue.iter().map(|(n, _, _)| *n));
            diags.push(messages::unknown_choice(&call.name, setting, catalogue.iter().map(|(n, _, _)| *n), suggestion));
            None
        }
    }
}

fn optimizer(value: &Value, diags: &mut Vec<Diag>) -> Option<(Optimizer, Option<f64>)> {
    let catalogue: Vec<(&'static str, &'static [&'static str], &'static [&'static str])> =
        OPTIMIZERS.iter().map(|(n, p)| (*n, *p, &[][..])).collect();
    let (name, args) = named_call(value, ("optimizer", "sgd(lr = 0.1)"), &catalogue, diags)?;
    let lr = args.opt_float("lr", Bound::Positive, diags);
    let optimizer = match name {
        "gd" => Optimizer::Gd,
        "sgd" => {
            let momentum = args.float("momentum", 0.0, Bound::UnitOpen, diags);
            let nesterov = args.bool("nesterov", false, diags);
            match (momentum > 0.0, nesterov) {
                (_, true) => Optimizer::Nesterov { momentum: if momentum > 0.0 { momentum } else { 0.9 } },
                (true, false) => Optimizer::Momentum { momentum },
                (false, false) => Optimizer::Sgd,
            }
        }
        "momentum" => Optimizer::Momentum { momentum: args.float("momentum", 0.9, Bound::UnitOpen, diags) },
        "nesterov" => Optimizer::Nesterov { momentum: args.float("momentum", 0.9, Bound::UnitOpen, diags) },
        "adam" => Optimizer::Adam {
            beta1: args.float("beta1", 0.9, Bound::UnitOpen, diags),
            beta2: args.float("beta2", 0.999, Bound::UnitOpen, diags),
            eps: args.float("eps", 1e-8, Bound::Positive, diags),
        },
        "anneal" => Optimizer::Anneal {
            temperature: args.float("temperature", 1.0, Bound::Positive, diags),
            cooling: args.float("cooling", 0.95, Bound::UnitExclusive, diags),
            scale: args.float("scale", 0.1, Bound::Positive, diags),
        },
        _ => Optimizer::ContrastiveDivergence { k: args.count("k", 1, GIBBS_STEPS, diags) },
    };
    let lr = match (&optimizer, lr) {
        (Optimizer::Adam { .. }, None) => Some(0.001),
        (_, lr) => lr,
    };
    Some((optimizer, lr))
}

fn schedule(value: &Value, diags: &mut Vec<Diag>) -> Option<Schedule> {
    let (name, args) = named_call(value, ("schedule", "step(every = 10)"), SCHEDULES, diags)?;
    Some(match name {
        "constant" => Schedule::Constant,
        "step" => Schedule::Step {
            every: args.int("every", 1, 1, diags),
            gamma: args.float("gamma", 0.1, Bound::UnitExclusive, diags),
        },
        "exponential" => Schedule::Exponential { gamma: args.float("gamma", 0.95, Bound::UnitExclusive, diags) },
        "cosine" => Schedule::Cosine { min_lr: args.float("min_lr", 0.0, Bound::NonNegative, diags) },
        _ => Schedule::Plateau {
            factor: args.float("factor", 0.1, Bound::UnitExclusive, diags),
            patience: args.count("patience", 10, (0, EPOCHS.1), diags),
            threshold: args.float("threshold", 1e-4, Bound::UnitOpen, diags),
            min_lr: args.float("min_lr", 0.0, Bound::NonNegative, diags),
        },
    })
}

fn data_source(value: &Value, diags: &mut Vec<Diag>) -> Option<DataSource> {
    if let Value::String(path, span) = value {
        diags.push(messages::path_as_data_source(*span, path));
        return None;
    }
    let (name, args) = named_call(value, ("data", "builtin(\"digits\")"), SOURCES, diags)?;
    Some(match name {
        "builtin" => {
            let set = args.string("name", diags)?;
            if !BUILTIN_DATA.contains(&set.as_str()) {
                let span = args.value("name").map_or(value.span(), Value::span);
                diags.push(messages::unknown_builtin(span, &set, BUILTIN_DATA));
                return None;
            }
            DataSource::Builtin { name: set }
        }
        "csv" => DataSource::Csv {
            train: args.string("train", diags)?,
            test: args.string("test", diags),
            columns: Columns {
                target: args.strings("target", diags),
                features: args.strings("features", diags),
                target_span: args.value("target").map(Value::span),
                features_span: args.value("features").map(Value::span),
            },
        },
        _ => DataSource::Idx {
            images: args.string("images", diags)?,
            labels: args.string("labels", diags)?,
            test_images: args.string("test_images", diags),
            test_labels: args.string("test_labels", diags),
        },
    })
}

fn pretrain(value: &Value, diags: &mut Vec<Diag>) -> Option<Pretrain> {
    let catalogue: &[(&str, &[&str], &[&str])] = &[("cd", &["k", "epochs", "lr"], &[])];
    let (_, args) = named_call(value, ("pretrain", "cd(k = 1)"), catalogue, diags)?;
    Some(Pretrain {
        k: args.count("k", 1, GIBBS_STEPS, diags),
        epochs: args.count("epochs", 5, EPOCHS, diags),
        lr: args.float("lr", 0.1, Bound::Positive, diags),
    })
}
