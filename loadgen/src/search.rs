//! The `max` search: the highest constant rate that meets the SLO.
//!
//! Three kinds of step, each a constant-rate run that the caller measures:
//! - **grow**: from `start`, multiply the rate by `factor` until a step misses
//!   the SLO (or `max_rate` is reached);
//! - **bisect**: `refine` times between the last rate met and the first missed
//!   (four bisections narrow a factor of 1.35 to about 2%);
//! - a grow or bisect step that misses is measured again at once
//!   (**recheck**), and only a second miss counts: a disk stall of a second
//!   or two fails a 20 s step at any rate, and once ended a search at 359
//!   ops/s on a system that held 1,396 (luck the other way is the
//!   confirmation's job);
//! - **confirm**: near the edge the system is bistable (small batches cost
//!   more per command than large ones), so a step can meet the SLO by luck.
//!   The best rate must meet it `confirm` times; one that then misses gives
//!   way to a rate 7% lower, which must meet it as often, at most three rates
//!   in all. When nothing near the edge holds, the best is the highest step
//!   that met the SLO below the last rate tried.
//!
//! The search is plain logic over whatever a step returns ([`Step`]), so its
//! rules are tested here against scripted systems; `main` gives it the real
//! measurement.

/// What the search needs to know of one measured step.
pub trait Step: Clone {
    /// The rate asked for, operations per second.
    fn rate(&self) -> f64;
    /// Whether the step met the SLO.
    fn met(&self) -> bool;
    /// Accepted commands per second: among confirmations, the weakest speaks for the rate.
    fn accepted(&self) -> f64;
}

/// Which part of the search a step belongs to (its label in the progress output).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Grow,
    Bisect,
    Recheck,
    Confirm,
}

impl Phase {
    pub fn label(self) -> &'static str {
        match self {
            Self::Grow | Self::Bisect => "max",
            Self::Recheck => "recheck",
            Self::Confirm => "confirm",
        }
    }
}

/// The search's settings (`loadgen max` flags), checked by [`Plan::new`].
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    start: f64,
    factor: f64,
    refine: u32,
    confirm: u32,
    max_rate: f64,
}

impl Plan {
    /// Refuses a `factor` that does not grow the rate (the search would never end).
    pub fn new(start: f64, factor: f64, refine: u32, confirm: u32, max_rate: f64) -> anyhow::Result<Self> {
        anyhow::ensure!(factor > 1.0, "--factor must be above 1");
        Ok(Self { start, factor, refine, confirm, max_rate })
    }
}

/// Every step in the order run, and the best rate that met the SLO.
#[derive(Debug)]
pub struct Found<S> {
    pub steps: Vec<S>,
    pub best: Option<S>,
}

/// Rates tried for the confirmation, each 7% below the one before.
const CONFIRM_RATES: usize = 3;
const CONFIRM_BACK_OFF: f64 = 0.93;

