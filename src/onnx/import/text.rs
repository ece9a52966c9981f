//! The model's text from what the importer followed: its inputs, a target
//! and a loss term for each output of the graph, its layers' statements and
//! its preprocessing.

use super::{Flow, Imported, Importer, Value, identifier, number};
use crate::data::Scaler;

impl Importer<'_> {
    /// The model's text: each output of the graph a prediction, compared
    /// with a target of its own by a loss of its kind (cross-entropy for a
    /// classifier, squared error otherwise), the terms summed with weight 1.
    pub(super) fn finish(mut self, name: &str) -> Result<Imported, String> {
        let several = self.outputs.len() > 1;
        let mut targets = Vec::new();
        let mut terms = Vec::new();
        let mut predictions: Vec<String> = Vec::new();
        // Each squared error's output, and whether it is taken out of standard units.
        let mut regressions: Vec<(String, bool)> = Vec::new();
        for output in self.outputs.clone() {
            let Some(Value::Computed { mut flow, shape }) = self.values.get(&output).cloned() else {
                return Err(format!("the graph's output `{output}` is not computed from its input"));
            };
            // A final softmax: a classifier of the scores before it.
            let classes = (flow.stages.last().map(String::as_str) == Some("softmax") && shape.len() == 1).then(|| {
                flow.stages.pop();
                shape[0]
            });
            let named = flow.stages.is_empty() && !flow.source.contains('(');
            if named && self.inputs.iter().any(|i| i.name == flow.source) {
                return Err(if several {
                    format!("the graph's output `{output}` computes nothing from its input")
                } else {
                    "the graph computes nothing from its input".to_string()
                });
            }
            let prediction = if named {
                // A value other layers read too, already named.
                flow.source.clone()
            } else {
                let wanted = match (several, classes) {
                    (false, Some(_)) => "logits".to_string(),
                    (false, None) => "prediction".to_string(),
                    (true, _) => identifier(output.strip_suffix("_probabilities").unwrap_or(&output)),
                };
                let prediction = self.unused_name(wanted, &predictions);
                self.statements.push(format!("{} => {prediction}", pipeline_text(&flow)));
                prediction
            };
            let target =
                if several { self.unused_name(format!("{prediction}_target"), &predictions) } else { "y".into() };
            let (kind, loss) = match classes {
                Some(k) => (format!("class({k})"), "cross_entropy"),
                None => {
                    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
                    (format!("real[{}]", dims.join(", ")), "mse")
                }
            };
            match self.target_scales.remove(&output) {
                Some((mean, std)) => {
                    let columns = vec![mean.len()];
                    self.tensors.insert(format!("{target}.mean"), (columns.clone(), mean));
                    self.tensors.insert(format!("{target}.std"), (columns, std));
                    regressions.push((output.clone(), true));
                }
                None if classes.is_none() => regressions.push((output.clone(), false)),
                None => {}
            }
            targets.push(format!("target {target}: {kind}"));
            terms.push(format!("{loss}({prediction}, {target})"));
            predictions.extend([prediction, target]);
        }
        // nnc standardizes every squared error's target or none.
        let scaled = regressions.iter().find(|(_, scaled)| *scaled);
        if let (Some((one, _)), Some((other, _))) = (scaled, regressions.iter().find(|(_, scaled)| !*scaled)) {
            return Err(format!(
                "the graph's output `{one}` is taken out of standard units and `{other}` is not; \
                 nnc standardizes the targets of every regression output of a model or of none"
            ));
        }
        let mut source = format!("// Imported from ONNX by `nnc import`.\nmodel {} {{\n", identifier(name));
        for input in &self.inputs {
            let dims: Vec<String> = input.shape.iter().map(usize::to_string).collect();
            let kind = if input.tokens { "tokens" } else { "" };
            source += &format!("  input {}: {kind}[{}]\n", input.name, dims.join(", "));
        }
        for target in &targets {
            source += &format!("  {target}\n");
        }
        source += "\n";
        for statement in &self.statements {
            source += &format!("  {statement}\n");
        }
        source += &format!("  loss = {}\n", terms.join(" + "));
        let scaler = self.row_scaler();
        let mut settings = match &scaler {
            Scaler::Scale(s) => vec![format!("scale = {}", number(*s))],
            Scaler::Standardize { .. } => vec!["standardize = true".to_string()],
            Scaler::None => vec![],
        };
        if scaled.is_some() {
            settings.push("standardize_target = true".into());
        }
        if !settings.is_empty() {
            source += &format!("  train {{\n    {}\n  }}\n", settings.join("\n    "));
        }
        source += "}\n";
        let source = crate::format::format_source(&source)
            .map_err(|d| format!("the imported model does not parse: {}", d.message))?;
        Ok(Imported { source, tensors: self.tensors, scaler })
    }

    /// The scaling of a data row, which holds the inputs side by side: each
    /// input's own, as one scale where they share it, per feature otherwise
    /// (an unscaled input's features divided by 1, exactly themselves).
    fn row_scaler(&self) -> Scaler {
        let scalers: Vec<&Scaler> = self.inputs.iter().map(|i| &i.scaler).collect();
        match scalers[..] {
            [one] => return one.clone(),
            _ if scalers.iter().all(|s| matches!(s, Scaler::None)) => return Scaler::None,
            [Scaler::Scale(first), ..]
                if scalers.iter().all(|s| matches!(s, Scaler::Scale(x) if x.to_bits() == first.to_bits())) =>
            {
                return Scaler::Scale(*first);
            }
            _ => {}
        }
        let (mut mean, mut std) = (Vec::new(), Vec::new());
        for input in &self.inputs {
            let width: usize = input.shape.iter().product();
            match &input.scaler {
                Scaler::None => (mean.extend(vec![0.0; width]), std.extend(vec![1.0; width])),
                Scaler::Scale(s) => (mean.extend(vec![0.0; width]), std.extend(vec![*s; width])),
                Scaler::Standardize { mean: m, std: d } => (mean.extend_from_slice(m), std.extend_from_slice(d)),
            };
        }
        Scaler::Standardize { mean, std }
    }

    /// `wanted`, or it followed by `_2`, `_3`, … where the input, a named
    /// value or one of `taken` already has it.
    fn unused_name(&self, wanted: String, taken: &[String]) -> String {
        let used = |n: &str| {
            self.inputs.iter().any(|i| i.name == n)
                || taken.iter().any(|t| t == n)
                || n.strip_prefix('h')
                    .and_then(|k| k.parse::<usize>().ok())
                    .is_some_and(|k| (1..=self.names).contains(&k))
        };
        if !used(&wanted) {
            return wanted;
        }
        (2..).map(|k| format!("{wanted}_{k}")).find(|n| !used(n)).unwrap_or(wanted)
    }
}

/// `source |> stage |> …`; a long pipeline starts a line at each layer
/// with weights, as a person would write it.
pub(super) fn pipeline_text(flow: &Flow) -> String {
    let long = flow.stages.len() > 4;
    let mut text = flow.source.clone();
    for stage in &flow.stages {
        let weighted = ["dense(", "conv2d(", "batchnorm"].iter().any(|w| stage.starts_with(w));
        text += if long && weighted { "\n    |> " } else { " |> " };
        text += stage;
    }
    text
}
