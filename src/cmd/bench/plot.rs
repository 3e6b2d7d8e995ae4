//! `pk-bench-plot POINTS --out DIR`: one SVG per curve (plotters' SVG
//! backend: plain text, no system libraries, no fonts embedded) and an
//! `index.html` that shows them all.
//!
//! A binary of its own: plotters needs libm, and a library mapped into
//! pk-bench is one more set of mappings that every fork it times copies
//! and every exit tears down (about 7 µs a fork on a 2-core VM).
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

use clap::Parser;

use super::curves::{CURVES, Curve};
use crate::cmd::{Out, Result, exit};
use crate::error::Error;
use crate::outln;

const AFTER_HELP: &str = "\
POINTS holds JSON lines as pk-bench --curve, bench/c/curves and
bench/python/curves.py print them, one point each:
  {\"curve\":\"fork_rss\",\"series\":\"posixkit fork\",\"x\":256.0,\"y\":812.5}
Other lines are ignored; a series measured several times at one x is drawn
through the median. Each curve pk-bench --list-curves names that has points
becomes DIR/<curve>.svg (log axes where the values span 20x or more);
DIR/index.html shows them all. The paths written are printed, one a line.
make bench-plot runs it after measuring the curves.

POINTS is read before DIR is made: a POINTS that cannot be read leaves no
DIR behind.

Exit status: 0 when drawn; 2 for a bad flag; 66 when POINTS (or the
directory DIR would go in) does not exist; 77 when permission is denied;
71 for any other failed read or write.";

/// Draw benchmark curves as SVGs: one per curve, and an index.html.
#[derive(Debug, Parser)]
#[command(name = "pk-bench-plot", version, after_help = AFTER_HELP)]
pub struct Args {
    /// The JSON points to draw.
    #[arg(value_name = "POINTS")]
    pub points: std::path::PathBuf,

    /// The directory for the SVGs and index.html (made if missing).
    #[arg(long, value_name = "DIR")]
    pub out: std::path::PathBuf,

    /// A line of text for the index page (the machine, the command).
    #[arg(long, value_name = "TEXT")]
    pub note: Option<String>,
}

/// pk-bench-plot: draw the points, print the paths written.
pub fn run(args: Args, out: &mut Out) -> Result<u8> {
    for f in plot(&args.points, &args.out, args.note.as_deref().unwrap_or(""))? {
        outln!(out, "{}", args.out.join(f).display())?;
    }
    Ok(exit::OK)
}

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

/// Pixels on the right of each SVG for the legend: names up to about 30
/// characters.
const LEGEND_WIDTH: u32 = 250;

/// Draw `curve`'s lines on `root` with the given axis ranges.
fn draw<X, Y>(
    root: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    curve: &Curve,
    lines: &Lines,
    xr: X,
    yr: Y,
) -> std::result::Result<(), Box<dyn std::error::Error>>
where
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    root.fill(&WHITE)?;
    let (width, _) = root.dim_in_pixel();
    let (plot_area, legend) = root.split_horizontally(width - LEGEND_WIDTH);
    let mut chart = ChartBuilder::on(&plot_area)
        .caption(curve.title, ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(xr, yr)?;
    chart
        .configure_mesh()
        .x_desc(curve.x_label)
        .y_desc(format!(
            "{} ({} is better)",
            curve.y_label,
            if curve.higher_is_better {
                "higher"
            } else {
                "lower"
            }
        ))
        .x_label_formatter(&|v| short(*v))
        .y_label_formatter(&|v| short(*v))
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 15))
        .light_line_style(RGBColor(240, 240, 240))
        .max_light_lines(4)
        .draw()?;
    // The legend stands beside the plot, never over a measurement.
    let mut seen = [0usize; 4];
    let mut row = 64;
    for (name, pts) in lines {
        let k = kind(name) as usize;
        let c = colour(name, seen[k]);
        seen[k] += 1;
        let width = if k == 0 { 3 } else { 2 };
        let style = c.stroke_width(width);
        if k == 1 {
            // The C limit dashed, so it reads as a bound, not a contender.
            chart.draw_series(DashedLineSeries::new(pts.iter().copied(), 8, 5, style))?;
            for x in [6, 22] {
                legend.draw(&PathElement::new(vec![(x, row), (x + 10, row)], style))?;
            }
        } else {
            chart.draw_series(LineSeries::new(pts.iter().copied(), style))?;
            legend.draw(&PathElement::new(vec![(6, row), (32, row)], style))?;
        }
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled())))?;
        legend.draw(&Circle::new((19, row), 4, c.filled()))?;
        legend.draw(&Text::new(
            name.clone(),
            (40, row - 8),
            ("sans-serif", 14).into_font(),
        ))?;
        row += 24;
    }
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
fn plot(points: &Path, out: &Path, note: &str) -> Result<Vec<String>> {
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
        let root = SVGBackend::new(&path, (860 + LEGEND_WIDTH, 520)).into_drawing_area();
        let drawn = match (logx, logy) {
            (true, true) => draw(
                &root,
                curve,
                &lines,
                (x0..x1).log_scale(),
                (y0..y1).log_scale(),
            ),
            (true, false) => draw(&root, curve, &lines, (x0..x1).log_scale(), y0..y1),
            (false, true) => draw(&root, curve, &lines, x0..x1, (y0..y1).log_scale()),
            (false, false) => draw(&root, curve, &lines, x0..x1, y0..y1),
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
    fn short_labels() {
        assert_eq!(short(65536.0), "64Ki");
        assert_eq!(short(1048576.0), "1Mi");
        assert_eq!(short(100000.0), "100k");
        assert_eq!(short(2.5), "2.5");
        assert_eq!(short(0.25), "0.25");
    }
}
