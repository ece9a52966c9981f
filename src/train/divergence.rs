//! Where a diverging epoch began: its steps replayed up to the one whose
//! loss was not finite, and that step's values in the interpreter.

use super::{TrainError, Trainer};
use crate::data::Dataset;
use crate::diag::Span;
use crate::ir;

impl Trainer {
    /// Replays the epoch (from its starting weights, which the caller has
    /// restored) up to the step whose loss went non-finite, then runs that
    /// step in the interpreter and names the first value, in evaluation
    /// order, that is not a finite number: where the overflow began.
    pub(super) fn first_non_finite(
        &mut self,
        train: &Dataset,
        order: &[usize],
        (epoch, batch): (usize, usize),
        failing: usize,
    ) -> Result<Option<(String, Option<Span>)>, TrainError> {
        let mut rows = train.select(&order[..0]);
        let per_epoch = order.len().div_ceil(batch);
        if let Some(replicas) = self.replicas.as_mut() {
            replicas.unsync();
        }
        for chunk in order.chunks(batch).take(failing) {
            train.select_into(chunk, &mut rows);
            let lr = self.lr_of_step(epoch, self.steps_done, per_epoch);
            self.step_as_fitted(&rows.x, &rows.y, rows.rows, lr)?;
        }
        let lr = self.lr_of_step(epoch, self.steps_done, per_epoch);
        train.select_into(&order[failing * batch..((failing + 1) * batch).min(order.len())], &mut rows);
        let step = self.train_step(rows.rows)?.graph.clone();
        self.steps_done += 1;
        let (x, y) = self.own_rows(&rows.x, &rows.y, rows.rows);
        let values = crate::exec::interpret(&step.graph, &self.model.store, x, y, &self.hypers(lr))
            .map_err(TrainError::Internal)?;
        let forward_end = step.graph.loss.map_or(0, |l| l.0);
        let Some(first) = values.iter().position(|v| v.iter().any(|x| !x.is_finite())) else {
            return Ok(None);
        };
        let node = step.graph.node(ir::ValueId(first));
        let kind = if values[first].iter().any(|x| x.is_nan()) { "NaN" } else { "infinite" };
        let what = match node.op {
            ir::Op::Param(p) => format!("parameter `{}`", self.model.param_names[p]),
            ir::Op::Input(_) => "the input data".to_string(),
            _ if first <= forward_end => format!("the forward value `{}` ({kind})", node.op.name()),
            _ => format!("the backward value `{}` ({kind})", node.op.name()),
        };
        Ok(Some((what, Some(node.span))))
    }
}
