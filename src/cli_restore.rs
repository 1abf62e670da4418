//! `restore` and `validate-restore`: the flags, handed to the library that resolves them
//! with the YAML file (`kafka_backup_common::restore_options`) and to the one that runs the
//! restore (`kafka_backup_run`); this module only maps arguments and prints.

use crate::cli_output::{
    print_json, print_report, print_status, report_json, status_json, Format, Window,
};
use crate::reset_output::{print_resets, resets_json};
use anyhow::Result;
use clap::Args;
use kafka_backup_common::config;
use kafka_backup_common::restore_options::{
    parse_duration, resolve, ResolvedRestore, RestoreFlags,
};
use kafka_backup_common::schema_id_options::SchemaIdFlags;
use kafka_backup_coordinator::ledger::PlanState;
use kafka_backup_run::{plan_state, Coordinated, Session};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Args, Clone)]
pub struct RestoreArgs {
    /// YAML config file (see examples/restore.yaml); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub backup_id: Option<String>,
    /// Backup location: a path, file://, s3://bucket/prefix, gs://, az://.
    #[arg(long, env = "KAFKA_BACKUP_STORAGE")]
    pub storage: Option<String>,
    /// Source topic names or regexes, comma separated (repeatable).
    #[arg(long = "source-topics", visible_alias = "source-topic")]
    pub source_topics: Vec<String>,
    /// Target topic names, one per source topic, comma separated (repeatable).
    #[arg(long = "target-topics", visible_alias = "target-topic")]
    pub target_topics: Vec<String>,
    /// sed-style rewrite of target topic names, e.g. 's/^/prod-/'.
    #[arg(long)]
    pub target_topics_rewrite: Option<String>,
    /// Target cluster bootstrap servers.
    #[arg(long = "bootstrap-servers", visible_alias = "target-cluster")]
    pub bootstrap_servers: Option<String>,
    /// Source partitions to restore, e.g. "0,1,2".
    #[arg(long, allow_hyphen_values = true)]
    pub source_partitions: Option<String>,
    /// Partition mapping "src:dst,...", e.g. "0:0,1:2".
    #[arg(long, allow_hyphen_values = true)]
    pub partition_mapping: Option<String>,
    /// Inclusive start of the time window (RFC 3339 or epoch ms).
    #[arg(long, allow_hyphen_values = true, visible_alias = "from-ts")]
    pub from_timestamp: Option<String>,
    /// Inclusive end of the time window (RFC 3339 or epoch ms).
    #[arg(long, allow_hyphen_values = true, visible_alias = "to-ts")]
    pub to_timestamp: Option<String>,
    /// Validate and report; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Directory of the restore ledger (embedded mode); rerunning with the same directory resumes.
    /// Not with --coordinator: a coordinator keeps its ledger in its own --state-dir.
    #[arg(long, visible_alias = "state-dir")]
    pub checkpoint_state: Option<PathBuf>,
    /// How often workers checkpoint, e.g. "5s", "500ms", "1m".
    #[arg(long)]
    pub checkpoint_interval: Option<String>,
    /// Show live progress.
    #[arg(long)]
    pub progress: bool,
    /// In-process workers in embedded mode (default: max_concurrent_partitions, else 4).
    #[arg(long, allow_hyphen_values = true)]
    pub workers: Option<u32>,
    /// Create missing target topics with the source partition count.
    #[arg(long)]
    pub create_topics: bool,
    /// Consumer offset strategy: skip (default), header-based or cluster-scan (both add
    /// x-original-offset / x-original-timestamp headers), timestamp-based, or manual (only
    /// writes --offset-report). The non-skip ones also pick the default --offset-strategy.
    #[arg(long)]
    pub consumer_group_strategy: Option<String>,
    /// Consent to write the committed offsets of the --consumer-group groups on the target
    /// once the restore completes. Without it no group offset is ever written.
    #[arg(long)]
    pub reset_consumer_offsets: bool,
    /// A consumer group whose offsets --reset-consumer-offsets translates and writes
    /// (repeatable, comma separated). Groups not named are never touched.
    #[arg(long = "consumer-group", visible_alias = "consumer-groups")]
    pub consumer_groups: Vec<String>,
    /// How reset offsets are found: exact (default; from the delivery reports), header-based,
    /// cluster-scan or timestamp-based.
    #[arg(long)]
    pub offset_strategy: Option<String>,
    /// Add x-original-offset / x-original-timestamp headers to restored records.
    #[arg(long)]
    pub add_original_offset_headers: bool,
    /// Write the offset mapping and translated consumer-group offsets (JSON) here when the
    /// restore ends.
    #[arg(long)]
    pub offset_report: Option<PathBuf>,
    /// Submit to a running coordinator instead of running embedded.
    #[arg(long)]
    pub coordinator: Option<String>,
    /// With --coordinator: submit and return without following progress (an embedded
    /// restore runs in this process, so it cannot be detached from).
    #[arg(long)]
    pub detach: bool,
    /// Start a new run even if the same restore already completed.
    #[arg(long)]
    pub new_run: bool,
    /// Skip missing or corrupt segments instead of failing their partition; every skipped
    /// object is listed in the status and the offset report. Skipping loses those records.
    #[arg(long)]
    pub skip_corrupt_segments: bool,
    /// Before anything is written, read back every segment the plan needs (CRC32, every
    /// frame decompressed, every record walked) and refuse if any is missing or damaged; with
    /// --dry-run or validate-restore, a check of the backup that writes nothing.
    #[arg(long)]
    pub verify_segments: bool,
    /// Throttle each partition task to this many records per second (0 = unlimited).
    #[arg(long, allow_hyphen_values = true)]
    pub max_records_per_sec: Option<u32>,
    /// Schema ID remapping for environment cloning: a JSON or YAML map of source registry
    /// ID to target registry ID, applied to records in the Confluent wire format.
    #[arg(long)]
    pub schema_id_mapping: Option<PathBuf>,
    /// The source environment's schema registry (http(s)://[user:password@]host:port): IDs
    /// not in --schema-id-mapping are resolved by registering their schema, under the same
    /// subject, in --target-schema-registry.
    #[arg(long)]
    pub source_schema_registry: Option<String>,
    /// The target environment's schema registry (with --source-schema-registry).
    #[arg(long)]
    pub target_schema_registry: Option<String>,
    /// Which parts carry schema IDs to rewrite: key, value or both (default).
    #[arg(long)]
    pub schema_id_apply_to: Option<String>,
    /// A schema ID with no target: fail (default; names the ID and the source offset) or
    /// pass (produce the record unchanged and count it).
    #[arg(long)]
    pub schema_id_missing: Option<String>,
    /// A configuration of the topics --create-topics creates, KEY=VALUE (repeatable), over
    /// the one the backup recorded for the source topic, e.g. retention.ms=-1.
    #[arg(long = "topic-config", allow_hyphen_values = true)]
    pub topic_configs: Vec<String>,
    /// Replication factor of created topics (default: the source topic's, as recorded in the
    /// backup; else the target broker's default).
    #[arg(long, allow_hyphen_values = true)]
    pub replication_factor: Option<i32>,
    /// Restore even where the target topic's retention.ms would make the broker delete
    /// restored records (older than the retention) soon after they are written.
    #[arg(long)]
    pub allow_retention_deletes: bool,
    #[command(flatten)]
    pub auth: crate::cli_auth::ClientAuthArgs,
    /// Lease TTL of the embedded coordinator, e.g. "10s".
    #[arg(long, hide = true)]
    pub lease_ttl: Option<String>,
}