/// Runs the search, measuring each step with `measure(phase, rate)`.
pub async fn find<S: Step>(
    plan: Plan,
    mut measure: impl AsyncFnMut(Phase, f64) -> anyhow::Result<S>,
) -> anyhow::Result<Found<S>> {
    let mut steps: Vec<S> = Vec::new();
    let mut run = async |phase: Phase, rate: f64, steps: &mut Vec<S>| -> anyhow::Result<S> {
        let step = measure(phase, rate).await?;
        steps.push(step.clone());
        Ok(step)
    };
    // A miss counts once it is seen twice in a row.
    let mut judge = async |phase: Phase, rate: f64, steps: &mut Vec<S>| -> anyhow::Result<S> {
        let step = run(phase, rate, steps).await?;
        if step.met() { Ok(step) } else { run(Phase::Recheck, rate, steps).await }
    };

    let (mut best, mut failed): (Option<S>, Option<f64>) = (None, None);
    let mut rate = plan.start;
    loop {
        let step = judge(Phase::Grow, rate, &mut steps).await?;
        if !step.met() {
            failed = Some(rate);
            break;
        }
        best = Some(step);
        if rate >= plan.max_rate {
            break;
        }
        rate = (rate * plan.factor).min(plan.max_rate);
    }

    if let Some(mut high) = failed {
        for _ in 0..plan.refine {
            let low = best.as_ref().map_or(plan.start / 2.0, Step::rate);
            let step = judge(Phase::Bisect, (low + high) / 2.0, &mut steps).await?;
            if step.met() {
                best = Some(step);
            } else {
                high = step.rate();
            }
        }
    }

    let Some(first) = best.take() else { return Ok(Found { steps, best: None }) };
    let mut rate = first.rate();
    let mut last_tried = rate;
    let mut held = vec![first];
    for _ in 0..CONFIRM_RATES {
        last_tried = rate;
        while (held.len() as u32) < plan.confirm {
            let again = run(Phase::Confirm, rate, &mut steps).await?;
            if !again.met() {
                break;
            }
            held.push(again);
        }
        if held.len() as u32 >= plan.confirm {
            let best = held.into_iter().min_by(|a, b| a.accepted().total_cmp(&b.accepted()));
            return Ok(Found { steps, best });
        }
        rate *= CONFIRM_BACK_OFF;
        held = Vec::new();
    }
    // Nothing near the edge held: the highest step that met the SLO below the last rate tried.
    let best = steps
        .iter()
        .filter(|s| s.met() && s.rate() < last_tried)
        .max_by(|a, b| a.rate().total_cmp(&b.rate()))
        .cloned();
    Ok(Found { steps, best })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct Measured {
        phase: Phase,
        rate: f64,
        met: bool,
        accepted: f64,
    }

    impl Step for Measured {
        fn rate(&self) -> f64 {
            self.rate
        }
        fn met(&self) -> bool {
            self.met
        }
        fn accepted(&self) -> f64 {
            self.accepted
        }
    }

    const PLAN: Plan = Plan { start: 200.0, factor: 1.35, refine: 4, confirm: 2, max_rate: 20_000.0 };

    /// A system that meets the SLO at or below `capacity`, every time.
    async fn steady(plan: Plan, capacity: f64) -> Found<Measured> {
        find(plan, async |phase, rate| {
            Ok(Measured { phase, rate, met: rate <= capacity, accepted: rate * 0.9 })
        })
        .await
        .expect("the search runs")
    }

    #[tokio::test]
    async fn a_steady_system_is_found_within_two_percent_below_its_capacity() {
        let found = steady(PLAN, 2_500.0).await;
        let best = found.best.expect("a rate met the SLO");
        assert!(best.rate <= 2_500.0, "the best rate {} is above the capacity", best.rate);
        assert!(best.rate > 2_500.0 * 0.97, "the best rate {} is not within 3% of 2,500", best.rate);
        let phases: Vec<Phase> = found.steps.iter().map(|s| s.phase).collect();
        assert_eq!(phases.iter().filter(|p| **p == Phase::Bisect).count(), 4);
        assert_eq!(phases.last(), Some(&Phase::Confirm), "the best was confirmed by a step of its own");
        // Every grow or bisect miss was measured again at the same rate before it counted.
        for (i, s) in found.steps.iter().enumerate() {
            if !s.met && matches!(s.phase, Phase::Grow | Phase::Bisect) {
                let next = &found.steps[i + 1];
                assert_eq!(
                    (next.phase, next.rate),
                    (Phase::Recheck, s.rate),
                    "a miss at {} was not rechecked",
                    s.rate
                );
            }
        }
    }

    #[tokio::test]
    async fn one_unlucky_step_does_not_end_the_growth() {
        // The system holds 2,500 ops/s, but its first step at 364.5 ops/s hits a stall.
        let mut stalled = false;
        let found = find(PLAN, async |phase, rate| {
            let stall = (rate - 364.5).abs() < 1.0 && !std::mem::replace(&mut stalled, true);
            Ok(Measured { phase, rate, met: rate <= 2_500.0 && !stall, accepted: rate })
        })
        .await
        .expect("the search runs");
        assert!(stalled, "the script never stalled");
        let best = found.best.expect("a rate met the SLO");
        assert!(best.rate > 2_500.0 * 0.97, "one stall ended the search at {}", best.rate);
        let recheck = found.steps.iter().find(|s| s.phase == Phase::Recheck).expect("a recheck");
        assert!((recheck.rate - 364.5).abs() < 1.0 && recheck.met, "{recheck:?}");
    }

    #[tokio::test]
    async fn a_rate_met_once_by_luck_gives_way_to_one_seven_percent_lower() {
        // The system holds 2,000 ops/s; at 2,000-2,300 a first step meets the SLO, a second misses.
        let mut tried_between = 0;
        let found = find(PLAN, async |phase, rate| {
            let met = if rate <= 2_000.0 {
                true
            } else if rate <= 2_300.0 {
                tried_between += 1;
                tried_between == 1
            } else {
                false
            };
            Ok(Measured { phase, rate, met, accepted: rate })
        })
        .await
        .expect("the search runs");
        let best = found.best.expect("a rate met the SLO");
        assert!(best.rate <= 2_000.0, "a lucky rate {} was kept", best.rate);
        let confirms: Vec<&Measured> = found.steps.iter().filter(|s| s.phase == Phase::Confirm).collect();
        assert!(!confirms[0].met, "the lucky rate's confirmation missed");
        assert!((confirms[1].rate - confirms[0].rate * 0.93).abs() < 1e-9, "the next rate is 7% lower");
        assert!(confirms.iter().filter(|s| s.rate == best.rate).count() >= 2, "the best met the SLO twice");
    }

    #[tokio::test]
    async fn the_weakest_confirmation_speaks_for_the_rate() {
        let mut n = 0.0;
        let found = find(PLAN, async |phase, rate| {
            n += 1.0;
            Ok(Measured { phase, rate, met: rate <= 1_000.0, accepted: 1_000.0 - n })
        })
        .await
        .expect("the search runs");
        let best = found.best.expect("a rate met the SLO");
        let at_best: Vec<&Measured> = found.steps.iter().filter(|s| s.rate == best.rate && s.met).collect();
        assert_eq!(at_best.len(), 2);
        let weakest = at_best.iter().map(|s| s.accepted).fold(f64::INFINITY, f64::min);
        assert_eq!(best.accepted, weakest);
    }

    #[tokio::test]
    async fn when_nothing_near_the_edge_holds_the_best_is_the_highest_met_step_below_it() {
        // Every rate above 1,000 meets the SLO once and never again.
        let mut seen = std::collections::HashSet::new();
        let found = find(PLAN, async |phase, rate| {
            let met = rate <= 1_000.0 || seen.insert(rate.to_bits());
            Ok(Measured { phase, rate, met, accepted: rate })
        })
        .await
        .expect("the search runs");
        let confirms = found.steps.iter().filter(|s| s.phase == Phase::Confirm).count();
        assert!(confirms <= 6, "at most three rates were tried twice ({confirms} confirmations)");
        let best = found.best.expect("a step met the SLO");
        let last = found.steps.iter().rev().find(|s| s.phase == Phase::Confirm).expect("a confirmation");
        assert!(best.rate < last.rate, "the best {} is below the last rate tried {}", best.rate, last.rate);
        let higher_met_below = found.steps.iter().any(|s| s.met && s.rate < last.rate && s.rate > best.rate);
        assert!(!higher_met_below, "a higher step below the last rate tried met the SLO");
    }

    #[tokio::test]
    async fn a_system_that_never_meets_the_slo_has_no_best() {
        let found = steady(PLAN, 50.0).await;
        assert!(found.best.is_none());
        assert!(found.steps.iter().all(|s| !s.met));
        assert!(found.steps.iter().all(|s| s.phase != Phase::Confirm), "nothing to confirm");
    }

    #[tokio::test]
    async fn the_search_stops_growing_at_the_maximum_rate() {
        let plan = Plan { max_rate: 1_000.0, ..PLAN };
        let found = steady(plan, f64::INFINITY).await;
        assert!(found.steps.iter().all(|s| s.rate <= 1_000.0));
        assert_eq!(found.best.map(|b| b.rate), Some(1_000.0));
        assert!(found.steps.iter().all(|s| s.phase != Phase::Bisect), "nothing missed, nothing to bisect");
    }

    #[test]
    fn a_factor_that_does_not_grow_is_refused() {
        assert!(Plan::new(200.0, 1.0, 4, 2, 20_000.0).is_err());
        assert!(Plan::new(200.0, 0.9, 4, 2, 20_000.0).is_err());
        assert!(Plan::new(200.0, 1.35, 4, 2, 20_000.0).is_ok());
    }
}
