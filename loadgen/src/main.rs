//! `loadgen`: drives the real HTTP APIs with the platform's load scenarios,
//! measures this machine's database and broker ceilings, and writes the
//! benchmark report. `scripts/bench.sh` runs the whole benchmark.

mod broker;
mod cpu;
mod fleet;
mod history;
mod pgbench;
mod report;
mod scenario;
mod schedule;
mod search;
mod stats;
mod wal;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};

use crate::scenario::Scenario;
use crate::schedule::Profile;
use crate::stats::{Recorder, RunSummary};

#[derive(Parser)]
#[command(name = "loadgen", about = "SmartPOS load generator and benchmark report", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Args, Clone)]
struct Target {
    #[arg(long, env = "LOADGEN_COMMAND_URL", default_value = "http://127.0.0.1:8080")]
    command_url: String,
    #[arg(long, env = "LOADGEN_QUERY_URL", default_value = "http://127.0.0.1:8081")]
    query_url: String,
    #[arg(long, env = "DATABASE_URL", default_value = platform::settings::DEFAULT_DATABASE_URL)]
    database_url: String,
    /// Merchants (one store each) in the benchmark fleet.
    #[arg(long, default_value_t = 20)]
    merchants: usize,
    /// Terminals per store.
    #[arg(long, default_value_t = 25)]
    devices_per_store: usize,
    /// Follow one order creation in this many cycles of ten operations to measure projection lag.
    #[arg(long, default_value_t = 5)]
    lag_every: u64,
    /// Arrivals beyond this many requests in flight are dropped and counted as errors.
    #[arg(long, default_value_t = 4096)]
    max_in_flight: usize,
    /// Seconds of unmeasured traffic at the first rate, to warm pools and caches.
    #[arg(long, default_value_t = 5)]
    warmup: u64,
    /// Write the result as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Scenario 1, or bill reads only (after writing 2,000 orders to read).
    #[arg(long, value_enum, default_value = "scenario1")]
    mix: scenario::Mix,
}

#[derive(Subcommand)]
enum Cmd {
    /// Scenario 1 at a constant arrival rate.
    Run {
        #[command(flatten)]
        target: Target,
        /// Operations per second.
        #[arg(long, conflicts_with = "rate_of")]
        rate: Option<f64>,
        /// Or: this fraction (`--fraction`) of the best tps in a `loadgen pgbench` JSON file.
        #[arg(long)]
        rate_of: Option<PathBuf>,
        /// Or: this fraction (`--fraction`) of the best rate of a `loadgen max` JSON file.
        #[arg(long, conflicts_with_all = ["rate", "rate_of"])]
        rate_of_max: Option<PathBuf>,
        #[arg(long, default_value_t = 0.5)]
        fraction: f64,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
    /// Scenario 1 at rising rates: the highest that meets the SLO (p95 < 500 ms, errors < 0.5%).
    Max {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 200.0)]
        start: f64,
        /// Each step multiplies the rate by this until the SLO is missed; then `--refine` bisections.
        #[arg(long, default_value_t = 1.35)]
        factor: f64,
        /// Bisections between the last step that met the SLO and the first that missed it
        /// (four narrow a factor of 1.35 to about 2%).
        #[arg(long, default_value_t = 4)]
        refine: u32,
        /// The best rate must meet the SLO in this many steps; one that meets it once and then
        /// misses gives way to a rate 7% lower, which must meet it as often (at most 3 rates).
        #[arg(long, default_value_t = 2)]
        confirm: u32,
        #[arg(long, default_value_t = 20_000.0)]
        max_rate: f64,
        /// Seconds per step.
        #[arg(long, default_value_t = 20)]
        step_seconds: u64,
        /// A shell command run before every step, once the outbox and projections have
        /// caught up: `scripts/bench.sh` gives `scripts/pg-quiet.sh` (VACUUM ANALYZE and
        /// CHECKPOINT as the database's superuser), so that every step starts from the
        /// same quiet database, not from the autovacuum and dirty pages of the step before.
        #[arg(long)]
        between_steps: Option<String>,
    },
    /// Scenario 3: ramp up, sustain, ramp down, peaking at `--peak` (or this fraction of a `max` result).
    Burst {
        #[command(flatten)]
        target: Target,
        #[arg(long, conflicts_with = "peak_of")]
        peak: Option<f64>,
        /// A `loadgen max` JSON file; the peak is `--fraction` of its best rate.
        #[arg(long)]
        peak_of: Option<PathBuf>,
        #[arg(long, default_value_t = 1.0)]
        fraction: f64,
        #[arg(long, default_value_t = 15)]
        ramp_seconds: u64,
        #[arg(long, default_value_t = 30)]
        sustain_seconds: u64,
    },
    /// The broker's ceiling: pipelined JetStream publishes, then an explicit-ack pull consumer.
    Broker {
        #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
        nats_url: String,
        #[arg(long, default_value_t = 300_000)]
        messages: u64,
        #[arg(long, default_value_t = 400)]
        size: usize,
        #[arg(long, default_value_t = 512)]
        window: usize,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// The database's ceiling: pgbench running one command's writes per transaction.
    Pgbench {
        #[arg(long, env = "DATABASE_URL", default_value = platform::settings::DEFAULT_DATABASE_URL)]
        database_url: String,
        #[arg(long, default_value = "bench/create-order.sql")]
        script: String,
        #[arg(long, value_delimiter = ',', default_value = "4,8,16,32")]
        clients: Vec<u32>,
        #[arg(long, default_value_t = 15)]
        seconds: u64,
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Bulk-loads the rows `--events` events leave behind (for the flat-cost measurement).
    History {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 10_000_000)]
        events: u64,
    },
    /// Drops the benchmark's database and deletes its streams, for a run from empty.
    Reset {
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
        nats_url: String,
        /// Streams named `<prefix>_*` are deleted.
        #[arg(long, env = "NATS_STREAM_PREFIX")]
        stream_prefix: String,
    },
    /// Runs a command (`posctl rebuild bills`, say) and writes where the machine's CPU
    /// went while it ran, by program, the command's own under its name.
    Profile {
        #[arg(long)]
        json: PathBuf,
        /// The command and its arguments.
        #[arg(trailing_var_arg = true, required = true, num_args = 1..)]
        command: Vec<String>,
    },
    /// Writes the benchmark report from a results directory.
    Report {
        /// Directory holding pgbench.json, broker.json, max.json, half.json, burst.json, ...
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "BENCHMARKS.md")]
        out: PathBuf,
        /// Markdown appended to the report (what limits the system, what each change bought).
        #[arg(long)]
        notes: Option<PathBuf>,
    },
}

