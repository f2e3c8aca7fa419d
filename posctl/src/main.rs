//! `posctl`: the operator CLI.

use clap::{Parser, Subcommand};
use command_api::auth::JwtKeys;

#[derive(Parser)]
#[command(name = "posctl", about = "Operate a SmartPOS deployment", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create the database if missing, run migrations, apply nats-config/ (idempotent).
    Setup {
        /// Directory of stream definitions (default: ./nats-config).
        #[arg(long, env = "NATS_CONFIG_DIR")]
        nats_config: Option<std::path::PathBuf>,
        /// Stream replicas: 1 locally, 3 on a cluster.
        #[arg(long, env = "NATS_REPLICAS", default_value_t = 1)]
        replicas: usize,
    },
    /// Projections (position, events and seconds behind, stalls), outbox backlog and streams.
    Status {
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild a projection from the start of the stream into shadow tables, then swap atomically.
    Rebuild {
        /// bills, store_daily_sales or device_status.
        projection: String,
        /// Rebuild only this merchant's rows.
        #[arg(long)]
        merchant: Option<uuid::Uuid>,
    },
    /// Re-apply a range of the stream to a live projection (repairs rows; never moves its checkpoint).
    Replay {
        projection: String,
        /// First stream sequence to re-apply.
        #[arg(long, conflicts_with = "from_time", required_unless_present = "from_time")]
        from_seq: Option<u64>,
        /// First event time to re-apply (RFC 3339).
        #[arg(long)]
        from_time: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Dead letters: list, show and redrive failed work items.
    Dlq {
        #[command(subcommand)]
        command: DlqCmd,
    },
    /// Settle a store's business day again: a new version, earlier ones kept.
    Resettle {
        #[arg(long)]
        store: uuid::Uuid,
        /// The business date (YYYY-MM-DD).
        #[arg(long)]
        date: chrono::NaiveDate,
    },
    /// Compare the read models with the write model, row for row, once the system has settled.
    Check {
        /// How long to wait for the outbox and the projections to catch up first (seconds).
        #[arg(long, default_value_t = 60)]
        wait: u64,
        #[arg(long)]
        json: bool,
    },
    /// Create or refresh the demo merchant, store, devices and tokens.
    SeedDemo {
        /// Print one JSON object (the only output format today).
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args, Debug, Clone)]
struct DlqFilter {
    /// Job kind: receipts, settlements, reports, device_sync.
    #[arg(long)]
    kind: Option<String>,
    #[arg(long)]
    merchant: Option<String>,
    /// Case-insensitive text the error contains.
    #[arg(long)]
    error: Option<String>,
    /// Failed at or after (RFC 3339).
    #[arg(long)]
    since: Option<chrono::DateTime<chrono::Utc>>,
}

impl From<DlqFilter> for workers::dead_letters::Filter {
    fn from(f: DlqFilter) -> Self {
        Self { kind: f.kind, merchant: f.merchant, error_contains: f.error, since: f.since }
    }
}

#[derive(Subcommand)]
enum DlqCmd {
    /// Dead letters matching the filters, oldest first.
    List {
        #[command(flatten)]
        filter: DlqFilter,
        #[arg(long)]
        json: bool,
    },
    /// One dead letter, with its payload.
    Show { seq: u64 },
    /// Republish dead letters to their original subjects; records who did it.
    Redrive {
        /// Dead-letter sequences; or none with --all-matching and filters.
        seqs: Vec<u64>,
        /// Every dead letter matching the filters that was not redriven yet.
        #[arg(long)]
        all_matching: bool,
        #[command(flatten)]
        filter: DlqFilter,
        /// Show what would be redriven, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Who is redriving (default: $USER).
        #[arg(long, env = "USER", default_value = "unknown")]
        operator: String,
    },
}

impl From<DlqCmd> for posctl::dlq::Command {
    fn from(c: DlqCmd) -> Self {
        match c {
            DlqCmd::List { filter, json } => Self::List { filter: filter.into(), json },
            DlqCmd::Show { seq } => Self::Show { seq },
            DlqCmd::Redrive { seqs, all_matching, filter, dry_run, operator } => {
                Self::Redrive { seqs, all_matching, filter: filter.into(), dry_run, operator }
            }
        }
    }
}

/// glibc malloc and free were about a quarter of a bills rebuild's CPU profile; with
/// mimalloc the same rebuild went from about 14,000 to 19,600 events/s (bench/NOTES.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    platform::telemetry::init_stderr("posctl");
    let cli = Cli::parse();
    let infra = platform::InfraSettings::from_env()?;
    match cli.command {
        Cmd::Setup { nats_config, replicas } => {
            let dir = nats_config.unwrap_or_else(posctl::nats_config::default_dir);
            for line in posctl::setup::run(&infra, &dir, replicas).await? {
                eprintln!("{line}");
            }
            eprintln!("set-up complete");
        }
        Cmd::Status { json } => {
            let report = posctl::status::collect(&infra).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.table());
            }
        }
        Cmd::Rebuild { projection, merchant } => {
            let projection = posctl::operate::projection(&projection)?;
            let source = posctl::operate::source(&infra).await?;
            let done = projectors::rebuild::rebuild(
                &source,
                projection,
                merchant,
                posctl::operate::printer("rebuild"),
            )
            .await?;
            eprintln!("rebuild {}: done, {}", projection.name(), done.line());
        }
        Cmd::Replay { projection, from_seq, from_time } => {
            let projection = posctl::operate::projection(&projection)?;
            let from = match (from_seq, from_time) {
                (Some(seq), _) => projectors::rebuild::From::Seq(seq),
                (None, Some(t)) => projectors::rebuild::From::Time(t),
                (None, None) => anyhow::bail!("give --from-seq or --from-time"),
            };
            let source = posctl::operate::source(&infra).await?;
            let done =
                projectors::rebuild::replay(&source, projection, from, posctl::operate::printer("replay"))
                    .await?;
            eprintln!("replay {}: done, {}", projection.name(), done.line());
        }
        Cmd::Resettle { store, date } => {
            let job = posctl::operate::resettle(&infra, store, date).await?;
            eprintln!("re-settlement of {date} for store {store} enqueued as job {job}");
        }
        Cmd::Dlq { command } => posctl::dlq::run(&infra, command.into()).await?,
        Cmd::Check { wait, json } => {
            let report = posctl::check::run(&infra, std::time::Duration::from_secs(wait)).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.table());
            }
            anyhow::ensure!(report.agrees(), "the read models do not agree with the write model");
        }
        Cmd::SeedDemo { json: _ } => {
            let keys = JwtKeys::from_env()?;
            let pg = posctl::db::connect(&infra.database_url).await?;
            let demo = posctl::seed::demo(&pg, &keys).await?;
            println!("{}", serde_json::to_string_pretty(&demo)?);
        }
    }
    Ok(())
}
