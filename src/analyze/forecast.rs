//! Exhaustion forecasting: "will this reach capacity within the horizon, when,
//! and how sure are we?"
//!
//! The method follows the principles in the design note rather than a curve fit:
//! 1. **Regime first.** Jumps (level shifts, resets, counter resets) are found on
//!    the first differences against a robust scale; the trend is fitted only on
//!    the current regime. Two or more resets make the series a *sawtooth*
//!    (log rotation, compaction, cleanup): its trend is measured across cycles,
//!    on the cycle peaks, never within one ramp.
//! 2. **Trend that ignores the daily cycle.** The slope is the median of slopes
//!    between samples exactly one (or k) days apart, so a morning ramp does not
//!    look like a leak. The daily profile (30-minute buckets) is added back, so
//!    the forecast crosses capacity at the daily *peak*, where exhaustion
//!    happens.
//! 3. **Bends as well as jumps.** A leak that started this morning bends the
//!    slope without a jump. The seasonally adjusted series is segmented into
//!    lines ([`super::segment`]); the regime since the last change replaces
//!    the long trend when its slope stands out from the series' own windowed
//!    slopes (and from the slope this time of day usually has) and the
//!    rolling-origin back-test prefers it (`fit_bend`).
//! 4. **Calibrated on the series' own past.** The slope is refitted at earlier
//!    origins (rolling-origin back-test); how far those fits would have missed
//!    today's level sets the slope uncertainty, combined with the residual noise.
//! 5. **Probability, time and interval.** `confidence` is the probability the
//!    series crosses capacity within the horizon; `exhaustion_at` is the first
//!    time the median forecast crosses; the interval is where the 95% band
//!    crosses.
//!
//! Everything is O(n) or O(n log n) per series: no model is fitted iteratively.

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use super::series::{clean, CleanReport};
use super::stats::{ls_line, mad_sigma, median, median_mut, normal_cdf, theil_sen};

const DAY: f64 = 86_400.0;
const Z95: f64 = 1.96;

/// Seasonality assumed for the series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Seasonality {
    /// Daily cycle when the regime covers at least two days.
    #[default]
    Auto,
    /// Always model a daily cycle (needs two days of regime).
    Daily,
    /// Weekly cycle (needs two weeks of regime; otherwise daily).
    Weekly,
    /// No cycle: a plain robust trend.
    None,
}

/// Knobs for one forecast.
#[derive(Debug, Clone)]
pub struct ForecastParams {
    pub horizon_secs: i64,
    pub seasonality: Seasonality,
    /// Most forecast points returned (the exhaustion search uses a finer grid).
    pub max_points: usize,
    /// Whether and where augurs' MSTL+AutoETS also runs.
    pub cross_check: CrossCheck,
    /// With [`CrossCheck::Both`], at most this many series of one run get
    /// the cross-check, the soonest to exhaust first (0: no limit). A run is
    /// one `run::forecast_many` call; [`forecast`] of a single series
    /// ignores it.
    pub max_cross_checks: usize,
}

/// Default limit on MSTL cross-checks per run (`history.max_cross_checks`,
/// `--max-cross-checks`): about 90 ms of CPU each, so a few seconds per run
/// on two cores whatever the fleet's size.
pub const DEFAULT_MAX_CROSS_CHECKS: usize = 100;

/// Which forecasts run (`stormcast forecast --method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CrossCheck {
    /// The envelope forecast only.
    #[default]
    Envelope,
    /// The envelope forecast, plus MSTL+AutoETS on series the envelope finds
    /// at risk (its upper band crosses capacity within the horizon). The
    /// intervals are merged (earliest of the two earliest, latest of the two
    /// latest); `exhaustion_at` and `confidence` stay the envelope's.
    Both,
    /// MSTL+AutoETS on every series; its crossings are the headline
    /// (`exhaustion_at` from the median, the interval from the 95% band).
    Mstl,
}

impl Default for ForecastParams {
    fn default() -> Self {
        ForecastParams {
            horizon_secs: 86_400,
            seasonality: Seasonality::Auto,
            max_points: 97,
            cross_check: CrossCheck::Envelope,
            max_cross_checks: DEFAULT_MAX_CROSS_CHECKS,
        }
    }
}

/// One forecast point with its 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ForecastPoint {
    pub timestamp: DateTime<Utc>,
    pub value: f64,
    pub lower: f64,
    pub upper: f64,
}

/// How the forecast was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Usage is already at or above capacity.
    Exhausted,
    /// Robust trend on the current regime, no daily cycle.
    Trend,
    /// Robust trend plus a daily (or weekly) profile.
    Seasonal,
    /// Reset cycles: trend of the cycle peaks plus the current ramp.
    Sawtooth,
}

/// The answer for one series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    /// Time of the last sample: forecasts start here.
    pub now: DateTime<Utc>,
    pub current: f64,
    pub capacity: f64,
    pub horizon_secs: i64,
    pub method: Method,
    /// First time the median forecast reaches capacity, or `None` when it does
    /// not within the horizon. Equal to `now` when already exhausted.
    pub exhaustion_at: Option<DateTime<Utc>>,
    /// When the 95% band's upper edge first reaches capacity (earliest
    /// plausible exhaustion), if within the horizon.
    pub exhaustion_earliest: Option<DateTime<Utc>>,
    /// When the band's lower edge reaches capacity (latest plausible), if
    /// within the horizon.
    pub exhaustion_latest: Option<DateTime<Utc>>,
    /// Probability of reaching capacity within the horizon, in [0, 1].
    pub confidence: f64,
    /// Trend slope used, in units per hour.
    pub slope_per_hour: f64,
    /// Start of the regime the trend was fitted on.
    pub regime_start: DateTime<Utc>,
    pub points: Vec<ForecastPoint>,
    /// What was done to the input, and caveats.
    pub notes: Vec<String>,
    /// The MSTL+AutoETS cross-check, when it ran (see [`CrossCheck`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mstl: Option<super::baseline::MstlCheck>,
    /// The series was at risk, but the run's limit on MSTL cross-checks went
    /// to series that exhaust sooner: this is the envelope forecast alone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cross_check_skipped: bool,
}

impl Forecast {
    /// Seconds from `now` to the predicted exhaustion.
    pub fn lead_secs(&self) -> Option<i64> {
        self.exhaustion_at.map(|t| (t - self.now).num_seconds())
    }

    /// Whether [`CrossCheck::Both`] fits MSTL+AutoETS on this envelope
    /// forecast: its upper band reaches capacity within the horizon and the
    /// series is not already exhausted.
    pub fn wants_cross_check(&self) -> bool {
        self.exhaustion_earliest.is_some() && self.method != Method::Exhausted
    }

    /// Adds the MSTL cross-check to this envelope forecast of `points`, as
    /// [`CrossCheck::Both`] does inline (for runs that choose which series
    /// get it; see `run::cross_check_most_urgent`).
    pub fn cross_check(&mut self, points: &[(i64, f64)]) {
        if self.wants_cross_check() {
            let (pts, _) = clean(points);
            super::baseline::merge_cross_check(&pts, self);
        }
    }

    /// Usage as a fraction of capacity.
    pub fn utilisation(&self) -> f64 {
        if self.capacity > 0.0 {
            self.current / self.capacity
        } else {
            f64::NAN
        }
    }
}

/// Why no forecast could be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ForecastError {
    #[error("no finite samples (empty series or only NaN/Inf)")]
    Empty,
    #[error("capacity {0} is not a finite number")]
    BadCapacity(f64),
    #[error(
        "insufficient history: {points} usable samples over {span_secs}s; \
         need at least {min_points} samples over {min_span_secs}s"
    )]
    InsufficientHistory {
        points: usize,
        span_secs: i64,
        min_points: usize,
        min_span_secs: i64,
    },
    #[error("horizon must be positive")]
    BadHorizon,
}

pub const MIN_POINTS: usize = 6;
pub const MIN_SPAN_SECS: i64 = 3600;

