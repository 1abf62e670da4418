//! What the coordinator needs to know about the target cluster before a plan is accepted:
//! that it answers, which target topics exist with how many partitions, and where each
//! target partition ends now. Topic creation (opt-in) lives here too. Everything is checked
//! before the first write, so a bad restore is refused whole instead of failing half-way.

use crate::planner::PlannedTask;
use kafka_backup_common::kafka::{client_config, drop_in_background, offsets_at};
use kafka_backup_proto::TopicCreation;
use rdkafka::admin::{
    AdminClient, AdminOptions, ConfigResource, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::{Client, DefaultClientContext};
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::KafkaError;
use rdkafka::Offset;
use std::collections::BTreeMap;
use std::time::Duration;
use thiserror::Error;

const TIMEOUT: Duration = Duration::from_secs(10);

/// Target partitions whose end offsets are asked for one at a time (see
/// [`TargetCluster::end_offsets`]).
const ONE_BY_ONE_AT_MOST: usize = 2;

#[derive(Debug, Error)]
pub enum TargetError {
    #[error("target cluster {bootstrap} is unreachable: {source}; check connectivity, --bootstrap-servers/--target-cluster and the security settings, then retry")]
    Unreachable {
        bootstrap: String,
        #[source]
        source: KafkaError,
    },
    #[error("target topics {topics:?} do not exist on {bootstrap}; create them, or pass --create-topics to create them with the source partition count")]
    MissingTopics {
        bootstrap: String,
        topics: Vec<String>,
    },
    #[error("partition count mismatch: target topic {topic:?} has {actual} partitions but the restore writes to partition {needed}; delete and recreate the topic with at least {} partitions, or use --partition-mapping", needed + 1)]
    PartitionCountMismatch {
        topic: String,
        actual: i32,
        needed: i32,
    },
    #[error("target topic {topic:?} would be created with replication factor {replication_factor} ({origin}), but {bootstrap} has {brokers} broker(s); pass --replication-factor {brokers} or fewer")]
    ReplicationFactorTooHigh {
        topic: String,
        replication_factor: i32,
        origin: &'static str,
        bootstrap: String,
        brokers: usize,
    },
    #[error("cannot create target topic {topic:?}: {reason}")]
    CreateFailed { topic: String, reason: String },
}

/// A described resource's configurations that have a value.
fn config_map(resource: &ConfigResource) -> BTreeMap<String, String> {
    resource
        .entries
        .iter()
        .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
        .collect()
}

/// Target topic layout as seen now.
#[derive(Debug, Default, Clone)]
pub struct TargetView {
    /// Topic → partition count, for topics that exist.
    pub partitions: BTreeMap<String, i32>,
    /// Topics the plan needs that do not exist, with the partition count to create.
    pub missing: BTreeMap<String, i32>,
}

pub struct TargetCluster {
    bootstrap: String,
    properties: BTreeMap<String, String>,
    /// One client for every request of a plan (metadata, watermarks, configs described,
    /// topics created): connecting once keeps a dry run of thousands of segments and many
    /// partitions fast, and a second client's threads and connections took CPU from the
    /// manifest read beside them on a 2-core machine.
    admin: std::sync::OnceLock<AdminClient<DefaultClientContext>>,
    /// A broker of the cluster, seen by `topic_partitions` (asked for its default retention).
    broker_id: std::sync::OnceLock<i32>,
    /// How many brokers `topic_partitions` saw: the highest replication factor a created
    /// topic can have.
    broker_count: std::sync::OnceLock<usize>,
}

impl Drop for TargetCluster {
    /// Destroys the client on its own thread: librdkafka's destroy joins its threads, which
    /// held the answer to a dry run back by tens of milliseconds when done in the handler.
    fn drop(&mut self) {
        if let Some(admin) = self.admin.take() {
            drop_in_background(admin);
        }
    }
}

impl TargetCluster {
    pub fn new(bootstrap: &str, properties: &BTreeMap<String, String>) -> Self {
        Self {
            bootstrap: bootstrap.to_string(),
            properties: properties.clone(),
            admin: std::sync::OnceLock::new(),
            broker_id: std::sync::OnceLock::new(),
            broker_count: std::sync::OnceLock::new(),
        }
    }

    fn unreachable(&self) -> impl Fn(KafkaError) -> TargetError + '_ {
        |source| TargetError::Unreachable {
            bootstrap: self.bootstrap.clone(),
            source,
        }
    }

    /// The client metadata and watermarks are asked through: the admin client's own.
    fn client(&self) -> Result<&Client<DefaultClientContext>, TargetError> {
        Ok(self.admin()?.inner())
    }

    /// Reads the cluster's topic layout (topic → partition count). Needs only the spec, so
    /// the coordinator starts it while it reads and plans the manifest.
    pub fn topic_partitions(&self) -> Result<BTreeMap<String, i32>, TargetError> {
        let md = self
            .client()?
            .fetch_metadata(None, TIMEOUT)
            .map_err(self.unreachable())?;
        if let Some(b) = md.brokers().first() {
            let _ = self.broker_id.set(b.id());
        }
        let _ = self.broker_count.set(md.brokers().len());
        if md.brokers().is_empty() {
            return Err(TargetError::Unreachable {
                bootstrap: self.bootstrap.clone(),
                source: KafkaError::MetadataFetch(
                    rdkafka::types::RDKafkaErrorCode::BrokerTransportFailure,
                ),
            });
        }
        Ok(md
            .topics()
            .iter()
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
            .map(|t| (t.name().to_string(), t.partitions().len() as i32))
            .collect())
    }

    /// Checks every task's target against the cluster's topic layout.
    pub fn check(
        tasks: &[PlannedTask],
        existing: &BTreeMap<String, i32>,
    ) -> Result<TargetView, TargetError> {
        let mut view = TargetView::default();
        // A topic partitions are merged into is created with as many partitions as the
        // mapping fills (consolidating 64 partitions into 12 makes 12), not the source's count.
        let merged_into: std::collections::BTreeSet<&str> = tasks
            .iter()
            .filter(|t| !t.merged.is_empty())
            .map(|t| t.target_topic.as_str())
            .collect();
        for task in tasks {
            let needed = task.target_partition;
            match existing.get(&task.target_topic) {
                Some(actual) => {
                    if needed >= *actual {
                        // Named with the highest partition the restore writes to this
                        // topic: "at least N" must be enough to fix it in one go.
                        let highest = tasks
                            .iter()
                            .filter(|t| t.target_topic == task.target_topic)
                            .map(|t| t.target_partition)
                            .max()
                            .unwrap_or(needed);
                        return Err(TargetError::PartitionCountMismatch {
                            topic: task.target_topic.clone(),
                            actual: *actual,
                            needed: highest,
                        });
                    }
                    view.partitions.insert(task.target_topic.clone(), *actual);
                }
                None => {
                    let base = if merged_into.contains(task.target_topic.as_str()) {
                        0
                    } else {
                        task.source_partition_count
                    };
                    let count = view.missing.entry(task.target_topic.clone()).or_insert(0);
                    *count = (*count).max(base).max(needed + 1);
                }
            }
        }
        Ok(view)
    }

    /// Refuses a topic to create with more replicas than the cluster has brokers (Kafka
    /// would refuse the creation; a dry run says so before). `explicit`: the factor came
    /// from --replication-factor rather than from the backup's record of the source topic.
    pub fn check_replication(
        &self,
        creations: &[TopicCreation],
        explicit: bool,
    ) -> Result<(), TargetError> {
        let Some(&brokers) = self.broker_count.get() else {
            return Ok(());
        };
        match creations
            .iter()
            .find(|c| c.replication_factor > 0 && c.replication_factor as usize > brokers)
        {
            Some(c) => Err(TargetError::ReplicationFactorTooHigh {
                topic: c.topic.clone(),
                replication_factor: c.replication_factor,
                origin: if explicit {
                    "--replication-factor"
                } else {
                    "the source topic's, recorded in the backup"
                },
                bootstrap: self.bootstrap.clone(),
                brokers,
            }),
            None => Ok(()),
        }
    }

    /// The current end offset (high watermark) of a target partition.
    pub fn end_offset(&self, topic: &str, partition: i32) -> Result<i64, TargetError> {
        self.client()?
            .fetch_watermarks(topic, partition, TIMEOUT)
            .map(|(_, high)| high)
            .map_err(self.unreachable())
    }

    /// Where each of `partitions` ends now (high watermark), in order, asked for all at once
    /// (`kafka::offsets_at`). The admin client cannot send that request (rdkafka exposes
    /// the offsets lookup on consumers only), so a consumer without a group is created for
    /// it, only when some target partition exists. A dry run of 500 partitions into existing
    /// topics took ~0.5 s on loopback asked one partition at a time, and no less asked 16
    /// at a time (the broker answers a connection's requests in turn).
    ///
    /// Up to [`ONE_BY_ONE_AT_MOST`] partitions are still asked one at a time on the admin
    /// client's open connection: creating the consumer, connecting it and looking up the
    /// leaders cost a dry run of one partition ~4 ms on loopback (17-19 -> 22 ms), and
    /// about as many round trips to a remote cluster as two or three watermark queries.
    pub fn end_offsets(&self, partitions: &[(String, i32)]) -> Result<Vec<i64>, TargetError> {
        if partitions.len() <= ONE_BY_ONE_AT_MOST {
            return partitions
                .iter()
                .map(|(topic, p)| self.end_offset(topic, *p))
                .collect();
        }
        let consumer: BaseConsumer = client_config(&self.bootstrap, &self.properties)
            .create()
            .map_err(self.unreachable())?;
        let answered = offsets_at(&consumer, partitions, Offset::End, TIMEOUT);
        drop_in_background(consumer);
        answered
            .map_err(self.unreachable())?
            .into_iter()
            .map(|end| end.map_err(self.unreachable()))
            .collect()
    }

    /// The admin client, created on first use. No group.id: nothing here needs a consumer
    /// group, and a group member's close handshake cost a dry run 30-100 ms. Connections are
    /// opened at creation instead of on first use: with librdkafka's sparse connections the
    /// first metadata request of a new client waited ~50 ms for its bootstrap connection in
    /// about half the runs. Destroyed off the request path (see `Drop`).
    fn admin(&self) -> Result<&AdminClient<DefaultClientContext>, TargetError> {
        if let Some(a) = self.admin.get() {
            return Ok(a);
        }
        let created: AdminClient<DefaultClientContext> =
            client_config(&self.bootstrap, &self.properties)
                .set("enable.sparse.connections", "false")
                .create()
                .map_err(self.unreachable())?;
        Ok(self.admin.get_or_init(|| created))
    }

    /// Every configuration the cluster reports for each of `topics` (as the broker gives
    /// them: effective values on Kafka, only the ones set on some other brokers). A topic it
    /// cannot describe is left out.
    pub async fn topic_configs(
        &self,
        topics: &[String],
    ) -> Result<BTreeMap<String, BTreeMap<String, String>>, TargetError> {
        if topics.is_empty() {
            return Ok(BTreeMap::new());
        }
        let admin = self.admin()?;
        let specs: Vec<ResourceSpecifier<'_>> = topics
            .iter()
            .map(|t| ResourceSpecifier::Topic(t.as_str()))
            .collect();
        let results = admin
            .describe_configs(
                specs.iter(),
                &AdminOptions::new().request_timeout(Some(TIMEOUT)),
            )
            .await
            .map_err(self.unreachable())?;
        Ok(topics
            .iter()
            .zip(results)
            .filter_map(|(t, r)| Some((t.clone(), config_map(&r.ok()?))))
            .collect())
    }

    /// The configuration a broker of the cluster reports (for its `log.retention.*`);
    /// `None` when it cannot be described or `topic_partitions` has not seen a broker (no
    /// metadata request here: this runs on the async threads).
    pub async fn broker_configs(&self) -> Option<BTreeMap<String, String>> {
        let broker = *self.broker_id.get()?;
        let admin = self.admin().ok()?;
        let spec = ResourceSpecifier::Broker(broker);
        let results = admin
            .describe_configs([&spec], &AdminOptions::new().request_timeout(Some(TIMEOUT)))
            .await
            .ok()?;
        let resource = results.into_iter().next()?.ok()?;
        Some(config_map(&resource))
    }

    /// Creates the missing topics and waits until their metadata is visible.
    pub async fn create_topics(&self, creations: &[TopicCreation]) -> Result<(), TargetError> {
        if creations.is_empty() {
            return Ok(());
        }
        let missing: BTreeMap<String, i32> = creations
            .iter()
            .map(|c| (c.topic.clone(), c.partitions))
            .collect();
        let admin = self.admin()?;
        let new: Vec<NewTopic> = creations
            .iter()
            .map(|c| {
                c.configs.iter().fold(
                    NewTopic::new(
                        &c.topic,
                        c.partitions,
                        TopicReplication::Fixed(c.replication_factor),
                    ),
                    |t, (k, v)| t.set(k, v),
                )
            })
            .collect();
        let results = admin
            .create_topics(&new, &AdminOptions::new().operation_timeout(Some(TIMEOUT)))
            .await
            .map_err(self.unreachable())?;
        for r in results {
            if let Err((topic, code)) = r {
                if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                    return Err(TargetError::CreateFailed {
                        topic,
                        reason: code.to_string(),
                    });
                }
            }
        }
        // Wait for the new topics to show up with all partitions.
        for _ in 0..50 {
            let md = self
                .client()?
                .fetch_metadata(None, TIMEOUT)
                .map_err(self.unreachable())?;
            let ready = missing.iter().all(|(t, n)| {
                md.topics()
                    .iter()
                    .any(|m| m.name() == t && m.partitions().len() as i32 >= *n)
            });
            if ready {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(TargetError::CreateFailed {
            topic: missing.keys().cloned().collect::<Vec<_>>().join(","),
            reason: "the topics did not appear in metadata within 10s".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(target_partition: i32) -> PlannedTask {
        PlannedTask {
            source_topic: "orders".into(),
            source_partition: target_partition,
            target_topic: "orders".into(),
            target_partition,
            segments: Vec::new(),
            source_partition_count: 4,
            merged: Vec::new(),
        }
    }

    #[test]
    fn a_too_small_topic_is_named_with_the_partition_count_that_fits_every_task() {
        let tasks: Vec<_> = (0..4).map(task).collect();
        let existing = BTreeMap::from([("orders".to_string(), 2)]);
        let err = TargetCluster::check(&tasks, &existing).expect_err("2 partitions < 4");
        assert!(
            err.to_string().contains("with at least 4 partitions"),
            "{err}"
        );
        let fits = BTreeMap::from([("orders".to_string(), 4)]);
        assert!(TargetCluster::check(&tasks, &fits).is_ok());
    }
}
