//! The restore gRPC API shared by the coordinator, the workers and every client.
//! The proto file (`proto/restore.proto`) is the contract and documents each call.
#![allow(clippy::all)]
pub mod restore {
    tonic::include_proto!("kafkabackup.restore.v1");
}
pub use restore::*;
