//! CSV: one header row, then one sample per line. Features first; the target
//! is the last column(s), or the columns named by `target = …`; with
//! `features = […]` the input reads the columns named, in that order, and
//! other columns are ignored. When the weights' feature columns are known by
//! name, a header with those names is matched by name, in any order.
//!
//! A file is read a part at a time (`CsvRows`), so what reading holds is the
//! part's text, not the file's: `nnc predict` streams a file of any length,
//! and loading a data set keeps its values and one part of its text.

use std::io::Read;
use std::ops::Range;

use rayon::prelude::*;

use super::{DataError, Dataset, RowSpec, past_limit, read_error};
use crate::check::Columns;
use crate::diag::did_you_mean;

/// Every row of a CSV held in bytes (a built-in set, a test's text).
pub fn parse_csv(bytes: &[u8], name: &str, spec: &RowSpec, chosen: &Columns) -> Result<Dataset, DataError> {
    CsvRows::new(bytes, name, spec, chosen, None)?.read_all()
}

/// Bytes asked of the reader at a time.
const BLOCK: usize = 1 << 20;

/// The most text one part of rows spans: later lines wait for the next part
/// (unless the part's first line alone is longer).
const PART_BYTES: usize = 16 << 20;

/// The longest line read: a file without line ends is an error, not all of memory.
const LINE_LIMIT: usize = 1 << 28;

/// A CSV whose header has been read and checked, giving its rows a part at a time.
pub struct CsvRows<R> {
    reader: R,
    name: String,
    spec: RowSpec,
    columns: Vec<String>,
    layout: Layout,
    /// Text read and not yet parsed, from the start of a line.
    pending: Vec<u8>,
    /// Lines of the file before `pending`'s first (blank ones included).
    lines_before: usize,
    /// Bytes read so far, and the most the file may hold (`None`: any number).
    read: u64,
    limit: Option<u64>,
    at_end: bool,
    rows: usize,
}

impl<R: Read> CsvRows<R> {
    /// Reads the header and works out which columns are features and
    /// targets. `limit` bounds the file's bytes when its rows are kept whole.
    pub fn new(reader: R, name: &str, spec: &RowSpec, chosen: &Columns, limit: Option<u64>) -> Result<Self, DataError> {
        let mut csv = CsvRows {
            reader,
            name: name.to_string(),
            spec: spec.clone(),
            columns: Vec::new(),
            layout: Layout { features: Vec::new(), targets: Vec::new() },
            pending: Vec::new(),
            lines_before: 0,
            read: 0,
            limit,
            at_end: false,
            rows: 0,
        };
        let Lines { lines, used, passed } = csv.take_lines(1)?;
        let text = csv.text(used)?;
        let Some(header) = lines.first().map(|(_, range)| text[range.clone()].to_string()) else {
            return Err(DataError::about_file(
                name,
                None,
                "the file is empty",
                "a CSV needs a header row and one row per sample",
            ));
        };
        let columns: Vec<&str> = header.split(',').map(unquoted).collect();
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
        csv.layout = column_layout(&columns, spec, chosen, name)?;
        csv.columns = columns.into_iter().map(str::to_string).collect();
        csv.consume(used, passed);
        Ok(csv)
    }