/// What `loadgen history` loaded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryLoad {
    pub events: u64,
    pub seconds: f64,
}

/// What `loadgen profile` measured: a command's duration and the machine's CPU meanwhile.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommandProfile {
    pub command: String,
    pub seconds: f64,
    pub cpu: Option<cpu::CpuProfile>,
}

/// Every step of a `max` search and the best one that met the SLO.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MaxSearch {
    pub steps: Vec<RunSummary>,
    pub best: Option<RunSummary>,
    /// The `--between-steps` command each step followed (absent in results from before it).
    #[serde(default)]
    pub between_steps: Option<String>,
}

fn write_json<T: Serialize>(path: &Option<PathBuf>, value: &T) -> anyhow::Result<()> {
    if let Some(path) = path {
        std::fs::write(path, serde_json::to_vec_pretty(value)?)
            .with_context(|| format!("writing {path:?}"))?;
    }
    Ok(())
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &PathBuf) -> anyhow::Result<T> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {path:?}"))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {path:?}"))
}

/// Waits until the outbox is published and every projection has caught up,
/// so that a measurement never starts with the backlog of the one before
/// (an overloaded step's queues would otherwise sink the next, lower step).
async fn settle(target: &Target) -> anyhow::Result<()> {
    let mut infra = platform::InfraSettings::from_env()?;
    infra.database_url.clone_from(&target.database_url);
    let pg = sqlx::PgPool::connect(&infra.database_url).await.context("connecting to the database")?;
    let settled = posctl::check::settle(&pg, &infra, SETTLE_WAIT).await?;
    pg.close().await;
    if !settled {
        eprintln!("[loadgen] still not settled after {}s; measuring anyway", SETTLE_WAIT.as_secs());
    }
    Ok(())
}

/// Runs `loadgen max --between-steps`. A command that fails is reported and the step
/// measured anyway, as `settle` does when it runs out of time.
async fn between(command: &str) {
    let started = std::time::Instant::now();
    match tokio::process::Command::new("sh").args(["-c", command]).status().await {
        Ok(status) if status.success() => {
            eprintln!("[loadgen] between steps: `{command}` took {:.1} s", started.elapsed().as_secs_f64());
        }
        Ok(status) => eprintln!("[loadgen] between steps: `{command}` {status}; measuring anyway"),
        Err(e) => eprintln!("[loadgen] between steps: cannot run `{command}`: {e}; measuring anyway"),
    }
}

const SETTLE_WAIT: Duration = Duration::from_secs(180);

