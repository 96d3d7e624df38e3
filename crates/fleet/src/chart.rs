//! The per-portal utilisation over time of one or more runs as an SVG chart (plotters), one
//! panel per policy.

use plotters::prelude::*;

use crate::engine::RunReport;

/// Errors drawing the chart.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw the chart: {0}")]
pub struct ChartError(String);

/// Draws every run's series (one line per portal) into an SVG document, `duration_s` being the
/// simulated time the series cover.
pub fn svg(runs: &[RunReport], duration_s: u32) -> Result<String, ChartError> {
    let mut out = String::new();
    let panels = runs.len().max(1);
    {
        let root =
            SVGBackend::with_string(&mut out, (900, 260 * panels as u32)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| ChartError(e.to_string()))?;
        for (area, run) in root.split_evenly((panels, 1)).iter().zip(runs) {
            let points = run.series.first().map_or(1, Vec::len).max(1);
            let step = f64::from(duration_s) / points as f64;
            let top = run
                .series
                .iter()
                .flatten()
                .fold(1.0f32, |m, v| m.max(*v))
                .min(2.0);
            let mut chart = ChartBuilder::on(area)
                .caption(
                    format!(
                        "{}: utilisation per portal (spread {:.3}, overload {} portal-s, {} moves)",
                        run.policy, run.utilisation_spread, run.overload_seconds, run.moves
                    ),
                    ("sans-serif", 16),
                )
                .margin(8)
                .x_label_area_size(28)
                .y_label_area_size(40)
                .build_cartesian_2d(0f64..f64::from(duration_s), 0f32..top)
                .map_err(|e| ChartError(e.to_string()))?;
            chart
                .configure_mesh()
                .x_desc("seconds")
                .y_desc("utilisation")
                .draw()
                .map_err(|e| ChartError(e.to_string()))?;
            let n = run.series.len().max(1);
            for (p, series) in run.series.iter().enumerate() {
                let color = HSLColor(p as f64 / n as f64, 0.7, 0.45);
                chart
                    .draw_series(LineSeries::new(
                        series
                            .iter()
                            .enumerate()
                            .map(|(i, u)| (i as f64 * step, *u)),
                        color.stroke_width(1),
                    ))
                    .map_err(|e| ChartError(e.to_string()))?;
            }
        }
        root.present().map_err(|e| ChartError(e.to_string()))?;
    }
    Ok(out)
}