    /// The next rows, at most `max` (fewer only where a part's text ends or
    /// the file does); `None` after the last. A file with no rows at all is an error.
    pub fn next_rows(&mut self, max: usize) -> Result<Option<Dataset>, DataError> {
        let Lines { lines, used, passed } = self.take_lines(max)?;
        if lines.is_empty() {
            if self.rows == 0 {
                return Err(DataError::about_file(
                    &self.name,
                    None,
                    "the file has a header but no rows",
                    "add one row per sample",
                ));
            }
            return Ok(None);
        }
        let text = self.text(used)?;
        let lines: Vec<(usize, &str)> = lines.into_iter().map(|(n, range)| (n, &text[range])).collect();
        let columns: Vec<&str> = self.columns.iter().map(String::as_str).collect();
        let table = Table {
            name: &self.name,
            spec: &self.spec,
            columns: &columns,
            features: &self.layout.features,
            targets: &self.layout.targets,
        };
        // Parts of the rows parsed side by side; the first error in the file's
        // order is the one reported, as when reading them one by one.
        // Memory follows the values parsed, never the count of lines (a long
        // file of short, bad lines must not reserve room for whole rows).
        let parts = lines.par_chunks(ROWS_PER_TASK).map(|part| table.parse(part)).collect::<Vec<_>>();
        let parts = parts.into_iter().collect::<Result<Vec<_>, _>>()?;
        let x = parts.iter().map(|(x, _)| x.as_slice()).collect::<Vec<_>>().concat();
        let y = parts.iter().map(|(_, y)| y.as_slice()).collect::<Vec<_>>().concat();
        let rows = lines.len();
        let columns = self.layout.features.iter().map(|&c| self.columns[c].clone()).collect();
        self.consume(used, passed);
        self.rows += rows;
        Ok(Some(Dataset { rows, width: self.spec.features, x, target_width: self.spec.target_width(), y, columns }))
    }

    /// Every row left, in one data set.
    pub fn read_all(mut self) -> Result<Dataset, DataError> {
        let mut all = self.next_rows(usize::MAX)?.unwrap_or_default();
        while let Some(part) = self.next_rows(usize::MAX)? {
            all.x.extend_from_slice(&part.x);
            all.y.extend_from_slice(&part.y);
            all.rows += part.rows;
        }
        Ok(all)
    }

    /// The next non-blank lines of `pending`, reading more as needed: at
    /// most `max`, and no more than `PART_BYTES` of text unless the first
    /// line alone is longer.
    fn take_lines(&mut self, max: usize) -> Result<Lines, DataError> {
        let (mut lines, mut start, mut line_no) = (Vec::new(), 0, self.lines_before);
        // `pending[start..start + searched]` holds no line end.
        let mut searched = 0;
        while lines.len() < max && (lines.is_empty() || start < PART_BYTES) {
            let end = match self.pending[start + searched..].iter().position(|&b| b == b'\n') {
                Some(i) => start + searched + i,
                None if self.at_end && start == self.pending.len() => break,
                None if self.at_end => self.pending.len(),
                None => {
                    searched = self.pending.len() - start;
                    if searched > LINE_LIMIT {
                        return Err(DataError::about_file(
                            &self.name,
                            Some(line_no + 1),
                            format!("this line goes on past {} MiB without ending", LINE_LIMIT >> 20),
                            "is this a CSV file, one sample per line?",
                        ));
                    }
                    self.fill()?;
                    continue;
                }
            };
            line_no += 1;
            let body = start
                ..if end > start && self.pending.get(end) == Some(&b'\n') && self.pending[end - 1] == b'\r' {
                    end - 1
                } else {
                    end
                };
            if !blank(&self.pending[body.clone()]) {
                lines.push((line_no, body));
            }
            (start, searched) = ((end + 1).min(self.pending.len()), 0);
        }
        Ok(Lines { lines, used: start, passed: line_no })
    }

    /// The first `used` bytes of `pending` as text, or an error naming the
    /// line where they stop being UTF-8.
    fn text(&self, used: usize) -> Result<&str, DataError> {
        std::str::from_utf8(&self.pending[..used]).map_err(|e| {
            let valid = &self.pending[..e.valid_up_to()];
            let line = self.lines_before + 1 + valid.iter().filter(|&&b| b == b'\n').count();
            DataError::about_file(&self.name, Some(line), "the file is not UTF-8 text", "save it as plain UTF-8 CSV")
        })
    }

    /// Drops the first `used` bytes of `pending`, `passed` lines into the file.
    fn consume(&mut self, used: usize, passed: usize) {
        self.pending.drain(..used);
        self.lines_before = passed;
    }

