//! `BENCHMARKS.md` from one benchmark run's results directory.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::Context;

use crate::MaxSearch;
use crate::broker::BrokerCeiling;
use crate::pgbench::PgbenchCeiling;
use crate::stats::RunSummary;

fn read<T: for<'de> serde::Deserialize<'de>>(dir: &Path, name: &str) -> Option<T> {
    let bytes = std::fs::read(dir.join(name)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn text(dir: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(name)).ok()
}

/// First line a shell command prints, or "not found".
fn version(cmd: &str) -> String {
    Command::new("sh")
        .args(["-c", cmd])
        .output()
        .ok()
        .and_then(|o| {
            let s = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
            s.lines().next().map(|l| l.trim().to_owned())
        })
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| "not found".into())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    format!("{cores} cores ({cpu}), {mem_gib:.0} GiB memory")
}

fn ratio(a: f64, b: f64) -> String {
    match a / b {
        r if b <= 0.0 || !r.is_finite() => "n/a".into(),
        r if r < 0.1 => format!("{r:.4}x"),
        r => format!("{r:.2}x"),
    }
}

/// When the run began (`bench.sh` records it), not when the report is
/// written; now, for results from before it did.
fn run_started(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("started"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| chrono::Utc::now().format("%Y-%m-%d %H:%M").to_string())
}

/// How each step of a search began: settled, and after which `--between-steps` command.
fn steps_start(out: &mut String, search: &MaxSearch) {
    let _ = write!(out, "Each step started once the outbox was published and the projections had caught up");
    let _ = match &search.between_steps {
        Some(command) => writeln!(out, ", then after `{command}`.\n"),
        None => writeln!(out, ".\n"),
    };
}

/// One row per step of a rate search; `commands` adds the accepted-commands column.
fn steps_table(out: &mut String, steps: &[RunSummary], commands: bool) {
    let (head, rule) = if commands {
        ("| offered ops/s | answered req/s | accepted commands/s |", "|---:|---:|---:|")
    } else {
        ("| offered reads/s | answered/s | from memory |", "|---:|---:|---:|")
    };
    // Steal: CPU time the hypervisor gave to other guests during the step. A
    // step that lost a third of the machine says little about the system.
    let _ = writeln!(out, "{head} p95 ms | p99 ms | errors | SLO | steal |\n{rule}---:|---:|---:|---|---:|");
    for s in steps {
        let accepted = if commands {
            format!(" {:.0} |", s.accepted_commands_per_sec)
        } else {
            let share = s.bill_cache.map_or("–".to_owned(), |c| format!("{:.1}%", c.hit_ratio() * 100.0));
            format!(" {share} |")
        };
        let steal = s.cpu.as_ref().map_or("–".to_owned(), |c| format!("{:.0}%", c.steal * 100.0));
        let _ = writeln!(
            out,
            "| {:.0} | {:.0} |{accepted} {:.1} | {:.1} | {:.3}% | {} | {steal} |",
            s.target_rate,
            s.achieved_rate,
            s.overall.p95,
            s.overall.p99,
            s.error_rate * 100.0,
            s.slo()
        );
    }
}

fn run_table(out: &mut String, s: &RunSummary) {
    let _ = writeln!(
        out,
        "Offered {:.0} ops/s for {:.0} s: {} requests ({:.0}/s), **{:.0} accepted commands/s**, errors {:.3}%, SLO {}.\n",
        s.target_rate,
        s.seconds,
        s.requests,
        s.achieved_rate,
        s.accepted_commands_per_sec,
        s.error_rate * 100.0,
        s.slo()
    );
    let _ = writeln!(out, "| category | requests | rate/s | p50 ms | p95 ms | p99 ms | max ms |");
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
    for c in &s.categories {
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} |",
            c.category, c.requests, c.rate, c.latency.p50, c.latency.p95, c.latency.p99, c.latency.max
        );
    }
    let _ = writeln!(
        out,
        "| *all commands* | | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
        s.accepted_commands_per_sec, s.commands.p50, s.commands.p95, s.commands.p99, s.commands.max
    );
    let _ = writeln!(
        out,
        "Projection lag (command answered → bill visible in the query API): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} samples, {} not visible within 5 s).\n",
        s.projection_lag.p50,
        s.projection_lag.p99,
        s.projection_lag.max,
        s.projection_lag_samples,
        s.projection_lag_timeouts
    );
    if !s.errors_by_status.is_empty() {
        let list: Vec<String> = s.errors_by_status.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let _ = writeln!(out, "Errors: {}.\n", list.join(", "));
    }
    if let Some(c) = &s.bill_cache {
        let _ = writeln!(out, "Bill lookups answered from the query API's memory: {}.\n", cache_share(c));
    }
    if let Some(w) = &s.wal {
        let _ = writeln!(
            out,
            "WAL written by PostgreSQL during the run: {}.\n",
            w.line(s.accepted_commands(), "accepted command")
        );
    }
    if let Some(cpu) = &s.cpu {
        cpu_table(out, cpu, s.accepted_commands_per_sec, "accepted command");
    }
}

/// `97.5% (1,000 hits, 20 misses, 5 bypassed)`.
fn cache_share(c: &crate::stats::BillCacheCounts) -> String {
    format!(
        "{:.1}% ({} hits, {} misses, {} bypassed)",
        c.hit_ratio() * 100.0,
        thousands(c.hit as u64),
        thousands(c.miss as u64),
        thousands(c.bypass as u64)
    )
}

