//! `pk-bench --plot POINTS --out DIR`: one SVG per curve (plotters' SVG
//! backend: plain text, no system libraries, no fonts embedded) and an
//! `index.html` that shows them all.
//!
//! POINTS holds JSON lines as `pk-bench --curve`, `bench/c/curves` and
//! `bench/python/curves.py` print them:
//! `{"curve":"fork_rss","series":"posixkit fork","x":256.0,"y":812.5}`.
//! Lines that are not points are ignored. A series measured several times
//! at the same x (several rounds) is drawn through the median.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

use super::curves::{CURVES, Curve};
use crate::cmd::Result;
use crate::error::Error;

/// Points of one curve: series name → (x, y) in x order.
type Lines = Vec<(String, Vec<(f64, f64)>)>;

/// The value of `"key":` in a one-line JSON object we printed ourselves
/// (strings without escapes, plain numbers).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = line[at..].trim_start();
    if let Some(s) = rest.strip_prefix('"') {
        s.split('"').next()
    } else {
        rest.split([',', '}']).next().map(str::trim)
    }
}

/// One series' measurements: its name, and x (as bits) → the ys at it.
type Measured = (String, BTreeMap<u64, Vec<f64>>);

/// Read the points: curve → series (in first-seen order) → x → ys.
fn read_points(text: &str) -> BTreeMap<String, Vec<Measured>> {
    let mut all: BTreeMap<String, Vec<Measured>> = BTreeMap::new();
    for line in text.lines() {
        let (Some(curve), Some(series), Some(x), Some(y)) = (
            field(line, "curve"),
            field(line, "series"),
            field(line, "x").and_then(|v| v.parse::<f64>().ok()),
            field(line, "y").and_then(|v| v.parse::<f64>().ok()),
        ) else {
            continue;
        };
        if !(x.is_finite() && y.is_finite()) {
            continue;
        }
        let lines = all.entry(curve.to_string()).or_default();
        let i = match lines.iter().position(|(s, _)| s == series) {
            Some(i) => i,
            None => {
                lines.push((series.to_string(), BTreeMap::new()));
                lines.len() - 1
            }
        };
        // f64 keys by bits: x values are positive, so bit order is value order.
        lines[i].1.entry(x.to_bits()).or_default().push(y);
    }
    all
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// A colour per series: posixkit in blues, the C limit in black and grey,
/// Python in orange and red, other peers in green, purple, brown.
fn colour(series: &str, nth_of_kind: usize) -> RGBColor {
    let pick = |c: &[RGBColor]| c[nth_of_kind % c.len()];
    if series.starts_with("posixkit") || series.starts_with("pk-") {
        pick(&[
            RGBColor(31, 119, 180),
            RGBColor(23, 190, 207),
            RGBColor(57, 59, 121),
        ])
    } else if series.starts_with('C') {
        pick(&[RGBColor(0, 0, 0), RGBColor(127, 127, 127)])
    } else if series.starts_with("Python") {
        pick(&[RGBColor(255, 127, 14), RGBColor(214, 39, 40)])
    } else {
        pick(&[
            RGBColor(44, 160, 44),
            RGBColor(148, 103, 189),
            RGBColor(140, 86, 75),
        ])
    }
}

fn kind(series: &str) -> u8 {
    if series.starts_with("posixkit") || series.starts_with("pk-") {
        0
    } else if series.starts_with('C') {
        1
    } else if series.starts_with("Python") {
        2
    } else {
        3
    }
}

fn plot_err(what: &Path, e: impl std::fmt::Display) -> Error {
    Error::new(
        crate::error::ErrorKind::Os,
        "plot",
        what.display(),
        e.to_string(),
    )
}

/// Draw `curve`'s lines on `root` with the given axis ranges.
fn draw<X, Y>(
    root: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    curve: &Curve,
    lines: &Lines,
    xr: X,
    yr: Y,
    corner: SeriesLabelPosition,
) -> std::result::Result<(), Box<dyn std::error::Error>>
where
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(root)
        .caption(curve.title, ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(xr, yr)?;
    chart
        .configure_mesh()
        .x_desc(curve.x_label)
        .y_desc(curve.y_label)
        .x_label_formatter(&|v| short(*v))
        .y_label_formatter(&|v| short(*v))
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 15))
        .light_line_style(RGBColor(240, 240, 240))
        .max_light_lines(4)
        .draw()?;
    let mut seen = [0usize; 4];
    for (name, pts) in lines {
        let k = kind(name) as usize;
        let c = colour(name, seen[k]);
        seen[k] += 1;
        let width = if k == 0 { 3 } else { 2 };
        let style = c.stroke_width(width);
        if k == 1 {
            // The C limit dashed, so it reads as a bound, not a contender.
            chart
                .draw_series(DashedLineSeries::new(pts.iter().copied(), 8, 5, style))?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
        } else {
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), style))?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
        }
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(corner)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(160, 160, 160))
        .draw()?;
    root.present()?;
    Ok(())
}