    /// Reads the next block of the file onto `pending` (`at_end` when none is left).
    fn fill(&mut self) -> Result<(), DataError> {
        let start = self.pending.len();
        // `read_to_end` grows `pending` with what comes: a small file takes little room.
        let got = (&mut self.reader)
            .take(BLOCK as u64)
            .read_to_end(&mut self.pending)
            .map_err(|e| read_error(&self.name, &e))?;
        self.at_end = got == 0;
        // Text has no NUL bytes: a binary file or a device stops here, early.
        if self.pending[start..].contains(&0) {
            return Err(DataError::about_file(
                &self.name,
                None,
                "the file holds NUL bytes, so it is not CSV text",
                "is this the right file?",
            ));
        }
        self.read += got as u64;
        if let Some(limit) = self.limit.filter(|&limit| self.read > limit) {
            return Err(past_limit(&self.name, limit));
        }
        Ok(())
    }
}

/// Lines found at the start of `CsvRows::pending`.
struct Lines {
    /// Each non-blank line's number (from 1) and its bytes, without its end.
    lines: Vec<(usize, Range<usize>)>,
    /// The bytes they and the blank lines among them span.
    used: usize,
    /// The number of the last line they pass.
    passed: usize,
}

/// Whether a line holds only white space (such lines are skipped).
fn blank(line: &[u8]) -> bool {
    if line.is_ascii() {
        return line.iter().all(u8::is_ascii_whitespace);
    }
    std::str::from_utf8(line).is_ok_and(|text| text.trim().is_empty())
}

/// Rows of a part parsed as one task on rayon's threads.
const ROWS_PER_TASK: usize = 256;

/// What reading a row needs: the file's name (for errors), the model's
/// row spec, the header, and which columns are features and targets.
struct Table<'a> {
    name: &'a str,
    spec: &'a RowSpec,
    columns: &'a [&'a str],
    features: &'a [usize],
    targets: &'a [usize],
}

impl Table<'_> {
    /// The features and targets of `lines` (numbered from 1), row after
    /// row, or the first line's error.
    fn parse(&self, lines: &[(usize, &str)]) -> Result<(Vec<f32>, Vec<f32>), DataError> {
        let Table { name, spec, columns, features, targets } = *self;
        let (mut x, mut y) = (Vec::new(), Vec::new());
        let (mut cells_of_row, mut row_targets) = (Vec::with_capacity(columns.len()), Vec::new());
        let mut integers = Vec::with_capacity(columns.len());
        for &(line_no, line) in lines {
            if small_integers(line, &mut integers) && integers.len() == columns.len() {
                // Every cell a plain integer: the values the cells below would give.
                let features = features.iter().map(|&c| integers[c]);
                if spec.vocab.is_none() || features.clone().all(|v| spec.check_feature(v).is_ok()) {
                    row_targets.clear();
                    row_targets.extend(targets.iter().map(|&c| integers[c]));
                    if spec.check_target(&row_targets).is_ok() {
                        x.extend(features);
                        y.extend_from_slice(&row_targets);
                        continue;
                    }
                }
            }
            cells_of_row.clear();
            cells_of_row.extend(cells(line));
            if cells_of_row.len() != columns.len() {
                return Err(DataError::new(
                    name,
                    Some(line_no),
                    format!("this row has {} values, the header has {}", cells_of_row.len(), columns.len()),
                    "every row needs one value per header column",
                ));
            }
            row_targets.clear();
            for &c in features {
                let value = cell_value(cells_of_row[c], columns[c], name, line_no)?;
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
            for &c in targets {
                row_targets.push(cell_value(cells_of_row[c], columns[c], name, line_no)?);
            }
            spec.check_target(&row_targets).map_err(|m| {
                DataError::new(name, Some(line_no), m, "fix the label or the model's target type").about_target()
            })?;
            y.extend_from_slice(&row_targets);
        }
        Ok((x, y))
    }
}

