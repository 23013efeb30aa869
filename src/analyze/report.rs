//! The forecasting report: every at-risk resource sorted by time to
//! exhaustion, each with an SVG chart (history, forecast, 95% band, capacity
//! line, predicted exhaustion), and the series unlike their peers, each with
//! a bar against its cluster's median; rendered as HTML, Markdown or JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use super::anomaly::PeerOutlier;
use super::forecast::Forecast;
use super::series::Series;

/// One series' outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeriesResult {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Why there is no forecast (bad input, too short, no capacity...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", flatten)]
    pub forecast: Option<Forecast>,
    /// Recent history for the chart (downsampled), not serialised in JSON output.
    #[serde(skip)]
    pub history: Vec<(i64, f64)>,
    /// Online anomaly score of the latest sample, when computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anomaly_score: Option<f64>,
    /// How the series differs from its peers, when the model compares peers
    /// and it is unlike them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_outlier: Option<PeerOutlier>,
}

impl SeriesResult {
    /// The result for `s` before anything is known about it: its name and
    /// labels, no forecast, no error.
    pub fn of(s: &Series) -> Self {
        SeriesResult {
            name: s.name(),
            labels: s.labels.clone(),
            model: None,
            error: None,
            forecast: None,
            history: Vec::new(),
            anomaly_score: None,
            peer_outlier: None,
        }
    }

    pub fn lead_secs(&self) -> Option<i64> {
        self.forecast.as_ref().and_then(Forecast::lead_secs)
    }

    /// Predicted to exhaust within its horizon.
    pub fn at_risk(&self) -> bool {
        self.lead_secs().is_some()
    }
}

/// Sorts by time to exhaustion (soonest first), then by confidence, then
/// by name; series without a forecast come last.
pub fn sort_results(results: &mut [SeriesResult]) {
    results.sort_by(|a, b| {
        let key = |r: &SeriesResult| {
            (
                r.forecast.is_none(),
                r.lead_secs().unwrap_or(i64::MAX),
                -(r.forecast.as_ref().map_or(0.0, |f| f.confidence) * 1e6) as i64,
            )
        };
        key(a).cmp(&key(b)).then_with(|| a.name.cmp(&b.name))
    });
}

/// Keeps at most `max` points, evenly spaced, always including the last.
pub fn downsample(points: &[(i64, f64)], max: usize) -> Vec<(i64, f64)> {
    if points.len() <= max || max < 2 {
        return points.to_vec();
    }
    let stride = points.len().div_ceil(max);
    let mut out: Vec<(i64, f64)> = points.iter().step_by(stride).copied().collect();
    if out.last() != points.last() {
        out.push(*points.last().expect("non-empty"));
    }
    out
}

/// The report document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub generated_at: DateTime<Utc>,
    pub series: Vec<SeriesResult>,
}

impl Report {
    pub fn new(generated_at: DateTime<Utc>, mut series: Vec<SeriesResult>) -> Self {
        sort_results(&mut series);
        Report {
            generated_at,
            series,
        }
    }

    pub fn at_risk(&self) -> impl Iterator<Item = &SeriesResult> {
        self.series.iter().filter(|s| s.at_risk())
    }

