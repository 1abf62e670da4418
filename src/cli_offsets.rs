//! `show-offset-mapping` and the `--offset-report` file: the exact source→target offset
//! mapping of a restore and the backup's consumer-group offsets translated with it.

use crate::cli_auth::ClientAuthArgs;
use crate::cli_output::{print_json, Format};
use anyhow::{Context, Result};
use clap::Args;
use kafka_backup_common::timestamp::format_ms;
use kafka_backup_proto::OffsetMapping;
use kafka_backup_run::{offset_report, Coordinated, Session};
use serde_json::json;
use std::path::PathBuf;
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

fn print_table(m: &OffsetMapping) {
    outln!(
        "Offset mapping of plan {} (backup {})",
        m.plan_id,
        m.backup_id
    );
    outln!(
        "{:<36} {:<36} {:>14} {:>14} {:>10}",
        "SOURCE",
        "TARGET",
        "SOURCE START",
        "TARGET START",
        "LENGTH"
    );
    for p in &m.partitions {
        let (src, dst) = (
            format!("{}/{}", p.source_topic, p.source_partition),
            format!("{}/{}", p.target_topic, p.target_partition),
        );
        if p.runs.is_empty() {
            outln!("{src:<36} {dst:<36} {:>14} {:>14} {:>10}", "-", "-", 0);
        }
        for r in &p.runs {
            outln!(
                "{src:<36} {dst:<36} {:>14} {:>14} {:>10}",
                r.source_start,
                r.target_start,
                r.length
            );
        }
    }
    if !m.groups.is_empty() {
        outln!(
            "\n{:<24} {:<36} {:>12} {:<36} {:>12}",
            "GROUP",
            "SOURCE",
            "COMMITTED",
            "TARGET",
            "TARGET OFF"
        );
        for g in &m.groups {
            outln!(
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

pub async fn show_offset_mapping(a: OffsetMappingArgs) -> Result<ExitCode> {
    let mut session = match &a.coordinator {
        Some(url) => {
            Session::open(
                Coordinated::Remote {
                    url: url.clone(),
                    security: a.auth.security(),
                },
                false,
            )
            .await?
        }
        None => Session::on_ledger(&a.checkpoint_state).await?,
    };
    let result = async {
        let plan_id = session
            .pick_plan(a.plan_id.as_deref(), a.backup_id.as_deref())
            .await?;
        session.mapping(&plan_id).await
    }
    .await;
    session.close().await;
    let m = result?;
    match a.format {
        Format::Json => print_json(&offset_report::to_json(&m))?,
        Format::Table => print_table(&m),
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct OffsetForTimestampArgs {
    /// The cluster; default: restore.target.bootstrap_servers of --config.
    #[arg(long = "bootstrap-servers", visible_alias = "bootstrap-server")]
    pub bootstrap_servers: Option<String>,
    /// A restore YAML file whose restore.target (bootstrap servers and security: SASL, TLS)
    /// says how to reach the cluster, e.g. the one the restore itself ran with.
    #[arg(long)]
    pub config: Option<PathBuf>,
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

/// The first offset of a target partition whose timestamp is at or after the given one.
pub async fn offset_for_timestamp(a: OffsetForTimestampArgs) -> Result<ExitCode> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let partition = kafka_backup_common::filters::parse_partition("--partition", &a.partition)?;
    let ts = kafka_backup_common::timestamp::parse_timestamp_ms("--timestamp", &a.timestamp)?;
    let target = match &a.config {
        Some(path) => {
            kafka_backup_common::config::load(path)?
                .restore
                .unwrap_or_default()
                .target
        }
        None => Default::default(),
    };
    let Some(bootstrap) = a.bootstrap_servers.clone().or_else(|| {
        target
            .bootstrap_servers
            .as_ref()
            .map(|b| b.to_vec().join(","))
    }) else {
        anyhow::bail!("no cluster: give --bootstrap-servers, or --config with restore.target.bootstrap_servers");
    };
    let consumer: BaseConsumer =
        kafka_backup_common::kafka::client_config(&bootstrap, &target.security.to_properties())
            .set("group.id", "kafka-backup-offset-lookup")
            // Records are read to check the broker's answer: nothing is committed for this group.
            .set("enable.auto.commit", "false")
            .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&a.topic, partition, Offset::Offset(ts))?;
    let topic = a.topic.clone();
    let (offset, high) = tokio::task::spawn_blocking(move || -> Result<(i64, i64)> {
        let timeout = std::time::Duration::from_secs(10);
        check_partition_exists(&consumer, &topic, partition, timeout)?;
        let found = consumer
            .offsets_for_times(tpl, timeout)
            .context("the timestamp lookup failed")?;
        let (_, high) = consumer
            .fetch_watermarks(&topic, partition, timeout)
            .context("the end offset lookup failed")?;
        let answered = found
            .elements()
            .first()
            .map(|e| match e.offset() {
                Offset::Offset(o) => o,
                _ => -1,
            })
            .unwrap_or(-1);
        let lookup = TimestampLookup {
            consumer: &consumer,
            topic: &topic,
            partition,
            timeout,
        };
        lookup.checked(ts, answered, high).map(|o| (o, high))
    })
    .await?
    .with_context(|| format!("cluster {bootstrap}"))?;
    let when = format_ms(ts);
    match a.format {
        Format::Json => print_json(
            &json!({"topic": a.topic, "partition": partition, "timestamp": ts, "offset": offset}),
        )?,
        Format::Table if offset < 0 => {
            outln!(
                "no record in {}/{partition} at or after {when} (the partition ends at offset {high})",
                a.topic
            )
        }
        Format::Table => outln!(
            "offset {offset} in {}/{partition} is the first record at or after {when}",
            a.topic
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// A topic or partition that is not there is named as such (librdkafka's lookup of one says
/// "Unknown partition" twice over).
fn check_partition_exists(
    consumer: &rdkafka::consumer::BaseConsumer,
    topic: &str,
    partition: i32,
    timeout: std::time::Duration,
) -> Result<()> {
    use rdkafka::consumer::Consumer;
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .context("the metadata lookup failed; check the address and that the cluster runs")?;
    let found = md.topics().iter().find(|t| t.name() == topic);
    let count = match found {
        Some(t) if t.error().is_none() => t.partitions().len(),
        _ => anyhow::bail!("topic {topic:?} does not exist; check its name"),
    };
    if partition as usize >= count {
        anyhow::bail!(
            "topic {topic:?} has {count} partitions (0..={}): there is no partition {partition}",
            count.saturating_sub(1)
        );
    }
    Ok(())
}

/// One partition's timestamp lookup, checked against its records.
struct TimestampLookup<'a> {
    consumer: &'a rdkafka::consumer::BaseConsumer,
    topic: &'a str,
    partition: i32,
    timeout: std::time::Duration,
}

impl TimestampLookup<'_> {
    /// The broker's answer, checked: Kafka answers -1 when no record is at or after `ts`,
    /// but some brokers (tansu 0.6) answer 0 for an empty partition or a timestamp after the
    /// last record, which would send a consumer back to the start. An offset at or past the
    /// end holds no record; a record found before `ts` is a wrong answer, read as "none"
    /// when the last record is before `ts` too, and refused otherwise.
    fn checked(&self, ts: i64, answered: i64, high: i64) -> Result<i64> {
        if answered < 0 || answered >= high {
            return Ok(-1);
        }
        let at = self.timestamp_at(answered)?;
        if at >= ts {
            return Ok(answered);
        }
        if self.timestamp_at(high - 1)? < ts {
            return Ok(-1);
        }
        anyhow::bail!(
            "the broker answered offset {answered} of {}/{}, whose record has timestamp {}, before {}, while a later record is not: its timestamp index disagrees with the records; ask again, or find the offset by consuming",
            self.topic,
            self.partition,
            format_ms(at),
            format_ms(ts)
        )
    }

    /// The timestamp of the first record at or after `offset`.
    fn timestamp_at(&self, offset: i64) -> Result<i64> {
        use rdkafka::consumer::Consumer;
        use rdkafka::Message;
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(self.topic, self.partition, rdkafka::Offset::Offset(offset))?;
        self.consumer.assign(&tpl)?;
        let deadline = std::time::Instant::now() + self.timeout;
        while std::time::Instant::now() < deadline {
            match self.consumer.poll(std::time::Duration::from_millis(200)) {
                Some(Ok(m)) if m.offset() >= offset => {
                    return Ok(m.timestamp().to_millis().unwrap_or(-1));
                }
                Some(Err(e)) => return Err(e.into()),
                _ => {}
            }
        }
        anyhow::bail!(
            "no record of {}/{} at offset {offset} arrived within {:?}",
            self.topic,
            self.partition,
            self.timeout
        )
    }
}
