//! Open-loop arrivals: requests start on a schedule, not when earlier ones finish.
//!
//! Latency is measured from each arrival's *scheduled* instant, so a slow
//! server (or a starved generator) shows up as latency instead of silently
//! lowering the offered rate (coordinated omission).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::stats::Recorder;

/// How the offered rate (operations per second) changes over a run.
#[derive(Debug, Clone, Copy)]
pub enum Profile {
    /// Constant arrival rate.
    Constant { rate: f64, duration: Duration },
    /// Scenario 3: ramp from `base` to `peak`, sustain, ramp back down.
    Burst { base: f64, peak: f64, ramp: Duration, sustain: Duration },
}

impl Profile {
    pub fn duration(&self) -> Duration {
        match *self {
            Profile::Constant { duration, .. } => duration,
            Profile::Burst { ramp, sustain, .. } => ramp * 2 + sustain,
        }
    }

    pub fn peak(&self) -> f64 {
        match *self {
            Profile::Constant { rate, .. } => rate,
            Profile::Burst { peak, .. } => peak,
        }
    }

    /// Offered rate `t` seconds into the run.
    pub fn rate_at(&self, t: f64) -> f64 {
        match *self {
            Profile::Constant { rate, .. } => rate,
            Profile::Burst { base, peak, ramp, sustain } => {
                let (ramp, sustain) = (ramp.as_secs_f64(), sustain.as_secs_f64());
                let up = |x: f64| base + (peak - base) * (x / ramp).clamp(0.0, 1.0);
                if t < ramp {
                    up(t)
                } else if t < ramp + sustain {
                    peak
                } else {
                    up(2.0 * ramp + sustain - t)
                }
            }
        }
    }
}

/// Starts `op(scheduled)` at the profile's arrival times, at most `max_in_flight` at once
/// (an arrival beyond that is counted as dropped, an error), prints a progress line
/// every second, and waits for the stragglers. Returns the measured span.
pub async fn drive<F, Fut>(
    label: &str,
    profile: Profile,
    max_in_flight: usize,
    recorder: Arc<Recorder>,
    op: F,
) -> Duration
where
    F: Fn(Instant) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max_in_flight));
    let total = profile.duration().as_secs_f64();
    let start = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let (mut last_t, mut due, mut started) = (0.0_f64, 0.0_f64, 0_u64);
    let mut next_progress = 1.0;
    loop {
        ticker.tick().await;
        let t = start.elapsed().as_secs_f64().min(total);
        let before = due;
        due += (profile.rate_at(last_t) + profile.rate_at(t)) / 2.0 * (t - last_t);
        while (started as f64) + 1.0 <= due {
            // Where inside (last_t, t] this arrival fell.
            let frac = if due > before { ((started as f64 + 1.0) - before) / (due - before) } else { 1.0 };
            let scheduled = start + Duration::from_secs_f64(last_t + frac.clamp(0.0, 1.0) * (t - last_t));
            started += 1;
            match slots.clone().try_acquire_owned() {
                Ok(permit) => {
                    let fut = op(scheduled);
                    tokio::spawn(async move {
                        fut.await;
                        drop(permit);
                    });
                }
                Err(_) => recorder.dropped(),
            }
        }
        last_t = t;
        if t >= next_progress || t >= total {
            let (answers, errors) = recorder.counts();
            eprintln!(
                "[{label}] {t:>5.1}/{total:.0}s offered {:>6.0}/s started {started:>8} answered {answers:>8} errors {errors:>5} in flight {:>5} p95 {:>7.1} ms",
                profile.rate_at(t),
                max_in_flight - slots.available_permits(),
                recorder.overall_p95_ms(),
            );
            next_progress = t.floor() + 1.0;
        }
        if t >= total {
            break;
        }
    }
    // Stragglers count, up to the client's own timeout.
    let _ = tokio::time::timeout(Duration::from_secs(15), slots.acquire_many(max_in_flight as u32)).await;
    start.elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_ramps_up_sustains_and_ramps_down() {
        let p = Profile::Burst {
            base: 100.0,
            peak: 1000.0,
            ramp: Duration::from_secs(10),
            sustain: Duration::from_secs(20),
        };
        assert_eq!(p.duration(), Duration::from_secs(40));
        assert_eq!(p.rate_at(0.0), 100.0);
        assert_eq!(p.rate_at(5.0), 550.0);
        assert_eq!(p.rate_at(15.0), 1000.0);
        assert_eq!(p.rate_at(35.0), 550.0);
        assert_eq!(p.rate_at(40.0), 100.0);
    }
}
