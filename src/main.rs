//! The `kafka-backup` command line: argument parsing and dispatch only. The work lives in
//! the library crates (common: backup format and backup command; coordinator; worker).

#[macro_use]
mod stdout;

mod cli_auth;
mod cli_backup;
mod cli_offsets;
mod cli_output;
mod cli_plans;
mod cli_restore;
mod cli_verify;
mod progress;
mod reset_output;
mod signals;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "kafka-backup",
    version,
    about = "Backup and distributed restore for Apache Kafka"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Back up topics to object storage (a snapshot up to the current high watermarks).
    Backup(cli_backup::BackupArgs),
    /// List the complete backups at a storage location.
    ListBackups(cli_backup::StorageArgs),
    /// Summarise one backup: topics, partitions, records, time range.
    Describe(cli_backup::BackupRefArgs),
    /// Print one backup's manifest.
    ShowManifest(cli_backup::BackupRefArgs),
    /// Restore a backup (embedded coordinator and workers, or submit to --coordinator).
    Restore(Box<cli_restore::RestoreArgs>),
    /// Validate a restore configuration against the backup and the target; writes nothing.
    ValidateRestore(Box<cli_restore::RestoreArgs>),
    /// Run a long-lived restore coordinator.
    Coordinator(cli_plans::CoordinatorArgs),
    /// Run a stateless restore worker.
    Worker(cli_plans::WorkerArgs),
    /// Show the status of a restore plan on a coordinator.
    RestoreStatus(cli_plans::PlanSelectArgs),
    /// Cancel a restore plan on a coordinator.
    RestoreCancel(cli_plans::PlanSelectArgs),
    /// Resume a cancelled or failed restore plan on a coordinator.
    RestoreResume(cli_plans::PlanSelectArgs),
    /// List the restore plans a coordinator holds.
    ListPlans(cli_plans::ListPlansArgs),
    /// Show the exact source→target offset mapping of a restore and translated group offsets.
    ShowOffsetMapping(cli_offsets::OffsetMappingArgs),
    /// Find the first offset of a partition at or after a timestamp.
    OffsetForTimestamp(cli_offsets::OffsetForTimestampArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let (service, default_filter) = match cli.command {
        // librdkafka's own warnings (config notes, transient disconnects it retries) are
        // noise at the default level; RUST_LOG=librdkafka=warn brings them back.
        Command::Coordinator(_) => ("kafka-backup-coordinator", "info,librdkafka=error"),
        Command::Worker(_) => ("kafka-backup-worker", "info,librdkafka=error"),
        Command::Backup(_) => ("kafka-backup", "info,librdkafka=error"),
        // One lookup whose failure is reported whole in its error: librdkafka's global
        // errors repeat it a hundred times over when the cluster is unreachable.
        Command::OffsetForTimestamp(_) => ("kafka-backup", "warn,librdkafka=off,rdkafka=off"),
        _ => ("kafka-backup", "warn,librdkafka=error"),
    };
    let telemetry = kafka_backup_common::telemetry::init(service, default_filter);
    if !kafka_backup_common::bus_error::explain_bus_errors() && cfg!(target_os = "linux") {
        tracing::warn!("could not install the SIGBUS handler: a segment file truncated during a restore ends it without an explanation");
    }
    let result = match cli.command {
        Command::Backup(a) => cli_backup::backup(a).await,
        Command::ListBackups(a) => cli_backup::list_backups(a).await,
        Command::Describe(a) => cli_backup::describe(a).await,
        Command::ShowManifest(a) => cli_backup::show_manifest(a).await,
        Command::Restore(a) => cli_restore::restore(*a, false).await,
        Command::ValidateRestore(a) => cli_restore::restore(*a, true).await,
        Command::Coordinator(a) => cli_plans::coordinator(a).await,
        Command::Worker(a) => cli_plans::worker(a).await,
        Command::RestoreStatus(a) => cli_plans::status(a).await,
        Command::RestoreCancel(a) => {
            cli_plans::cancel_or_resume(a, cli_plans::PlanAction::Cancel).await
        }
        Command::RestoreResume(a) => {
            cli_plans::cancel_or_resume(a, cli_plans::PlanAction::Resume).await
        }
        Command::ListPlans(a) => cli_plans::list(a).await,
        Command::ShowOffsetMapping(a) => cli_offsets::show_offset_mapping(a).await,
        Command::OffsetForTimestamp(a) => cli_offsets::offset_for_timestamp(a).await,
    };
    telemetry.shutdown();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