impl RestoreArgs {
    fn flags(&self) -> RestoreFlags {
        RestoreFlags {
            backup_id: self.backup_id.clone(),
            storage: self.storage.clone(),
            source_topics: self.source_topics.clone(),
            target_topics: self.target_topics.clone(),
            target_topics_rewrite: self.target_topics_rewrite.clone(),
            bootstrap_servers: self.bootstrap_servers.clone(),
            source_partitions: self.source_partitions.clone(),
            partition_mapping: self.partition_mapping.clone(),
            from_timestamp: self.from_timestamp.clone(),
            to_timestamp: self.to_timestamp.clone(),
            dry_run: self.dry_run,
            checkpoint_state: self.checkpoint_state.clone(),
            checkpoint_interval: self.checkpoint_interval.clone(),
            workers: self.workers,
            create_topics: self.create_topics,
            consumer_group_strategy: self.consumer_group_strategy.clone(),
            reset_consumer_offsets: self.reset_consumer_offsets,
            consumer_groups: self.consumer_groups.clone(),
            offset_strategy: self.offset_strategy.clone(),
            add_original_offset_headers: self.add_original_offset_headers,
            offset_report: self.offset_report.clone(),
            detach: self.detach,
            skip_corrupt_segments: self.skip_corrupt_segments,
            max_records_per_sec: self.max_records_per_sec,
            schema_ids: SchemaIdFlags {
                mapping_file: self.schema_id_mapping.clone(),
                source_registry: self.source_schema_registry.clone(),
                target_registry: self.target_schema_registry.clone(),
                apply_to: self.schema_id_apply_to.clone(),
                missing: self.schema_id_missing.clone(),
            },
            topic_configs: self.topic_configs.clone(),
            replication_factor: self.replication_factor,
            allow_retention_deletes: self.allow_retention_deletes,
        }
    }
}