/// Where the CPU went during the run: the profile by program, per `unit` of
/// work done `per_sec` times a second.
fn cpu_table(out: &mut String, cpu: &crate::cpu::CpuProfile, per_sec: f64, unit: &str) {
    let per = cpu.ms_per(per_sec);
    let _ = writeln!(
        out,
        "CPU during the run ({} cores; idle {:.0}%, stolen by the hypervisor {:.0}%):\n",
        cpu.cores,
        cpu.idle * 100.0,
        cpu.steal * 100.0
    );
    let _ = writeln!(out, "| program | cores busy | CPU ms per {unit} |");
    let _ = writeln!(out, "|---|---:|---:|");
    for (program, cores) in cpu.busiest() {
        let _ = writeln!(out, "| {program} | {cores:.2} | {:.2} |", per[program]);
    }
    let total = cpu.total_cores();
    let per_total = cpu.total_ms_per(per_sec);
    let _ = writeln!(out, "| *all* | {total:.2} | {per_total:.2} |\n");
}

/// 10000000 -> "10,000,000".
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The rebuild goal, events per second.
const REBUILD_GOAL: f64 = 50_000.0;

/// Flat cost: after the history, the accepted rate at the SLO keeps at least
/// this share of the empty database's, and p99 at the same fixed rate grows
/// by at most this factor.
const FLAT_THROUGHPUT: f64 = 0.9;
const FLAT_P99: f64 = 1.1;

/// A cost per command (CPU, WAL, full-page images) that grew by more than a
/// tenth grew with the data; less is within what runs of the same state differ by.
const GREW: f64 = 1.1;

fn flat_throughput_met(best: &RunSummary, full_best: &RunSummary) -> bool {
    full_best.accepted_commands_per_sec / best.accepted_commands_per_sec.max(1e-9) >= FLAT_THROUGHPUT
}

fn flat_p99_met(empty: &RunSummary, full: &RunSummary) -> bool {
    full.commands.p99 / empty.commands.p99.max(1e-9) <= FLAT_P99 && full.meets_slo()
}

/// The flat-cost figures: the searches' best steps and the same fixed rate,
/// on the empty database and after `events` of history.
#[derive(Clone, Copy)]
struct Flat<'a> {
    events: u64,
    best: &'a RunSummary,
    full_best: &'a RunSummary,
    /// Every step of the search after the history.
    full_steps: &'a [RunSummary],
    /// The fixed-rate runs, empty and after the history.
    fixed: Option<(&'a RunSummary, &'a RunSummary)>,
}

impl Flat<'_> {
    fn throughput_met(&self) -> bool {
        flat_throughput_met(self.best, self.full_best)
    }

    fn p99_met(&self) -> Option<bool> {
        self.fixed.map(|(empty, full)| flat_p99_met(empty, full))
    }

    /// Rates the search after the history both met and missed, in the order first tried.
    fn undecided_rates(&self) -> Vec<f64> {
        let mut rates: Vec<f64> = Vec::new();
        for s in self.full_steps {
            let same = |o: &RunSummary| (o.target_rate - s.target_rate).abs() < 0.5;
            let both = self.full_steps.iter().filter(|o| same(o)).any(RunSummary::meets_slo)
                && self.full_steps.iter().filter(|o| same(o)).any(|o| !o.meets_slo());
            if both && !rates.iter().any(|r| (r - s.target_rate).abs() < 0.5) {
                rates.push(s.target_rate);
            }
        }
        rates
    }
}

/// The rate of the last `... N ev/s ...` line `posctl rebuild` printed.
fn rebuild_rate(text: &str) -> Option<f64> {
    text.lines()
        .rev()
        .find_map(|l| l.split(", ").find_map(|p| p.strip_suffix(" ev/s")).and_then(|r| r.trim().parse().ok()))
}

/// The figures that say what limited each goal this run missed.
struct Missed<'a> {
    ceiling: f64,
    best: Option<&'a RunSummary>,
    half: Option<&'a RunSummary>,
    rebuild_rate: Option<f64>,
    rebuild_cpu: Option<&'a crate::cpu::CpuProfile>,
    broker_publish: Option<f64>,
    flat: Option<Flat<'a>>,
}

/// Below this share of idle CPU the cores, not something waited on, set the pace.
const BUSY_IDLE: f64 = 0.10;

