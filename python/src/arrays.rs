//! The numpy arrays a model is given, checked against its inputs and
//! targets: shapes, finite values, class ids and token ids, each mistake
//! a `ValueError` that says what the model wants.

use numpy::{PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::prelude::*;

use nnc::check::InputKind;
use nnc::data::{Dataset, TargetSpecOfRow};
use nnc::diag;

use crate::{Core, model_error};

impl Core {
    /// `input image: [1, 28, 28] (line 7)`: the declaration, for messages.
    fn declared_input(&self) -> String {
        let model = self.model();
        let input = &model.inputs[0];
        let (line, _) = diag::line_col(&self.checked.source, input.span.start);
        if model.inputs.len() > 1 {
            let each: Vec<String> =
                model.inputs.iter().map(|i| format!("`{}` {}", i.name, nnc::shape::shape_text(&i.shape))).collect();
            return format!("inputs {} are one row of {} values (line {line})", each.join(", "), self.spec.features);
        }
        format!("input `{}` is {} per row (line {line})", input.name, nnc::shape::shape_text(&input.shape))
    }

    /// One row's shape: the input's, or for several inputs their values side by side.
    pub(crate) fn row_shape(&self) -> Vec<usize> {
        match &self.model().inputs[..] {
            [input] => input.shape.clone(),
            _ => vec![self.spec.features],
        }
    }

    /// Checks an array of input rows: shape `(rows, *shape)` or
    /// `(rows, features)`, finite values, token ids in range.
    pub(crate) fn check_x(&self, name: &str, x: &PyReadonlyArrayDyn<'_, f32>) -> PyResult<usize> {
        let model = self.model();
        let shape = &self.row_shape();
        let dims = x.shape();
        let fits = dims.len() >= 2 && (dims[1..] == shape[..] || (dims.len() == 2 && dims[1] == self.spec.features));
        if !fits {
            let flat = if shape.len() > 1 { format!(" or (rows, {})", self.spec.features) } else { String::new() };
            let wanted: Vec<String> = shape.iter().map(usize::to_string).collect();
            return Err(model_error(format!(
                "{name} has shape {}; the model's {}: pass an array of shape (rows, {}){flat}",
                shape_tuple(dims),
                self.declared_input(),
                wanted.join(", ")
            )));
        }
        let values = x.as_slice().map_err(|e| model_error(format!("{name}: {e}")))?;
        for (i, &v) in values.iter().enumerate() {
            let (row, column) = (i / self.spec.features.max(1), i % self.spec.features.max(1));
            if !v.is_finite() {
                return Err(model_error(format!(
                    "{name} holds {v} at row {row}, feature {column}; nnc trains and predicts on finite numbers only"
                )));
            }
            if model.inputs[0].kind == InputKind::Tokens {
                self.spec
                    .check_feature(v)
                    .map_err(|e| model_error(format!("{name}, row {row}, feature {column}: {e}")))?;
            }
        }
        Ok(dims[0])
    }

    /// Checks targets for `rows` rows and returns them as the trainer reads them.
    fn check_y(&self, y: &PyReadonlyArrayDyn<'_, f32>, rows: usize) -> PyResult<Vec<f32>> {
        let dims = y.shape();
        let values = y.as_slice().map_err(|e| model_error(format!("y: {e}")))?;
        let width = self.spec.target_width();
        if width == 0 {
            return Err(model_error("this model has no target (it reconstructs its input): call fit(x) without y"));
        }
        if dims.first() != Some(&rows) || values.len() != rows * width {
            let wanted = if width == 1 { "(rows,)".to_string() } else { format!("(rows, {width})") };
            return Err(model_error(format!(
                "y has shape {} for {rows} rows of x; the model's target wants {wanted}",
                shape_tuple(dims)
            )));
        }
        // Each column's target: a row holds the targets side by side.
        let columns: Vec<&TargetSpecOfRow> =
            self.spec.targets.iter().flat_map(|t| std::iter::repeat_n(t, t.width())).collect();
        for (i, &v) in values.iter().enumerate() {
            let bad = match columns.get(i % width) {
                Some(TargetSpecOfRow::Class(k)) => (v < 0.0 || v.fract() != 0.0 || v >= *k as f32)
                    .then(|| format!("is not a class id: ids are whole numbers from 0 to {}", k - 1)),
                Some(TargetSpecOfRow::Binary(_)) => (v != 0.0 && v != 1.0).then(|| "is not 0 or 1".to_string()),
                _ => (!v.is_finite()).then(|| "is not a finite number".to_string()),
            };
            if let Some(what) = bad {
                let at = if width == 1 { format!("{}", i / width) } else { format!("{}, {}", i / width, i % width) };
                return Err(model_error(format!("y[{at}] = {v} {what}")));
            }
        }
        Ok(values.to_vec())
    }

    /// Rows as a data set, with targets (`y`) or without.
    pub(crate) fn dataset(
        &self,
        x: &PyReadonlyArrayDyn<'_, f32>,
        y: Option<&PyReadonlyArrayDyn<'_, f32>>,
    ) -> PyResult<Dataset> {
        let rows = self.check_x("x", x)?;
        if rows == 0 {
            return Err(model_error("x has no rows: training and evaluating need at least one"));
        }
        let targets = match y {
            Some(y) => self.check_y(y, rows)?,
            None if self.spec.target_width() > 0 => return Err(model_error("this model has a target: pass y too")),
            None => Vec::new(),
        };
        Ok(Dataset {
            rows,
            width: self.spec.features,
            x: x.as_slice().map_err(|e| model_error(e.to_string()))?.to_vec(),
            target_width: self.spec.target_width(),
            y: targets,
            columns: Vec::new(),
        })
    }
}

fn shape_tuple(dims: &[usize]) -> String {
    let parts: Vec<String> = dims.iter().map(usize::to_string).collect();
    if parts.len() == 1 { format!("({},)", parts[0]) } else { format!("({})", parts.join(", ")) }
}
