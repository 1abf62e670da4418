//! The restore gRPC API shared by the coordinator, the workers and every client.
//! The proto file (`proto/restore.proto`) is the contract and documents each call.
#![allow(clippy::all)]
pub mod restore {
    tonic::include_proto!("kafkabackup.restore.v1");
}
pub use restore::*;

/// The messages of a backup's index file (`proto/manifest_index.proto`), which a restore
/// plans from instead of parsing a large manifest.json.
pub mod manifest_index {
    tonic::include_proto!("kafkabackup.manifest.v1");
}

/// The encoded descriptors of this API, for gRPC server reflection (grpcurl and similar
/// tools list and call the services without the proto file).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/restore_descriptor.bin"));

/// The largest gRPC message either side accepts or sends, set explicitly on the coordinator's
/// services and on every client. No message of this API grows with the number of segments or
/// partitions (see restore.proto), so this is a safety margin, not a working size: the largest
/// messages by design are a lease or segment page (~100 KB at 1,000 segments) and a status page
/// of 1,000 tasks (~200 KB).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Metadata key on a heartbeat refused because the plan was cancelled (FAILED_PRECONDITION,
/// as for a stale lease, so a worker that does not know it stops as it always did). A worker
/// that does know stops the task and hands it back instead of dropping it: the lease is still
/// its own.
pub const PLAN_CANCELLED_METADATA: &str = "kb-plan-cancelled";

/// Segment refs per lease or `GetTaskSegments` page.
pub const SEGMENT_PAGE: usize = 1_000;

/// What this build's workers support (see `TaskLease.required_capabilities`).
pub const WORKER_CAPABILITIES: &[&str] = &[
    CAPABILITY_SEGMENT_PAGES,
    CAPABILITY_SCHEMA_IDS,
    CAPABILITY_PARTITION_MERGE,
];

/// A worker that pages through a task's segment list with `GetTaskSegments`.
pub const CAPABILITY_SEGMENT_PAGES: &str = "segment-pages";

/// The worker rewrites Confluent wire-format schema IDs (`TaskLease.schema_ids`); a worker
/// without it would produce the source environment's IDs unchanged.
pub const CAPABILITY_SCHEMA_IDS: &str = "schema-id-remap";

/// The worker merges several source partitions into one target partition
/// (`TaskLease.merge_sources`); a worker without it would restore only the first source.
pub const CAPABILITY_PARTITION_MERGE: &str = "partition-merge";
