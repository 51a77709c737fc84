//! A latency-against-throughput plot as a small SVG file.
//!
//! One line per variant through its runs (closed loop and open-loop
//! rates), both axes logarithmic since echo and a 1,000-member group
//! differ by orders of magnitude. Written by hand: a plotting crate would
//! cost more build time than these hundred lines, and the output is plain
//! text that diffs well.

use std::fmt::Write as _;

/// One line of the plot.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    /// (throughput per second, p99 latency in ms), in any order.
    pub points: Vec<(f64, f64)>,
}

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 600.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 330.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;

const COLOURS: [&str; 12] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#000000", "#aec7e8",
];

/// The SVG document for `series` under `title`.
pub fn svg(title: &str, series: &[Series]) -> String {
    let points = series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|(x, y)| *x > 0.0 && *y > 0.0);
    let (mut x_min, mut x_max, mut y_min, mut y_max) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points {
        x_min = x_min.min(x);
        x_max = x_max.max(x);
        y_min = y_min.min(y);
        y_max = y_max.max(y);
    }
    if x_min > x_max {
        (x_min, x_max, y_min, y_max) = (1.0, 10.0, 1.0, 10.0);
    }
    let x_axis = Axis::new(x_min, x_max, LEFT, WIDTH - RIGHT);
    let y_axis = Axis::new(y_min, y_max, HEIGHT - BOTTOM, TOP);

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="24" font-size="15" text-anchor="middle">{}</text>"#,
        (LEFT + WIDTH - RIGHT) / 2.0,
        escape(title)
    );
    grid(&mut out, &x_axis, &y_axis);
    for (i, s) in series.iter().enumerate() {
        line(&mut out, s, COLOURS[i % COLOURS.len()], i, &x_axis, &y_axis);
    }
    let _ = writeln!(out, "</svg>");
    out
}

/// A logarithmic axis from data values to pixels.
struct Axis {
    lo: f64,
    hi: f64,
    from: f64,
    to: f64,
}

impl Axis {
    fn new(min: f64, max: f64, from: f64, to: f64) -> Axis {
        // Whole decades around the data, so the ticks fall on 1, 10, 100.
        let lo = min.log10().floor();
        let hi = max.log10().ceil().max(lo + 1.0);
        Axis { lo, hi, from, to }
    }

    fn pixel(&self, value: f64) -> f64 {
        let t = (value.max(1e-12).log10() - self.lo) / (self.hi - self.lo);
        self.from + t * (self.to - self.from)
    }

    fn decades(&self) -> impl Iterator<Item = f64> {
        (self.lo as i32..=self.hi as i32).map(|e| 10f64.powi(e))
    }
}

fn grid(out: &mut String, x: &Axis, y: &Axis) {
    for value in x.decades() {
        let px = x.pixel(value);
        let _ = writeln!(
            out,
            r##"<line x1="{px:.1}" y1="{}" x2="{px:.1}" y2="{}" stroke="#ddd"/><text x="{px:.1}" y="{}" text-anchor="middle">{}</text>"##,
            y.to,
            y.from,
            y.from + 18.0,
            number(value)
        );
    }
    for value in y.decades() {
        let py = y.pixel(value);
        let _ = writeln!(
            out,
            r##"<line x1="{}" y1="{py:.1}" x2="{}" y2="{py:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            x.from,
            x.to,
            x.from - 6.0,
            py + 4.0,
            number(value)
        );
    }
    let _ = writeln!(
        out,
        r#"<rect x="{}" y="{}" width="{}" height="{}" fill="none" stroke="black"/>"#,
        x.from,
        y.to,
        x.to - x.from,
        y.from - y.to
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">throughput (messages or deliveries per second, log)</text>"#,
        (x.from + x.to) / 2.0,
        HEIGHT - 15.0
    );
    let _ = writeln!(
        out,
        r#"<text transform="translate(20 {}) rotate(-90)" text-anchor="middle">p99 latency (ms, log)</text>"#,
        (y.from + y.to) / 2.0
    );
}

fn line(out: &mut String, series: &Series, colour: &str, index: usize, x: &Axis, y: &Axis) {
    let mut points: Vec<(f64, f64)> = series
        .points
        .iter()
        .copied()
        .filter(|(a, b)| *a > 0.0 && *b > 0.0)
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let path: Vec<String> = points
        .iter()
        .map(|&(a, b)| format!("{:.1},{:.1}", x.pixel(a), y.pixel(b)))
        .collect();
    if path.len() > 1 {
        let _ = writeln!(
            out,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="1.5"/>"#,
            path.join(" ")
        );
    }
    for point in &path {
        let (px, py) = point.split_once(',').unwrap_or(("0", "0"));
        let _ = writeln!(
            out,
            r#"<circle cx="{px}" cy="{py}" r="3" fill="{colour}"/>"#
        );
    }
    let ly = TOP + 10.0 + index as f64 * 18.0;
    let lx = WIDTH - RIGHT + 20.0;
    let _ = writeln!(
        out,
        r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{colour}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
        lx + 20.0,
        lx + 26.0,
        ly + 4.0,
        escape(&series.name)
    );
}

fn number(value: f64) -> String {
    if value >= 1.0 {
        format!("{value:.0}")
    } else {
        format!("{value}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plot_has_every_series_and_no_stray_markup() {
        let series = vec![
            Series {
                name: "echo <rr>".into(),
                points: vec![(20_000.0, 1.5), (10_000.0, 0.4)],
            },
            Series {
                name: "direct".into(),
                points: vec![(8_000.0, 3.0), (0.0, 1.0)],
            },
        ];
        let svg = svg("latency & throughput", &series);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("echo &lt;rr&gt;") && svg.contains("latency &amp; throughput"));
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert_eq!(svg.matches("<circle").count(), 3);
    }

    #[test]
    fn log_axis_maps_decades_evenly() {
        let axis = Axis::new(3.0, 700.0, 0.0, 300.0);
        assert_eq!((axis.lo, axis.hi), (0.0, 3.0));
        assert!((axis.pixel(10.0) - 100.0).abs() < 1e-9);
        assert!((axis.pixel(100.0) - 200.0).abs() < 1e-9);
        assert_eq!(axis.decades().count(), 4);
    }

    #[test]
    fn an_empty_plot_still_draws() {
        assert!(svg("nothing", &[]).contains("</svg>"));
    }
}
