//! Produce stage: writes filtered, remapped records to the target partition with an
//! idempotent producer (acks=all) and tracks, strictly in order, which of them the broker
//! acknowledged and at which target offset. Only acknowledged records ever reach a
//! checkpoint, and their source→target offsets are kept as compact runs for the exact
//! consumer-offset translation.

use kafka_backup_common::kafka::{client_config, drop_in_background};
use kafka_backup_common::segment::RecordRef;
use kafka_backup_proto::OffsetRun;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer, PurgeConfig};
use rdkafka::types::RDKafkaErrorCode;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// Header names added when original offsets are requested, so a consumer (or a later
/// offset reset) can find where a restored record came from.
pub const ORIGINAL_OFFSET_HEADER: &str = "x-original-offset";
pub const ORIGINAL_TIMESTAMP_HEADER: &str = "x-original-timestamp";

/// Most records awaiting acknowledgement before the loop waits for the oldest.
const MAX_IN_FLIGHT: usize = 20_000;

/// Producer batch size; one ProduceRequest carries at most this much of a partition.
pub const BATCH_BYTES: u64 = 1_000_000;

/// Most record bytes handed to librdkafka per partition and not yet acknowledged: one batch.
/// With more queued behind an in-flight request, librdkafka's idempotent producer busy-polls
/// its broker thread until the response arrives (measured on 2 cores: 4 partitions at once
/// cost 4.7 CPU-seconds and 3.5 s for 49 MB; capped at one batch, 0.27 CPU-seconds and 2.0 s,
/// the same as an uncapped single partition), and that spin starves the broker on the same
/// machine. The broker answers a partition's requests one after another anyway.
pub const MAX_IN_FLIGHT_BYTES: u64 = BATCH_BYTES;

/// How long librdkafka waits for a batch to fill.
const LINGER_MS: &str = "5";

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("cannot create producer for {bootstrap}: {source}")]
    Create {
        bootstrap: String,
        #[source]
        source: KafkaError,
    },
    #[error("produce to {topic}/{partition} failed at source offset {source_offset}: {error}; if this is a timeout the target cluster may be overloaded (reduce --workers) or unreachable")]
    Delivery {
        topic: String,
        partition: i32,
        source_offset: i64,
        error: KafkaError,
    },
}

/// Whether a Kafka error means the cluster could not be reached or could not take writes
/// for now (an outage the plan's circuit breaker paces) rather than something about these
/// records or this configuration (too large, not authorised, unknown topic), which must use
/// up the task's attempts and eventually fail it instead of retrying forever.
pub fn is_transient_kafka_error(e: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::MessageTimedOut
                | C::BrokerTransportFailure
                | C::AllBrokersDown
                | C::NetworkException
                | C::RequestTimedOut
                | C::OperationTimedOut
                | C::LeaderNotAvailable
                | C::NotLeaderForPartition
                | C::NotEnoughReplicas
                | C::NotEnoughReplicasAfterAppend
                | C::BrokerNotAvailable
        )
    )
}

impl ProduceError {
    /// See [`is_transient_kafka_error`].
    pub fn is_outage(&self) -> bool {
        match self {
            ProduceError::Delivery { error, .. } => is_transient_kafka_error(error),
            ProduceError::Create { .. } => false,
        }
    }
}

/// What the broker has acknowledged so far, in source order.
#[derive(Debug, Clone, Default)]
pub struct Acked {
    /// For a merge task, the sum of `source_nexts` (it only grows, as the ledger expects).
    pub source_next: i64,
    pub target_next: i64,
    pub records: u64,
    pub bytes: u64,
    /// Runs not yet reported to the coordinator.
    pub runs: Vec<OffsetRun>,
    /// Segments skipped (skip_corrupt_segments) not yet reported.
    pub skipped: Vec<String>,
    /// A merge task's next offset per source (empty for a 1:1 task).
    pub source_nexts: Vec<i64>,
}

impl Acked {
    /// Source record `source` (of a 1:1 task) is at target offset `target`.
    pub fn record(&mut self, source: i64, target: i64, bytes: u64) {
        self.record_from(0, source, target, bytes);
    }

