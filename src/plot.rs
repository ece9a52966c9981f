//! Learning curves as SVG: loss per epoch on the left, the task metric
//! (accuracy, or R² for regression) on the right. Drawn with plotters'
//! SVG backend, which needs no fonts, so the picture looks the same on
//! every machine.

use plotters::prelude::*;

use crate::train::EpochReport;
use crate::train::health::Health;

const WIDTH: u32 = 1000;
const HEIGHT: u32 = 420;
const DARK_GREEN: RGBColor = RGBColor(0, 140, 60);

/// One plotted line: its legend, colour and (epoch, value) points, and
/// optionally a shaded band around it (per point: low, high).
struct Curve {
    name: String,
    color: RGBColor,
    points: Vec<(f64, f64)>,
    band: Vec<(f64, f64)>,
}

/// The learning curves of `history` as an SVG document.
pub fn learning_curves(model: &str, history: &[EpochReport]) -> Result<String, String> {
    let splits = |value: &dyn Fn(&crate::train::Metrics) -> Option<f64>| -> Vec<Curve> {
        let mut curves = Vec::new();
        for (name, color, pick) in [
            ("validation", RED, (|r: &EpochReport| r.validation.clone()) as fn(&EpochReport) -> _),
            ("test", DARK_GREEN, |r: &EpochReport| r.test.clone()),
        ] {
            let points: Vec<_> =
                history.iter().filter_map(|r| pick(r).as_ref().and_then(value).map(|v| (r.epoch as f64, v))).collect();
            if !points.is_empty() {
                curves.push(Curve { name: name.to_string(), color, points, band: Vec::new() });
            }
        }
        curves
    };
    let mut losses = vec![Curve { name: "train".into(), color: BLUE, points: Vec::new(), band: Vec::new() }];
    losses[0].points = history.iter().map(|r| (r.epoch as f64, r.train_loss)).collect();
    losses.extend(splits(&|m| Some(m.loss)));
    let mut quality = splits(&|m| m.accuracy.map(|a| 100.0 * a));
    let mut quality_name = "accuracy (%)";
    if quality.is_empty() {
        quality = splits(&|m| m.r2);
        quality_name = "r²";
    }

    let gradients = gradient_norms(history);
    let stuck = stuck_units(history);
    let outputs = activation_outputs(history);
    // Loss, then the quality, the gradients, the activations and stuck units where there are any.
    let mut panels: Vec<(&str, Vec<Curve>)> = vec![("loss", losses)];
    if !quality.is_empty() {
        panels.push((quality_name, quality));
    }
    if !gradients.is_empty() {
        panels.push(("log₁₀ gradient norm", gradients));
    }
    if !outputs.is_empty() {
        panels.push(("activation mean ± std", outputs));
    }
    if !stuck.is_empty() {
        panels.push(("dead (relu), saturated (σ, tanh) or clipped units (%)", stuck));
    }
    let mut svg = String::new();
    {
        // At most three panels a row.
        let columns = panels.len().min(3);
        let rows = panels.len().div_ceil(columns);
        let width = (WIDTH / 2 * columns as u32).max(WIDTH);
        let root = SVGBackend::with_string(&mut svg, (width, HEIGHT * rows as u32)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let body = root.titled(model, ("sans-serif", 20)).map_err(|e| e.to_string())?;
        let areas = body.split_evenly((rows, columns));
        let best = crate::train::gap::Gap::of(history).map(|g| g.best_epoch as f64);
        for (i, (area, (y_name, curves))) in areas.iter().zip(&panels).enumerate() {
            draw_panel(area, y_name, curves, best.filter(|_| i == 0))?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// One curve per activation layer that can get stuck: for relu the share of
/// its units that never fired in each epoch, for sigmoid and tanh the share
/// of its outputs that passed almost no gradient.
fn stuck_units(history: &[EpochReport]) -> Vec<Curve> {
    let Some(layers) = history.iter().find_map(|r| r.health.as_ref().map(|h| &h.activations)) else { return vec![] };
    let stuck = |a: &crate::train::health::ActivationHealth| a.dead_fraction.or(a.saturated_fraction);
    let names: Vec<&str> = layers.iter().filter(|a| stuck(a).is_some()).map(|a| a.name.as_str()).collect();
    health_curves(history, &names, |health, name| {
        Some(100.0 * stuck(health.activations.iter().find(|a| a.name == name)?)?)
    })
}

/// One curve per activation layer: the mean of its outputs over each
/// epoch's training rows, in a band one standard deviation wide (outputs
/// that shrink layer after layer, or blow up, show here first).
fn activation_outputs(history: &[EpochReport]) -> Vec<Curve> {
    let Some(layers) = history.iter().find_map(|r| r.health.as_ref().map(|h| &h.activations)) else { return vec![] };
    let names: Vec<&str> = layers.iter().map(|a| a.name.as_str()).collect();
    let layer =
        |health: &Health, name: &str| health.activations.iter().find(|a| a.name == name).map(|a| (a.mean, a.std));
    let mut curves = health_curves(history, &names, |health, name| layer(health, name).map(|(mean, _)| mean));
    for curve in &mut curves {
        curve.band = history
            .iter()
            .filter_map(|r| layer(r.health.as_ref()?, &curve.name))
            .map(|(mean, std)| (mean - std, mean + std))
            .collect();
    }
    curves
}

/// One curve per weight tensor: log₁₀ of its mean gradient norm per epoch,
/// first layer to last (where they fan out is where gradients vanish).
fn gradient_norms(history: &[EpochReport]) -> Vec<Curve> {
    let Some(names) = history.iter().find_map(|r| r.health.as_ref().map(|h| &h.params)) else { return vec![] };
    let weights: Vec<&str> = names.iter().map(|p| p.name.as_str()).filter(|n| n.ends_with(".weight")).collect();
    health_curves(history, &weights, |health, name| {
        let norm = health.params.iter().find(|p| p.name == name)?.grad_norm;
        (norm > 0.0).then(|| norm.log10())
    })
}

/// One curve per name, in its own colour: `value` of each epoch's health
/// for that name, where there is one.
fn health_curves(history: &[EpochReport], names: &[&str], value: impl Fn(&Health, &str) -> Option<f64>) -> Vec<Curve> {
    let curve = |(i, &name): (usize, &&str)| {
        let points = history.iter().filter_map(|r| Some((r.epoch as f64, value(r.health.as_ref()?, name)?))).collect();
        let color = Palette99::pick(i).to_rgba();
        Curve { name: name.to_string(), color: RGBColor(color.0, color.1, color.2), points, band: Vec::new() }
    };
    names.iter().enumerate().map(curve).collect()
}

/// One chart: epochs along x, the curves' common range (padded) along y;
/// `best`: the epoch where the held-out loss was lowest, marked by a
/// dashed line.
fn draw_panel(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    y_name: &str,
    curves: &[Curve],
    best: Option<f64>,
) -> Result<(), String> {
    let finite = || curves.iter().flat_map(|c| &c.points).filter(|p| p.1.is_finite());
    let bands = || curves.iter().flat_map(|c| &c.band).flat_map(|&(low, high)| [low, high]).filter(|v| v.is_finite());
    let last_epoch = finite().map(|p| p.0).fold(1.0, f64::max);
    let low = finite().map(|p| p.1).chain(bands()).fold(f64::INFINITY, f64::min);
    let high = finite().map(|p| p.1).chain(bands()).fold(f64::NEG_INFINITY, f64::max);
    let (low, high) = if low.is_finite() { (low, high) } else { (0.0, 1.0) };
    // A flat curve (no unit ever stuck) gets a readable range around it.
    let pad = if high - low > 1e-9 { (high - low) * 0.05 } else { high.abs().max(1.0) * 0.5 };
    let first_epoch = finite().map(|p| p.0).fold(last_epoch, f64::min);
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(first_epoch..last_epoch.max(first_epoch + 1.0), (low - pad)..(high + pad))
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_labels(((last_epoch - first_epoch) as usize + 1).clamp(2, 11))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc(y_name)
        .draw()
        .map_err(|e| e.to_string())?;
    if let Some(epoch) = best {
        let dashes =
            DashedLineSeries::new([(epoch, low - pad), (epoch, high + pad)], 6, 4, BLACK.mix(0.5).stroke_width(1));
        chart
            .draw_series(dashes)
            .map_err(|e| e.to_string())?
            .label(format!("best held-out loss (epoch {epoch:.0})"))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], BLACK.mix(0.5).stroke_width(1)));
    }
    for curve in curves {
        let color = curve.color;
        // The band: along its upper edge, then back along its lower one.
        let edges: Vec<_> = curve
            .points
            .iter()
            .zip(&curve.band)
            .filter(|(_, (low, high))| low.is_finite() && high.is_finite())
            .map(|(&(epoch, _), &(low, high))| (epoch, low, high))
            .collect();
        if !edges.is_empty() {
            let outline = edges.iter().map(|e| (e.0, e.2)).chain(edges.iter().rev().map(|e| (e.0, e.1)));
            chart
                .draw_series([Polygon::new(outline.collect::<Vec<_>>(), color.mix(0.15).filled())])
                .map_err(|e| e.to_string())?;
        }
        let points = curve.points.iter().copied().filter(|p| p.1.is_finite());
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(curve.name.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2)));
        chart.draw_series(points.map(|p| Circle::new(p, 3, color.filled()))).map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    Ok(())
}
