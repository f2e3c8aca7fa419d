//! `posctl`: the operator CLI.

use anyhow::Context;
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
    /// Create or refresh the demo merchant, store, devices and tokens.
    SeedDemo {
        /// Print one JSON object (the only output format today).
        #[arg(long)]
        json: bool,
    },
}

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
        Cmd::SeedDemo { json: _ } => {
            let keys = JwtKeys::from_env()?;
            let pg =
                sqlx::PgPool::connect(&infra.database_url).await.context("connecting to the database")?;
            let demo = posctl::seed::demo(&pg, &keys).await?;
            println!("{}", serde_json::to_string_pretty(&demo)?);
        }
    }
    Ok(())
}