async fn scenario(target: &Target) -> anyhow::Result<Arc<Scenario>> {
    settle(target).await?;
    let keys = command_api::auth::JwtKeys::from_env()?;
    let pg = sqlx::PgPool::connect(&target.database_url).await.context("connecting to the database")?;
    let fleet = fleet::Fleet::prepare(&pg, &keys, target.merchants, target.devices_per_store).await?;
    pg.close().await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(target.max_in_flight)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(10))
        .build()?;
    let scenario = Arc::new(Scenario::new(
        client,
        &target.command_url,
        &target.query_url,
        fleet,
        target.lag_every,
        target.mix,
    ));
    eprintln!(
        "[loadgen] fleet: {} merchants x {} terminals; exchanging device tokens ...",
        target.merchants, target.devices_per_store
    );
    scenario.refresh_stale_tokens(Duration::ZERO).await?;
    if target.mix == scenario::Mix::Reads {
        eprintln!("[loadgen] writing 2000 orders to read ...");
        scenario.prime(2_000).await;
    }
    Ok(scenario)
}

/// One measured run of `profile`, with device tokens kept fresh underneath.
async fn measure(label: &str, scenario: &Arc<Scenario>, target: &Target, profile: Profile) -> RunSummary {
    let upkeep = {
        let scenario = scenario.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                if let Err(e) = scenario.refresh_stale_tokens(Duration::from_secs(50)).await {
                    eprintln!("[loadgen] token upkeep: {e:#}");
                }
            }
        })
    };
    let recorder = Arc::new(Recorder::default());
    let cache_before = scenario.bill_cache_counts().await;
    let wal_before = wal::counters(&target.database_url).await;
    let cpu_before = cpu::snapshot();
    let elapsed = {
        let (scenario, recorder_op) = (scenario.clone(), recorder.clone());
        schedule::drive(label, profile, target.max_in_flight, recorder.clone(), move |scheduled| {
            scenario.clone().run_one(recorder_op.clone(), scheduled)
        })
        .await
    };
    upkeep.abort();
    let mut summary = recorder.summary(profile.peak(), elapsed);
    summary.cpu = cpu::profile(&cpu_before, &cpu::snapshot(), elapsed.as_secs_f64());
    if let (Some(before), Some(after)) = (wal_before, wal::counters(&target.database_url).await) {
        summary.wal = Some(after.since(&before));
    }
    if let (Some(before), Some(after)) = (cache_before, scenario.bill_cache_counts().await) {
        summary.bill_cache = Some(after.since(&before));
    }
    summary
}

async fn warm_up(scenario: &Arc<Scenario>, target: &Target, rate: f64) {
    if target.warmup > 0 {
        let profile = Profile::Constant { rate, duration: Duration::from_secs(target.warmup) };
        let _ = measure("warm-up", scenario, target, profile).await;
    }
}

