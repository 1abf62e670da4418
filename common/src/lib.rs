//! Everything the kafka-backup binary, coordinator and workers agree on: the on-disk backup
//! format (segments and manifest, byte-compatible with OSO kafka-backup v1), access to the
//! object store holding backups, configuration files, restore filters and Kafka client
//! settings. Nothing here talks to the restore ledger; that belongs to the coordinator.
pub mod backup;
mod backup_read;
pub mod bus_error;
pub mod compress_probe;
pub mod config;
pub mod decompress;
pub mod filters;
pub mod frames;
pub mod groups;
pub mod index_file;
pub mod json_pull;
pub mod kafka;
pub mod leftovers;
pub mod local_durable;
pub mod local_range;
pub mod manifest;
pub mod manifest_index;
mod manifest_split;
pub mod metrics;
pub mod pieces;
pub mod read_crc;
pub mod restore_options;
pub mod schema_id_options;
pub mod schema_ids;
pub mod schema_registry;
pub mod segment;
pub mod segment_upload;
pub mod storage;
pub mod telemetry;
pub mod timestamp;
pub mod topic_configs;
