//! `show-offset-mapping` and the `--offset-report` file: the exact source→target offset
//! mapping of a restore and the backup's consumer-group offsets translated with it.

use crate::cli_auth::ClientAuthArgs;
use crate::cli_output::{print_json, Format};
use crate::embedded::{connect_plans, rpc_error, LocalCoordinator};
use anyhow::{bail, Context, Result};
use clap::Args;
use kafka_backup_coordinator::ledger::Ledger;
use kafka_backup_coordinator::CoordinatorSettings;
use kafka_backup_proto::{ListPlansRequest, OffsetMapping, PlanRef};
use kafka_backup_worker::connect::{ClientSecurity, PlansClient};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args)]
pub struct OffsetMappingArgs {
    /// Ask a running coordinator; without it the local ledger (--checkpoint-state) is read.
    #[arg(long)]
    pub coordinator: Option<String>,
    /// Ledger directory of embedded restores.
    #[arg(
        long,
        visible_alias = "state-dir",
        default_value = "kafka-backup-state"
    )]
    pub checkpoint_state: PathBuf,
    #[arg(long)]
    pub plan_id: Option<String>,
    /// Use the most recent plan of this backup.
    #[arg(long)]
    pub backup_id: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    #[command(flatten)]
    pub auth: ClientAuthArgs,
}

pub fn mapping_json(m: &OffsetMapping) -> Value {
    let mut partitions = Map::new();
    for p in &m.partitions {
        partitions.insert(
            format!("{}/{}", p.source_topic, p.source_partition),
            json!({
                "target": format!("{}/{}", p.target_topic, p.target_partition),
                "state": p.state,
                "target_next_offset": p.target_next_offset,
                "runs": p.runs.iter().map(|r| json!({
                    "source_start": r.source_start,
                    "target_start": r.target_start,
                    "length": r.length,
                })).collect::<Vec<_>>(),
            }),
        );
    }
    json!({
        "plan_id": m.plan_id,
        "backup_id": m.backup_id,
        "partitions": partitions,
        "consumer_groups": m.groups.iter().map(|g| json!({
            "group": g.group,
            "source": format!("{}/{}", g.source_topic, g.source_partition),
            "source_offset": g.source_offset,
            "target": format!("{}/{}", g.target_topic, g.target_partition),
            "target_offset": g.target_offset,
            "note": g.note,
        })).collect::<Vec<_>>(),
    })
}

fn print_table(m: &OffsetMapping) {
    println!(
        "Offset mapping of plan {} (backup {})",
        m.plan_id, m.backup_id
    );
    println!(
        "{:<36} {:<36} {:>14} {:>14} {:>10}",
        "SOURCE", "TARGET", "SOURCE START", "TARGET START", "LENGTH"
    );
    for p in &m.partitions {
        let (src, dst) = (
            format!("{}/{}", p.source_topic, p.source_partition),
            format!("{}/{}", p.target_topic, p.target_partition),
        );
        if p.runs.is_empty() {
            println!("{src:<36} {dst:<36} {:>14} {:>14} {:>10}", "-", "-", 0);
        }
        for r in &p.runs {
            println!(
                "{src:<36} {dst:<36} {:>14} {:>14} {:>10}",
                r.source_start, r.target_start, r.length
            );
        }
    }
    if !m.groups.is_empty() {
        println!(
            "\n{:<24} {:<36} {:>12} {:<36} {:>12}",
            "GROUP", "SOURCE", "COMMITTED", "TARGET", "TARGET OFF"
        );
        for g in &m.groups {
            println!(
                "{:<24} {:<36} {:>12} {:<36} {:>12} {}",
                g.group,
                format!("{}/{}", g.source_topic, g.source_partition),
                g.source_offset,
                format!("{}/{}", g.target_topic, g.target_partition),
                g.target_offset,
                g.note
            );
        }
    }
}

async fn resolve_plan(
    client: &mut PlansClient,
    plan_id: &Option<String>,
    backup_id: &Option<String>,
) -> Result<String> {
    if let Some(p) = plan_id {
        return Ok(p.clone());
    }
    let Some(backup) = backup_id else {
        bail!("give --plan-id or --backup-id");
    };
    let plans = client
        .list_plans(ListPlansRequest {})
        .await
        .map_err(rpc_error)?
        .into_inner()
        .plans;
    plans
        .into_iter()
        .find(|p| &p.backup_id == backup)
        .map(|p| p.plan_id)
        .with_context(|| format!("no restore plan for backup {backup:?}"))
}