impl Missed<'_> {
    /// `## What limits the goals this run missed`, from this run's own CPU
    /// profiles; nothing when every goal with a result was met.
    fn write(&self, out: &mut String) {
        let mut items = Vec::new();
        if let Some(b) = self.best.filter(|b| b.accepted_commands_per_sec < self.ceiling) {
            items.push(self.ceiling_item(b));
        }
        if let Some(h) = self.half.filter(|h| h.commands.p99 >= 50.0 || h.error_rate >= 0.005) {
            items.push(self.half_item(h));
        }
        if let Some(rate) = self.rebuild_rate.filter(|r| *r < REBUILD_GOAL) {
            items.push(self.rebuild_item(rate));
        }
        if let Some(flat) = self.flat.filter(|f| !f.throughput_met() || f.p99_met() == Some(false)) {
            items.push(flat_item(&flat));
        }
        if items.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "## What limits the goals this run missed\n\nFrom this run's CPU profiles (every program's CPU \
             time from `/proc` over each measurement; the tables above and below). `bench/NOTES.md`, below, \
             breaks them down further.\n"
        );
        for item in items {
            let _ = writeln!(out, "- {item}");
        }
        let _ = writeln!(out);
    }

    fn ceiling_item(&self, b: &RunSummary) -> String {
        let mut item = format!(
            "**{} of the pgbench ceiling.** At the best step ({:.0} ops/s offered, {:.0} commands/s accepted)",
            ratio(b.accepted_commands_per_sec, self.ceiling),
            b.target_rate,
            b.accepted_commands_per_sec
        );
        let Some(cpu) = &b.cpu else {
            item.push_str(" no CPU profile was taken (results from before it was measured).");
            return item;
        };
        let per = cpu.total_ms_per(b.accepted_commands_per_sec);
        let budget = cpu.ms_available_per(self.ceiling);
        let _ = write!(
            item,
            " the machine was {:.0}% idle and an accepted command cost {per:.2} ms of CPU across all programs ({}). \
             Accepting the ceiling's {:.0} commands/s on {} cores leaves {budget:.2} ms per command for all of \
             them together, {}.",
            cpu.idle * 100.0,
            largest(cpu, b.accepted_commands_per_sec),
            self.ceiling,
            cpu.cores,
            if per > budget {
                format!("{:.1}x less than they used", per / budget.max(1e-9))
            } else {
                "no less than they used".into()
            }
        );
        item.push_str(if cpu.idle < BUSY_IDLE {
            " The cores were the limit, not the database's per-transaction ceiling."
        } else {
            " With that much idle, the cores were not the only limit."
        });
        item
    }

    fn half_item(&self, h: &RunSummary) -> String {
        let mut item = format!(
            "**p99 {:.0} ms at half the pgbench ceiling** ({:.0} ops/s offered; p50 {:.0} ms, p95 {:.0} ms).",
            h.commands.p99, h.target_rate, h.commands.p50, h.commands.p95
        );
        if let Some(b) = self.best {
            let _ = write!(
                item,
                " That is {} of the best rate that met the SLO.",
                ratio(h.target_rate, b.target_rate)
            );
        }
        if let Some(cpu) = &h.cpu {
            let per = cpu.total_ms_per(h.accepted_commands_per_sec);
            let _ = write!(
                item,
                " The machine was {:.0}% idle; a command cost {per:.2} ms of CPU ({}).",
                cpu.idle * 100.0,
                largest(cpu, h.accepted_commands_per_sec)
            );
            if cpu.idle < BUSY_IDLE {
                item.push_str(" Commands queued for the cores.");
            }
        }
        item
    }

    fn rebuild_item(&self, rate: f64) -> String {
        let mut item = format!("**Rebuild {rate:.0} events/s.**");
        if let Some(p) = self.broker_publish {
            let _ = write!(item, " That is {} of this run's JetStream publish ceiling.", ratio(rate, p));
        }
        match self.rebuild_cpu {
            Some(cpu) => {
                let per = cpu.total_ms_per(rate / 1000.0);
                let budget = cpu.ms_available_per(REBUILD_GOAL / 1000.0);
                let _ = write!(
                    item,
                    " While it ran the machine was {:.0}% idle, and a thousand events cost {per:.1} ms of CPU across \
                     all programs ({}); {:.0} events/s on {} cores leaves {budget:.1} ms.",
                    cpu.idle * 100.0,
                    largest(cpu, rate / 1000.0),
                    REBUILD_GOAL,
                    cpu.cores
                );
                if cpu.idle < BUSY_IDLE {
                    item.push_str(" The cores were the limit.");
                }
            }
            None => item.push_str(" No CPU profile of it in these results (`loadgen profile` came later)."),
        }
        item
    }
}