    /// Source record `source` of merge source `index` (0 for a 1:1 task) is at `target`.
    pub fn record_from(&mut self, index: u32, source: i64, target: i64, bytes: u64) {
        crate::metrics::METRICS.records_produced.inc();
        crate::metrics::METRICS.bytes_produced.add(bytes);
        match self.source_nexts.get_mut(index as usize) {
            Some(next) => {
                *next = source + 1;
                self.source_next = self.source_nexts.iter().sum();
            }
            None => self.source_next = source + 1,
        }
        self.target_next = target + 1;
        self.records += 1;
        self.bytes += bytes;
        if let Some(last) = self.runs.last_mut() {
            let len = last.length as i64;
            if last.source_index == index
                && last.source_start + len == source
                && last.target_start + len == target
            {
                last.length += 1;
                return;
            }
        }
        self.runs.push(OffsetRun {
            source_start: source,
            target_start: target,
            length: 1,
            source_index: index,
        });
    }
}

/// Producer settings: idempotent, acks=all, bounded message lifetime (see `lease.rs`).
pub fn create_producer(
    bootstrap: &str,
    properties: &BTreeMap<String, String>,
    message_timeout: Duration,
) -> Result<FutureProducer, ProduceError> {
    let timeout_ms = message_timeout.as_millis().max(1000).to_string();
    client_config(bootstrap, properties)
        .set("enable.idempotence", "true")
        // A failed batch stops the producer (fatal error) instead of bumping the epoch and
        // carrying on: the task fails, and its next holder resumes from the checkpoint and
        // reconciles. Order is never broken by a gap, and brokers that mishandle epoch bumps
        // (tansu) are never sent one.
        .set("enable.gapless.guarantee", "true")
        // Connect to the brokers named in the first metadata answer right away: the producer
        // id is then requested on the next metadata answer (~30 ms) instead of by librdkafka's
        // 500 ms retry timer.
        .set("enable.sparse.connections", "false")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "5")
        .set("linger.ms", LINGER_MS)
        // Let the broker's own limit decide; the backup holds whatever the source accepted.
        .set("message.max.bytes", "16777216")
        .set("batch.size", BATCH_BYTES.to_string())
        .set("queue.buffering.max.messages", "100000")
        .set("queue.buffering.max.kbytes", "65536")
        .set("message.timeout.ms", &timeout_ms)
        .set("request.timeout.ms", &timeout_ms)
        .create()
        .map_err(|source| ProduceError::Create {
            bootstrap: bootstrap.to_string(),
            source,
        })
}

/// What must match for a producer to be reused by another task: the same plan (so a target
/// topic cannot have been recreated under it), the same cluster and client settings, and the
/// same message lifetime (which is derived from the lease TTL, see `lease.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerKey {
    pub plan_id: String,
    pub bootstrap: String,
    pub properties: BTreeMap<String, String>,
    pub message_timeout: Duration,
}

/// A worker's idle producer, kept from one finished task to the next of the same plan.
///
/// librdkafka asks for an idempotent producer id only on its PID timer, about 500 ms after
/// the client is created; with a fresh producer per task that wait was a third of a typical
/// partition task. A producer is only kept when the task that used it finished cleanly
/// (everything acknowledged, nothing in flight, no fatal error), so the next task starts on
/// an idle client whose per-partition sequence state the broker agrees with; after any
/// failure it is dropped and the next task creates a new one.
#[derive(Default)]
pub struct ProducerCache {
    idle: Option<(ProducerKey, FutureProducer)>,
}

impl ProducerCache {
    /// The idle producer when it was made for `key` (`true`: reused), otherwise a new one.
    pub fn take_or_create(
        &mut self,
        key: &ProducerKey,
    ) -> Result<(FutureProducer, bool), ProduceError> {
        match self.idle.take() {
            Some((k, producer)) if &k == key => {
                crate::metrics::METRICS.producers_reused.inc();
                Ok((producer, true))
            }
            other => {
                if let Some(unwanted) = other {
                    drop_in_background(unwanted);
                }
                create_producer(&key.bootstrap, &key.properties, key.message_timeout)
                    .map(|p| (p, false))
            }
        }
    }

    /// Keeps `producer` for the next task if it is idle and healthy.
    pub fn keep(&mut self, key: ProducerKey, producer: FutureProducer) {
        let healthy = producer.client().fatal_error().is_none() && producer.in_flight_count() == 0;
        if healthy {
            self.idle = Some((key, producer));
        }
    }
}