/// The exit code for how a plan ended: 0 completed, 3 cancelled, 1 otherwise.
pub fn exit_code(state: Option<PlanState>) -> ExitCode {
    match state {
        Some(PlanState::Completed) => ExitCode::SUCCESS,
        Some(PlanState::Cancelled) => ExitCode::from(3),
        _ => ExitCode::from(1),
    }
}

pub async fn restore(mut a: RestoreArgs, validate_only: bool) -> Result<ExitCode> {
    if validate_only {
        a.dry_run = true;
    }
    check_mode_flags(&a)?;
    if validate_only && (a.detach || a.new_run) {
        anyhow::bail!("validate-restore writes nothing and starts no plan: --detach and --new-run apply to restore; leave them out");
    }
    let file = match &a.config {
        Some(p) => config::load(p)?,
        None => Default::default(),
    };
    let mut r = resolve(&a.flags(), file)?;
    if a.coordinator.is_some() {
        r.spec.storage_url = absolute_storage_path(&r.spec.storage_url)?;
    }
    let lease_ttl = a
        .lease_ttl
        .as_deref()
        .map(|s| parse_duration("--lease-ttl", s))
        .transpose()?;
    let remote = a.coordinator.clone().map(|url| (url, a.auth.security()));
    if let Some(req) = &r.reset {
        kafka_backup_coordinator::offset_reset::preflight(&r.spec, req).await?;
    }
    // A first embedded run is checked against the backup and the target before its ledger
    // directory is made: a refused restore leaves nothing behind to mistake for a plan. So is
    // one that reads its segments back first, before the (long) read.
    let first_run = !r.dry_run && !r.state_dir.exists();
    if remote.is_none() && (first_run || a.verify_segments) {
        kafka_backup_coordinator::plan_service::dry_run_report(&r.spec)
            .await
            .map_err(kafka_backup_run::rpc)?;
    }
    if a.verify_segments {
        crate::cli_verify::verify_before_writing(&r.spec).await?;
    }
    let mut session =
        Session::open(Coordinated::for_restore(&r, remote, lease_ttl), r.dry_run).await?;
    let result = run(&mut session, &r, &a).await;
    session.close().await;
    result
}

/// On Ctrl-C, says what became of the restore before the process ends (exit 130, as a shell
/// reports SIGINT). Ending at once is safe: the ledger holds only durable checkpoints, and an
/// embedded restore killed at any point resumes from them, as after `kill -9`.
async fn explain_interrupt(plan_id: String, coordinator: Option<String>, state_dir: PathBuf) {
    if tokio::signal::ctrl_c().await.is_err() {
        return;
    }
    match coordinator {
        Some(url) => eprintln!(
            "\ninterrupted: stopped following plan {plan_id}, which keeps running on the coordinator; follow it with: kafka-backup restore-status --coordinator {url} --plan-id {plan_id} --follow (restore-cancel stops it)"
        ),
        None => eprintln!(
            "\ninterrupted: plan {plan_id} stopped at its last checkpoint (ledger in {}); rerun the same command to resume it, nothing is written twice",
            state_dir.display()
        ),
    }
    std::process::exit(130);
}

/// Flags of one run mode given in the other would be ignored silently: refused instead.
fn check_mode_flags(a: &RestoreArgs) -> Result<()> {
    match (&a.coordinator, &a.checkpoint_state) {
        (None, _) if a.detach => anyhow::bail!(
            "--detach needs --coordinator: an embedded restore runs in this process and ends with it; submit to a coordinator to detach, or leave --detach out"
        ),
        (Some(_), Some(dir)) => anyhow::bail!(
            "--checkpoint-state {} cannot be used with --coordinator: the coordinator keeps the ledger in its own --state-dir; leave --checkpoint-state out",
            dir.display()
        ),
        _ => Ok(()),
    }
}

fn window_of(r: &ResolvedRestore) -> Window {
    Window {
        from_ms: r.spec.from_timestamp_ms,
        to_ms: r.spec.to_timestamp_ms,
    }
}

