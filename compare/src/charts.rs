//! The comparison drawn as SVG charts (`--charts DIR`), with plotters'
//! SVG back end only: text is emitted as SVG `<text>`, so no font library
//! is needed to build or run this.
//!
//! - `throughput.svg`: jobs/s by workload, one bar per system, log scale;
//! - `producers.svg`: jobs/s and p99 latency per job by number of
//!   producer threads, fsync per job;
//! - `reopen.svg`: reopen + first dequeue time of a full queue.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::Res;

/// Systems in the order their bars and legends appear, with their colour.
const SYSTEMS: [(&str, RGBColor); 6] = [
    ("walq", RGBColor(214, 39, 40)),
    ("SQLite", RGBColor(31, 119, 180)),
    ("fjall", RGBColor(44, 160, 44)),
    ("yaque", RGBColor(255, 127, 14)),
    ("queue-file", RGBColor(148, 103, 189)),
    ("redb", RGBColor(140, 86, 75)),
];

/// One category of a bar chart: its label and each system's value.
pub type Category = (String, Vec<(&'static str, f64)>);

/// One point of the producers chart.
pub struct Point {
    pub system: &'static str,
    pub producers: usize,
    pub rate: f64,
    pub p99_ms: f64,
}

/// Chart units per category (bar charts) or per step of ×4 producers:
/// plotters draws custom tick labels only on integer axes.
const U: i32 = 1000;

fn colour(system: &str) -> RGBColor {
    SYSTEMS
        .iter()
        .find(|(s, _)| *s == system)
        .map_or(RGBColor(90, 90, 90), |(_, c)| *c)
}

fn err(e: impl std::fmt::Display) -> Box<dyn std::error::Error + Send + Sync> {
    e.to_string().into()
}

/// Powers of ten enclosing every value (at least one decade).
fn log_bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| *v > 0.0)
        .fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(v), h.max(v)));
    if lo > hi {
        return (1.0, 10.0);
    }
    let lo = 10f64.powf(lo.log10().floor());
    let hi = 10f64.powf((hi * 2.5).log10().ceil()).max(lo * 10.0);
    (lo, hi)
}