    /// Series unlike their peers (models with `peers: true`), the furthest
    /// from their cluster's median first.
    pub fn peer_outliers(&self) -> Vec<(&SeriesResult, &PeerOutlier)> {
        let mut v: Vec<(&SeriesResult, &PeerOutlier)> = self
            .series
            .iter()
            .filter_map(|s| Some((s, s.peer_outlier.as_ref()?)))
            .collect();
        v.sort_by(|a, b| {
            b.1.score
                .total_cmp(&a.1.score)
                .then_with(|| a.0.name.cmp(&b.0.name))
        });
        v
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    pub fn to_markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# stormcast forecast report\n");
        let _ = writeln!(
            out,
            "Generated {}. {} series, {} predicted to exhaust within their horizon.\n",
            self.generated_at.to_rfc3339(),
            self.series.len(),
            self.at_risk().count()
        );
        let _ = writeln!(
            out,
            "| Resource | Current | Capacity | Exhaustion (UTC) | In | Earliest–latest | Confidence | Method |"
        );
        let _ = writeln!(out, "|---|---:|---:|---|---:|---|---:|---|");
        for s in &self.series {
            let name = s.name.replace('|', "\\|");
            match (&s.forecast, &s.error) {
                (Some(f), _) => {
                    let _ = writeln!(
                        out,
                        "| `{name}` | {} | {} | {} | {} | {} | {:.0}% | {} |",
                        fmt_num(f.current),
                        fmt_num(f.capacity),
                        f.exhaustion_at
                            .map_or("—".into(), |t| t.format("%Y-%m-%d %H:%M").to_string()),
                        s.lead_secs().map_or("—".into(), fmt_lead),
                        interval_text(f),
                        100.0 * f.confidence,
                        method_text(f)
                    );
                }
                (None, Some(e)) => {
                    let _ = writeln!(
                        out,
                        "| `{name}` | | | no forecast: {} | | | | |",
                        e.replace('|', "\\|")
                    );
                }
                (None, None) => {}
            }
        }
        let peers = self.peer_outliers();
        if !peers.is_empty() {
            let _ = writeln!(out, "\n## Unlike their peers\n");
            let _ = writeln!(
                out,
                "| Series | Value | Cluster median | vs median | Robust deviations | Outlying | Peers | Window |"
            );
            let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
            for (s, p) in peers {
                let _ = writeln!(
                    out,
                    "| `{}` | {} |",
                    s.name.replace('|', "\\|"),
                    peer_cells(p).join(" | ")
                );
            }
        }
        out
    }

    pub fn to_html(&self) -> String {
        let mut out = String::new();
        let _ = write!(
            out,
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>stormcast forecast report</title>\
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse}}\
td,th{{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left}}td.n{{text-align:right}}\
.risk{{margin:2em 0}}.critical{{color:#b00020}}.note{{color:#666;font-size:90%}}</style></head><body>\
<h1>stormcast forecast report</h1><p>Generated {} &middot; {} series &middot; <b>{}</b> predicted to exhaust within their horizon.</p>",
            esc(&self.generated_at.to_rfc3339()),
            self.series.len(),
            self.at_risk().count()
        );
        out.push_str("<table><tr><th>Resource</th><th>Current</th><th>Capacity</th><th>Exhaustion (UTC)</th><th>In</th><th>Earliest&ndash;latest</th><th>Confidence</th><th>Method</th></tr>");
        for s in &self.series {
            match (&s.forecast, &s.error) {
                (Some(f), _) => {
                    let _ = write!(
                        out,
                        "<tr><td><code>{}</code></td><td class=n>{}</td><td class=n>{}</td><td>{}</td><td class=n>{}</td><td>{}</td><td class=n>{:.0}%</td><td>{}</td></tr>",
                        esc(&s.name),
                        fmt_num(f.current),
                        fmt_num(f.capacity),
                        f.exhaustion_at.map_or("&mdash;".into(), |t| t.format("%Y-%m-%d %H:%M").to_string()),
                        s.lead_secs().map_or("&mdash;".into(), fmt_lead),
                        esc(&interval_text(f)),
                        100.0 * f.confidence,
                        esc(&method_text(f))
                    );
                }
                (None, Some(e)) => {
                    let _ = write!(
                        out,
                        "<tr><td><code>{}</code></td><td colspan=7 class=note>no forecast: {}</td></tr>",
                        esc(&s.name),
                        esc(e)
                    );
                }
                (None, None) => {}
            }
        }
        out.push_str("</table>");
        for s in self.at_risk() {
            let f = s.forecast.as_ref().expect("at risk has a forecast");
            let _ = write!(
                out,
                "<div class=risk><h2><code>{}</code></h2><p>Reaches capacity <b>{}</b> (in {}, interval {}), confidence {:.0}%. Current {} of {} ({:.0}%).</p>{}",
                esc(&s.name),
                f.exhaustion_at.map_or(String::new(), |t| t.to_rfc3339()),
                s.lead_secs().map_or("?".into(), fmt_lead),
                esc(&interval_text(f)),
                100.0 * f.confidence,
                fmt_num(f.current),
                fmt_num(f.capacity),
                100.0 * f.utilisation(),
                chart_svg(s)
            );
            if !f.notes.is_empty() {
                let _ = write!(out, "<p class=note>{}</p>", esc(&f.notes.join("; ")));
            }
            out.push_str("</div>");
        }
        let peers = self.peer_outliers();
        if !peers.is_empty() {
            out.push_str("<h2>Unlike their peers</h2><table class=peers><tr><th>Series</th><th>Value against its cluster's median</th><th>Value</th><th>Cluster median</th><th>vs median</th><th>Robust deviations</th><th>Outlying</th><th>Peers</th><th>Window</th></tr>");
            for (s, p) in peers {
                let _ = write!(
                    out,
                    "<tr><td><code>{}</code></td><td>{}</td>",
                    esc(&s.name),
                    peer_bar_svg(p)
                );
                for cell in peer_cells(p) {
                    let _ = write!(out, "<td class=n>{}</td>", esc(&cell));
                }
                out.push_str("</tr>");
            }
            out.push_str("</table>");
        }
        out.push_str("</body></html>\n");
        out
    }
}