/// 1 234 567 → "1.2M"; 65 536 → "64Ki" only for powers of two ≥ 1024.
fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 1024.0 && (a as u64).is_power_of_two() && a.fract() == 0.0 {
        let (n, unit) = if a >= 1048576.0 {
            (a / 1048576.0, "Mi")
        } else {
            (a / 1024.0, "Ki")
        };
        return format!("{n}{unit}");
    }
    let (n, unit) = if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e4 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let s = if n.abs() >= 100.0 || n.fract() == 0.0 {
        format!("{n:.0}")
    } else if n.abs() >= 1.0 {
        format!("{n:.1}")
    } else {
        format!("{n:.2}")
    };
    format!("{s}{unit}")
}

/// Where an axis value falls, 0 at `lo` to 1 at `hi`.
fn unit(v: f64, (lo, hi): (f64, f64), log: bool) -> f64 {
    if log {
        (v / lo).ln() / (hi / lo).ln()
    } else {
        (v - lo) / (hi - lo)
    }
}

/// The corner of the plot whose legend box covers the fewest points and
/// line pieces, so the legend never hides a measurement; on a tie the
/// corner away from where good figures go (lower left when higher is
/// better, upper left when lower is).
fn legend_corner(
    lines: &Lines,
    xs: (f64, f64, bool),
    ys: (f64, f64, bool),
    higher_is_better: bool,
) -> SeriesLabelPosition {
    // The box in plot units: labels of about 8 px a character and a 40 px
    // swatch on a plot about 760 × 400 px, 20 px a line.
    let longest = lines.iter().map(|(n, _)| n.len()).max().unwrap_or(0) as f64;
    let w = ((longest * 8.0 + 48.0) / 760.0).min(0.6) + 0.02;
    let h = ((lines.len() as f64 * 20.0 + 16.0) / 400.0).min(0.8) + 0.02;
    let at = |(x, y): (f64, f64)| (unit(x, (xs.0, xs.1), xs.2), unit(y, (ys.0, ys.1), ys.2));
    // Every point, and 24 samples along each piece of line between them.
    let mut samples = Vec::new();
    for (_, pts) in lines {
        for (i, &p) in pts.iter().enumerate() {
            let a = at(p);
            samples.push(a);
            if let Some(&q) = pts.get(i + 1) {
                let b = at(q);
                for k in 1..24 {
                    let t = f64::from(k) / 24.0;
                    samples.push((a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t));
                }
            }
        }
    }
    let preferred = if higher_is_better {
        [
            SeriesLabelPosition::LowerLeft,
            SeriesLabelPosition::LowerRight,
            SeriesLabelPosition::UpperLeft,
            SeriesLabelPosition::UpperRight,
        ]
    } else {
        [
            SeriesLabelPosition::UpperLeft,
            SeriesLabelPosition::UpperRight,
            SeriesLabelPosition::LowerLeft,
            SeriesLabelPosition::LowerRight,
        ]
    };
    let covered = |c: &SeriesLabelPosition| {
        let (left, low) = match c {
            SeriesLabelPosition::LowerLeft => (true, true),
            SeriesLabelPosition::LowerRight => (false, true),
            SeriesLabelPosition::UpperLeft => (true, false),
            _ => (false, false),
        };
        samples
            .iter()
            .filter(|&&(x, y)| {
                let in_x = if left { x <= w } else { x >= 1.0 - w };
                let in_y = if low { y <= h } else { y >= 1.0 - h };
                in_x && in_y
            })
            .count()
    };
    // min_by_key keeps the first of equals: the preferred order.
    let best = (0..preferred.len())
        .min_by_key(|&i| covered(&preferred[i]))
        .unwrap_or(0);
    preferred
        .into_iter()
        .nth(best)
        .unwrap_or(SeriesLabelPosition::UpperLeft)
}

/// A range around `lo..hi`: on a log axis from the power of ten below to
/// the one above; on a linear one from 0 (or a little below lo) to a
/// little above hi.
fn span(lo: f64, hi: f64, log: bool) -> (f64, f64) {
    if log {
        (lo / 1.25, hi * 1.25)
    } else {
        let pad = (hi - lo).max(hi * 0.05) * 0.08;
        ((lo - pad).max(0.0).min(lo * 0.5), hi + pad)
    }
}