/// A row's cells, between its commas. A comma is one byte in UTF-8, so
/// each cut falls between characters; scanning the bytes once is a
/// sixth of a large CSV's reading faster than `split(',')`, which checks
/// every match as a character.
fn cells(line: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(line);
    std::iter::from_fn(move || {
        let row = rest?;
        match row.bytes().position(|b| b == b',') {
            Some(comma) => {
                rest = Some(&row[comma + 1..]);
                Some(&row[..comma])
            }
            None => rest.take(),
        }
    })
}

/// Every cell of `line` as `small_integer` reads it, into `values`, in one
/// pass over its bytes; false at the first cell that is not one to seven
/// digits (the line is then read cell by cell, which reports what is wrong).
/// `nnc predict` over 10,000 rows of MNIST pixels took 0.12–0.13 s reading
/// every line cell by cell, 0.09–0.11 s so.
fn small_integers(line: &str, values: &mut Vec<f32>) -> bool {
    values.clear();
    let (mut value, mut digits) = (0u32, 0usize);
    for &byte in line.as_bytes() {
        match byte {
            b'0'..=b'9' if digits < 7 => {
                value = value * 10 + u32::from(byte - b'0');
                digits += 1;
            }
            b',' if digits > 0 => {
                values.push(value as f32);
                (value, digits) = (0, 0);
            }
            _ => return false,
        }
    }
    values.push(value as f32);
    digits > 0
}

/// A cell of one to seven ASCII digits (pixel values, counts, labels) as
/// its integer: below 2²⁴, so exactly the float `parse` gives, without the
/// general decimal parser (which took a third of reading a CSV of pixels).
fn small_integer(cell: &str) -> Option<f32> {
    let digits = cell.as_bytes();
    if digits.is_empty() || digits.len() > 7 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0')) as f32)
}

/// A cell without surrounding spaces and one pair of double quotes, as
/// spreadsheets write numbers and names (`"1.5"`, `"price"`).
fn unquoted(cell: &str) -> &str {
    let cell = cell.trim();
    cell.strip_prefix('"').and_then(|c| c.strip_suffix('"')).map_or(cell, str::trim)
}

/// Which header columns a row's features and targets come from, in order.
struct Layout {
    features: Vec<usize>,
    targets: Vec<usize>,
}

/// The columns of the features and the target: as `chosen` names them; by
/// name when the spec knows the features' names and the header has them;
/// else by position (the features first, the target last; a trailing label
/// column is ignored by a model without a target). Any other extra column
/// is an error, never silently a feature.
fn column_layout(columns: &[&str], spec: &RowSpec, chosen: &Columns, name: &str) -> Result<Layout, DataError> {
    if let Some(layout) = named_layout(columns, spec, name)? {
        return Ok(layout);
    }
    let target_width = spec.target_width();
    // Which columns hold the target.
    let target_columns = if chosen.target.is_empty() || target_width == 0 {
        (columns.len().saturating_sub(target_width)..columns.len()).collect()
    } else {
        find_columns(columns, &chosen.target, name).map_err(DataError::about_target)?
    };
    if !chosen.features.is_empty() {
        let features = find_columns(columns, &chosen.features, name)?;
        return Ok(Layout { features, targets: target_columns });
    }
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
    let last = columns.len() - usize::from(ignore_last);
    let features = (0..last).filter(|c| !target_columns.contains(c)).collect();
    Ok(Layout { features, targets: target_columns })
}

/// Where each of `wanted` is in the header, or an error naming the first
/// one missing (with the closest header name, if one is close).
fn find_columns(columns: &[&str], wanted: &[String], name: &str) -> Result<Vec<usize>, DataError> {
    wanted
        .iter()
        .map(|w| {
            columns.iter().position(|c| c == w).ok_or_else(|| {
                let close = did_you_mean(w, columns.iter().copied());
                let help = match close {
                    Some(c) => format!("did you mean `{c}`? The columns are: {}", columns.join(", ")),
                    None => format!("the columns are: {}", columns.join(", ")),
                };
                DataError::new(name, Some(1), format!("no column named `{w}` in the header"), help)
            })
        })
        .collect()
}

