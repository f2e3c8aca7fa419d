//! Latency histograms per endpoint category, answers by status, and the summary of a run.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// What the load generator measures separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    OrderCreate,
    PaymentCreate,
    PaymentConfirm,
    BillGet,
    DeviceToken,
}

impl Category {
    pub const ALL: [Category; 5] = [
        Category::OrderCreate,
        Category::PaymentCreate,
        Category::PaymentConfirm,
        Category::BillGet,
        Category::DeviceToken,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Category::OrderCreate => "order_create",
            Category::PaymentCreate => "payment_create",
            Category::PaymentConfirm => "payment_confirm",
            Category::BillGet => "bill_get",
            Category::DeviceToken => "device_token",
        }
    }

    /// State-changing commands (the write path) as opposed to reads and token exchanges.
    pub fn is_command(self) -> bool {
        matches!(self, Category::OrderCreate | Category::PaymentCreate | Category::PaymentConfirm)
    }
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 60 s, 3 significant figures.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static histogram bounds")
}

struct Inner {
    latency: BTreeMap<Category, Histogram<u64>>,
    /// (category, HTTP status or 0 for a transport error) -> count
    statuses: BTreeMap<(Category, u16), u64>,
    lag: Histogram<u64>,
    lag_timeouts: u64,
    dropped: u64,
}

/// Shared, lock-protected recorder; recording is a few hundred nanoseconds.
pub struct Recorder {
    inner: Mutex<Inner>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                latency: Category::ALL.iter().map(|c| (*c, histogram())).collect(),
                statuses: BTreeMap::new(),
                lag: histogram(),
                lag_timeouts: 0,
                dropped: 0,
            }),
        }
    }
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).clamp(1, 60_000_000)
}

impl Recorder {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn record(&self, category: Category, status: u16, latency: Duration) {
        let mut inner = self.lock();
        if let Some(h) = inner.latency.get_mut(&category) {
            h.saturating_record(micros(latency));
        }
        *inner.statuses.entry((category, status)).or_default() += 1;
    }

    pub fn lag(&self, lag: Option<Duration>) {
        let mut inner = self.lock();
        match lag {
            Some(d) => inner.lag.saturating_record(micros(d)),
            None => inner.lag_timeouts += 1,
        }
    }

    /// An arrival the generator could not start (too many requests in flight).
    pub fn dropped(&self) {
        self.lock().dropped += 1;
    }

    /// (answers, errors) so far: for progress lines.
    pub fn counts(&self) -> (u64, u64) {
        let inner = self.lock();
        let all: u64 = inner.statuses.values().sum();
        let errors: u64 = inner.statuses.iter().filter(|((_, s), _)| !is_success(*s)).map(|(_, n)| n).sum();
        (all, errors + inner.dropped)
    }

    /// p95 over every category so far, in milliseconds: for progress lines.
    pub fn overall_p95_ms(&self) -> f64 {
        let inner = self.lock();
        let mut all = histogram();
        for h in inner.latency.values() {
            let _ = all.add(h);
        }
        all.value_at_quantile(0.95) as f64 / 1000.0
    }

    pub fn summary(&self, target_rate: f64, elapsed: Duration) -> RunSummary {
        let inner = self.lock();
        let secs = elapsed.as_secs_f64().max(1e-9);
        let mut categories = Vec::new();
        let mut all = histogram();
        let mut commands = histogram();
        for (category, h) in &inner.latency {
            let _ = all.add(h);
            if category.is_command() {
                let _ = commands.add(h);
            }
            if h.is_empty() {
                continue;
            }
            let ok: u64 = inner
                .statuses
                .iter()
                .filter(|((c, s), _)| c == category && is_success(*s))
                .map(|(_, n)| n)
                .sum();
            categories.push(CategorySummary {
                category: category.name().to_owned(),
                requests: h.len(),
                ok,
                rate: h.len() as f64 / secs,
                latency: Percentiles::of(h),
            });
        }
        let requests: u64 = inner.statuses.values().sum();
        let errors: u64 = inner.statuses.iter().filter(|((_, s), _)| !is_success(*s)).map(|(_, n)| n).sum();
        let accepted_commands: u64 = inner
            .statuses
            .iter()
            .filter(|((c, s), _)| c.is_command() && is_success(*s))
            .map(|(_, n)| n)
            .sum();
        let mut errors_by_status: BTreeMap<String, u64> = BTreeMap::new();
        for ((category, status), n) in &inner.statuses {
            if !is_success(*status) {
                let label = if *status == 0 { "transport".to_owned() } else { status.to_string() };
                *errors_by_status.entry(format!("{} {}", category.name(), label)).or_default() += n;
            }
        }
        if inner.dropped > 0 {
            errors_by_status.insert("dropped (generator saturated)".into(), inner.dropped);
        }
        let attempted = requests + inner.dropped;
        RunSummary {
            target_rate,
            seconds: secs,
            requests,
            achieved_rate: requests as f64 / secs,
            accepted_commands_per_sec: accepted_commands as f64 / secs,
            error_rate: if attempted == 0 { 0.0 } else { (errors + inner.dropped) as f64 / attempted as f64 },
            errors_by_status,
            overall: Percentiles::of(&all),
            commands: Percentiles::of(&commands),
            categories,
            projection_lag: Percentiles::of(&inner.lag),
            projection_lag_samples: inner.lag.len(),
            projection_lag_timeouts: inner.lag_timeouts,
            cpu: None,
            bill_cache: None,
            wal: None,
        }
    }
}