/// Write one SVG per curve with points and `index.html`; returns the files.
pub(super) fn plot(points: &Path, out: &Path, note: &str) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(points).map_err(|e| Error::io("read", points.display(), &e))?;
    std::fs::create_dir_all(out).map_err(|e| Error::io("mkdir", out.display(), &e))?;
    let mut all = read_points(&text);
    let mut written = Vec::new();
    for curve in CURVES {
        let Some(series) = all.remove(curve.name) else {
            continue;
        };
        let mut lines: Lines = series
            .into_iter()
            .map(|(name, xs)| {
                let pts = xs
                    .into_iter()
                    .map(|(x, mut ys)| (f64::from_bits(x), median(&mut ys)))
                    .collect();
                (name, pts)
            })
            .collect();
        lines.sort_by_key(|(name, _)| kind(name));
        let all_pts = || lines.iter().flat_map(|(_, p)| p.iter());
        let (mut xlo, mut xhi, mut ylo, mut yhi) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y) in all_pts() {
            xlo = xlo.min(x);
            xhi = xhi.max(x);
            ylo = ylo.min(y);
            yhi = yhi.max(y);
        }
        if xlo > xhi {
            continue;
        }
        let logx = xlo > 0.0 && xhi / xlo >= 20.0;
        let logy = ylo > 0.0 && yhi / ylo >= 20.0;
        let (x0, x1) = span(xlo, xhi.max(xlo * 1.01 + 1e-9), logx);
        let (y0, y1) = span(ylo, yhi.max(ylo * 1.01 + 1e-9), logy);
        let file = format!("{}.svg", curve.name);
        let path = out.join(&file);
        let corner = legend_corner(
            &lines,
            (x0, x1, logx),
            (y0, y1, logy),
            curve.higher_is_better,
        );
        let root = SVGBackend::new(&path, (860, 520)).into_drawing_area();
        let drawn = match (logx, logy) {
            (true, true) => draw(
                &root,
                curve,
                &lines,
                (x0..x1).log_scale(),
                (y0..y1).log_scale(),
                corner,
            ),
            (true, false) => draw(&root, curve, &lines, (x0..x1).log_scale(), y0..y1, corner),
            (false, true) => draw(&root, curve, &lines, x0..x1, (y0..y1).log_scale(), corner),
            (false, false) => draw(&root, curve, &lines, x0..x1, y0..y1, corner),
        };
        drawn.map_err(|e| plot_err(&path, e))?;
        drop(root);
        written.push(file);
    }
    let mut html = String::from(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>posixkit: how each cost grows</title>\
         <style>body{font-family:sans-serif;max-width:900px;margin:1em auto}\
         img{width:100%;border:1px solid #ddd;margin:0.5em 0 1.5em}</style></head><body>\n\
         <h1>posixkit: how each cost grows with the work</h1>\n",
    );
    html.push_str(&format!("<p>{}</p>\n", escape(note)));
    for f in &written {
        html.push_str(&format!("<img src=\"{f}\" alt=\"{f}\">\n"));
    }
    html.push_str("</body></html>\n");
    let index = out.join("index.html");
    std::fs::write(&index, html).map_err(|e| Error::io("write", index.display(), &e))?;
    Ok(written)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_of_a_point() {
        let l = r#"{"curve":"fork_rss","series":"posixkit fork","x":256.0,"y":812.5}"#;
        assert_eq!(field(l, "curve"), Some("fork_rss"));
        assert_eq!(field(l, "series"), Some("posixkit fork"));
        assert_eq!(field(l, "x"), Some("256.0"));
        assert_eq!(field(l, "y"), Some("812.5"));
        assert_eq!(field(l, "z"), None);
        let spaced = r#"{"curve": "c", "series": "Python", "x": 1.5, "y": 2}"#;
        assert_eq!(field(spaced, "series"), Some("Python"));
        assert_eq!(field(spaced, "x"), Some("1.5"));
    }

    #[test]
    fn rounds_meet_at_the_median() {
        let text = "junk\n\
            {\"curve\":\"c\",\"series\":\"s\",\"x\":2,\"y\":5}\n\
            {\"curve\":\"c\",\"series\":\"s\",\"x\":2,\"y\":1}\n\
            {\"curve\":\"c\",\"series\":\"s\",\"x\":2,\"y\":3}\n\
            {\"curve\":\"c\",\"series\":\"t\",\"x\":1,\"y\":9}\n";
        let mut all = read_points(text);
        let c = all.remove("c").unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].0, "s");
        let mut ys = c[0].1[&2f64.to_bits()].clone();
        assert_eq!(median(&mut ys), 3.0);
    }

    #[test]
    fn the_legend_goes_where_no_measurement_is() {
        let line = |name: &str, pts: &[(f64, f64)]| (name.to_string(), pts.to_vec());
        // A line low on the left: the legend of a higher-is-better plot
        // leaves its usual lower-left corner for the lower right.
        let lines = vec![
            line("pk-pool exec", &[(100.0, 700.0), (1000.0, 980.0)]),
            line("GNU parallel", &[(100.0, 19.0), (1000.0, 65.0)]),
        ];
        let c = legend_corner(&lines, (28.0, 1072.0, false), (15.0, 1200.0, true), true);
        assert!(matches!(c, SeriesLabelPosition::LowerRight), "{c:?}");
        // Nothing in the way: the preferred corner.
        let flat = vec![line("posixkit", &[(1.0, 50.0), (10.0, 50.0)])];
        let c = legend_corner(&flat, (0.0, 11.0, false), (0.0, 100.0, false), false);
        assert!(matches!(c, SeriesLabelPosition::UpperLeft), "{c:?}");
    }

    #[test]
    fn short_labels() {
        assert_eq!(short(65536.0), "64Ki");
        assert_eq!(short(1048576.0), "1Mi");
        assert_eq!(short(100000.0), "100k");
        assert_eq!(short(2.5), "2.5");
        assert_eq!(short(0.25), "0.25");
    }
}