/// A peer outlier's figures, as both reports list them after its name:
/// value, cluster median, ratio, robust deviations, share outlying, peers
/// and window.
fn peer_cells(p: &PeerOutlier) -> [String; 7] {
    [
        p.show(p.value),
        p.show(p.peer_median),
        p.ratio().map_or("—".to_owned(), |x| format!("{x:.1}×")),
        format!("{:.1}", p.score),
        format!("{:.0}%", 100.0 * p.outlying),
        p.peers.to_string(),
        fmt_lead(p.window_secs),
    ]
}

/// Two bars on one scale: the series (red) and its cluster's median (grey).
fn peer_bar_svg(p: &PeerOutlier) -> String {
    const W: f64 = 160.0;
    let top = p.value.abs().max(p.peer_median.abs());
    let scale = if top > 0.0 && top.is_finite() {
        W / top
    } else {
        0.0
    };
    let bar = |v: f64| (v.abs() * scale).clamp(0.0, W);
    format!(
        "<svg width=\"{W}\" height=\"22\" role=\"img\"><title>{} against a cluster median of {}</title>\
<rect x=\"0\" y=\"2\" width=\"{:.1}\" height=\"8\" fill=\"#b00020\"/>\
<rect x=\"0\" y=\"12\" width=\"{:.1}\" height=\"8\" fill=\"#999\"/></svg>",
        esc(&p.show(p.value)),
        esc(&p.show(p.peer_median)),
        bar(p.value),
        bar(p.peer_median)
    )
}

fn interval_text(f: &Forecast) -> String {
    let t = |x: Option<DateTime<Utc>>, none: &str| {
        x.map_or(none.to_owned(), |t| t.format("%m-%d %H:%M").to_string())
    };
    if f.exhaustion_earliest.is_none() {
        return "—".into();
    }
    format!(
        "{} – {}",
        t(f.exhaustion_earliest, "—"),
        t(f.exhaustion_latest, "beyond horizon")
    )
}

/// The method, plus the MSTL+AutoETS cross-check's median crossing when it ran.
pub fn method_text(f: &Forecast) -> String {
    let m = format!("{:?}", f.method);
    match &f.mstl {
        Some(c) => format!(
            "{m}; MSTL+ETS: {}",
            c.exhaustion_at.map_or("no crossing".into(), |t| t
                .format("%Y-%m-%d %H:%M")
                .to_string())
        ),
        None => m,
    }
}