/// Horizontal grouped bars, log-scaled values, one group per category
/// (first category on top), one bar slot per system that has any value.
pub fn bars(
    path: &Path,
    title: &str,
    x_desc: &str,
    cats: &[Category],
    fmt: fn(f64) -> String,
) -> Res<()> {
    let systems: Vec<&str> = SYSTEMS
        .iter()
        .map(|(s, _)| *s)
        .filter(|s| cats.iter().any(|(_, v)| v.iter().any(|(x, _)| x == s)))
        .collect();
    let slots = systems.len().max(1) as f64;
    let height = 140 + cats.len() as u32 * (systems.len() as u32 * 13 + 18);
    let root = SVGBackend::new(path, (1000, height)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (top, root) = root.split_vertically(70);
    heading(&top, title, &systems)?;
    let (lo, hi) = log_bounds(cats.iter().flat_map(|(_, v)| v.iter().map(|(_, x)| *x)));
    // Category i (0 on top) spans y in [U·(n−1−i), U·(n−i)).
    let n = cats.len() as i32;
    let keys: Vec<i32> = (0..n).map(|i| i * U + U / 2).collect();
    let label = |y: &i32| {
        let i = (n - 1 - y.div_euclid(U)).max(0) as usize;
        cats.get(i).map_or(String::new(), |(l, _)| l.clone())
    };
    let mut chart = ChartBuilder::on(&root)
        .margin(14)
        .margin_right(40)
        .x_label_area_size(45)
        .y_label_area_size(300)
        .build_cartesian_2d((lo..hi).log_scale(), (0..n * U).with_key_points(keys))
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc(x_desc)
        .x_label_formatter(&|v| fmt(*v))
        .y_label_formatter(&label)
        .y_label_style(("sans-serif", 14))
        .draw()
        .map_err(err)?;
    for (slot, system) in systems.iter().enumerate() {
        let c = colour(system);
        let mut bars = Vec::new();
        for (i, (_, values)) in cats.iter().enumerate() {
            let Some((_, v)) = values.iter().find(|(s, v)| s == system && *v > 0.0) else {
                continue;
            };
            let u = f64::from(U);
            let top = f64::from(n) * u - i as f64 * u - 0.1 * u - 0.8 * u * slot as f64 / slots;
            let bottom = top - 0.8 * u / slots * 0.85;
            bars.push((*v, top.round() as i32, bottom.round() as i32));
        }
        chart
            .draw_series(
                bars.iter()
                    .map(|&(v, y1, y0)| Rectangle::new([(lo, y0), (v, y1)], c.filled())),
            )
            .map_err(err)?;
        chart
            .draw_series(bars.iter().map(|&(v, y1, _)| {
                Text::new(fmt(v), (v * 1.06, y1), ("sans-serif", 10).into_font())
            }))
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

/// The title, and below it one legend entry per system in a row.
fn heading(area: &DrawingArea<SVGBackend<'_>, Shift>, title: &str, systems: &[&str]) -> Res<()> {
    area.draw(&Text::new(title, (20, 12), ("sans-serif", 20)))
        .map_err(err)?;
    let mut x = 40;
    for s in systems {
        let c = colour(s);
        area.draw(&Rectangle::new([(x, 46), (x + 14, 58)], c.filled()))
            .map_err(err)?;
        area.draw(&Text::new(*s, (x + 20, 45), ("sans-serif", 14)))
            .map_err(err)?;
        x += 50 + 8 * s.len() as i32;
    }
    Ok(())
}

/// Two panels over 1/4/16/64 producers: jobs/s, and p99 latency per job.
pub fn producers(path: &Path, title: &str, points: &[Point]) -> Res<()> {
    let root = SVGBackend::new(path, (1000, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (top, root) = root.split_vertically(70);
    let systems: Vec<&str> = SYSTEMS
        .iter()
        .map(|(s, _)| *s)
        .filter(|s| points.iter().any(|p| p.system == *s))
        .collect();
    heading(&top, title, &systems)?;
    let (left, right) = root.split_horizontally(500);
    panel(&left, points, "jobs/s (log)", |p| p.rate, crate::fmt_rate)?;
    panel(
        &right,
        points,
        "p99 latency per job, ms (log)",
        |p| p.p99_ms,
        |v| {
            if v >= 1.0 {
                format!("{v:.0}")
            } else {
                format!("{v}")
            }
        },
    )?;
    root.present().map_err(err)?;
    Ok(())
}

fn panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    points: &[Point],
    y_desc: &str,
    value: fn(&Point) -> f64,
    fmt: fn(f64) -> String,
) -> Res<()> {
    // x = U·log4(producers): 1, 4, 16, 64 sit at 0, U, 2U, 3U.
    let x = |p: &Point| ((p.producers.max(1) as f64).log2() / 2.0 * f64::from(U)).round() as i32;
    let (lo, hi) = log_bounds(points.iter().map(value));
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(
            (-U / 3..3 * U + U / 3).with_key_points(vec![0, U, 2 * U, 3 * U]),
            (lo..hi).log_scale(),
        )
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("producer threads")
        .y_desc(y_desc)
        .x_label_formatter(&|v| format!("{}", 4f64.powf(f64::from(*v) / f64::from(U)).round()))
        .y_label_formatter(&|v| fmt(*v))
        .draw()
        .map_err(err)?;
    for (system, c) in SYSTEMS {
        let mut line: Vec<(i32, f64)> = points
            .iter()
            .filter(|p| p.system == system && value(p) > 0.0)
            .map(|p| (x(p), value(p)))
            .collect();
        if line.is_empty() {
            continue;
        }
        line.sort_by_key(|p| p.0);
        chart
            .draw_series(std::iter::once(PathElement::new(
                line.clone(),
                c.stroke_width(2),
            )))
            .map_err(err)?;
        chart
            .draw_series(line.iter().map(|&p| Circle::new(p, 4, c.filled())))
            .map_err(err)?;
    }
    Ok(())
}