impl Drop for ProducerCache {
    /// Lets go of the idle producer on a thread of its own. Dropping a `FutureProducer` joins
    /// its polling thread, which polls in 100 ms waits, before librdkafka's destroy: every
    /// embedded restore ended up to 100 ms late (0.73 / 0.83 / 0.94 s runs of one 196 MB
    /// restore, steps of ~0.1 s), and a worker's lease loop waited as long when it ended.
    /// The idle producer has nothing in flight (see [`ProducerCache::keep`]), so nothing
    /// waits on its destroy.
    fn drop(&mut self) {
        if let Some(idle) = self.idle.take() {
            drop_in_background(idle);
        }
    }
}

/// Prompts a new idempotent producer to ask for its producer id now. librdkafka asks when a
/// metadata answer arrives while a broker connection is up, and otherwise only on a 500 ms
/// timer; a record queued before the id arrives makes its broker thread busy-poll. Called
/// once the end-offset query has brought the leader connection up, one topic metadata
/// request is enough. Errors are left to the first send, which reports them properly.
pub async fn request_producer_id(producer: &FutureProducer, topic: &str) {
    let (producer, topic) = (producer.clone(), topic.to_string());
    let _ = tokio::task::spawn_blocking(move || {
        producer
            .client()
            .fetch_metadata(Some(&topic), Duration::from_secs(5))
            .map(|_| ())
    })
    .await;
}

/// One target partition's in-order produce pipeline.
pub struct PartitionProducer {
    producer: FutureProducer,
    topic: String,
    partition: i32,
    add_offset_headers: bool,
    /// (merge source index, source offset, bytes, delivery) in send order.
    in_flight: VecDeque<(u32, i64, u64, DeliveryFuture)>,
    in_flight_bytes: u64,
    pub acked: Acked,
}

impl PartitionProducer {
    pub fn new(
        producer: FutureProducer,
        topic: &str,
        partition: i32,
        add_offset_headers: bool,
        acked: Acked,
    ) -> Self {
        Self {
            producer,
            topic: topic.to_string(),
            partition,
            add_offset_headers,
            in_flight: VecDeque::new(),
            in_flight_bytes: 0,
            acked,
        }
    }

    /// The headers a record is produced with (shared with reconciliation, which must
    /// recognise exactly what this producer wrote).
    pub fn headers_for(rec: &RecordRef<'_>, add_offset_headers: bool) -> Option<OwnedHeaders> {
        if rec.headers.is_empty() && !add_offset_headers {
            return None;
        }
        let mut h = OwnedHeaders::new_with_capacity(rec.headers.len() + 2);
        for (key, value) in &rec.headers {
            h = h.insert(Header { key, value: *value });
        }
        if add_offset_headers {
            let off = rec.offset.to_string();
            let ts = rec.timestamp.to_string();
            h = h.insert(Header {
                key: ORIGINAL_OFFSET_HEADER,
                value: Some(off.as_bytes()),
            });
            h = h.insert(Header {
                key: ORIGINAL_TIMESTAMP_HEADER,
                value: Some(ts.as_bytes()),
            });
        }
        Some(h)
    }

    /// Hands one record to the producer, waiting for acknowledgements when the queue is full.
    pub async fn send(&mut self, rec: &RecordRef<'_>) -> Result<(), ProduceError> {
        self.send_from(0, rec).await
    }

