//! `posctl dlq list | show | redrive`.

use anyhow::{Context, bail};
use workers::dead_letters::{DeadLetter, DeadLetters, Filter};

pub enum Command {
    List { filter: Filter, json: bool },
    Show { seq: u64 },
    Redrive { seqs: Vec<u64>, all_matching: bool, filter: Filter, dry_run: bool, operator: String },
}

pub async fn run(infra: &platform::InfraSettings, command: Command) -> anyhow::Result<()> {
    let pg = crate::db::connect(&infra.database_url).await?;
    let nats = async_nats::connect(&infra.nats_url).await.context("connecting to NATS")?;
    let dlq =
        DeadLetters { js: async_nats::jetstream::new(nats), pg, stream_prefix: infra.stream_prefix.clone() };
    match command {
        Command::List { filter, json } => {
            let letters = dlq.list(&filter).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&letters)?);
            } else {
                println!(
                    "{:>6}  {:<12} {:<36} {:>8}  {:<20} error",
                    "seq", "kind", "merchant", "attempts", "redriven by"
                );
                for d in &letters {
                    println!("{}", line(d));
                }
                eprintln!("{} dead letter(s)", letters.len());
            }
        }
        Command::Show { seq } => println!("{}", serde_json::to_string_pretty(&dlq.show(seq).await?)?),
        Command::Redrive { seqs, all_matching, filter, dry_run, operator } => {
            let targets: Vec<u64> = match (seqs.is_empty(), all_matching) {
                (false, false) => seqs,
                (true, true) => dlq
                    .list(&filter)
                    .await?
                    .into_iter()
                    .filter(|d| d.redriven_by.is_none())
                    .map(|d| d.seq)
                    .collect(),
                _ => bail!("give dead-letter sequences, or --all-matching with filters"),
            };
            for seq in targets {
                let d = dlq.redrive(seq, &operator, dry_run).await?;
                let verb = if dry_run { "would redrive" } else { "redrove" };
                println!(
                    "{verb} {} ({} job {}) to {}",
                    d.seq,
                    d.kind,
                    d.job_id.map(|j| j.to_string()).unwrap_or_default(),
                    d.original_subject
                );
            }
        }
    }
    Ok(())
}

fn line(d: &DeadLetter) -> String {
    format!(
        "{:>6}  {:<12} {:<36} {:>8}  {:<20} {}",
        d.seq,
        d.kind,
        d.merchant,
        d.attempts,
        d.redriven_by.as_deref().unwrap_or("-"),
        d.error
    )
}