/// A relative local backup path made absolute from this shell's directory. A plan submitted
/// to a coordinator is opened there and by its workers, whose working directories are
/// theirs: `--storage ./bk` must mean the directory the operator is looking at (on a host the
/// coordinator shares), not a `bk` wherever the coordinator was started.
fn absolute_storage_path(location: &str) -> Result<String> {
    let path = std::path::Path::new(location);
    if location.contains("://") || path.is_absolute() {
        return Ok(location.to_string());
    }
    let cwd = std::env::current_dir()
        .map_err(|e| anyhow::anyhow!("--storage {location:?} is a relative path and the current directory cannot be read ({e}); give an absolute path"))?;
    Ok(cwd.join(path).to_string_lossy().into_owned())
}

async fn run(session: &mut Session, r: &ResolvedRestore, a: &RestoreArgs) -> Result<ExitCode> {
    let resp = session.submit(&r.spec, r.dry_run, a.new_run).await?;
    let report = resp.report.unwrap_or_default();
    if r.dry_run {
        return dry_run(session, r, a, &resp.plan_id, &report).await;
    }
    let plan_id = resp.plan_id;
    if a.format == Format::Table {
        print_report(&report, &window_of(r), false);
        if resp.resumed {
            outln!("Resuming plan {plan_id} from its checkpoints.");
        } else {
            outln!("Plan {plan_id} created.");
        }
    }
    if a.detach && !session.is_embedded() {
        if a.format == Format::Json {
            print_json(&serde_json::json!({"plan_id": plan_id, "resumed": resp.resumed}))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    tokio::spawn(explain_interrupt(
        plan_id.clone(),
        a.coordinator.clone(),
        r.state_dir.clone(),
    ));
    session.start_workers(&plan_id);
    let started = Instant::now();
    let mut view = crate::progress::Progress::new(a.progress);
    let last = session
        .follow(&plan_id, |s| view.update(s, started))
        .await?;
    view.finish();
    if let Some(path) = &r.offset_report {
        session.write_offset_report(&plan_id, path).await?;
    }
    let mut out = status_json(&last);
    if a.format == Format::Table {
        print_status(&last);
    }
    let state = plan_state(&last);
    if resp.resumed && state == Some(PlanState::Cancelled) {
        eprintln!(
            "plan {plan_id} was cancelled, and rerunning the restore does not undo a cancel; resume it with: kafka-backup restore-resume --plan-id {plan_id}{}",
            a.coordinator
                .as_deref()
                .map(|c| format!(" --coordinator {c}"))
                .unwrap_or_default()
        );
    }
    let mut code = exit_code(state);
    if let Some(req) = &r.reset {
        if state == Some(PlanState::Completed) {
            let resets = session.reset_offsets(&plan_id, &r.spec, req).await?;
            match a.format {
                Format::Json => {
                    out["consumer_offset_reset"] = resets_json(req.strategy, true, &resets)
                }
                Format::Table => print_resets(req.strategy, true, &resets),
            }
        } else {
            eprintln!(
                "consumer offsets were NOT reset: the restore ended {}; rerun the same restore to finish it, and the reset runs then",
                last.state
            );
            code = ExitCode::from(1);
        }
    }
    if a.format == Format::Json {
        print_json(&out)?;
    }
    Ok(code)
}

async fn dry_run(
    session: &mut Session,
    r: &ResolvedRestore,
    a: &RestoreArgs,
    existing_plan: &str,
    report: &kafka_backup_proto::PlanReport,
) -> Result<ExitCode> {
    let mut out = report_json(report);
    if a.format == Format::Table {
        print_report(report, &window_of(r), true);
        // The report counts the whole selection; a recorded plan of the same restore is
        // resumed, so only what its checkpoints do not cover would be written.
        if !existing_plan.is_empty() {
            outln!("Plan {existing_plan} exists for this restore: running it resumes from its checkpoints (restore-status shows how far it got; --new-run starts over once it has ended).");
        }
    }
    if !existing_plan.is_empty() {
        out["resumes_plan"] = existing_plan.into();
    }
    if let Some(req) = &r.reset {
        let resets = session
            .planned_resets(existing_plan, &r.spec, req, report)
            .await?;
        match a.format {
            Format::Json => {
                out["consumer_offset_reset"] = resets_json(req.strategy, false, &resets)
            }
            Format::Table => print_resets(req.strategy, false, &resets),
        }
    }
    if a.format == Format::Json {
        print_json(&out)?;
    }
    Ok(ExitCode::SUCCESS)
}
