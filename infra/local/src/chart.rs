//! The benchmark's picture: every function's cold start as a bar (init, then first invocation)
//! beside the Rust and Python references, with the target (1.25x the Rust reference) as a line.
//! Written by `cargo stack bench` to `docs/cold-starts.svg`, which the README shows. Plain SVG, no
//! crate: a few rectangles and labels.

use std::fmt::Write;

use crate::bench::{PYTHON_REFERENCE, RUST_REFERENCE, is_reference};
use crate::stack::ColdStart;

/// The target a function's cold start is held to, as a multiple of the Rust reference's.
pub const TARGET_RATIO: f64 = 1.25;

const ROW: f64 = 22.0;
const LABEL_WIDTH: f64 = 250.0;
const PLOT_WIDTH: f64 = 480.0;
const TOP: f64 = 56.0;

/// The chart of `cold` (as `bench::cold_starts` measured them, references included), `title` above.
/// The axis ends a little past the slowest Rust function; a bar beyond it (Python's) is cut, with
/// its value written at the cut.
pub fn cold_starts_svg(cold: &[ColdStart], title: &str) -> String {
    let total = |c: &ColdStart| c.init_ms + c.first_invocation_ms;
    // A function never invoked has no cold start to draw.
    let cold: Vec<&ColdStart> = cold.iter().filter(|c| total(c).is_finite()).collect();
    let rust = cold.iter().find(|c| c.function == RUST_REFERENCE).map(|c| total(c));
    let scale_max = cold.iter().filter(|c| c.function != PYTHON_REFERENCE).map(|c| total(c)).fold(1.0, f64::max) * 1.15;
    let x = |ms: f64| LABEL_WIDTH + PLOT_WIDTH * (ms / scale_max).min(1.0);
    let height = TOP + ROW * cold.len() as f64 + 40.0;
    let width = LABEL_WIDTH + PLOT_WIDTH + 110.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"##
    );
    let _ = writeln!(svg, r##"<rect width="100%" height="100%" fill="#ffffff"/>"##);
    let _ = writeln!(svg, r##"<text x="10" y="20" font-size="14" font-weight="bold">{}</text>"##, escape(title));
    let _ = writeln!(
        svg,
        r##"<text x="10" y="38" fill="#555555">cold start, ms: <tspan fill="#1f4e79">init</tspan> then <tspan fill="#7fa7d1">first invocation</tspan>; dashed: the target, {TARGET_RATIO}x the Rust reference</text>"##
    );
    for (row, c) in cold.iter().enumerate() {
        let y = TOP + ROW * row as f64;
        let reference = is_reference(&c.function);
        let (init, first) = if reference { ("#6b6b6b", "#b0b0b0") } else { ("#1f4e79", "#7fa7d1") };
        let _ = writeln!(
            svg,
            r##"<text x="{}" y="{}" text-anchor="end">{}</text>"##,
            LABEL_WIDTH - 8.0,
            y + 14.0,
            escape(&c.function)
        );
        let (init_end, end) = (x(c.init_ms), x(total(c)));
        let _ = writeln!(
            svg,
            r##"<rect x="{LABEL_WIDTH}" y="{}" width="{:.1}" height="{}" fill="{init}"/>"##,
            y + 3.0,
            init_end - LABEL_WIDTH,
            ROW - 6.0
        );
        let _ = writeln!(
            svg,
            r##"<rect x="{init_end:.1}" y="{}" width="{:.1}" height="{}" fill="{first}"/>"##,
            y + 3.0,
            end - init_end,
            ROW - 6.0
        );
        let cut = if total(c) > scale_max { " (cut)" } else { "" };
        let _ = writeln!(svg, r##"<text x="{:.1}" y="{}">{:.1}{cut}</text>"##, end + 4.0, y + 14.0, total(c));
    }
    if let Some(rust) = rust {
        let target = x(rust * TARGET_RATIO);
        let bottom = TOP + ROW * cold.len() as f64;
        let _ = writeln!(
            svg,
            r##"<line x1="{target:.1}" y1="{TOP}" x2="{target:.1}" y2="{bottom}" stroke="#c0392b" stroke-dasharray="4 3"/>"##
        );
        let _ = writeln!(
            svg,
            r##"<text x="{target:.1}" y="{}" fill="#c0392b" text-anchor="middle">{:.1} ms</text>"##,
            bottom + 16.0,
            rust * TARGET_RATIO
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cold(function: &str, init_ms: f64, first_invocation_ms: f64) -> ColdStart {
        ColdStart { function: function.into(), init_ms, first_invocation_ms, peak_rss_mb: 8.0, samples: 3 }
    }

    /// The widths of the bars, in the order drawn (init, first invocation, per row).
    fn widths(svg: &str) -> Vec<f64> {
        svg.lines()
            .filter(|l| l.starts_with("<rect x=") && !l.contains("100%"))
            .map(|l| l.split("width=\"").nth(1).and_then(|w| w.split('"').next()).unwrap().parse().unwrap())
            .collect()
    }

    #[test]
    fn bars_are_to_scale_a_python_bar_is_cut_and_the_target_is_drawn() {
        let rows = [
            cold(RUST_REFERENCE, 10.0, 2.0),
            cold(PYTHON_REFERENCE, 260.0, 8.0),
            cold("HomeFunction", 6.0, 18.0),
            cold("Wallet<&>", 5.0, 3.0),
            cold("NeverInvoked", 5.0, f64::NAN),
        ];
        let svg = cold_starts_svg(&rows, "run 4");
        let w = widths(&svg);
        assert_eq!(w.len(), 8, "{svg}");
        // The axis ends at 1.15x the slowest non-Python bar (24 ms): Home's bar is 1/1.15 of it.
        let plot = |ms: f64| PLOT_WIDTH * ms / (24.0 * 1.15);
        assert!((w[4] - plot(6.0)).abs() < 0.1 && (w[5] - plot(18.0)).abs() < 0.1, "{w:?}");
        assert!((w[2] + w[3] - PLOT_WIDTH).abs() < 0.1, "Python's bar ends at the axis: {w:?}");
        assert!(svg.contains(">268.0 (cut)</text>"), "{svg}");
        assert!(svg.contains(">15.0 ms</text>"), "the target is 1.25 x 12 ms: {svg}");
        assert!(svg.contains("Wallet&lt;&amp;&gt;") && !svg.contains("Wallet<&>"));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(!svg.contains("NeverInvoked") && !svg.contains("NaN"), "{svg}");
    }
}