pub fn fmt_lead(secs: i64) -> String {
    let m = secs.max(0) / 60;
    if m >= 24 * 60 {
        format!("{}d{}h", m / 1440, (m % 1440) / 60)
    } else if m >= 60 {
        format!("{}h{:02}m", m / 60, m % 60)
    } else {
        format!("{m}m")
    }
}

pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 1e12 {
        format!("{:.2}T", v / 1e12)
    } else if a >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned()
    }
}

pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            _ => o.push(c),
        }
    }
    o
}

/// The chart for one series: x in hours relative to now.
pub fn chart_svg(s: &SeriesResult) -> String {
    let Some(f) = &s.forecast else {
        return String::new();
    };
    let now = f.now.timestamp();
    let hist: Vec<(f64, f64)> = s
        .history
        .iter()
        .map(|(t, v)| ((t - now) as f64 / 3600.0, *v))
        .collect();
    let fc: Vec<(f64, f64, f64, f64)> = f
        .points
        .iter()
        .map(|p| {
            (
                (p.timestamp.timestamp() - now) as f64 / 3600.0,
                p.value,
                p.lower,
                p.upper,
            )
        })
        .collect();
    let x0 = hist.first().map_or(-1.0, |p| p.0).min(-1.0);
    let x1 = (f.horizon_secs as f64 / 3600.0).max(1.0);
    let ys = hist
        .iter()
        .map(|p| p.1)
        .chain(fc.iter().flat_map(|p| {
            [
                p.1,
                p.2.max(0.0).min(f.capacity * 1.3),
                p.3.min(f.capacity * 1.3),
            ]
        }))
        .chain([f.capacity, 0.0]);
    let (mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY);
    for y in ys.filter(|y| y.is_finite()) {
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if y1 <= y0 {
        y1 = y0 + 1.0;
    }
    let pad = (y1 - y0) * 0.05;
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (760, 280)).into_drawing_area();
        let draw = || -> Result<(), Box<dyn std::error::Error + '_>> {
            root.fill(&WHITE)?;
            let mut chart = ChartBuilder::on(&root)
                .margin(8)
                .x_label_area_size(28)
                .y_label_area_size(60)
                .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))?;
            chart
                .configure_mesh()
                .x_desc("hours from now")
                .y_label_formatter(&|v| fmt_num(*v))
                .light_line_style(WHITE.mix(0.0))
                .draw()?;
            let band: Vec<(f64, f64)> = fc
                .iter()
                .map(|p| (p.0, p.3))
                .chain(fc.iter().rev().map(|p| (p.0, p.2)))
                .collect();
            if band.len() > 2 {
                chart.draw_series(std::iter::once(Polygon::new(band, BLUE.mix(0.15).filled())))?;
            }
            chart.draw_series(LineSeries::new(hist.iter().copied(), BLACK.stroke_width(1)))?;
            chart.draw_series(LineSeries::new(
                std::iter::once((0.0, f.current)).chain(fc.iter().map(|p| (p.0, p.1))),
                BLUE.stroke_width(2),
            ))?;
            chart.draw_series(LineSeries::new(
                [(x0, f.capacity), (x1, f.capacity)],
                RED.stroke_width(1),
            ))?;
            if let Some(at) = f.exhaustion_at {
                let x = (at.timestamp() - now) as f64 / 3600.0;
                chart.draw_series(LineSeries::new(
                    [(x, y0 - pad), (x, y1 + pad)],
                    RED.mix(0.6).stroke_width(2),
                ))?;
                chart.draw_series(std::iter::once(Circle::new(
                    (x, f.capacity),
                    5,
                    RED.filled(),
                )))?;
            }
            root.present()?;
            Ok(())
        };
        if let Err(e) = draw() {
            tracing::warn!(error = %e, "chart rendering failed");
        }
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::forecast::{forecast, ForecastParams};

    fn result(name: &str, rate: f64) -> SeriesResult {
        let pts: Vec<(i64, f64)> = (0..600)
            .map(|i| (1_700_000_000 + i * 300, 10.0 + rate * i as f64 / 12.0))
            .collect();
        SeriesResult {
            name: name.into(),
            labels: BTreeMap::new(),
            model: None,
            error: None,
            forecast: Some(forecast(&pts, 100.0, &ForecastParams::default()).unwrap()),
            history: downsample(&pts, 200),
            anomaly_score: None,
            peer_outlier: None,
        }
    }

    #[test]
    fn series_unlike_their_peers_get_their_own_section_furthest_first() {
        let outlier = |score: f64, value: f64| PeerOutlier {
            value,
            peer_median: 0.2,
            peers: 6,
            score,
            outlying: 0.9,
            window_secs: 3600,
            utilisation: true,
        };
        let plain = Report::new(Utc::now(), vec![result("quiet", 0.0)]);
        assert!(!plain.to_markdown().contains("Unlike their peers"));
        assert!(!plain.to_html().contains("Unlike their peers"));
        let mut near = result("node-a|mem", 0.0);
        near.peer_outlier = Some(outlier(5.0, 0.5));
        let mut far = result("node-b<mem>", 0.0);
        far.peer_outlier = Some(outlier(9.0, 0.8));
        let r = Report::new(Utc::now(), vec![near, far, result("quiet", 0.0)]);
        let md = r.to_markdown();
        let section = &md[md.find("## Unlike their peers").expect("section")..];
        assert!(section.find("node-b").unwrap() < section.find("node-a").unwrap());
        assert!(
            section.contains("| `node-b<mem>` | 80.0% | 20.0% | 4.0× | 9.0 | 90% | 6 | 1h00m |")
        );
        assert!(section.contains("`node-a\\|mem`"));
        assert!(!section.contains("quiet"));
        let html = r.to_html();
        let section = &html[html.find("Unlike their peers").expect("section")..];
        assert_eq!(section.matches("<svg").count(), 2, "a bar per outlier");
        assert!(section.contains("node-b&lt;mem&gt;"));
        assert!(
            section.contains("width=\"160.0\""),
            "the furthest fills the bar"
        );
        assert!(
            section.contains("width=\"40.0\""),
            "its median at a quarter"
        );
    }

    #[test]
    fn report_sorts_by_time_to_exhaustion_and_draws_charts() {
        let quiet = result("quiet<disk>", 0.0);
        let slow = result("slow", 1.6);
        let fast = result("fast", 1.7);
        let broken = SeriesResult {
            name: "broken".into(),
            labels: BTreeMap::new(),
            model: None,
            error: Some("insufficient history".into()),
            forecast: None,
            history: Vec::new(),
            anomaly_score: None,
            peer_outlier: None,
        };
        let r = Report::new(Utc::now(), vec![quiet, broken, slow, fast]);
        let names: Vec<&str> = r.series.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["fast", "slow", "quiet<disk>", "broken"]);
        assert_eq!(r.at_risk().count(), 2);
        let html = r.to_html();
        assert_eq!(
            html.matches("<svg").count(),
            2,
            "one chart per at-risk series"
        );
        assert!(html.contains("quiet&lt;disk&gt;"));
        assert!(!html.contains("quiet<disk>"));
        assert!(html.find("fast").unwrap() < html.find("slow").unwrap());
        let md = r.to_markdown();
        assert!(md.contains("| `fast` |"));
        assert!(md.contains("no forecast: insufficient history"));
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert!(json["series"][0]["exhaustion_at"].is_string());
        assert!(json["series"][2]["exhaustion_at"].is_null());
        assert_eq!(json["series"][3]["error"], "insufficient history");
    }
}
