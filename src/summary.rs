//! `nnc summary`: per-layer output shape, parameters, forward cost and
//! activation memory of a checked model. Needs no data and no compilation.

use serde::Serialize;

use crate::check::{CheckedModel, InputKind};
use crate::shape::{bytes_text, grouped, shape_text};

/// One row of the summary table.
#[derive(Debug, Serialize)]
pub struct Row {
    pub name: String,
    pub layer: String,
    pub output: Vec<usize>,
    pub params: usize,
    /// Forward multiply-adds per sample.
    pub macs: u64,
    /// Bytes of f32 activations this layer's output holds per sample.
    pub activation_bytes: usize,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub model: String,
    pub rows: Vec<Row>,
    pub total_params: usize,
    pub total_macs: u64,
    /// Forward FLOPs per sample (2 per multiply-add).
    pub total_flops: u64,
    pub total_activation_bytes: usize,
    /// The batch of the model's training step (1 for `batch = full`: rows unknown).
    pub training_batch: usize,
    /// About how much memory that training step takes.
    pub training_bytes: u64,
}

pub fn summarize(model: &CheckedModel) -> Summary {
    let mut rows: Vec<Row> = model
        .inputs
        .iter()
        .map(|i| Row {
            name: i.name.clone(),
            layer: match i.kind {
                InputKind::Real => "input",
                InputKind::Seq => "input seq",
                InputKind::Tokens => "input tokens",
            }
            .to_string(),
            output: i.shape.clone(),
            params: 0,
            macs: 0,
            activation_bytes: 4 * i.shape.iter().product::<usize>(),
        })
        .collect();
    rows.extend(model.nodes.iter().map(|n| Row {
        name: n.name.clone(),
        layer: n.layer.keyword().to_string(),
        output: n.shape.clone(),
        params: n.params,
        macs: n.macs,
        activation_bytes: 4 * n.shape.iter().product::<usize>(),
    }));
    let total_macs = model.total_macs();
    let training_batch = match model.train.batch {
        crate::check::Batch::Size(b) => b,
        crate::check::Batch::Full => 1,
    };
    Summary {
        training_batch,
        training_bytes: model.training_memory(training_batch).bytes,
        model: model.name.clone(),
        total_params: model.total_params(),
        total_macs,
        total_flops: 2 * total_macs,
        total_activation_bytes: rows.iter().map(|r| r.activation_bytes).sum(),
        rows,
    }
}

/// Scales a count to k/M/G for the table.
fn human(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{:.1}k", n as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.1}M", n as f64 / 1e6),
        _ => format!("{:.2}G", n as f64 / 1e9),
    }
}

impl Summary {
    pub fn to_text(&self) -> String {
        let mut out = format!("model {}\n", self.model);
        let header = ["layer", "kind", "output", "params", "mult-adds", "activations"];
        let mut table: Vec<[String; 6]> = vec![header.map(String::from)];
        for r in &self.rows {
            table.push([
                r.name.clone(),
                r.layer.clone(),
                shape_text(&r.output),
                grouped(r.params as u64),
                human(r.macs),
                bytes_text(r.activation_bytes as u64),
            ]);
        }
        let widths: Vec<usize> =
            (0..6).map(|c| table.iter().map(|row| row[c].chars().count()).max().unwrap_or(0)).collect();
        for (i, row) in table.iter().enumerate() {
            let cells: Vec<String> =
                row.iter()
                    .enumerate()
                    .map(|(c, cell)| {
                        if c < 3 { format!("{cell:<w$}", w = widths[c]) } else { format!("{cell:>w$}", w = widths[c]) }
                    })
                    .collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
            if i == 0 {
                out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 10));
                out.push('\n');
            }
        }
        out.push_str(&format!(
            "total: {} parameters, {} mult-adds ({} FLOPs) and {} of activations per sample\n",
            grouped(self.total_params as u64),
            human(self.total_macs),
            human(self.total_flops),
            bytes_text(self.total_activation_bytes as u64)
        ));
        out.push_str(&format!(
            "training step at batch {}: about {} (parameters, gradients, optimizer state and kept outputs)\n",
            self.training_batch,
            bytes_text(self.training_bytes)
        ));
        out
    }
}
