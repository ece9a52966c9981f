//! `nnc explain`: why the network gave its answer. For each row, the
//! gradient of the chosen output's score with respect to every input
//! feature (computed by the same autodiff and compiled code as training,
//! with respect to the input instead of the weights), and gradient × input:
//! how much each feature pushed the score, in the network's own units.

use std::ops::Range;

use plotters::prelude::*;
use serde::Serialize;

use crate::data::{Dataset, Scaler};
use crate::model::{CHUNK, Model};

/// One row's explanation.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// The output explained: the class asked for, else the highest score.
    pub output: usize,
    /// That output's raw score (a logit for classifiers).
    pub score: f32,
    /// ∂score/∂feature, per raw input feature (preprocessing included).
    pub gradient: Vec<f32>,
    /// ∂score/∂s · s per feature, s the feature as the network sees it
    /// (after scaling or standardising): exactly weight × input for a
    /// linear model.
    pub attribution: Vec<f32>,
}

/// Explains each of the `rows` raw rows of `x` (`width` features each):
/// the output `output` when given, else each row's highest score. Rows go
/// through in chunks, as `predict` runs them.
pub fn explain(
    model: &mut Model,
    scaler: &Scaler,
    (x, rows): (&[f32], usize),
    (columns, output): (Option<Range<usize>>, Option<usize>),
) -> Result<Vec<Explanation>, String> {
    let width = x.len() / rows.max(1);
    let mut explanations = Vec::with_capacity(rows);
    for chunk in x.chunks((CHUNK * width).max(1)) {
        let rows = chunk.len() / width.max(1);
        explanations.extend(explain_chunk(model, scaler, (chunk, rows), (columns.clone(), output))?);
    }
    Ok(explanations)
}

fn explain_chunk(
    model: &mut Model,
    scaler: &Scaler,
    (x, rows): (&[f32], usize),
    (columns, output): (Option<Range<usize>>, Option<usize>),
) -> Result<Vec<Explanation>, String> {
    let width = x.len() / rows.max(1);
    let mut scaled = Dataset { rows, width, x: x.to_vec(), target_width: 0, y: vec![], columns: vec![] };
    scaler.apply(&mut scaled);
    let scores = model.predict(&scaled.x, rows)?;
    let outputs = scores.len() / rows.max(1);
    let columns = columns.unwrap_or(0..outputs);
    let explained = columns.len();
    if let Some(k) = output.filter(|&k| k >= explained) {
        return Err(format!("--class {k} is not an output of the model: it has {explained} (0 to {})", explained - 1));
    }
    // Each row's explained score, counted within the explained columns.
    let chosen: Vec<usize> = scores
        .chunks(outputs.max(1))
        .map(|row| {
            let row = &row[columns.clone()];
            output.unwrap_or_else(|| (0..row.len()).fold(0, |best, i| if row[i] > row[best] { i } else { best }))
        })
        .collect();
    let mut seed = vec![0.0; rows * outputs];
    for (r, &k) in chosen.iter().enumerate() {
        seed[r * outputs + columns.start + k] = 1.0;
    }
    let gradient = model.input_gradient(&scaled.x, &seed, rows)?;
    // ∂s/∂x is 1/divisor for each preprocessing nnc has.
    let divisor = |j: usize| match scaler {
        Scaler::None => 1.0,
        Scaler::Scale(s) => *s,
        Scaler::Standardize { std, .. } => std[j],
    };
    Ok((0..rows)
        .map(|r| {
            let (g, s) = (&gradient[r * width..(r + 1) * width], &scaled.x[r * width..(r + 1) * width]);
            Explanation {
                output: chosen[r],
                score: scores[r * outputs + columns.start + chosen[r]],
                gradient: g.iter().enumerate().map(|(j, v)| v / divisor(j)).collect(),
                attribution: g.iter().zip(s).map(|(v, s)| v * s).collect(),
            }
        })
        .collect())
}

/// The side of the square picture of `features` values laid out as an
/// image of shape `shape` ([C, H, W], or a flat square such as 8×8
/// digits): (height, width), or `None` for inputs that are not images.
pub fn picture_shape(shape: &[usize]) -> Option<(usize, usize)> {
    match shape {
        [_, h, w] => Some((*h, *w)),
        [n] => {
            let side = (*n as f64).sqrt().round() as usize;
            (side * side == *n && side > 1).then_some((side, side))
        }
        _ => None,
    }
}

/// The most cells (pixels of the images and of their heatmaps) one picture
/// draws: about 100 MB of SVG.
const PICTURE_CELLS: usize = 1 << 20;

/// Whether `rows` images of `height × width` fit in one picture, or an
/// error saying how many rows do.
pub fn check_picture(rows: usize, (height, width): (usize, usize)) -> Result<(), String> {
    let per_row = 2 * height * width;
    if rows.saturating_mul(per_row) <= PICTURE_CELLS {
        return Ok(());
    }
    Err(format!(
        "-o draws each row's {height}×{width} image and heatmap side by side: {rows} rows are more than one picture \
         holds ({} cells); give at most {} rows with -o (the ranked features explain any number)",
        PICTURE_CELLS,
        PICTURE_CELLS / per_row
    ))
}

/// An SVG with, for each row side by side, the input image (grey) above
/// its attribution (red pushes the score up, blue down, summed over
/// channels, each row scaled to its own largest magnitude).
pub fn heatmaps(x: &[f32], explanations: &[Explanation], (height, width): (usize, usize)) -> Result<String, String> {
    check_picture(explanations.len(), (height, width))?;
    const CELL: u32 = 12;
    const GAP: u32 = 16;
    let plane = height * width;
    let (h, w) = (height as u32 * CELL, width as u32 * CELL);
    let count = explanations.len().max(1) as u32;
    let mut svg = String::new();
    {
        let size = (count * (w + GAP) + GAP, 2 * h + 3 * GAP);
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let features = x.len() / count as usize;
        for (r, e) in explanations.iter().enumerate() {
            let row = &x[r * features..(r + 1) * features];
            let fold = |values: &[f32]| -> Vec<f32> {
                (0..plane).map(|p| values.iter().skip(p).step_by(plane).sum()).collect()
            };
            let (image, heat) = (fold(row), fold(&e.attribution));
            let (low, high) = image.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
            let peak = heat.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(f32::MIN_POSITIVE);
            let left = GAP + r as u32 * (w + GAP);
            for p in 0..plane {
                let (y, xx) = ((p / width) as u32 * CELL, (p % width) as u32 * CELL);
                let grey = (255.0 * (1.0 - (image[p] - low) / (high - low).max(f32::MIN_POSITIVE))) as u8;
                let a = heat[p] / peak;
                let fade = (255.0 * (1.0 - a.abs())) as u8;
                let color = if a >= 0.0 { RGBColor(255, fade, fade) } else { RGBColor(fade, fade, 255) };
                for (top, fill) in [(GAP, RGBColor(grey, grey, grey)), (2 * GAP + h, color)] {
                    let corner = ((left + xx) as i32, (top + y) as i32);
                    let rect =
                        Rectangle::new([corner, (corner.0 + CELL as i32, corner.1 + CELL as i32)], fill.filled());
                    root.draw(&rect).map_err(|e| e.to_string())?;
                }
            }
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}