pub fn is_success(status: u16) -> bool {
    (200..300).contains(&status)
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |v: u64| (v as f64 / 1000.0 * 100.0).round() / 100.0;
        Self {
            p50: ms(h.value_at_quantile(0.50)),
            p95: ms(h.value_at_quantile(0.95)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CategorySummary {
    pub category: String,
    pub requests: u64,
    pub ok: u64,
    pub rate: f64,
    pub latency: Percentiles,
}

/// One measured run (one rate step, or one whole profile).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSummary {
    /// Operations per second asked for (the peak, for a burst).
    pub target_rate: f64,
    pub seconds: f64,
    pub requests: u64,
    /// HTTP requests answered per second (all categories).
    pub achieved_rate: f64,
    /// 2xx answers to state-changing commands per second.
    pub accepted_commands_per_sec: f64,
    /// Non-2xx answers, transport errors and dropped arrivals over all attempts.
    pub error_rate: f64,
    pub errors_by_status: BTreeMap<String, u64>,
    pub overall: Percentiles,
    /// Latency of the state-changing commands together.
    pub commands: Percentiles,
    pub categories: Vec<CategorySummary>,
    /// Command answered → bill visible in the query API.
    pub projection_lag: Percentiles,
    pub projection_lag_samples: u64,
    pub projection_lag_timeouts: u64,
    /// CPU used during the run, by program (absent in results from before it was measured).
    #[serde(default)]
    pub cpu: Option<crate::cpu::CpuProfile>,
    /// How the query API's bill cache answered the run's bill reads (absent
    /// when its `/metrics` did not say, and in results from before the cache).
    #[serde(default)]
    pub bill_cache: Option<BillCacheCounts>,
    /// The WAL PostgreSQL wrote during the run (absent when its counters
    /// could not be read, and in results from before it was measured).
    #[serde(default)]
    pub wal: Option<crate::wal::WalUse>,
}

/// The query API's `bill_cache_requests_total{outcome}` counters, or their
/// growth over a run.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct BillCacheCounts {
    pub hit: f64,
    pub miss: f64,
    pub bypass: f64,
}

impl BillCacheCounts {
    /// From a Prometheus text exposition; `None` when it has no such counter.
    pub fn parse(metrics: &str) -> Option<Self> {
        let mut counts = Self::default();
        let mut seen = false;
        for line in metrics.lines() {
            let Some(rest) = line.strip_prefix("bill_cache_requests_total{outcome=\"") else { continue };
            let Some((outcome, value)) = rest.split_once("\"} ") else { continue };
            let Ok(value) = value.trim().parse::<f64>() else { continue };
            match outcome {
                "hit" => counts.hit = value,
                "miss" => counts.miss = value,
                "bypass" => counts.bypass = value,
                _ => continue,
            }
            seen = true;
        }
        seen.then_some(counts)
    }

    pub fn since(&self, before: &Self) -> Self {
        Self {
            hit: self.hit - before.hit,
            miss: self.miss - before.miss,
            bypass: self.bypass - before.bypass,
        }
    }

    /// The share of lookups answered from memory.
    pub fn hit_ratio(&self) -> f64 {
        let all = self.hit + self.miss + self.bypass;
        if all > 0.0 { self.hit / all } else { 0.0 }
    }
}

impl crate::search::Step for RunSummary {
    fn rate(&self) -> f64 {
        self.target_rate
    }
    fn met(&self) -> bool {
        self.meets_slo()
    }
    fn accepted(&self) -> f64 {
        self.accepted_commands_per_sec
    }
}

impl RunSummary {
    /// Commands accepted over the whole run.
    pub fn accepted_commands(&self) -> f64 {
        self.accepted_commands_per_sec * self.seconds
    }

    /// The platform's SLO: p95 under 500 ms and under 0.5% errors.
    pub fn meets_slo(&self) -> bool {
        self.overall.p95 < 500.0 && self.error_rate < 0.005
    }

    /// "met" or "missed", as reports print it.
    pub fn slo(&self) -> &'static str {
        if self.meets_slo() { "met" } else { "missed" }
    }

    /// A human-readable table.
    pub fn print(&self) {
        println!(
            "target {:.0} ops/s over {:.1}s: {} requests, {:.0} req/s, {:.0} accepted commands/s, errors {:.3}% -> SLO {}",
            self.target_rate,
            self.seconds,
            self.requests,
            self.achieved_rate,
            self.accepted_commands_per_sec,
            self.error_rate * 100.0,
            if self.meets_slo() { "met" } else { "MISSED" }
        );
        println!(
            "  {:<16} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9}",
            "category", "requests", "rate/s", "p50 ms", "p95 ms", "p99 ms", "max ms"
        );
        for c in &self.categories {
            println!(
                "  {:<16} {:>8} {:>8.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                c.category, c.requests, c.rate, c.latency.p50, c.latency.p95, c.latency.p99, c.latency.max
            );
        }
        println!(
            "  projection lag (command answered -> bill visible): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} samples, {} not visible within 5 s",
            self.projection_lag.p50,
            self.projection_lag.p99,
            self.projection_lag.max,
            self.projection_lag_samples,
            self.projection_lag_timeouts
        );
        for (what, n) in &self.errors_by_status {
            println!("  error: {what}: {n}");
        }
        if let Some(c) = &self.bill_cache {
            println!(
                "  bill cache: {:.1}% of lookups from memory ({:.0} hits, {:.0} misses, {:.0} bypassed)",
                c.hit_ratio() * 100.0,
                c.hit,
                c.miss,
                c.bypass
            );
        }
        if let Some(w) = &self.wal {
            println!("  wal: {}", w.line(self.accepted_commands(), "accepted command"));
        }
        if let Some(cpu) = &self.cpu {
            let per = cpu.ms_per(self.accepted_commands_per_sec);
            let parts: Vec<String> = cpu
                .cores_by_program
                .iter()
                .map(|(p, cores)| format!("{p} {cores:.2} ({:.2} ms/cmd)", per[p]))
                .collect();
            println!(
                "  cpu (cores; ms per accepted command): {}; idle {:.0}%, steal {:.0}%",
                parts.join(", "),
                cpu.idle * 100.0,
                cpu.steal * 100.0
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bill_cache_counters_are_read_from_the_metrics_text() {
        let text = "# TYPE bill_cache_requests_total counter\n\
                    bill_cache_requests_total{outcome=\"hit\"} 90\n\
                    bill_cache_requests_total{outcome=\"miss\"} 8\n\
                    bill_cache_requests_total{outcome=\"bypass\"} 2\n\
                    bill_cache_entries 3\n";
        let counts = BillCacheCounts::parse(text).expect("counters");
        assert_eq!(counts, BillCacheCounts { hit: 90.0, miss: 8.0, bypass: 2.0 });
        let grown = counts.since(&BillCacheCounts { hit: 40.0, miss: 8.0, bypass: 2.0 });
        assert!((grown.hit_ratio() - 1.0).abs() < 1e-9, "{grown:?}");
        assert!((counts.hit_ratio() - 0.9).abs() < 1e-9);
        assert_eq!(BillCacheCounts::parse("http_requests_total 5\n"), None);
    }

    #[test]
    fn errors_and_accepted_commands_are_counted_per_status() {
        let r = Recorder::default();
        r.record(Category::OrderCreate, 201, Duration::from_millis(10));
        r.record(Category::OrderCreate, 503, Duration::from_millis(10));
        r.record(Category::BillGet, 200, Duration::from_millis(1));
        r.dropped();
        let s = r.summary(4.0, Duration::from_secs(1));
        assert_eq!(s.requests, 3);
        assert_eq!(s.accepted_commands_per_sec, 1.0);
        assert!((s.error_rate - 0.5).abs() < 1e-9, "{}", s.error_rate);
        assert_eq!(s.errors_by_status.get("order_create 503"), Some(&1));
        assert!(!s.meets_slo());
    }
}
