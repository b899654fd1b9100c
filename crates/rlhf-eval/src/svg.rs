//! A line chart as an SVG string: one or more series over training steps, nice ticks, gaps where
//! a value is missing or not finite.

use std::fmt::Write;

/// Escapes text for HTML and SVG (element content and attribute values).
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    /// (step, value); non-finite values break the line.
    pub points: Vec<(f64, f64)>,
}

const W: f64 = 360.0;
const H: f64 = 200.0;
const LEFT: f64 = 52.0;
const RIGHT: f64 = 10.0;
const TOP: f64 = 24.0;
const BOTTOM: f64 = 28.0;
const COLOURS: [&str; 6] = ["#2f5fd0", "#d0602f", "#2f9d5f", "#8a4fd0", "#b0902f", "#d02f7a"];

/// Five or six round tick values (steps of 1, 2, 2.5 or 5 × 10ⁿ) inside [lo, hi].
pub fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return vec![lo];
    }
    let raw = (hi - lo) / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag);
    let first = (lo / step - 1e-9).ceil() * step; // -0.3 / 0.1 is -2.9999999999999996
    (0..).map(|i| first + i as f64 * step).take_while(|t| *t <= hi + step * 1e-9).collect()
}

fn label(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e5).contains(&a) {
        format!("{v:.1e}")
    } else if a >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{:.3}", v).trim_end_matches('0').to_string()
    }
}

/// The chart, or `None` when no series has a finite point.
pub fn line_chart(title: &str, series: &[Series]) -> Option<String> {
    let finite = || series.iter().flat_map(|s| s.points.iter()).filter(|(x, y)| x.is_finite() && y.is_finite());
    finite().next()?;
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in finite() {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x1 == x0 {
        x1 = x0 + 1.0;
    }
    if y1 == y0 {
        let pad = if y0 == 0.0 { 1.0 } else { y0.abs() * 0.1 };
        (y0, y1) = (y0 - pad, y1 + pad);
    }
    let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * (W - LEFT - RIGHT);
    let sy = |y: f64| TOP + (1.0 - (y - y0) / (y1 - y0)) * (H - TOP - BOTTOM);
    let mut out = String::new();
    let _ =
        write!(out, r#"<svg viewBox="0 0 {W} {H}" role="img" aria-label="{t}"><title>{t}</title>"#, t = escape(title));
    let _ = write!(out, r#"<text x="{LEFT}" y="15" class="title">{}</text>"#, escape(title));
    for t in ticks(y0, y1) {
        let y = sy(t);
        let _ = write!(
            out,
            r#"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" class="grid"/><text x="{}" y="{:.1}" class="tick" text-anchor="end">{}</text>"#,
            W - RIGHT,
            LEFT - 4.0,
            y + 3.5,
            label(t)
        );
    }
    for t in ticks(x0, x1) {
        let x = sx(t);
        let _ = write!(
            out,
            r#"<text x="{x:.1}" y="{}" class="tick" text-anchor="middle">{}</text>"#,
            H - BOTTOM + 14.0,
            label(t)
        );
    }
    let _ = write!(out, r#"<text x="{}" y="{}" class="tick" text-anchor="end">step</text>"#, W - RIGHT, H - 2.0);
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let mut d = String::new();
        let mut pen_down = false;
        let mut pts: Vec<&(f64, f64)> = s.points.iter().collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        for &&(x, y) in &pts {
            if !(x.is_finite() && y.is_finite()) {
                pen_down = false;
                continue;
            }
            let _ = write!(d, "{}{:.1},{:.1} ", if pen_down { "L" } else { "M" }, sx(x), sy(y));
            pen_down = true;
        }
        let _ = write!(
            out,
            r#"<path d="{}" fill="none" stroke="{colour}" stroke-width="1.6"><title>{}</title></path>"#,
            d.trim_end(),
            escape(&s.name)
        );
        if pts.iter().filter(|(x, y)| x.is_finite() && y.is_finite()).count() == 1 {
            let &(x, y) = pts.iter().find(|(x, y)| x.is_finite() && y.is_finite()).copied().unwrap_or(&(x0, y0));
            let _ = write!(out, r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{colour}"/>"#, sx(x), sy(y));
        }
        if series.len() > 1 {
            let _ = write!(
                out,
                r#"<text x="{}" y="{}" class="legend" fill="{colour}" text-anchor="end">{}</text>"#,
                W - RIGHT,
                15.0 + 11.0 * i as f64,
                escape(&s.name)
            );
        }
    }
    out.push_str("</svg>");
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        let round = |v: Vec<f64>| v.iter().map(|t| (t * 1e9).round() / 1e9).collect::<Vec<_>>();
        assert_eq!(round(ticks(0.0, 1.0)), vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_eq!(ticks(3.0, 47.0), vec![10.0, 20.0, 30.0, 40.0]);
        assert_eq!(round(ticks(-0.3, 0.2)), vec![-0.3, -0.2, -0.1, 0.0, 0.1, 0.2]);
        assert_eq!(ticks(5.0, 5.0), vec![5.0]);
    }

    #[test]
    fn a_chart_maps_points_into_the_frame_and_breaks_at_gaps() {
        let s = Series { name: "loss".into(), points: vec![(1.0, 2.0), (2.0, f64::NAN), (3.0, 1.0), (4.0, 0.0)] };
        let svg = line_chart("loss <&>", &[s]).unwrap();
        assert!(svg.contains("loss &lt;&amp;&gt;"), "titles are escaped");
        // First point at the left edge and the top (the maximum); the NaN starts a new segment.
        assert!(svg.contains(&format!("M{LEFT:.1},{TOP:.1}")), "{svg}");
        let d = svg.split("d=\"").nth(1).unwrap().split('"').next().unwrap();
        assert_eq!(d.matches('M').count(), 2, "a missing value starts a new segment: {d}");
        assert_eq!(d.matches('L').count(), 1, "{d}");
        assert!(svg.contains(&format!("L{:.1},{:.1}", W - RIGHT, H - BOTTOM)), "last point at the bottom-right: {svg}");
        assert!(line_chart("empty", &[Series { name: "x".into(), points: vec![(1.0, f64::INFINITY)] }]).is_none());
    }
}
