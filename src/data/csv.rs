//! CSV: one header row, then one sample per line. Features first; the target
//! is the last column(s), or the column named by `target = "…"`.

use super::{DataError, Dataset, RowSpec};

pub fn parse_csv(bytes: &[u8], name: &str, spec: &RowSpec, target: Option<&str>) -> Result<Dataset, DataError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| DataError::about_file(name, None, "the file is not UTF-8 text", "save it as plain UTF-8 CSV"))?;
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        return Err(DataError::about_file(
            name,
            None,
            "the file is empty",
            "a CSV needs a header row and one row per sample",
        ));
    };
    let columns: Vec<&str> = header.split(',').map(str::trim).collect();
    if columns.len() == 1 && header.contains(';') {
        return Err(DataError::about_file(
            name,
            Some(1),
            "the header has no commas but has semicolons",
            "nnc reads comma-separated values; save the file with `,` between the columns",
        ));
    }
    // A first row of numbers is data: taking it as the header would lose a sample.
    if columns.iter().all(|c| c.parse::<f64>().is_ok()) {
        return Err(DataError::about_file(
            name,
            Some(1),
            "the first row holds numbers, not column names",
            "add a header row naming the columns (for example x0,x1,…,label)",
        ));
    }
    let target_width = spec.target_width();
    let (target_columns, ignore_last) = column_layout(&columns, spec, target, name)?;
    let mut x = Vec::new();
    let mut y = Vec::new();
    let mut rows = 0;
    let mut row_targets = Vec::with_capacity(target_width);
    for (index, line) in lines {
        let line_no = index + 1;
        let cells: Vec<&str> = line.split(',').collect();
        if cells.len() != columns.len() {
            return Err(DataError::new(
                name,
                Some(line_no),
                format!("this row has {} values, the header has {}", cells.len(), columns.len()),
                "every row needs one value per header column",
            ));
        }
        row_targets.clear();
        for (c, cell) in cells.iter().enumerate() {
            if ignore_last && c == cells.len() - 1 {
                continue;
            }
            let value = cell_value(cell, columns[c], name, line_no)?;
            if target_columns.contains(&c) {
                row_targets.push(value);
            } else {
                spec.check_feature(value).map_err(|m| {
                    DataError::new(
                        name,
                        Some(line_no),
                        format!("column `{}`: {m}", columns[c]),
                        "fix the token ids or the embedding's vocab",
                    )
                })?;
                x.push(value);
            }
        }
        spec.check_target(&row_targets).map_err(|m| {
            DataError::new(name, Some(line_no), m, "fix the label or the model's target type").about_target()
        })?;
        y.extend_from_slice(&row_targets);
        rows += 1;
    }
    if rows == 0 {
        return Err(DataError::about_file(name, None, "the file has a header but no rows", "add one row per sample"));
    }
    Ok(Dataset { rows, width: spec.features, x, target_width, y })
}

/// Which header columns hold the target, and whether a trailing label
/// column is ignored (a model without a target predicting labelled rows);
/// an error unless the rest are exactly the model's features.
fn column_layout(
    columns: &[&str],
    spec: &RowSpec,
    target: Option<&str>,
    name: &str,
) -> Result<(Vec<usize>, bool), DataError> {
    let target_width = spec.target_width();
    // Which columns hold the target.
    let target_columns: Vec<usize> = match target {
        Some(t) => match columns.iter().position(|c| *c == t) {
            Some(i) => vec![i],
            None => {
                return Err(DataError::new(
                    name,
                    Some(1),
                    format!("no column named `{t}` in the header"),
                    format!("the columns are: {}", columns.join(", ")),
                )
                .about_target());
            }
        },
        None => (columns.len().saturating_sub(target_width)..columns.len()).collect(),
    };
    // A model without a target ignores a trailing column named as a label;
    // any other extra column is an error, never silently a feature.
    let is_label = |column: &&str| {
        ["label", "target", "class", "y"].contains(&column.to_ascii_lowercase().as_str())
            || spec.label_names.iter().any(|n| n == column)
    };
    let ignore_last = target_width == 0 && columns.len() == spec.features + 1 && columns.last().is_some_and(is_label);
    let feature_count = columns.len() - target_columns.len() - usize::from(ignore_last);
    if feature_count != spec.features {
        return Err(DataError::new(
            name,
            Some(1),
            format!(
                "the file has {feature_count} feature column(s) but the model's input has {} values",
                spec.features
            ),
            if target_width == 0 {
                format!(
                    "{} column(s) in the header; a last column named `label`, `target`, `class` or `y` (or as the \
                     model's target) is ignored, any other extra column is an error",
                    columns.len()
                )
            } else {
                format!("{} column(s) in the header, of which {} target column(s)", columns.len(), target_columns.len())
            },
        ));
    }
    Ok((target_columns, ignore_last))
}

/// One cell as a finite number, or an error naming its line and column.
fn cell_value(cell: &str, column: &str, name: &str, line_no: usize) -> Result<f32, DataError> {
    let value: f32 = cell.trim().parse().map_err(|_| {
        DataError::new(
            name,
            Some(line_no),
            format!("`{}` in column `{column}` is not a number", cell.trim()),
            "use plain decimal numbers",
        )
    })?;
    if !value.is_finite() {
        return Err(DataError::new(
            name,
            Some(line_no),
            if cell.trim().parse::<f64>().is_ok_and(f64::is_finite) {
                format!("column `{column}` holds {}, beyond the range of 32-bit floats (about ±3.4e38)", cell.trim())
            } else {
                format!("column `{column}` holds {value}")
            },
            "remove or fill rows with missing values, or rescale values that large",
        ));
    }
    Ok(value)
}