/// What the flat-cost figures say when one of them missed: whether a command
/// cost more CPU with the data (the same fixed rate before and after), and
/// which rates the search after the history both met and missed.
fn flat_item(flat: &Flat) -> String {
    let events = thousands(flat.events);
    let (best, full_best) = (flat.best.accepted_commands_per_sec, flat.full_best.accepted_commands_per_sec);
    let search = ratio(full_best, best);
    // The item leads with the goal that missed: the search's, or else the p99's.
    let p99_missed = flat.fixed.filter(|_| flat.p99_met() == Some(false)).map(|(empty, full)| {
        let growth = ratio(full.commands.p99, empty.commands.p99);
        let p99 = format!("p99 at {:.0} ops/s {growth} of the empty database's", full.target_rate);
        (p99, format!("{:.1} against {:.1} ms", full.commands.p99, empty.commands.p99))
    });
    let mut item = match p99_missed {
        Some((p99, ms)) if flat.throughput_met() => format!(
            "**After {events} events: {p99}** ({ms}; the rate at the SLO met its goal, {search}: {full_best:.0} \
             against {best:.0} accepted commands/s)."
        ),
        Some((p99, ms)) => format!(
            "**After {events} events: {search} of the empty database's rate at the SLO** ({full_best:.0} against \
             {best:.0} accepted commands/s; {p99}, {ms})."
        ),
        None => format!(
            "**After {events} events: {search} of the empty database's rate at the SLO** ({full_best:.0} against \
             {best:.0} accepted commands/s)."
        ),
    };
    // CPU per accepted command after the history ÷ before, when both runs were profiled.
    let mut cpu_growth = None;
    if let Some((empty, full)) = flat.fixed
        && let (Some(before), Some(after)) = (&empty.cpu, &full.cpu)
    {
        let (b, a) = (empty.accepted_commands_per_sec, full.accepted_commands_per_sec);
        let (per_before, per_after) = (before.total_ms_per(b), after.total_ms_per(a));
        let (by_before, by_after) = (before.ms_per(b), after.ms_per(a));
        let grew = by_after
            .iter()
            .map(|(p, ms)| (p, *ms, by_before.get(p).copied().unwrap_or(0.0)))
            .max_by(|x, y| (x.1 - x.2).total_cmp(&(y.1 - y.2)));
        let _ = write!(
            item,
            " At the same fixed rate ({:.0} ops/s) an accepted command cost {per_after:.2} ms of CPU across all \
             programs after the history and {per_before:.2} ms before ({}",
            full.target_rate,
            ratio(per_after, per_before)
        );
        if let Some((program, after, before)) = grew {
            let _ = write!(item, "; the largest growth: {program} {after:.2} against {before:.2} ms");
        }
        let growth = per_after / per_before.max(1e-9);
        cpu_growth = Some(growth);
        item.push_str(if growth > GREW {
            "): commands cost more with the data."
        } else {
            "): the data did not make commands dearer by a tenth."
        });
    }
    if let Some((empty, full)) = flat.fixed
        && let (Some(before), Some(after)) = (&empty.wal, &full.wal)
    {
        let (b, a) = (empty.accepted_commands(), full.accepted_commands());
        let _ = write!(
            item,
            " PostgreSQL wrote {:.1} kB of WAL per command after the history against {:.1} kB before ({}), \
             {:.2} full-page images per command against {:.2}",
            after.kb_per(a),
            before.kb_per(b),
            ratio(after.kb_per(a), before.kb_per(b)),
            after.images_per(a),
            before.images_per(b)
        );
        let more_wal = after.kb_per(a) > before.kb_per(b) * GREW;
        item.push_str(if more_wal && after.images_per(a) > before.images_per(b) * GREW {
            ": after a checkpoint the first change to a page writes the whole page, and after the history \
             the commands' changes fell on more distinct pages."
        } else {
            "."
        });
        if !more_wal && !cpu_growth.is_some_and(|g| g > GREW) {
            item.push_str(
                " Neither the CPU nor the WAL of a command grew by a tenth: what made the difference is not in \
                 these figures.",
            );
        }
    }
    let undecided = flat.undecided_rates();
    if !flat.throughput_met() && !undecided.is_empty() {
        let rates: Vec<String> = undecided.iter().map(|r| format!("{r:.0}")).collect();
        let _ = write!(
            item,
            " In the search after the history the same rate both met and missed the SLO ({} ops/s): near the \
             edge a {:.0} s step is decided by the machine's moment as much as by the system, and the search \
             settled on {:.0} ops/s.",
            rates.join(", "),
            flat.full_best.seconds,
            flat.full_best.target_rate
        );
    }
    item
}

/// The three programs that used the most CPU, each in ms per unit of work: `postgres 0.27 ms, ...`.
fn largest(cpu: &crate::cpu::CpuProfile, per_sec: f64) -> String {
    let per = cpu.ms_per(per_sec);
    let top = cpu.busiest().into_iter().take(3);
    top.map(|(p, _)| format!("{p} {:.2} ms", per[p])).collect::<Vec<_>>().join(", ")
}