fn ts(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Forecasts one series against a constant capacity.
///
/// Documented results for awkward input: NaN/Inf samples are gaps; duplicate
/// timestamps keep the last value; unordered input is sorted (all noted).
/// If the last value is already ≥ capacity, the result is `Exhausted` with
/// `exhaustion_at = now` and confidence 1, whatever the history length.
/// Otherwise fewer than [`MIN_POINTS`] samples or less than an hour of
/// history is an error, never a guess. A flat series never exhausts.
pub fn forecast(
    points: &[(i64, f64)],
    capacity: f64,
    params: &ForecastParams,
) -> Result<Forecast, ForecastError> {
    if params.horizon_secs <= 0 {
        return Err(ForecastError::BadHorizon);
    }
    if !capacity.is_finite() {
        return Err(ForecastError::BadCapacity(capacity));
    }
    let (pts, rep) = clean(points);
    let Some(&(now_s, current)) = pts.last() else {
        return Err(ForecastError::Empty);
    };
    let notes = rep.notes();
    if current >= capacity {
        return Ok(exhausted(now_s, current, capacity, params, notes, pts[0].0));
    }
    let span = now_s - pts[0].0;
    if pts.len() < MIN_POINTS || span < MIN_SPAN_SECS {
        return Err(ForecastError::InsufficientHistory {
            points: pts.len(),
            span_secs: span,
            min_points: MIN_POINTS,
            min_span_secs: MIN_SPAN_SECS,
        });
    }
    let mut f = forecast_clean(&pts, capacity, params, rep, notes);
    match params.cross_check {
        CrossCheck::Envelope => {}
        CrossCheck::Both if !f.wants_cross_check() => {}
        CrossCheck::Both => super::baseline::merge_cross_check(&pts, &mut f),
        CrossCheck::Mstl => super::baseline::mstl_headline(&pts, &mut f),
    }
    Ok(f)
}

fn exhausted(
    now: i64,
    current: f64,
    capacity: f64,
    params: &ForecastParams,
    mut notes: Vec<String>,
    start: i64,
) -> Forecast {
    notes.push(format!(
        "current usage {current} is already at or above capacity {capacity}"
    ));
    Forecast {
        now: ts(now),
        current,
        capacity,
        horizon_secs: params.horizon_secs,
        method: Method::Exhausted,
        exhaustion_at: Some(ts(now)),
        exhaustion_earliest: Some(ts(now)),
        exhaustion_latest: Some(ts(now)),
        confidence: 1.0,
        slope_per_hour: 0.0,
        regime_start: ts(start),
        points: Vec::new(),
        notes,
        mstl: None,
        cross_check_skipped: false,
    }
}

/// The fitted shape: value and standard deviation at a lead (seconds after now).
struct Model {
    method: Method,
    slope: f64,
    regime_start: usize,
    kind: ModelKind,
    /// How far above the fitted line the samples typically reach within an
    /// hour (the median of hourly maxima of the residuals). The headline
    /// time is the median forecast's crossing; the earliest plausible time
    /// adds this, because a sample is what reaches the limit (memory is
    /// OOM-killed at the first sample over it).
    excursion: f64,
    /// How often, and for how long, the samples reached how far above the
    /// fitted line: the hourly maxima of the residuals, when the regime
    /// holds enough hours to tell ([`Excess`]).
    excess: Option<Excess>,
}

enum ModelKind {
    Linear {
        level: f64,
        slope: f64,
        /// Seasonal profile (bucket offsets) and the period it covers.
        profile: Option<(Vec<f64>, f64)>,
        sigma_noise: f64,
        sigma_slope: f64,
        sigma_level: f64,
    },
    Saw {
        current: f64,
        ramp: f64,
        remaining: f64,
        period: f64,
        trough: f64,
        last_peak: f64,
        peak_slope: f64,
        sigma_peak: f64,
        sigma_peak_slope: f64,
    },
}

impl Model {
    fn at(&self, now_abs: f64, lead: f64) -> (f64, f64) {
        match &self.kind {
            ModelKind::Linear {
                level,
                slope,
                profile,
                sigma_noise,
                sigma_slope,
                sigma_level,
            } => {
                let season = season_at(profile.as_ref(), now_abs + lead)
                    - season_at(profile.as_ref(), now_abs);
                let v = level + slope * lead + season;
                let s = (sigma_noise.powi(2) + sigma_level.powi(2) + (sigma_slope * lead).powi(2))
                    .sqrt();
                (v, s)
            }
            ModelKind::Saw {
                current,
                ramp,
                remaining,
                period,
                trough,
                last_peak,
                peak_slope,
                sigma_peak,
                sigma_peak_slope,
            } => {
                let sigma = (sigma_peak.powi(2) + (sigma_peak_slope * lead).powi(2)).sqrt();
                if lead < *remaining {
                    return (current + ramp * lead, sigma);
                }
                let since = lead - remaining;
                let phase = (since % period) / period;
                let cycle_end = lead + (1.0 - phase) * period;
                let peak = last_peak + peak_slope * cycle_end;
                let trough = trough + peak_slope * cycle_end;
                (trough + (peak - trough) * phase, sigma)
            }
        }
    }
}

impl Model {
    /// The part of the standard deviation at `lead` that comes from the
    /// fitted level and slope, without the samples' own noise (which
    /// [`Excess`] describes as it was observed).
    fn param_sigma(&self, lead: f64) -> f64 {
        match &self.kind {
            ModelKind::Linear {
                sigma_slope,
                sigma_level,
                ..
            } => sigma_level.hypot(sigma_slope * lead),
            ModelKind::Saw {
                sigma_peak_slope, ..
            } => sigma_peak_slope * lead,
        }
    }
}

/// Fewest hours of residuals [`Excess`] reads a rate from: a day.
const MIN_EXCESS_HOURS: usize = 24;

/// How far above the fitted line the samples reached, hour by hour. A
/// resource runs out at the first *sample* over capacity, not when the
/// fitted line gets there: bursts, spikes and the sharp top of a daily peak
/// reach it first. From the residuals' hourly maxima `M_h` (in time order)
/// this gives, for a margin `x` between the line and capacity,
/// - the share of hours whose highest sample reached `x` above the line,
///   and
/// - the rate per hour at which such hours *begin* (a run of consecutive
///   hours over `x` is one episode: a burst that lasts three hours is one
///   event, not three).
struct Excess {
    /// `M_h`, sorted.
    maxima: Vec<f64>,
    /// `min(M_h, M_{h+1})` of consecutive hours, sorted: the hours that
    /// continue an episode.
    continued: Vec<f64>,
    /// With a seasonal profile, the highest residual of each profile bucket
    /// in each cycle, sorted per bucket, and the period: how far above the
    /// profile the samples reach at that time of day. A sharp daily peak
    /// rises above its bucket's median every day at the same time, which
    /// the hours pooled over the whole day understate.
    tops: Option<(Vec<Vec<f64>>, f64)>,
}

impl Excess {
    fn new(hourly_maxima: &[f64]) -> Option<Excess> {
        if hourly_maxima.len() < MIN_EXCESS_HOURS {
            return None;
        }
        let mut maxima = hourly_maxima.to_vec();
        let mut continued: Vec<f64> = hourly_maxima.windows(2).map(|w| w[0].min(w[1])).collect();
        maxima.sort_by(f64::total_cmp);
        continued.sort_by(f64::total_cmp);
        Some(Excess {
            maxima,
            continued,
            tops: None,
        })
    }

    /// Adds the per-bucket tops of the residuals `resid` at times `t`
    /// (seconds before `now_abs`) for a profile of `buckets` buckets over
    /// `period`, when every bucket has been seen in at least three cycles.
    fn with_tops(
        mut self,
        t: &[f64],
        resid: &[f64],
        now_abs: f64,
        period: f64,
        buckets: usize,
    ) -> Excess {
        let first_cycle = ((now_abs + t[0]) / period).floor();
        let cycles = ((now_abs - period * first_cycle) / period).floor() as usize + 1;
        let mut hi = vec![(f64::NEG_INFINITY, 0usize); cycles * buckets];
        for (ti, r) in t.iter().zip(resid) {
            let at = now_abs + ti;
            let c = (((at / period).floor() - first_cycle) as usize).min(cycles - 1);
            let b = (at.rem_euclid(period) / period * buckets as f64) as usize % buckets;
            let cell = &mut hi[c * buckets + b];
            cell.0 = cell.0.max(*r);
            cell.1 += 1;
        }
        let mut tops: Vec<Vec<f64>> = vec![Vec::new(); buckets];
        for (i, (v, n)) in hi.iter().enumerate() {
            // A bucket seen for a few samples only would say little.
            if *n >= 3 {
                tops[i % buckets].push(*v);
            }
        }
        if tops.iter().all(|v| v.len() >= 3) {
            tops.iter_mut().for_each(|v| v.sort_by(f64::total_cmp));
            self.tops = Some((tops, period));
        }
        self
    }

    /// Share of cycles in which the samples of the profile bucket holding
    /// `t_abs` reached `x` above the line (0 without per-bucket tops).
    fn phase_share(&self, t_abs: f64, x: f64) -> f64 {
        match &self.tops {
            Some((tops, period)) => {
                let n = tops.len();
                let b = (t_abs.rem_euclid(*period) / period * n as f64) as usize % n;
                Self::at_least(&tops[b], x) as f64 / tops[b].len() as f64
            }
            None => 0.0,
        }
    }

    fn at_least(sorted: &[f64], x: f64) -> usize {
        sorted.len() - sorted.partition_point(|v| *v < x)
    }

    /// Share of hours whose highest sample reached `x` above the line.
    fn share(&self, x: f64) -> f64 {
        Self::at_least(&self.maxima, x) as f64 / self.maxima.len() as f64
    }

    /// Episodes (runs of hours) reaching `x` above the line, per hour.
    fn onset_rate(&self, x: f64) -> f64 {
        let runs = Self::at_least(&self.maxima, x) - Self::at_least(&self.continued, x);
        runs as f64 / self.maxima.len() as f64
    }
}

/// Chance that no sample reaches `capacity` within each lead of the grid
/// (`step` apart, up to `horizon`), when the samples scatter above the line
/// `v(lead) + shift(lead)` as they did above the fitted line so far. Each
/// lead's survival is the smaller of two bounds: the hour (or, with a
/// profile, the time of day) with the least margin must not reach
/// capacity, and no episode of hours over the margin may begin. One survival per lead, in order.
fn survival(
    model: &Model,
    ex: &Excess,
    now_abs: f64,
    capacity: f64,
    step: f64,
    horizon: f64,
    shift: impl Fn(f64) -> f64,
) -> Vec<f64> {
    let mut out = Vec::with_capacity((horizon / step) as usize + 1);
    let mut worst_hour: f64 = 1.0;
    let mut onsets = 0.0;
    let mut lead = step;
    while lead <= horizon + 1e-9 {
        let (v, _) = model.at(now_abs, lead);
        let x = capacity - v - shift(lead);
        let hit = ex.share(x).max(ex.phase_share(now_abs + lead, x));
        worst_hour = worst_hour.min(1.0 - hit);
        onsets += ex.onset_rate(x) * step / 3600.0;
        out.push(worst_hour.min((-onsets).exp()));
        lead += step;
    }
    out
}

/// Standard normal quantiles at 0.1, 0.3, 0.5, 0.7 and 0.9: equally likely
/// values of the fitted level and slope, over which the chance of a sample
/// reaching capacity is averaged.
const PARAM_Z: [f64; 5] = [-1.281_551_6, -0.524_400_5, 0.0, 0.524_400_5, 1.281_551_6];

/// The profile `p` (bucket medians over one `period`) at absolute time
/// `t_abs`, interpolated between bucket centres: a bucket's median
/// describes the middle of its bucket, not its start.
fn profile_at(p: &[f64], period: f64, t_abs: f64) -> f64 {
    let n = p.len();
    let pos = ((t_abs.rem_euclid(period)) / period * n as f64 - 0.5).rem_euclid(n as f64);
    let i = (pos.floor() as usize) % n;
    let j = (i + 1) % n;
    let frac = pos - pos.floor();
    p[i] * (1.0 - frac) + p[j] * frac
}

/// The seasonal term at absolute time `t_abs`: 0 without a profile.
fn season_at(profile: Option<&(Vec<f64>, f64)>, t_abs: f64) -> f64 {
    profile.map_or(0.0, |(p, period)| profile_at(p, *period, t_abs))
}

/// Level of the line with slope `b` through the points `(t, v)`: the median
/// of `v − b·t`, robust to the bursts a mean would follow.
fn line_level(t: &[f64], v: &[f64], b: f64) -> f64 {
    let r: Vec<f64> = t.iter().zip(v).map(|(ti, vi)| vi - b * ti).collect();
    median(&r).unwrap_or(0.0)
}

/// Summed absolute error of the line `level + b·t` on the points `(t, v)`.
fn line_abs_error(t: &[f64], v: &[f64], level: f64, b: f64) -> f64 {
    t.iter()
        .zip(v)
        .map(|(ti, vi)| (vi - level - b * ti).abs())
        .sum()
}

fn forecast_clean(
    pts: &[(i64, f64)],
    capacity: f64,
    params: &ForecastParams,
    _rep: CleanReport,
    mut notes: Vec<String>,
) -> Forecast {
    let (now_s, current) = *pts.last().expect("non-empty");
    let now_abs = now_s as f64;
    let t: Vec<f64> = pts.iter().map(|p| (p.0 - now_s) as f64).collect();
    let y: Vec<f64> = pts.iter().map(|p| p.1).collect();
    let step = {
        let mut d: Vec<f64> = t.windows(2).map(|w| w[1] - w[0]).collect();
        median_mut(&mut d).unwrap_or(60.0).max(1.0)
    };
    let model = fit(&t, &y, step, now_abs, capacity, params, &mut notes);
    let h = params.horizon_secs as f64;
    // Exhaustion search on a grid fine enough for the time error to be small.
    let search_step = (h / 1440.0).max(step.min(300.0)).max(30.0);
    let mut first_mid = None;
    let mut first_hi = None;
    let mut first_lo = None;
    let mut p_max: f64 = 0.0;
    let mut lead = search_step;
    while lead <= h + 1e-9 {
        let (v, s) = model.at(now_abs, lead);
        let s = s.max(1e-12);
        p_max = p_max.max(normal_cdf((v - capacity) / s));
        // The earliest plausible time is when the band's upper edge plus the
        // hourly excursion reaches capacity: a sample is what touches it.
        if first_hi.is_none() && v + model.excursion + Z95 * s >= capacity {
            first_hi = Some(lead);
        }
        if first_mid.is_none() && v >= capacity {
            first_mid = Some(lead);
        }
        if first_lo.is_none() && v - Z95 * s >= capacity {
            first_lo = Some(lead);
            break;
        }
        lead += search_step;
    }
    // A sample, not the fitted line, is what reaches capacity: with the
    // series' own record of how far its samples rise above the line, the
    // headline is when a sample more likely than not has reached it (never
    // later than the line itself), and the confidence is the chance one
    // does within the horizon, averaged over the fitted level and slope.
    if let Some(ex) = &model.excess {
        let mut reach = 0.0;
        for z in PARAM_Z {
            let sd = |lead: f64| z * model.param_sigma(lead);
            let s = survival(&model, ex, now_abs, capacity, search_step, h, sd);
            reach += (1.0 - s.last().copied().unwrap_or(1.0)) / PARAM_Z.len() as f64;
            if z == 0.0 {
                // The fitted line itself: when a sample more likely than
                // not has reached capacity.
                let first_half = s
                    .iter()
                    .position(|p| *p <= 0.5)
                    .map(|k| (k + 1) as f64 * search_step);
                if let Some(l) = first_half {
                    first_mid = Some(first_mid.map_or(l, |m: f64| m.min(l)));
                    first_hi = Some(first_hi.map_or(l, |e: f64| e.min(l)));
                }
            }
        }
        p_max = reach;
    }
    let out_step = (h / (params.max_points.max(2) - 1) as f64).max(step.min(h));
    let mut points = Vec::new();
    let mut lead = out_step;
    while lead <= h + 1e-9 && points.len() < params.max_points {
        let (v, s) = model.at(now_abs, lead);
        points.push(ForecastPoint {
            timestamp: ts(now_s + lead.round() as i64),
            value: v,
            lower: v - Z95 * s,
            upper: v + Z95 * s,
        });
        lead += out_step;
    }
    let at = |l: Option<f64>| l.map(|l| ts(now_s + l.round() as i64));
    Forecast {
        now: ts(now_s),
        current,
        capacity,
        horizon_secs: params.horizon_secs,
        method: model.method,
        exhaustion_at: at(first_mid),
        exhaustion_earliest: at(first_hi),
        exhaustion_latest: at(first_lo),
        confidence: if first_mid.is_some() {
            p_max.max(0.5)
        } else {
            p_max.min(0.5)
        },
        slope_per_hour: model.slope * 3600.0,
        regime_start: ts(pts[model.regime_start].0),
        points,
        notes,
        mstl: None,
        cross_check_skipped: false,
    }
}

/// The largest residual of each whole hour, in time order. Hours with
/// fewer than three samples are skipped.
fn hourly_maxima(t: &[f64], resid: &[f64]) -> Vec<f64> {
    let mut maxima = Vec::new();
    let mut i = 0;
    while i < t.len() {
        let hour = (-t[i] / 3600.0).floor();
        let (mut hi, mut n) = (f64::NEG_INFINITY, 0);
        while i < t.len() && (-t[i] / 3600.0).floor() == hour {
            hi = hi.max(resid[i]);
            n += 1;
            i += 1;
        }
        if n >= 3 {
            maxima.push(hi);
        }
    }
    maxima
}

/// The model's `excursion` and `excess` from its residuals: the median of
/// the hourly maxima (at least 0), how far above the fitted line the
/// series typically reaches within an hour; and their distribution.
fn excursion_and_excess(t: &[f64], resid: &[f64]) -> (f64, Option<Excess>) {
    let maxima = hourly_maxima(t, resid);
    let excess = Excess::new(&maxima);
    (median(&maxima).unwrap_or(0.0).max(0.0), excess)
}

/// Finds jumps: |Δy| above both 8 robust sigmas of the differences and a
/// quarter of the series' range. Returns (index of the sample after the jump, Δy).
fn jumps(y: &[f64]) -> Vec<(usize, f64)> {
    if y.len() < 3 {
        return Vec::new();
    }
    let d: Vec<f64> = y.windows(2).map(|w| w[1] - w[0]).collect();
    let sd = mad_sigma(&d);
    let lo = y.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = y.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let range = hi - lo;
    if range <= 0.0 {
        return Vec::new();
    }
    let thr = (8.0 * sd).max(0.25 * range);
    d.iter()
        .enumerate()
        .filter(|(_, v)| v.abs() > thr)
        .map(|(i, v)| (i + 1, *v))
        .collect()
}

fn fit(
    t: &[f64],
    y: &[f64],
    step: f64,
    now_abs: f64,
    capacity: f64,
    params: &ForecastParams,
    notes: &mut Vec<String>,
) -> Model {
    let js = jumps(y);
    // The regime starts after the last upward jump (a level shift); resets
    // (downward jumps) after it are either one more shift or a sawtooth.
    let mut start = js
        .iter()
        .rev()
        .find(|(_, d)| *d > 0.0)
        .map_or(0, |(i, _)| *i);
    let drops: Vec<usize> = js
        .iter()
        .filter(|(i, d)| *d < 0.0 && *i >= start)
        .map(|(i, _)| *i)
        .collect();
    if drops.len() >= 2 {
        if let Some(m) = fit_sawtooth(t, y, step, start, &drops, notes) {
            return m;
        }
    }
    if let Some(&last_drop) = drops.last() {
        start = last_drop;
    }
    if start > 0 {
        notes.push(format!(
            "level shift or reset detected; trend fitted on the last {} samples",
            t.len() - start
        ));
    }
    // A regime too short to fit: fall back to the whole history but widen
    // the uncertainty.
    let short = t.len() - start < MIN_POINTS || -t[start] < 1800.0;
    if short && start > 0 {
        notes.push("the current regime is very short; uncertainty widened".into());
    }
    let long = fit_linear(t, y, step, now_abs, start, short, params, notes);
    if short {
        return long;
    }
    fit_bend(t, y, step, now_abs, capacity, start, &long, notes).unwrap_or(long)
}

/// Profile of one period (48 buckets a day) of the series detrended by
/// slope `b`: the median of each bucket, centred on the median bucket.
fn daily_profile(tr: &[f64], yr: &[f64], b: f64, p: f64, now_abs: f64) -> Vec<f64> {
    let buckets = if p > DAY { 7 * 48 } else { 48 };
    let mut sums: Vec<Vec<f64>> = vec![Vec::new(); buckets];
    for (ti, yi) in tr.iter().zip(yr) {
        let pos = ((now_abs + ti).rem_euclid(p) / p * buckets as f64) as usize % buckets;
        sums[pos].push(yi - b * ti);
    }
    let mut prof: Vec<f64> = sums
        .iter_mut()
        .map(|v| median_mut(v).unwrap_or(f64::NAN))
        .collect();
    fill_nan_circular(&mut prof);
    let m = median(&prof).unwrap_or(0.0);
    prof.iter_mut().for_each(|v| *v -= m);
    prof
}

#[allow(clippy::too_many_arguments)]
fn fit_linear(
    t: &[f64],
    y: &[f64],
    step: f64,
    now_abs: f64,
    start: usize,
    short: bool,
    params: &ForecastParams,
    notes: &mut Vec<String>,
) -> Model {
    let (tr, yr) = (&t[start..], &y[start..]);
    let span = -tr[0];
    let two_weeks = span >= 14.0 * DAY - 2.0 * step;
    let period = match params.seasonality {
        Seasonality::None => None,
        Seasonality::Weekly if two_weeks => Some(7.0 * DAY),
        Seasonality::Auto if two_weeks && weekly_detected(tr, yr) => {
            notes.push("weekly cycle detected".into());
            Some(7.0 * DAY)
        }
        _ if span >= 2.0 * DAY - 2.0 * step => Some(DAY),
        _ => None,
    };
    let slope = |tt: &[f64], yy: &[f64]| -> f64 {
        match period {
            Some(p) => seasonal_slope(tt, yy, p, step).unwrap_or(0.0),
            None => theil_sen(tt, yy, 160).unwrap_or(0.0),
        }
    };
    let b = slope(tr, yr);
    // Seasonal profile of the detrended regime.
    let profile = period.map(|p| (daily_profile(tr, yr, b, p, now_abs), p));
    let season = |ti: f64| season_at(profile.as_ref(), now_abs + ti);
    let resid: Vec<f64> = tr
        .iter()
        .zip(yr)
        .map(|(ti, yi)| yi - b * ti - season(*ti))
        .collect();
    // Level at now: median residual over the most recent part of the regime.
    let recent = (resid.len() / 4).clamp(3.min(resid.len()), 288);
    let tail = &resid[resid.len() - recent..];
    let base = median(tail).unwrap_or(0.0);
    let level = base + season(0.0);
    let centred: Vec<f64> = resid.iter().map(|r| r - base).collect();
    let sigma_noise = mad_sigma(&centred);
    let sigma_level = sigma_noise / (recent as f64).sqrt();

    // Rolling-origin back-test: refit at earlier origins and see how far each
    // fit would have missed today's level; that spread is the slope error.
    let mut errs = Vec::new();
    for frac in [0.5, 0.65, 0.8] {
        let cut = start + ((t.len() - start) as f64 * frac) as usize;
        if cut < start + MIN_POINTS || cut >= t.len() {
            continue;
        }
        let (tp, yp) = (&t[start..cut], &y[start..cut]);
        if tp.last().unwrap() - tp[0] < 1800.0 {
            continue;
        }
        let bo = slope(tp, yp);
        let lead = -tp[tp.len() - 1];
        if lead <= 0.0 {
            continue;
        }
        let k = (tp.len() / 4).clamp(3.min(tp.len()), 288);
        let lvl_o = median(
            &tp[tp.len() - k..]
                .iter()
                .zip(&yp[yp.len() - k..])
                .map(|(ti, yi)| yi - bo * ti - season(*ti))
                .collect::<Vec<_>>(),
        )
        .unwrap_or(0.0);
        // `lvl_o` is origin o's fit extrapolated to now: compare with today's.
        errs.push((lvl_o - base) / lead);
        errs.push(bo - b);
    }
    let bt = if errs.is_empty() {
        0.0
    } else {
        (errs.iter().map(|e| e * e).sum::<f64>() / errs.len() as f64).sqrt()
    };
    // Sampling error of the slope itself: noise over the regime's span.
    let se = sigma_noise * (12.0f64).sqrt() / span.max(step) / (tr.len() as f64).sqrt().max(1.0);
    let mut sigma_slope = bt.max(se);
    if short {
        sigma_slope = sigma_slope.max(b.abs());
    }
    let method = if profile.is_some() {
        Method::Seasonal
    } else {
        Method::Trend
    };
    if profile.is_none() && span < DAY {
        notes.push(format!(
            "only {:.1}h of regime history: daily cycles cannot be separated from trend",
            span / 3600.0
        ));
    }
    let (excursion, mut excess) = excursion_and_excess(tr, &centred);
    if let Some((p, per)) = &profile {
        excess = excess.map(|e| e.with_tops(tr, &centred, now_abs, *per, p.len()));
    }
    Model {
        method,
        slope: b,
        regime_start: start,
        excursion,
        excess,
        kind: ModelKind::Linear {
            level,
            slope: b,
            profile,
            sigma_noise,
            sigma_slope,
            sigma_level,
        },
    }
}

/// Width of the buckets the change search runs on: medians of 15 minutes
/// (three 5-minute samples) shrug off single-sample spikes and keep a
/// week at 672 values.
const BUCKET_SECS: f64 = 900.0;
/// Shortest segment the change search keeps, in buckets (one hour).
const MIN_SEGMENT_BUCKETS: usize = 4;
/// A bend's slope must stand this many robust deviations away from the
/// slopes the same series showed over windows of the same length before it.
const BEND_Z: f64 = 4.0;

/// Buckets of width `bw` counted back from now (the last bucket ends at the
/// last sample): (bucket mean time in hours, median value, index of the
/// bucket's first sample).
fn buckets(t: &[f64], v: &[f64], bw: f64) -> (Vec<f64>, Vec<f64>, Vec<usize>) {
    let (mut bx, mut by, mut bi) = (Vec::new(), Vec::new(), Vec::new());
    let mut i = 0;
    let mut vals = Vec::new();
    while i < t.len() {
        let k = (-t[i] / bw).floor();
        let first = i;
        vals.clear();
        let mut tsum = 0.0;
        while i < t.len() && (-t[i] / bw).floor() == k {
            vals.push(v[i]);
            tsum += t[i];
            i += 1;
        }
        bx.push(tsum / vals.len() as f64 / 3600.0);
        by.push(median_mut(&mut vals).unwrap_or(0.0));
        bi.push(first);
    }
    (bx, by, bi)
}

/// The last change of a seasonally adjusted series, as [`last_change`]
/// finds it.
struct Change {
    /// First sample of the new regime (index into `tr`).
    tau: usize,
    /// How many robust deviations that slope stands from the slopes of
    /// windows of the same length before the change.
    z: f64,
    /// Whether it also stands apart from the slope this time of day has.
    beyond_daily: bool,
    /// Bucket noise scale.
    sigma_b: f64,
    /// Buckets since the change.
    m: usize,
}

/// The last change of the seasonally adjusted series `adj` (times `tr`,
/// seconds before now, sampled every `step`), or `None` when the series
/// holds none.
fn last_change(tr: &[f64], adj: &[f64], step: f64, capacity: f64) -> Option<Change> {
    let bw = BUCKET_SECS.max(step);
    let (bx, by, bi) = buckets(tr, adj, bw);
    let nb = bx.len();
    if nb < 2 * MIN_SEGMENT_BUCKETS {
        return None;
    }
    // Bursts (a few samples far off) would each become a segment of their
    // own: clip the buckets to a rolling median ± 4 local sigmas.
    let rmed: Vec<f64> = (0..nb)
        .map(|i| median(&by[i.saturating_sub(4)..(i + 5).min(nb)]).unwrap_or(by[i]))
        .collect();
    let dev: Vec<f64> = by.iter().zip(&rmed).map(|(v, r)| v - r).collect();
    let sigma_local = mad_sigma(&dev);
    let by: Vec<f64> = by
        .iter()
        .zip(&rmed)
        .map(|(v, r)| v.clamp(r - 4.0 * sigma_local, r + 4.0 * sigma_local))
        .collect();
    // The noise scale the penalty uses includes slow wander, not only the
    // sample-to-sample jitter: the typical residual spread around a line
    // over 6-hour windows. Noise far below a ten-thousandth of capacity
    // cannot matter for exhaustion: the floor keeps constant series from
    // splitting on rounding.
    let win = (6.0 * 3600.0 / bw).round().max(4.0) as usize;
    let mut wander: Vec<f64> = by
        .chunks(win)
        .zip(bx.chunks(win))
        .filter(|(c, _)| c.len() >= win / 2)
        .map(|(c, x)| {
            let b = ls_line(x, c).map_or(0.0, |(_, b)| b);
            let r: Vec<f64> = c.iter().zip(x).map(|(v, xi)| v - b * xi).collect();
            mad_sigma(&r)
        })
        .collect();
    let sigma_b = sigma_local
        .max(median_mut(&mut wander).unwrap_or(0.0))
        .max(1e-4 * capacity.abs().max(1e-12));
    let seg = super::segment::segment(
        &bx,
        &by,
        sigma_b,
        MIN_SEGMENT_BUCKETS,
        3.0 * (nb as f64).ln(),
    );
    if seg.changes.is_empty() {
        return None;
    }
    // Segments that continue the last one's slope are the same regime (a
    // straight leak over a wiggly profile may be cut in pieces): walk back
    // while the earlier segment's slope agrees.
    let se_of = |a: usize, b: usize| {
        let m = (b - a).max(2) as f64;
        let w = (bx[b - 1] - bx[a]).max(bw / 3600.0);
        sigma_b * 12f64.sqrt() / w / m.sqrt()
    };
    // The most recent change after which the slope stands out is the
    // current regime. A short wiggle at the very end is a segment of its
    // own, so the candidates are tried from the last one back: the first
    // that passes is taken (each candidate's regime runs to now).
    let per_day = (DAY / bw).round() as usize;
    let mut last = seg.changes.len();
    while last > 0 {
        let mut j = last - 1;
        while j > 0 {
            let (a, k) = (seg.changes[j - 1], seg.changes[j]);
            let (b_prev, b_reg) = (seg.slope(a, k), seg.slope(k, nb));
            let same_trend = b_prev * b_reg > 0.0 && (0.4..=2.5).contains(&(b_prev / b_reg));
            let within_noise = (b_prev - b_reg).abs() <= 3.0 * se_of(a, k).hypot(se_of(k, nb));
            if !same_trend && !within_noise {
                break;
            }
            j -= 1;
        }
        let k = seg.changes[j];
        let m = nb - k;
        let slope_h = seg.slope(k, nb);
        // Null: slopes over windows of m buckets before the change, and
        // those ending at this time of day on earlier days.
        let stride = (m / 2).max(1);
        let null: Vec<f64> = (0..=k.saturating_sub(m))
            .step_by(stride)
            .filter(|j| j + m <= k)
            .map(|j| seg.slope(j, j + m))
            .collect();
        let same_time: Vec<f64> = (1..=14)
            .filter_map(|d| nb.checked_sub(d * per_day))
            .filter(|end| *end >= m && *end <= k)
            .map(|end| seg.slope(end - m, end))
            .collect();
        let se = se_of(k, nb);
        let (centre, spread) = if null.len() >= 6 {
            let c = median(&null).unwrap_or(0.0);
            (c, mad_sigma(&null).max(se))
        } else {
            let before = if j > 0 { seg.changes[j - 1] } else { 0 };
            (seg.slope(before, k), se.hypot(se_of(before, k)))
        };
        // The slope this time of day usually has (a morning ramp the
        // profile did not take out entirely) is no evidence of a bend.
        // With less than a day before the change there is no such slope to
        // compare with, and a daily cycle's rising half looks like a bend.
        // A cycle returns to levels it held within the day, so the bend
        // counts only once it has taken the series beyond every level it
        // held before the change.
        let beyond_daily = match median(&same_time) {
            Some(s) => (slope_h - s).abs() >= BEND_Z * spread,
            None => beyond_earlier_levels(&by[..k], &by[k..], slope_h, sigma_b),
        };
        let z = (slope_h - centre) / spread;
        if z.abs() >= BEND_Z && beyond_daily {
            return Some(Change {
                tau: bi[k],
                z,
                beyond_daily,
                sigma_b,
                m,
            });
        }
        last = j;
    }
    None
}

/// Whether a change with slope `slope` has taken the series to a level it
/// did not hold before: the buckets of the last hour of `after` (the
/// regime since the change) above every bucket `before` it for a rise,
/// below every one for a fall, by more than the noise scale `sigma`. A
/// cycle past its peak is back among earlier levels; a leak is at its
/// highest now.
fn beyond_earlier_levels(before: &[f64], after: &[f64], slope: f64, sigma: f64) -> bool {
    let now = &after[after.len().saturating_sub(MIN_SEGMENT_BUCKETS)..];
    let fold = |init: f64, f: fn(f64, f64) -> f64, v: &[f64]| v.iter().copied().fold(init, f);
    if slope > 0.0 {
        fold(f64::MAX, f64::min, now) > fold(f64::MIN, f64::max, before) + sigma
    } else {
        fold(f64::MIN, f64::max, now) < fold(f64::MAX, f64::min, before) - sigma
    }
}

/// The current regime when the slope bent (or the level stepped) inside the
/// jump-free regime: a leak that started hours ago. The seasonally adjusted
/// series is segmented into lines ([`super::segment`]); the last segment
/// (with the earlier ones that continue its slope) is the candidate regime.
/// When it is shorter than two days the daily profile comes from the
/// history before the change. It replaces the long seasonal trend only when
/// (1) its slope is significant beyond the slopes the series itself showed
/// over windows of the same length before the change, and beyond the slope
/// this time of day usually has (so a morning ramp that happens every day
/// is not a bend), and (2) the rolling-origin back-test says it would have
/// predicted the recent past better than the long trend.
#[allow(clippy::too_many_arguments)]
fn fit_bend(
    t: &[f64],
    y: &[f64],
    step: f64,
    now_abs: f64,
    capacity: f64,
    start: usize,
    long: &Model,
    notes: &mut Vec<String>,
) -> Option<Model> {
    let ModelKind::Linear {
        slope: b_long,
        profile,
        ..
    } = &long.kind
    else {
        return None;
    };
    let b_long = *b_long;
    let (tr, yr) = (&t[start..], &y[start..]);
    let adjust = |profile: &Option<(Vec<f64>, f64)>| -> Vec<f64> {
        tr.iter()
            .zip(yr)
            .map(|(ti, yi)| yi - season_at(profile.as_ref(), now_abs + ti))
            .collect()
    };
    let mut profile = profile.clone();
    let mut adj = adjust(&profile);
    let mut ch = last_change(tr, &adj, step, capacity)?;
    // The profile of the regime before the change, when that regime holds
    // two days: the leak's own days would bend the profile.
    if let Some((_, per)) = &profile {
        let pre = ch.tau;
        if pre > 0 && tr[pre - 1] - tr[0] >= 2.0 * DAY - 2.0 * step {
            let b_pre = seasonal_slope(&tr[..pre], &yr[..pre], *per, step).unwrap_or(0.0);
            let p2 = Some((
                daily_profile(&tr[..pre], &yr[..pre], b_pre, *per, now_abs),
                *per,
            ));
            let adj2 = adjust(&p2);
            if let Some(c2) = last_change(tr, &adj2, step, capacity) {
                profile = p2;
                adj = adj2;
                ch = c2;
            }
        }
    }
    if ch.z.abs() < BEND_Z || !ch.beyond_daily {
        return None;
    }
    let tau = ch.tau;
    let (ts_, as_) = (&tr[tau..], &adj[tau..]);
    if ts_.len() < MIN_POINTS {
        return None;
    }
    let b = theil_sen(ts_, as_, 160)?;
    // Rolling-origin back-test: fit both at the middle of the new regime and
    // compare how they predict the samples since.
    let o = ts_.len() / 2;
    if o < 3 {
        return None;
    }
    let b_o = theil_sen(&ts_[..o], &as_[..o], 160).unwrap_or(b);
    let line_o = line_level(&ts_[..o], &as_[..o], b_o);
    let err_bend = line_abs_error(&ts_[o..], &as_[o..], line_o, b_o);
    let before_o = tau + o;
    let k_long = (before_o / 4).clamp(3.min(before_o), 288);
    let recent_long = before_o - k_long..before_o;
    let level_long_o = line_level(&tr[recent_long.clone()], &adj[recent_long], b_long);
    let err_long = line_abs_error(&ts_[o..], &as_[o..], level_long_o, b_long);
    if err_bend >= err_long {
        return None;
    }
    let base = line_level(ts_, as_, b);
    let centred: Vec<f64> = ts_
        .iter()
        .zip(as_)
        .map(|(ti, ai)| ai - b * ti - base)
        .collect();
    let sigma_noise = mad_sigma(&centred);
    let n_seg = ts_.len() as f64;
    let span = -ts_[0];
    let se_b = sigma_noise.max(ch.sigma_b) * 12f64.sqrt() / span.max(step) / n_seg.sqrt();
    // Where exactly the change was is uncertain too: the slope refitted
    // without the regime's first quarter says how much that matters.
    let q = ts_.len() / 4;
    let b_late = theil_sen(&ts_[q..], &as_[q..], 160).unwrap_or(b);
    let sigma_slope = se_b.max((b_o - b).abs()).max((b_late - b).abs());
    // How far the back-test's fit missed the samples it predicted (mean
    // absolute error, scaled to a sigma) bounds the level error from below.
    let backtest_sigma = 1.25 * err_bend / (ts_.len() - o) as f64;
    let sigma_level = (sigma_noise.max(ch.sigma_b) / (ch.m as f64).sqrt()).max(backtest_sigma);
    notes.push(format!(
        "trend changed {:.1}h ago: fitted on the samples since ({:+.4}/h, before {:+.4}/h)",
        span / 3600.0,
        b * 3600.0,
        b_long * 3600.0
    ));
    let (excursion, excess) = excursion_and_excess(ts_, &centred);
    Some(Model {
        method: long.method,
        slope: b,
        regime_start: start + tau,
        excursion,
        excess,
        kind: ModelKind::Linear {
            level: base + season_at(profile.as_ref(), now_abs),
            slope: b,
            profile,
            sigma_noise,
            sigma_slope,
            sigma_level,
        },
    })
}

/// Whether the periodogram of the hourly, detrended series has a peak at one
/// week (±10%): detected periods are hints, snapped to 1 d / 1 w.
fn weekly_detected(t: &[f64], y: &[f64]) -> bool {
    use augurs::seasons::{Detector as _, PeriodogramDetector};
    let hours = ((t[t.len() - 1] - t[0]) / 3600.0).floor() as usize + 1;
    let mut sums = vec![(0.0, 0usize); hours];
    for (ti, yi) in t.iter().zip(y) {
        let h = (((ti - t[0]) / 3600.0) as usize).min(hours - 1);
        sums[h].0 += yi;
        sums[h].1 += 1;
    }
    let mut hourly = Vec::with_capacity(hours);
    let mut last = y[0];
    for (s, n) in sums {
        if n > 0 {
            last = s / n as f64;
        }
        hourly.push(last);
    }
    let x: Vec<f64> = (0..hourly.len()).map(|i| i as f64).collect();
    let b = theil_sen(&x, &hourly, 200).unwrap_or(0.0);
    let detrended: Vec<f64> = hourly
        .iter()
        .enumerate()
        .map(|(i, v)| v - b * i as f64)
        .collect();
    let periods = PeriodogramDetector::builder()
        .min_period(12)
        .max_period(24 * 10)
        .build()
        .detect(&detrended);
    // The periodogram's resolution at a period P over n samples is about
    // P²/n: snap anything that close to a week.
    let tol = (168.0f64 * 168.0 / detrended.len() as f64).max(17.0);
    periods
        .iter()
        .take(2)
        .any(|p| (f64::from(*p) - 168.0).abs() <= tol)
}

fn fill_nan_circular(p: &mut [f64]) {
    let n = p.len();
    if p.iter().all(|v| v.is_nan()) {
        p.iter_mut().for_each(|v| *v = 0.0);
        return;
    }
    for i in 0..n {
        if p[i].is_nan() {
            let mut k = 1;
            while p[(i + n - k) % n].is_nan() {
                k += 1;
            }
            p[i] = p[(i + n - k) % n];
        }
    }
}

/// Median of slopes between samples whole periods apart: a trend estimate
/// blind to the seasonal cycle.
fn seasonal_slope(t: &[f64], y: &[f64], period: f64, step: f64) -> Option<f64> {
    let n = t.len();
    let span = t[n - 1] - t[0];
    let kmax = (span / period).floor() as usize;
    if kmax == 0 {
        return theil_sen(t, y, 160);
    }
    let tol = (step / 2.0).max(1.0);
    let stride = (n * kmax).div_ceil(6000).max(1);
    let mut slopes = Vec::new();
    for k in 1..=kmax {
        let lag = k as f64 * period;
        let mut j = 0;
        for i in (0..n).step_by(stride) {
            let target = t[i] + lag;
            if target > t[n - 1] + tol {
                break;
            }
            while j < n && t[j] < target - tol {
                j += 1;
            }
            if j < n && (t[j] - target).abs() <= tol {
                slopes.push((y[j] - y[i]) / (t[j] - t[i]));
            }
        }
    }
    median_mut(&mut slopes).or_else(|| theil_sen(t, y, 160))
}

fn fit_sawtooth(
    t: &[f64],
    y: &[f64],
    step: f64,
    start: usize,
    drops: &[usize],
    notes: &mut Vec<String>,
) -> Option<Model> {
    let n = t.len();
    // Segments: [start, d0), [d0, d1), ..., [dk, n).
    let mut bounds = vec![start];
    bounds.extend_from_slice(drops);
    bounds.push(n);
    let mut peaks_t = Vec::new();
    let mut peaks_y = Vec::new();
    let mut troughs = Vec::new();
    let mut ramps = Vec::new();
    for w in bounds.windows(2) {
        let (a, b) = (w[0], w[1]);
        if b <= a {
            continue;
        }
        let seg_y = &y[a..b];
        let seg_t = &t[a..b];
        if b < n {
            let (im, pm) = seg_y
                .iter()
                .enumerate()
                .fold((0, f64::NEG_INFINITY), |acc, (i, v)| {
                    if *v > acc.1 {
                        (i, *v)
                    } else {
                        acc
                    }
                });
            peaks_t.push(seg_t[im]);
            peaks_y.push(pm);
        }
        if a > start {
            troughs.push(seg_y[0]);
        }
        if b - a >= 4 {
            if let Some(r) = theil_sen(seg_t, seg_y, 80) {
                ramps.push(r);
            }
        }
    }
    let periods: Vec<f64> = drops.windows(2).map(|w| t[w[1]] - t[w[0]]).collect();
    let period = median(&periods).unwrap_or_else(|| t[drops[drops.len() - 1]] - t[drops[0]]);
    if period <= step * 2.0 {
        return None;
    }
    let last_drop = *drops.last()?;
    let elapsed = -t[last_drop];
    let cur_seg_t = &t[last_drop..];
    let cur_seg_y = &y[last_drop..];
    // The current ramp counts once it has enough samples to be more than
    // noise; until then the cycles before it say how fast a ramp climbs.
    let min_cur = 12.max((period / step / 4.0) as usize);
    let ramp_cur = if cur_seg_t.len() >= min_cur {
        theil_sen(cur_seg_t, cur_seg_y, 80)
    } else {
        None
    };
    let ramp_hist = median(&ramps).unwrap_or(0.0);
    let ramp = ramp_cur.map_or(ramp_hist, |r| r.max(ramp_hist));
    // Where the current ramp is now, robustly (not the last noisy sample).
    let current_fit = median(
        &cur_seg_t
            .iter()
            .zip(cur_seg_y)
            .map(|(ti, yi)| yi - ramp * ti)
            .collect::<Vec<_>>(),
    )
    .unwrap_or(*y.last()?);
    if elapsed > 1.5 * period {
        notes.push(format!(
            "reset cycle of {:.1}h is overdue ({:.1}h since the last reset); treating the current ramp as a trend",
            period / 3600.0,
            elapsed / 3600.0
        ));
        return None;
    }
    let remaining = (period - elapsed).max(0.0);
    let (peak_slope, sigma_peak_slope) = if peaks_y.len() >= 3 {
        let ps = theil_sen(&peaks_t, &peaks_y, 200).unwrap_or(0.0);
        let resid: Vec<f64> = peaks_t
            .iter()
            .zip(&peaks_y)
            .map(|(pt, py)| py - ps * pt)
            .collect();
        let span = peaks_t[peaks_t.len() - 1] - peaks_t[0];
        (
            ps,
            mad_sigma(&resid) * 12f64.sqrt() / span.max(step) / (peaks_y.len() as f64).sqrt(),
        )
    } else {
        (0.0, 0.0)
    };
    let last_peak_fit = {
        let resid: Vec<f64> = peaks_t
            .iter()
            .zip(&peaks_y)
            .map(|(pt, py)| py - peak_slope * pt)
            .collect();
        median(&resid).unwrap_or(peaks_y[peaks_y.len() - 1])
    };
    let sigma_peak = {
        let resid: Vec<f64> = peaks_t
            .iter()
            .zip(&peaks_y)
            .map(|(pt, py)| py - peak_slope * pt - last_peak_fit)
            .collect();
        mad_sigma(&resid).max(mad_sigma(
            &cur_seg_y
                .windows(2)
                .map(|w| w[1] - w[0])
                .collect::<Vec<_>>(),
        ))
    };
    let trough = median(&troughs).unwrap_or(y[last_drop]);
    notes.push(format!(
        "sawtooth: {} resets, cycle {:.1}h; trend measured on cycle peaks",
        drops.len(),
        period / 3600.0
    ));
    Some(Model {
        method: Method::Sawtooth,
        slope: peak_slope,
        regime_start: start,
        // The peaks are sample maxima already.
        excursion: 0.0,
        excess: None,
        kind: ModelKind::Saw {
            current: current_fit,
            ramp,
            remaining,
            period,
            trough,
            // Peak level extrapolated to now (t = 0).
            last_peak: last_peak_fit,
            peak_slope,
            sigma_peak,
            sigma_peak_slope,
        },
    })
}

/// `predict_linear(v[window], horizon)` as Prometheus computes it (least
/// squares over the window), turned into a time of crossing `capacity`:
/// `None` when the extrapolated value at the horizon stays below capacity.
/// This is the baseline node-mixin alerts use.
pub fn predict_linear_crossing(
    points: &[(i64, f64)],
    capacity: f64,
    window_secs: i64,
    horizon_secs: i64,
) -> Option<i64> {
    let (pts, _) = clean(points);
    let &(now, last) = pts.last()?;
    if last >= capacity {
        return Some(now);
    }
    // Times relative to now, so the line's intercept is its value at now.
    let (x, y): (Vec<f64>, Vec<f64>) = pts
        .iter()
        .filter(|p| p.0 > now - window_secs)
        .map(|p| ((p.0 - now) as f64, p.1))
        .unzip();
    let (at_now, slope) = ls_line(&x, &y)?;
    if at_now + slope * (horizon_secs as f64) < capacity {
        return None;
    }
    if at_now >= capacity {
        return Some(now);
    }
    Some(now + ((capacity - at_now) / slope).round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000;

    fn series(n: usize, step: i64, f: impl Fn(f64) -> f64) -> Vec<(i64, f64)> {
        (0..n)
            .map(|i| {
                let t = T0 + i as i64 * step;
                (t, f(i as f64 * step as f64))
            })
            .collect()
    }

    fn noise(i: f64) -> f64 {
        // Deterministic pseudo-noise in [-1, 1].
        ((i * 12.9898).sin() * 43_758.545_3).fract()
    }

    #[test]
    fn linear_leak_predicts_crossing_time() {
        // 1 unit per hour from 10, capacity 100; 3 days of 5-minute samples.
        let s = series(864, 300, |x| 10.0 + x / 3600.0 + 0.3 * noise(x));
        let now_val = 10.0 + 863.0 * 300.0 / 3600.0; // ~81.9
        let f = forecast(&s, 100.0, &ForecastParams::default()).unwrap();
        let lead = f.lead_secs().expect("crossing within 24h") as f64 / 3600.0;
        let truth = 100.0 - now_val;
        assert!((lead - truth).abs() < 1.0, "lead {lead}h vs {truth}h");
        assert!(f.confidence > 0.9, "{}", f.confidence);
        assert!(f.exhaustion_earliest.unwrap() <= f.exhaustion_at.unwrap());
        assert!(!f.points.is_empty());
        assert!(f
            .points
            .iter()
            .all(|p| p.lower <= p.value && p.value <= p.upper));
    }

    #[test]
    fn daily_cycle_without_growth_is_not_a_leak() {
        // Peaks at 80 of 100 every day; cut during the morning ramp.
        let s = series(6 * 288 + 20, 300, |x| {
            50.0 + 30.0 * (2.0 * std::f64::consts::PI * x / 86_400.0).sin() + noise(x)
        });
        let f = forecast(&s, 100.0, &ForecastParams::default()).unwrap();
        assert_eq!(f.method, Method::Seasonal);
        assert_eq!(f.exhaustion_at, None, "{:?}", f.notes);
        assert!(f.confidence < 0.2, "{}", f.confidence);
        // predict_linear over 6h does alarm on the morning ramp.
        assert!(predict_linear_crossing(&s, 100.0, 6 * 3600, 86_400).is_some());
    }

    /// A daily swing with a sharp top at 14:00 UTC (a 10-minute-wide burst
    /// of `spike` over a broad cycle), rising `growth` a day, 7 days.
    fn sharp_daily_peak(base: f64, growth: f64, spike: f64) -> Vec<(i64, f64)> {
        series(7 * 288, 300, |x| {
            let hour = ((T0 as f64 + x) % 86_400.0) / 3600.0;
            base + growth * x / 86_400.0
                + 0.15 * (std::f64::consts::TAU * (hour - 8.0) / 24.0).sin()
                + spike * (-0.5 * ((hour - 14.0) / 0.15).powi(2)).exp()
                + 0.002 * noise(x)
        })
    }

    #[test]
    fn a_daily_peak_whose_samples_reach_capacity_on_a_rising_trend_warns() {
        // The half-hour medians of the profile peak below capacity tomorrow,
        // but the samples at the top of the peak go over it: 0.985 at
        // today's peak, +0.03 a day.
        let s = sharp_daily_peak(0.557, 0.03, 0.08);
        let today_peak = s[s.len() - 288..].iter().map(|p| p.1).fold(0.0, f64::max);
        assert!((0.98..0.99).contains(&today_peak), "{today_peak}");
        let f = forecast(&s, 1.0, &ForecastParams::default()).unwrap();
        assert!(
            f.points.iter().all(|p| p.value < 1.0),
            "the fitted line itself stays below capacity"
        );
        let peak = s[s.len() - 1].0 - s[s.len() - 1].0.rem_euclid(86_400) + 86_400 + 14 * 3600;
        let at = f.exhaustion_at.expect("warns").timestamp();
        assert!((peak - 1800..=peak + 600).contains(&at), "{at} vs {peak}");
        assert!(f.confidence >= 0.5);
        assert!(f.exhaustion_earliest.unwrap().timestamp() <= peak);
        assert!(f
            .exhaustion_latest
            .is_none_or(|l| l.timestamp() >= peak - 600));
        // The same peak without growth, its top at 0.985 every day, is quiet.
        let flat = sharp_daily_peak(0.754, 0.0, 0.08);
        let f = forecast(&flat, 1.0, &ForecastParams::default()).unwrap();
        assert_eq!(f.exhaustion_at, None, "{:?}", f.notes);
        assert!(f.confidence < 0.5);
    }

    #[test]
    fn the_daily_profile_is_in_phase_with_the_cycle() {
        // A clean daily swing of ±30: tomorrow's forecast is today's value
        // at the same time of day, not a quarter of an hour early.
        let wave = |x: f64| 50.0 + 30.0 * (std::f64::consts::TAU * x / 86_400.0).sin();
        let s = series(7 * 288, 300, wave);
        let f = forecast(&s, 100.0, &ForecastParams::default()).unwrap();
        let worst = f
            .points
            .iter()
            .map(|p| (p.value - wave((p.timestamp.timestamp() - T0) as f64)).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1.0, "worst error {worst}");
    }

    #[test]
    fn one_day_of_a_daily_swing_on_its_rise_is_not_a_leak() {
        // A single day of 85 ± 5, cut 1 to 5 hours before the swing's peak:
        // the rise is a bend of its own, but it has not gone beyond the
        // levels the series held the day before.
        for hours_to_peak in [1.0, 3.0, 5.0] {
            let end_phase = 6.0 * 3600.0 - hours_to_peak * 3600.0;
            let s = series(288, 300, |x| {
                let phase = end_phase - 287.0 * 300.0 + x;
                85.0 + 5.0 * (std::f64::consts::TAU * phase / 86_400.0).sin() + 0.3 * noise(x)
            });
            let f = forecast(&s, 100.0, &ForecastParams::default()).unwrap();
            assert_eq!(f.exhaustion_at, None, "{hours_to_peak}h: {:?}", f.notes);
        }
    }

    #[test]
    fn one_day_flat_then_a_fresh_leak_warns() {
        // 20 hours near 47, then 4 hours climbing 8 per hour: beyond every
        // earlier level, full in about 2.6 hours.
        let s = series(288, 300, |x| {
            let h = x / 3600.0;
            47.0 + 8.0 * (h - 20.0).max(0.0) + 0.3 * noise(x)
        });
        let f = forecast(&s, 100.0, &ForecastParams::default()).unwrap();
        let lead = f.lead_secs().expect("a warning") as f64 / 3600.0;
        assert!((1.5..4.0).contains(&lead), "lead {lead}h: {:?}", f.notes);
    }

    #[test]
    fn sawtooth_that_never_fills_is_quiet() {
        // Log rotation every 6h: ramps 20 -> 80, capacity 100.
        let s = series(5 * 288, 300, |x| {
            20.0 + 60.0 * ((x / 21_600.0).fract()) + 0.2 * noise(x)
        });
        let f = forecast(&s, 100.0, &ForecastParams::default()).unwrap();
        assert_eq!(f.method, Method::Sawtooth, "{:?}", f.notes);
        assert_eq!(f.exhaustion_at, None);
    }

    #[test]
    fn step_then_leak_fits_the_new_regime() {
        // Flat at 20, jumps to 50 a day ago, then leaks 1/h.
        let s = series(4 * 288, 300, |x| {
            let since = x - 3.0 * 86_400.0;
            if since < 0.0 {
                20.0 + 0.2 * noise(x)
            } else {
                50.0 + since / 3600.0 + 0.2 * noise(x)
            }
        });
        let f = forecast(&s, 90.0, &ForecastParams::default()).unwrap();
        assert!(f.regime_start.timestamp() >= T0 + 3 * 86_400 - 300);
        let lead = f.lead_secs().expect("crossing") as f64 / 3600.0;
        assert!((lead - 16.0).abs() < 2.0, "lead {lead}");
    }

    #[test]
    fn weekly_cycle_is_detected_and_a_monday_ramp_is_no_leak() {
        // A weekly swing (busy weekdays, quiet weekends) over a daily cycle,
        // 3 weeks at 10 minutes, cut where the week is climbing fastest.
        let week = 7.0 * 86_400.0;
        let cut = 20.0 * 86_400.0 + 0.75 * week % 86_400.0;
        let n = (cut / 600.0) as usize;
        let s = series(n, 600, |x| {
            60.0 + 20.0 * (2.0 * std::f64::consts::PI * (x - cut) / week).sin()
                + 8.0 * (2.0 * std::f64::consts::PI * x / 86_400.0).sin()
                + noise(x)
        });
        let f = forecast(&s, 100.0, &ForecastParams::default()).unwrap();
        assert!(
            f.notes.iter().any(|n| n.contains("weekly")),
            "{:?}",
            f.notes
        );
        assert_eq!(f.exhaustion_at, None, "{:?}", f.notes);
        assert!(predict_linear_crossing(&s, 100.0, 6 * 3600, 7 * 86_400).is_some());
    }

    #[test]
    fn bad_input_is_explained() {
        let p = ForecastParams::default();
        assert_eq!(forecast(&[], 1.0, &p), Err(ForecastError::Empty));
        assert_eq!(
            forecast(&[(T0, f64::NAN)], 1.0, &p),
            Err(ForecastError::Empty)
        );
        assert!(matches!(
            forecast(&[(T0, 0.5)], 1.0, &p),
            Err(ForecastError::InsufficientHistory { points: 1, .. })
        ));
        assert!(matches!(
            forecast(&[(T0, 0.5)], f64::NAN, &p),
            Err(ForecastError::BadCapacity(_))
        ));
        // Already full: documented result, even with one point.
        let f = forecast(&[(T0, 2.0)], 1.0, &p).unwrap();
        assert_eq!(f.method, Method::Exhausted);
        assert_eq!(f.exhaustion_at.unwrap().timestamp(), T0);
        assert_eq!(f.confidence, 1.0);
        // Flat zero never exhausts.
        let z = series(300, 300, |_| 0.0);
        let f = forecast(&z, 10.0, &p).unwrap();
        assert_eq!(f.exhaustion_at, None);
        assert_eq!(f.confidence, 0.0);
        // Duplicates and disorder are cleaned and noted, not fatal.
        let mut s = series(100, 300, |x| x / 3600.0);
        s.swap(3, 4);
        s.push(s[10]);
        let f = forecast(&s, 1000.0, &p).unwrap();
        assert!(
            f.notes.iter().any(|n| n.contains("sorted")),
            "{:?}",
            f.notes
        );
        assert!(f.notes.iter().any(|n| n.contains("duplicate")));
    }

    #[test]
    fn predict_linear_baseline() {
        let s = series(100, 300, |x| x / 3600.0);
        let at = predict_linear_crossing(&s, 30.0, 6 * 3600, 86_400).unwrap();
        let expect = T0 + 30 * 3600;
        assert!((at - expect).abs() < 60, "{at} vs {expect}");
        assert!(predict_linear_crossing(&s, 1000.0, 6 * 3600, 86_400).is_none());
    }
}