/// The whole offset mapping of a plan, read a page of partitions at a time.
pub async fn fetch_mapping(client: &mut PlansClient, plan_id: &str) -> Result<OffsetMapping> {
    let mut all: Option<OffsetMapping> = None;
    loop {
        let offset = all.as_ref().map_or(0, |m| m.partitions.len() as u32);
        let page = client
            .get_offset_mapping(PlanRef {
                plan_id: plan_id.to_string(),
                task_offset: offset,
                task_limit: 0,
            })
            .await
            .map_err(rpc_error)?
            .into_inner();
        let got = page.partitions.len();
        let total = page.tasks_total as usize;
        match all.as_mut() {
            None => all = Some(page),
            Some(m) => {
                m.partitions.extend(page.partitions);
                m.groups.extend(page.groups);
            }
        }
        let have = all.as_ref().map_or(0, |m| m.partitions.len());
        if got == 0 || have >= total {
            return all.context("the coordinator sent no offset mapping");
        }
    }
}

/// Writes the offset report of a finished (or stopped) plan.
pub async fn write_report(client: &mut PlansClient, plan_id: &str, path: &Path) -> Result<()> {
    let m = fetch_mapping(client, plan_id).await?;
    let text = serde_json::to_string_pretty(&mapping_json(&m))?;
    std::fs::write(path, text)
        .with_context(|| format!("cannot write offset report {}", path.display()))
}

pub async fn show_offset_mapping(a: OffsetMappingArgs) -> Result<ExitCode> {
    let (mut client, local) = match &a.coordinator {
        Some(url) => (connect_plans(url, &a.auth.security()).await?, None),
        None => {
            if !a.checkpoint_state.is_dir() {
                bail!("no restore ledger at {}: give --checkpoint-state of the restore, or --coordinator", a.checkpoint_state.display());
            }
            let local = LocalCoordinator::start(
                Ledger::open(&a.checkpoint_state)?,
                CoordinatorSettings::default(),
            )
            .await?;
            (
                connect_plans(&local.url, &ClientSecurity::default()).await?,
                Some(local),
            )
        }
    };
    let result = async {
        let plan_id = resolve_plan(&mut client, &a.plan_id, &a.backup_id).await?;
        fetch_mapping(&mut client, &plan_id).await
    }
    .await;
    if let Some(l) = local {
        l.stop().await;
    }
    let m = result?;
    match a.format {
        Format::Json => print_json(&mapping_json(&m))?,
        Format::Table => print_table(&m),
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct OffsetForTimestampArgs {
    #[arg(long = "bootstrap-servers", visible_alias = "bootstrap-server")]
    pub bootstrap_servers: String,
    #[arg(long)]
    pub topic: String,
    #[arg(long, allow_hyphen_values = true)]
    pub partition: String,
    /// RFC 3339 or epoch milliseconds.
    #[arg(long)]
    pub timestamp: String,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// PRD §8.3: the first offset of a target partition whose timestamp is >= the given one.
pub async fn offset_for_timestamp(a: OffsetForTimestampArgs) -> Result<ExitCode> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let partition = kafka_backup_common::filters::parse_partition("--partition", &a.partition)?;
    let ts = kafka_backup_common::timestamp::parse_timestamp_ms("--timestamp", &a.timestamp)?;
    let consumer: BaseConsumer = kafka_backup_common::kafka::client_config(
        &a.bootstrap_servers,
        &std::collections::BTreeMap::new(),
    )
    .set("group.id", "kafka-backup-offset-lookup")
    .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&a.topic, partition, Offset::Offset(ts))?;
    let found = tokio::task::spawn_blocking(move || {
        consumer.offsets_for_times(tpl, std::time::Duration::from_secs(10))
    })
    .await?
    .with_context(|| {
        format!(
            "cluster {} did not answer the timestamp lookup",
            a.bootstrap_servers
        )
    })?;
    let offset = found
        .elements()
        .first()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => -1,
        })
        .unwrap_or(-1);
    match a.format {
        Format::Json => print_json(
            &json!({"topic": a.topic, "partition": partition, "timestamp": ts, "offset": offset}),
        )?,
        Format::Table if offset < 0 => {
            println!("no record in {}/{partition} at or after {ts}", a.topic)
        }
        Format::Table => println!(
            "offset {offset} in {}/{partition} is the first record at or after {ts}",
            a.topic
        ),
    }
    Ok(ExitCode::SUCCESS)
}