/// glibc malloc and free were about a quarter of a bills rebuild's CPU profile; with
/// mimalloc the same rebuild went from about 14,000 to 19,600 events/s (bench/NOTES.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Run { target, rate, rate_of, rate_of_max, fraction, seconds } => {
            let rate = match (rate, rate_of, rate_of_max) {
                (Some(r), _, _) => r,
                (None, Some(path), _) => read_json::<pgbench::PgbenchCeiling>(&path)?.best_tps * fraction,
                (None, None, Some(path)) => {
                    let search: MaxSearch = read_json(&path)?;
                    search.best.context("the max search found no rate meeting the SLO")?.target_rate
                        * fraction
                }
                (None, None, None) => anyhow::bail!("give --rate, --rate-of or --rate-of-max"),
            };
            let scenario = scenario(&target).await?;
            warm_up(&scenario, &target, rate).await;
            let profile = Profile::Constant { rate, duration: Duration::from_secs(seconds) };
            let summary = measure("run", &scenario, &target, profile).await;
            summary.print();
            write_json(&target.json, &summary)?;
        }
        Cmd::Max { target, start, factor, refine, confirm, max_rate, step_seconds, between_steps } => {
            let plan = search::Plan::new(start, factor, refine, confirm, max_rate)?;
            let scenario = scenario(&target).await?;
            warm_up(&scenario, &target, start).await;
            let step = Duration::from_secs(step_seconds);
            let search::Found { steps, best } = search::find(plan, async |phase, rate| {
                // Each step starts from a settled system, not the backlog of the one before.
                settle(&target).await?;
                if let Some(command) = &between_steps {
                    between(command).await;
                }
                let profile = Profile::Constant { rate, duration: step };
                let summary =
                    measure(&format!("{} {rate:.0}/s", phase.label()), &scenario, &target, profile).await;
                summary.print();
                Ok(summary)
            })
            .await?;
            match &best {
                Some(b) => println!(
                    "highest rate meeting the SLO: {:.0} ops/s ({:.0} accepted commands/s)",
                    b.target_rate, b.accepted_commands_per_sec
                ),
                None => println!("no rate met the SLO (lowest tried {start:.0} ops/s)"),
            }
            write_json(&target.json, &MaxSearch { steps, best, between_steps })?;
        }
        Cmd::Burst { target, peak, peak_of, fraction, ramp_seconds, sustain_seconds } => {
            let peak = match (peak, peak_of) {
                (Some(p), _) => p,
                (None, Some(path)) => {
                    let search: MaxSearch = read_json(&path)?;
                    search.best.context("the max search found no rate meeting the SLO")?.target_rate
                        * fraction
                }
                (None, None) => anyhow::bail!("give --peak or --peak-of"),
            };
            let scenario = scenario(&target).await?;
            let profile = Profile::Burst {
                base: (peak / 10.0).max(1.0),
                peak,
                ramp: Duration::from_secs(ramp_seconds),
                sustain: Duration::from_secs(sustain_seconds),
            };
            let summary = measure("burst", &scenario, &target, profile).await;
            summary.print();
            write_json(&target.json, &summary)?;
        }
        Cmd::History { target, events } => {
            let keys = command_api::auth::JwtKeys::from_env()?;
            let pg =
                sqlx::PgPool::connect(&target.database_url).await.context("connecting to the database")?;
            fleet::Fleet::prepare(&pg, &keys, target.merchants, target.devices_per_store).await?;
            let owners = fleet::Fleet::owners(target.merchants, target.devices_per_store);
            let started = std::time::Instant::now();
            let loaded = history::load(&pg, &owners, events).await?;
            let seconds = started.elapsed().as_secs_f64();
            println!("history: {loaded} events' rows loaded in {seconds:.0} s");
            write_json(&target.json, &HistoryLoad { events: loaded, seconds })?;
        }
        Cmd::Broker { nats_url, messages, size, window, json } => {
            let ceiling = broker::measure(&nats_url, messages, size, window).await?;
            println!(
                "JetStream: {:.0} publishes/s (window {window}), {:.0} consumed+acked/s ({messages} x {size} B)",
                ceiling.publish_per_sec, ceiling.consume_per_sec
            );
            write_json(&json, &ceiling)?;
        }
        Cmd::Pgbench { database_url, script, clients, seconds, json } => {
            let ceiling = pgbench::measure(&database_url, &script, &clients, seconds).await?;
            println!("pgbench: best {:.0} tps at {} clients", ceiling.best_tps, ceiling.best_clients);
            write_json(&json, &ceiling)?;
        }
        Cmd::Reset { database_url, nats_url, stream_prefix } => {
            anyhow::ensure!(
                stream_prefix != "POS" && !database_url.ends_with("/smartpos"),
                "refusing to reset the default deployment; give the benchmark's own database and prefix"
            );
            broker::delete_streams(&nats_url, &stream_prefix).await?;
            pgbench::drop_database(&database_url).await?;
        }
        Cmd::Profile { json, command } => {
            let program = std::path::Path::new(&command[0])
                .file_name()
                .map_or_else(|| command[0].clone(), |n| n.to_string_lossy().into_owned());
            let started = std::time::Instant::now();
            let (mut tracker, children) = (cpu::Tracker::start(), cpu::waited_children_ticks());
            let mut child = tokio::process::Command::new(&command[0])
                .args(&command[1..])
                .spawn()
                .with_context(|| format!("running {}", command[0]))?;
            // The command's own time comes whole from its exit (below); the
            // others, its database sessions among them, are sampled while it runs.
            let pid = child.id();
            let status = loop {
                tokio::select! {
                    status = child.wait() => break status?,
                    () = tokio::time::sleep(Duration::from_millis(250)) => tracker.sample(pid),
                }
            };
            tracker.sample(pid);
            let seconds = started.elapsed().as_secs_f64();
            let mut profile = tracker.profile(seconds);
            if let Some(p) = &mut profile {
                p.add(&program, cpu::waited_children_ticks().saturating_sub(children), seconds);
            }
            let run = CommandProfile { command: command.join(" "), seconds, cpu: profile };
            write_json(&Some(json), &run)?;
            if !status.success() {
                // The command's own failure, not the profiler's: pass its exit code on.
                eprintln!("[loadgen] {} {status}", command[0]);
                std::process::exit(status.code().unwrap_or(1));
            }
        }
        Cmd::Report { dir, out, notes } => {
            let mut text = report::render(&dir)?;
            if let Some(notes) = notes {
                text.push('\n');
                text.push_str(
                    &std::fs::read_to_string(&notes).with_context(|| format!("reading {notes:?}"))?,
                );
            }
            std::fs::write(&out, text).with_context(|| format!("writing {out:?}"))?;
            eprintln!("[loadgen] wrote {out:?}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_between_steps_command_runs_and_a_failing_one_is_only_reported() {
        let mark = std::env::temp_dir().join(format!("loadgen-between-{}", std::process::id()));
        let _ = std::fs::remove_file(&mark);
        between(&format!("touch '{}'", mark.display())).await;
        assert!(mark.exists(), "the command did not run");
        std::fs::remove_file(&mark).expect("cleaned up");
        // A failing command returns like any other: the step is measured anyway.
        between("exit 3").await;
    }
}