    /// `send` for a record of merge source `index`.
    pub async fn send_from(&mut self, index: u32, rec: &RecordRef<'_>) -> Result<(), ProduceError> {
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            self.await_oldest().await?;
        }
        while !self.in_flight.is_empty()
            && self.in_flight_bytes + rec.encoded_len as u64 > MAX_IN_FLIGHT_BYTES
        {
            self.await_oldest().await?;
        }
        let headers = Self::headers_for(rec, self.add_offset_headers);
        loop {
            let mut fr: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&self.topic).partition(self.partition);
            if rec.timestamp >= 0 {
                fr = fr.timestamp(rec.timestamp);
            }
            if let Some(k) = rec.key {
                fr = fr.key(k);
            }
            if let Some(v) = rec.value {
                fr = fr.payload(v);
            }
            if let Some(h) = &headers {
                fr = fr.headers(h.clone());
            }
            match self.producer.send_result(fr) {
                Ok(fut) => {
                    self.in_flight
                        .push_back((index, rec.offset, rec.encoded_len as u64, fut));
                    self.in_flight_bytes += rec.encoded_len as u64;
                    self.collect_ready()?;
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    crate::metrics::METRICS.produce_queue_full_retries.inc();
                    if self.in_flight.is_empty() {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    } else {
                        self.await_oldest().await?;
                    }
                }
                Err((error, _)) => {
                    return Err(self.delivery_error(rec.offset, error));
                }
            }
        }
    }

    fn delivery_error(&self, source_offset: i64, error: KafkaError) -> ProduceError {
        crate::metrics::METRICS.produce_errors.inc();
        ProduceError::Delivery {
            topic: self.topic.clone(),
            partition: self.partition,
            source_offset,
            error,
        }
    }

    fn on_delivery(
        &mut self,
        index: u32,
        source: i64,
        bytes: u64,
        res: Result<
            rdkafka::producer::future_producer::OwnedDeliveryResult,
            futures::channel::oneshot::Canceled,
        >,
    ) -> Result<(), ProduceError> {
        match res {
            Ok(Ok(d)) => {
                self.acked.record_from(index, source, d.offset, bytes);
                Ok(())
            }
            Ok(Err((e, _))) => Err(self.delivery_error(source, e)),
            Err(_) => Err(self.delivery_error(source, KafkaError::Canceled)),
        }
    }

    /// Moves already-acknowledged records (in order) into `acked` without waiting.
    pub fn collect_ready(&mut self) -> Result<(), ProduceError> {
        use futures::FutureExt;
        while let Some((_, _, _, fut)) = self.in_flight.front_mut() {
            let Some(res) = fut.now_or_never() else {
                break;
            };
            if let Some((index, src, bytes, _)) = self.in_flight.pop_front() {
                self.in_flight_bytes -= bytes;
                self.on_delivery(index, src, bytes, res)?;
            }
        }
        Ok(())
    }

    async fn await_oldest(&mut self) -> Result<(), ProduceError> {
        if let Some((index, src, bytes, fut)) = self.in_flight.pop_front() {
            self.in_flight_bytes -= bytes;
            let res = fut.await;
            self.on_delivery(index, src, bytes, res)?;
        }
        Ok(())
    }

    /// Hands the producer back once this partition is done with it (see [`ProducerCache`]).
    pub fn into_producer(self) -> FutureProducer {
        self.producer
    }

    /// Waits until every record handed over is acknowledged.
    pub async fn drain(&mut self) -> Result<(), ProduceError> {
        while !self.in_flight.is_empty() {
            self.await_oldest().await?;
        }
        Ok(())
    }

    /// Stops this producer for good when the lease is lost or the task is fenced: drops every
    /// record not yet handed to the network and waits (bounded by the message timeout) for the
    /// requests already sent to finish, so nothing of ours is still in flight when the next
    /// holder reconciles. In-flight requests are not purged: purging them makes an idempotent
    /// producer bump its epoch, and with nothing left to send that buys nothing.
    pub async fn abandon(&mut self) {
        self.producer.purge(PurgeConfig::default().queue());
        while let Some((_, _, _, fut)) = self.in_flight.pop_front() {
            let _ = fut.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(code: RDKafkaErrorCode) -> ProduceError {
        ProduceError::Delivery {
            topic: "t".into(),
            partition: 0,
            source_offset: 7,
            error: KafkaError::MessageProduction(code),
        }
    }

    #[test]
    fn only_unreachable_clusters_are_outages() {
        for code in [
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::NotLeaderForPartition,
        ] {
            assert!(delivery(code).is_outage(), "{code:?}");
        }
        // These never heal by waiting: they must use up attempts and fail the task.
        for code in [
            RDKafkaErrorCode::MessageSizeTooLarge,
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::UnknownTopicOrPartition,
            RDKafkaErrorCode::InvalidRecord,
            RDKafkaErrorCode::Fatal,
        ] {
            assert!(!delivery(code).is_outage(), "{code:?}");
        }
    }
}