/// The layout by name, for rows without a target whose weights know their
/// feature columns: `None` when the header has none of those names (then
/// columns go by position); an error naming the missing ones when it has
/// only some.
fn named_layout(columns: &[&str], spec: &RowSpec, name: &str) -> Result<Option<Layout>, DataError> {
    let wanted = &spec.feature_names;
    if wanted.len() != spec.features || spec.target_width() != 0 {
        return Ok(None);
    }
    let found: Vec<Option<usize>> = wanted.iter().map(|w| columns.iter().position(|c| c == w)).collect();
    if found.iter().all(Option::is_none) {
        return Ok(None);
    }
    let missing: Vec<&str> = wanted.iter().zip(&found).filter(|(_, f)| f.is_none()).map(|(w, _)| w.as_str()).collect();
    if let Some(first) = missing.first() {
        let more = if missing.len() > 1 { format!(" and {} more", missing.len() - 1) } else { String::new() };
        return Err(DataError::new(
            name,
            Some(1),
            format!("the header has no column `{first}`{more}, which the weights were trained on"),
            "name the columns as the training data did (their order does not matter), or drop the header's names \
             and give the features in the training order",
        ));
    }
    Ok(Some(Layout { features: found.into_iter().flatten().collect(), targets: vec![] }))
}

/// One cell as a finite number, or an error naming its line and column.
fn cell_value(cell: &str, column: &str, name: &str, line_no: usize) -> Result<f32, DataError> {
    let cell = unquoted(cell);
    if cell.is_empty() {
        return Err(DataError::new(
            name,
            Some(line_no),
            format!("column `{column}` is empty on this row"),
            "every row needs a number in every column; fill in or drop rows with missing values",
        ));
    }
    if let Some(value) = small_integer(cell) {
        return Ok(value);
    }
    let value: f32 = cell.parse().map_err(|_| {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Integers of up to seven digits, leading zeros included, read as the
    /// general parser reads them, bit for bit; anything else is left to it.
    #[test]
    fn small_integers_read_as_the_parser_reads_them() {
        let numbers = (0..10_000_000u32).step_by(7_919).chain([0, 1, 9, 10, 255, 8_388_607, 8_388_609, 9_999_999]);
        for n in numbers {
            for text in [n.to_string(), format!("{n:07}")] {
                let parsed: f32 = text.parse().expect("a number");
                assert_eq!(small_integer(&text).map(f32::to_bits), Some(parsed.to_bits()), "{text}");
            }
        }
        for other in ["", "-1", "+1", "1.5", "1e3", "12345678", "0x10", " 1", "１"] {
            assert_eq!(small_integer(other), None, "{other:?}");
        }
    }

    /// A line of plain integers reads as its cells read one by one; any
    /// other line is left to them (false), whatever cell breaks the rule.
    #[test]
    fn lines_of_small_integers_read_as_their_cells() {
        let mut values = Vec::new();
        for line in ["0", "7,0,255", "0000001,9999999,12", "5,0,0,0,0,0,0,0,0,0,3"] {
            assert!(small_integers(line, &mut values), "{line:?}");
            let one_by_one: Vec<f32> = cells(line).map(|c| small_integer(c).expect("a small integer")).collect();
            assert_eq!(values, one_by_one, "{line:?}");
        }
        for line in
            ["", ",", "1,", ",1", "1,,2", "1, 2", "1,-2", "1,2.5", "1,\"2\"", "12345678,1", "1,2\r", "1;2", "1,x"]
        {
            assert!(!small_integers(line, &mut values), "{line:?}");
        }
    }

    /// Cells between commas, empty ones included, as `split(',')` cuts them.
    #[test]
    fn cells_are_cut_at_every_comma() {
        for line in ["", ",", "a", "a,b", ",a,,b,", "1,\"x\",é,3", "ü,,"] {
            assert_eq!(cells(line).collect::<Vec<_>>(), line.split(',').collect::<Vec<_>>(), "{line:?}");
        }
    }
}