pub fn render(dir: &Path) -> anyhow::Result<String> {
    let pg: PgbenchCeiling =
        read(dir, "pgbench.json").context("pgbench.json missing: run `loadgen pgbench`")?;
    let broker: Option<BrokerCeiling> = read(dir, "broker.json");
    let max: Option<MaxSearch> = read(dir, "max.json");
    let half: Option<RunSummary> = read(dir, "half.json");
    let burst: Option<RunSummary> = read(dir, "burst.json");
    let reads: Option<MaxSearch> = read(dir, "reads.json");
    let history: Option<crate::HistoryLoad> = read(dir, "history.json");
    let full_max: Option<MaxSearch> = read(dir, "full-max.json");
    let full_fixed: Option<RunSummary> = read(dir, "full-fixed.json");
    let empty_fixed: Option<RunSummary> = read(dir, "empty-fixed.json");
    let mut out = String::new();
    let _ = writeln!(out, "# Benchmarks\n");
    let _ = writeln!(
        out,
        "Written by `scripts/bench.sh` from its run of {} (UTC). Every figure below comes from that one run on \
         one machine; rerun the command to reproduce them. The load generator, the services, PostgreSQL, NATS \
         and Redis all share the machine's cores.\n",
        run_started(dir)
    );
    let _ = writeln!(out, "## Machine\n");
    let _ = writeln!(out, "- {}", machine());
    for cmd in [
        "for p in /usr/lib/postgresql/*/bin/postgres; do \"$p\" --version; done | tail -n 1",
        "nats-server --version",
        "redis-server --version",
        "rustc --version",
    ] {
        let _ = writeln!(out, "- `{}`", version(cmd));
    }
    // The commit that was measured (bench.sh records it when it builds), not
    // the one checked out when the report is written.
    let commit = std::fs::read_to_string(dir.join("commit"))
        .map(|c| c.trim().to_owned())
        .unwrap_or_else(|_| version("git rev-parse --short HEAD"));
    let _ = writeln!(out, "- commit `{commit}`");
    let _ = writeln!(out);

    let _ = writeln!(out, "## (a) Database ceiling: pgbench\n");
    let _ = writeln!(
        out,
        "`{}`: the writes of one order creation (key claim, order, outbox row, idempotency record) as one \
         transaction, prepared statements, over the services' TCP connection string and, like them, \
         without TLS, {} s per client count.\n",
        pg.script, pg.seconds
    );
    let _ = writeln!(out, "| clients | tps | mean latency ms |\n|---:|---:|---:|");
    for r in &pg.runs {
        let _ = writeln!(out, "| {} | {:.0} | {:.2} |", r.clients, r.tps, r.latency_ms);
    }
    let _ =
        writeln!(out, "\n**Ceiling: {:.0} transactions/s at {} clients.**\n", pg.best_tps, pg.best_clients);

    let _ = writeln!(out, "## (b) Broker ceiling: JetStream\n");
    match &broker {
        Some(b) => {
            let _ = writeln!(
                out,
                "{} messages of {} bytes into a file-backed stream, window of {} unacknowledged publishes, every \
                 PubAck awaited: **{:.0} publishes/s**. A durable pull consumer acknowledging each message: \
                 **{:.0} messages/s**.\n",
                b.messages, b.message_bytes, b.window, b.publish_per_sec, b.consume_per_sec
            );
        }
        None => {
            let _ = writeln!(out, "Not measured in this run.\n");
        }
    }

    let _ = writeln!(out, "## (c) The system under scenario 1\n");
    let _ = writeln!(
        out,
        "Open-loop arrivals (latency counted from each request's scheduled start), mix of ten operations: 4 order \
         creations, 3 payment confirmations (create a card payment for the total, then confirm it approved, \
         which completes the order), 2 bill reads from the query API, 1 device token exchange; 20 merchants x 25 \
         terminals. All processes as `scripts/up.sh` runs them (release build).\n"
    );
    let best = max.as_ref().and_then(|m| m.best.clone());
    if let Some(m) = &max {
        let _ = writeln!(out, "### Highest rate meeting the SLO (p95 < 500 ms, errors < 0.5%)\n");
        steps_start(&mut out, m);
        steps_table(&mut out, &m.steps, true);
        let _ = writeln!(out);
        if let Some(b) = &best {
            let _ = writeln!(out, "The best step in detail:\n");
            run_table(&mut out, b);
        }
    }
    if let Some(e) = &empty_fixed {
        let _ = writeln!(
            out,
            "### At a fixed rate below the edge ({:.0} ops/s offered, 80% of the best)\n\nThe reference for the \
             same rate after the history below: at the edge a step's p99 swings with every hiccup, here it is steady.\n",
            e.target_rate
        );
        run_table(&mut out, e);
    }
    if let Some(h) = &half {
        let _ = writeln!(out, "### At half the database ceiling ({:.0} ops/s offered)\n", h.target_rate);
        run_table(&mut out, h);
    }
    if let Some(b) = &burst {
        let _ =
            writeln!(out, "### Scenario 3: burst (ramp to {:.0} ops/s, sustain, ramp down)\n", b.target_rate);
        run_table(&mut out, b);
    }

    let best_reads = reads.as_ref().and_then(|r| r.best.clone());
    if let Some(r) = &reads {
        let _ = writeln!(out, "### Read side alone: bill reads (`--mix reads`)\n");
        let _ = writeln!(
            out,
            "Portal reads of 2,000 bills written beforehand, chosen at random, with the rest of the system idle. \
             The query API keeps recently read bills in memory while the projection's announcements say they \
             have not moved (`BILL_CACHE_ENTRIES`); *from memory* is the share of lookups it answered so.\n"
        );
        steps_table(&mut out, &r.steps, false);
        let _ = writeln!(out);
    }

    let full_best = full_max.as_ref().and_then(|m| m.best.clone());
    if let Some(h) = &history {
        let _ =
            writeln!(out, "### After {} events of history (flat cost as data grows)\n", thousands(h.events));
        let _ = writeln!(
            out,
            "`loadgen history` bulk-loaded the rows {} events leave behind (completed orders, captured payments, \
             three idempotency records per sale within their 48-hour lifetime, bills, tenders, sales facts; {} \
             sales over 30 days across the fleet) in {:.0} s, vacuumed, analyzed and checkpointed them, then ran the \
             same load again. The steal column says how much of the machine other guests took during each step.\n",
            thousands(h.events),
            thousands(h.events / crate::history::EVENTS_PER_SALE),
            h.seconds
        );
        if let Some(m) = &full_max {
            steps_start(&mut out, m);
            steps_table(&mut out, &m.steps, true);
            let _ = writeln!(out);
        }
        if let Some(f) = &full_fixed {
            let _ =
                writeln!(out, "At the same fixed rate as before the history ({:.0} ops/s):\n", f.target_rate);
            run_table(&mut out, f);
        }
    }

    let _ = writeln!(out, "## Ratios and goals\n");
    let accepted = best.as_ref().map_or(0.0, |b| b.accepted_commands_per_sec);
    let _ = writeln!(out, "| figure | value | goal | met |\n|---|---:|---|---|");
    let _ = writeln!(
        out,
        "| accepted commands/s at the SLO ÷ pgbench ceiling (c/a) | {} ({accepted:.0} / {:.0}) | ≥ 1.0x | {} |",
        ratio(accepted, pg.best_tps),
        pg.best_tps,
        if accepted >= pg.best_tps { "yes" } else { "no" }
    );
    if let Some(b) = &broker {
        let _ = writeln!(
            out,
            "| accepted commands/s ÷ JetStream publish ceiling (c/b) | {} ({accepted:.0} / {:.0}) | (headroom) | |",
            ratio(accepted, b.publish_per_sec),
            b.publish_per_sec
        );
    }
    if let Some(r) = &best_reads {
        let ok = accepted > 0.0 && r.achieved_rate >= 3.0 * accepted;
        let _ = writeln!(
            out,
            "| bill reads/s at the SLO ÷ accepted commands/s at the SLO | {} ({:.0} / {accepted:.0}) | several x | {} |",
            ratio(r.achieved_rate, accepted),
            r.achieved_rate,
            if ok { "yes" } else { "no" }
        );
    }
    if let Some(h) = &half {
        let _ = writeln!(
            out,
            "| command p99 at half the pgbench ceiling ({:.0} ops/s offered, {:.0} commands/s accepted) | {:.1} ms | < 50 ms | {} |",
            h.target_rate,
            h.accepted_commands_per_sec,
            h.commands.p99,
            if h.commands.p99 < 50.0 && h.error_rate < 0.005 { "yes" } else { "no" }
        );
    }
    if let (Some(h), Some(b), Some(f)) = (&history, &best, &full_best) {
        let _ = writeln!(
            out,
            "| accepted commands/s at the SLO after {} events ÷ on an empty database | {} ({:.0} / {:.0}) | ≥ {FLAT_THROUGHPUT}x | {} |",
            thousands(h.events),
            ratio(f.accepted_commands_per_sec, b.accepted_commands_per_sec),
            f.accepted_commands_per_sec,
            b.accepted_commands_per_sec,
            if flat_throughput_met(b, f) { "yes" } else { "no" }
        );
    }
    if let (Some(h), Some(b), Some(f)) = (&history, &empty_fixed, &full_fixed) {
        let _ = writeln!(
            out,
            "| command p99 at {:.0} ops/s after {} events ÷ on an empty database | {} ({:.1} / {:.1} ms) | ≤ {FLAT_P99}x | {} |",
            f.target_rate,
            thousands(h.events),
            ratio(f.commands.p99, b.commands.p99),
            f.commands.p99,
            b.commands.p99,
            if flat_p99_met(b, f) { "yes" } else { "no" }
        );
    }
    let rebuild = text(dir, "rebuild.txt");
    let rebuild_rate = rebuild.as_deref().and_then(rebuild_rate);
    if rebuild.is_some() {
        let rate = rebuild_rate.map_or_else(|| "?".into(), |r| format!("{r:.0}"));
        let ok = rebuild_rate.is_some_and(|r| r >= REBUILD_GOAL);
        let _ = writeln!(
            out,
            "| `posctl rebuild bills` replay rate | {rate} events/s | ≥ 50,000 | {} |",
            if ok { "yes" } else { "no" }
        );
    }
    let _ = writeln!(out);
    let rebuild_cpu: Option<crate::CommandProfile> = read(dir, "rebuild-cpu.json");
    let missed = Missed {
        ceiling: pg.best_tps,
        best: best.as_ref(),
        half: half.as_ref(),
        rebuild_rate,
        rebuild_cpu: rebuild_cpu.as_ref().and_then(|p| p.cpu.as_ref()),
        broker_publish: broker.as_ref().map(|b| b.publish_per_sec),
        flat: match (&history, &best, &full_best, &full_max) {
            (Some(h), Some(b), Some(f), Some(m)) => Some(Flat {
                events: h.events,
                best: b,
                full_best: f,
                full_steps: &m.steps,
                fixed: empty_fixed.as_ref().zip(full_fixed.as_ref()),
            }),
            _ => None,
        },
    };
    missed.write(&mut out);
    if let Some(r) = &rebuild {
        let done: Vec<&str> = r.lines().filter(|l| l.contains(": done")).collect();
        let _ = writeln!(
            out,
            "## Rebuild\n\n`posctl rebuild bills` over the whole stream after the load, while the services ran:\n\n```\n{}\n```\n",
            done.join("\n")
        );
        if let (Some(cpu), Some(rate)) = (missed.rebuild_cpu, rebuild_rate) {
            cpu_table(&mut out, cpu, rate / 1000.0, "thousand events");
        }
    }
    if let Some(c) = text(dir, "check.txt") {
        let _ = writeln!(
            out,
            "## Consistency (`posctl check`)\n\nAfter the load (when the outbox and projections had caught up), then again after the rebuild:\n\n```\n{}\n```\n",
            c.trim()
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_counts_are_grouped_by_thousands() {
        assert_eq!(thousands(10_000_000), "10,000,000");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
    }

    #[test]
    fn the_report_dates_the_run_not_its_writing() {
        let dir = std::env::temp_dir().join(format!("loadgen-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a results directory");
        std::fs::write(dir.join("started"), "2026-12-07 03:59\n").expect("started");
        assert_eq!(run_started(&dir), "2026-12-07 03:59");
        std::fs::remove_file(dir.join("started")).expect("removed");
        // Without the record: the time of writing, in the same form.
        let now = run_started(&dir);
        assert!(chrono::NaiveDateTime::parse_from_str(&now, "%Y-%m-%d %H:%M").is_ok(), "{now}");
        assert_ne!(now, "2026-12-07 03:59");
        std::fs::remove_dir(&dir).expect("cleaned up");
    }

    /// A run's summary with these figures and a CPU profile of 2.0 cores busy in all, `idle` idle.
    fn run(rate: f64, accepted: f64, p99: f64, idle: f64) -> RunSummary {
        let p =
            |p99: f64| serde_json::json!({"p50": p99 / 4.0, "p95": p99 / 2.0, "p99": p99, "max": p99 * 2.0});
        serde_json::from_value(serde_json::json!({
            "target_rate": rate, "seconds": 20.0, "requests": 1000, "achieved_rate": rate * 1.3,
            "accepted_commands_per_sec": accepted, "error_rate": 0.0, "errors_by_status": {},
            "overall": p(p99), "commands": p(p99), "categories": [], "projection_lag": p(10.0),
            "projection_lag_samples": 10, "projection_lag_timeouts": 0,
            "cpu": {"cores_by_program": {"postgres": 0.9, "command-api": 0.7, "nats-server": 0.3, "loadgen": 0.1},
                    "idle": idle, "steal": 0.0, "cores": 2}
        }))
        .expect("a run summary")
    }

    #[test]
    fn the_report_says_what_limits_each_goal_missed() {
        let (best, half) = (run(2000.0, 2000.0, 400.0, 0.02), run(1600.0, 1600.0, 140.0, 0.01));
        let rebuild_cpu = crate::cpu::CpuProfile {
            cores_by_program: [("posctl".to_owned(), 1.0), ("postgres".to_owned(), 0.8)].into(),
            idle: 0.05,
            steal: 0.0,
            cores: 2,
        };
        let missed = Missed {
            ceiling: 3000.0,
            best: Some(&best),
            half: Some(&half),
            rebuild_rate: Some(45_000.0),
            rebuild_cpu: Some(&rebuild_cpu),
            broker_publish: Some(90_000.0),
            flat: None,
        };
        let mut out = String::new();
        missed.write(&mut out);
        // 2 cores busy for 2,000 commands/s: 1.00 ms each; the ceiling leaves 2,000 / 3,000 ms.
        assert!(out.contains("**0.67x of the pgbench ceiling.**"), "{out}");
        assert!(out.contains("cost 1.00 ms of CPU across all programs (postgres 0.45 ms, command-api 0.35 ms, nats-server 0.15 ms)"), "{out}");
        assert!(
            out.contains(
                "leaves 0.67 ms per command for all of them together, 1.5x less than they used. The cores were the limit"
            ),
            "{out}"
        );
        assert!(out.contains("**p99 140 ms at half the pgbench ceiling** (1600 ops/s offered; p50 35 ms, p95 70 ms). That is 0.80x of the best rate"), "{out}");
        assert!(out.contains("Commands queued for the cores."), "{out}");
        // 1.8 cores for 45 thousand events/s: 40 ms per thousand; 50,000/s leaves 40.0.
        assert!(out.contains("**Rebuild 45000 events/s.** That is 0.50x of this run's JetStream"), "{out}");
        assert!(out.contains("a thousand events cost 40.0 ms of CPU across all programs (posctl 22.22 ms, postgres 17.78 ms); 50000 events/s on 2 cores leaves 40.0 ms."), "{out}");

        // With idle cores, the report does not blame them, nor claim the CPU was short.
        let mut idle_best = run(2000.0, 2000.0, 400.0, 0.40);
        if let Some(cpu) = idle_best.cpu.as_mut() {
            cpu.cores_by_program = [("postgres".to_owned(), 1.0)].into();
        }
        let mut out = String::new();
        Missed { best: Some(&idle_best), half: None, rebuild_rate: None, ..missed }.write(&mut out);
        assert!(out.contains("cost 0.50 ms of CPU"), "{out}");
        assert!(
            out.contains("leaves 0.67 ms per command for all of them together, no less than they used."),
            "{out}"
        );
        assert!(
            out.contains("the cores were not the only limit") && !out.contains("were the limit"),
            "{out}"
        );

        // Every goal met: no section.
        let (fast, calm) = (run(4000.0, 4000.0, 400.0, 0.0), run(1600.0, 1600.0, 30.0, 0.3));
        let mut out = String::new();
        Missed { best: Some(&fast), half: Some(&calm), rebuild_rate: Some(60_000.0), ..missed }
            .write(&mut out);
        assert_eq!(out, "");
    }

    #[test]
    fn the_rebuild_rate_is_read_from_its_last_progress_line() {
        let text = "rebuild bills: applied 5000 events, at 5000/9000 (55.6%), 41000 ev/s, ETA 0s\n\
                    rebuild bills: done, applied 9000 events, at 9000/9000 (100.0%), 46986 ev/s, ETA 0s\n";
        assert_eq!(rebuild_rate(text), Some(46_986.0));
        assert_eq!(rebuild_rate("no rate here"), None);
    }

    #[test]
    fn a_search_says_what_each_step_started_from() {
        let before: MaxSearch =
            serde_json::from_str(r#"{"steps": [], "best": null}"#).expect("an older max.json");
        let mut out = String::new();
        steps_start(&mut out, &before);
        assert!(out.contains("caught up.") && !out.contains("after"), "{out}");

        let quiet = MaxSearch { between_steps: Some("scripts/pg-quiet.sh".into()), ..before };
        let mut out = String::new();
        steps_start(&mut out, &quiet);
        assert!(out.contains("then after `scripts/pg-quiet.sh`."), "{out}");
    }

    #[test]
    fn a_missed_flat_cost_says_whether_commands_cost_more_with_the_data() {
        let best = run(2000.0, 2000.0, 400.0, 0.01);
        // The search after the history: 2063 and 1919 ops/s each met the SLO once and missed it once.
        let met = |rate: f64| run(rate, rate * 0.99, 400.0, 0.0);
        let missed = |rate: f64| run(rate, rate * 0.9, 3000.0, 0.0);
        let steps = [met(1634.0), met(2063.0), missed(2063.0), met(1919.0), missed(1919.0), missed(1785.0)];
        let full_best = steps[0].clone();
        // The same fixed rate: 2.0 cores before, 2.1 after (PostgreSQL 0.9 -> 1.0).
        let mut empty = run(1622.0, 1614.0, 442.0, 0.02);
        let mut full = run(1622.0, 1611.0, 363.0, 0.01);
        if let Some(cpu) = full.cpu.as_mut() {
            cpu.cores_by_program.insert("postgres".into(), 1.0);
        }
        // 3 kB of WAL and 0.2 full-page images per command before, 6 kB and 0.8 after.
        let wal = |run: &RunSummary, kb: f64, images: f64| crate::wal::WalUse {
            bytes: kb * 1024.0 * run.accepted_commands(),
            full_page_images: images * run.accepted_commands(),
            checkpoints: 0.0,
        };
        empty.wal = Some(wal(&empty, 3.0, 0.2));
        full.wal = Some(wal(&full, 6.0, 0.8));
        let flat = Flat {
            events: 10_000_000,
            best: &best,
            full_best: &full_best,
            full_steps: &steps,
            fixed: Some((&empty, &full)),
        };
        let report = |flat: Flat| {
            let mut out = String::new();
            Missed {
                ceiling: 0.0,
                best: None,
                half: None,
                rebuild_rate: None,
                rebuild_cpu: None,
                broker_publish: None,
                flat: Some(flat),
            }
            .write(&mut out);
            out
        };

        let out = report(flat);
        assert!(out.contains("- **After 10,000,000 events: 0.81x of the empty database's rate at the SLO** (1618 against 2000 accepted commands/s)."), "{out}");
        assert!(!out.contains("; p99 at"), "the p99 goal was met: {out}");
        // 2.1 cores / 1,611 commands/s against 2.0 / 1,614.
        assert!(out.contains("At the same fixed rate (1622 ops/s) an accepted command cost 1.30 ms of CPU across all programs after the history and 1.24 ms before (1.05x; the largest growth: postgres 0.62 against 0.56 ms): the data did not make commands dearer by a tenth."), "{out}");
        assert!(out.contains("PostgreSQL wrote 6.0 kB of WAL per command after the history against 3.0 kB before (2.00x), 0.80 full-page images per command against 0.20: after a checkpoint the first change to a page writes the whole page"), "{out}");
        assert!(out.contains("the same rate both met and missed the SLO (2063, 1919 ops/s)"), "{out}");
        assert!(out.contains("a 20 s step is decided by the machine's moment as much as by the system, and the search settled on 1634 ops/s."), "{out}");

        // Commands that cost a fifth more, and a p99 that grew: said so.
        let mut dearer = run(1622.0, 1611.0, 600.0, 0.01);
        if let Some(cpu) = dearer.cpu.as_mut() {
            cpu.cores_by_program.insert("postgres".into(), 1.3);
        }
        dearer.wal = Some(wal(&dearer, 3.1, 0.21));
        let out = report(Flat { fixed: Some((&empty, &dearer)), ..flat });
        assert!(out.contains("accepted commands/s; p99 at 1622 ops/s 1.36x of the empty database's, 600.0 against 442.0 ms)."), "{out}");
        // Only the p99 missed: it leads, and the rate that met is said to have met.
        let out = report(Flat { full_best: &met(1919.0), fixed: Some((&empty, &dearer)), ..flat });
        assert!(out.contains("- **After 10,000,000 events: p99 at 1622 ops/s 1.36x of the empty database's** (600.0 against 442.0 ms; the rate at the SLO met its goal, 0.95x: 1900 against 2000 accepted commands/s)."), "{out}");
        assert!(out.contains("commands cost more with the data."), "{out}");
        assert!(out.contains("(1.20x; the largest growth: postgres 0.81 against 0.56 ms): commands cost more with the data."), "{out}");
        // As much WAL per command as before: no page-image story, and the CPU that grew is the lead.
        assert!(out.contains("3.1 kB of WAL per command after the history against 3.0 kB before (1.03x), 0.21 full-page images per command against 0.20."), "{out}");
        assert!(!out.contains("Neither the CPU nor the WAL"), "{out}");
        // Neither grew (more images, but not more WAL): said so, without a story.
        let mut same = run(1622.0, 1614.0, 600.0, 0.02);
        same.wal = Some(wal(&same, 3.1, 0.3));
        let out = report(Flat { fixed: Some((&empty, &same)), ..flat });
        assert!(out.contains("0.30 full-page images per command against 0.20. Neither the CPU nor the WAL of a command grew by a tenth: what made the difference is not in these figures."), "{out}");

        // Both goals met: nothing to explain.
        let close = met(1919.0);
        assert_eq!(report(Flat { full_best: &close, ..flat }), "");
    }
}
