//! Consumer-group operations on a target cluster: whether a group has active members, what it
//! has committed, and committing new offsets. A restore writes group offsets only through
//! [`commit_offsets`], and only after [`describe`] found no active member: resetting a group
//! under running consumers would be silently overwritten by their next commit, or worse, make
//! them skip data.
//!
//! librdkafka's DescribeConsumerGroups admin call is not wrapped by the `rdkafka` crate, so it
//! is called through `rdkafka-sys` here; everything else uses the safe API.

use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use rdkafka_sys as sys;
use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum GroupError {
    #[error("cannot connect to {bootstrap} for consumer-group operations: {reason}")]
    Client { bootstrap: String, reason: String },
    #[error("cannot tell whether consumer group {group:?} on {bootstrap} has active members: {reason}; offsets are only reset when the broker confirms the group is empty")]
    Describe {
        group: String,
        bootstrap: String,
        reason: String,
    },
    #[error("committing offsets of consumer group {group:?} on {bootstrap} failed: {reason}")]
    Commit {
        group: String,
        bootstrap: String,
        reason: String,
    },
    #[error(
        "reading committed offsets of consumer group {group:?} on {bootstrap} failed: {reason}"
    )]
    Committed {
        group: String,
        bootstrap: String,
        reason: String,
    },
}

/// What the group coordinator says about a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group: String,
    /// Broker state name: "Empty", "Dead", "Stable", "PreparingRebalance", ...; "Dead" also
    /// for a group the broker does not know.
    pub state: String,
    pub members: usize,
}

impl GroupDescription {
    /// True when no consumer is a member, so new offsets cannot be overwritten by one. The
    /// state decides as much as the member list: some brokers report a Stable group with
    /// its members left out.
    pub fn is_inactive(&self) -> bool {
        self.members == 0 && matches!(self.state.as_str(), "Empty" | "Dead")
    }
}

/// Frees a librdkafka object when dropped, so every early return cleans up.
struct Owned<T>(*mut T, unsafe extern "C" fn(*mut T));

impl<T> Drop for Owned<T> {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the pointer came from the matching librdkafka constructor and is
            // dropped exactly once.
            unsafe { (self.1)(self.0) }
        }
    }
}

fn c_text(p: *const std::os::raw::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: librdkafka returns NUL-terminated strings that live as long as their owner,
    // which outlives this call.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Describes `groups` on the cluster of `config` (bootstrap and security already set).
pub fn describe(
    bootstrap: &str,
    properties: &BTreeMap<String, String>,
    groups: &[String],
    timeout: Duration,
) -> Result<Vec<GroupDescription>, GroupError> {
    let admin: AdminClient<DefaultClientContext> =
        crate::kafka::client_config(bootstrap, properties)
            .create()
            .map_err(|e| GroupError::Client {
                bootstrap: bootstrap.to_string(),
                reason: e.to_string(),
            })?;
    let describe_error = |group: &str, reason: String| GroupError::Describe {
        group: group.to_string(),
        bootstrap: bootstrap.to_string(),
        reason,
    };
    let names: Vec<CString> = groups
        .iter()
        .map(|g| {
            CString::new(g.as_str())
                .map_err(|_| describe_error(g, "the name holds a NUL byte".into()))
        })
        .collect::<Result<_, _>>()?;
    let mut ptrs: Vec<*const std::os::raw::c_char> = names.iter().map(|n| n.as_ptr()).collect();
    let rk = admin.inner().native_ptr();
    let timeout_ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: `rk` is a live handle owned by `admin`, which outlives every object created
    // here; the queue, options and event are freed by their `Owned` guards; the result and
    // group descriptions are owned by the event and only read while it lives.
    unsafe {
        let queue = Owned(sys::rd_kafka_queue_new(rk), sys::rd_kafka_queue_destroy);
        let options = Owned(
            sys::rd_kafka_AdminOptions_new(
                rk,
                sys::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBECONSUMERGROUPS,
            ),
            sys::rd_kafka_AdminOptions_destroy,
        );
        let mut errbuf = [0 as std::os::raw::c_char; 256];
        sys::rd_kafka_AdminOptions_set_request_timeout(
            options.0,
            timeout_ms,
            errbuf.as_mut_ptr(),
            errbuf.len(),
        );
        sys::rd_kafka_DescribeConsumerGroups(rk, ptrs.as_mut_ptr(), ptrs.len(), options.0, queue.0);
        let event = Owned(
            sys::rd_kafka_queue_poll(queue.0, timeout_ms.saturating_add(2000)),
            sys::rd_kafka_event_destroy,
        );
        let all = groups.join(",");
        if event.0.is_null() {
            return Err(describe_error(
                &all,
                format!("no answer within {timeout:?}"),
            ));
        }
        if sys::rd_kafka_event_error(event.0)
            != sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
        {
            return Err(describe_error(
                &all,
                c_text(sys::rd_kafka_event_error_string(event.0)),
            ));
        }
        let result = sys::rd_kafka_event_DescribeConsumerGroups_result(event.0);
        if result.is_null() {
            return Err(describe_error(
                &all,
                "unexpected answer from librdkafka".into(),
            ));
        }
        let mut count = 0usize;
        let descs = sys::rd_kafka_DescribeConsumerGroups_result_groups(result, &mut count);
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            let d = *descs.add(i);
            let group = c_text(sys::rd_kafka_ConsumerGroupDescription_group_id(d));
            let err = sys::rd_kafka_ConsumerGroupDescription_error(d);
            if !err.is_null() {
                let code = sys::rd_kafka_error_code(err);
                if code == sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_GROUP_ID_NOT_FOUND {
                    out.push(GroupDescription {
                        group,
                        state: "Dead".into(),
                        members: 0,
                    });
                    continue;
                }
                return Err(describe_error(
                    &group,
                    c_text(sys::rd_kafka_error_string(err)),
                ));
            }
            let state = c_text(sys::rd_kafka_consumer_group_state_name(
                sys::rd_kafka_ConsumerGroupDescription_state(d),
            ));
            out.push(GroupDescription {
                group,
                state,
                members: sys::rd_kafka_ConsumerGroupDescription_member_count(d),
            });
        }
        Ok(out)
    }
}

/// One partition's offset for a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

fn group_consumer(
    bootstrap: &str,
    properties: &BTreeMap<String, String>,
    group: &str,
) -> Result<BaseConsumer, GroupError> {
    crate::kafka::client_config(bootstrap, properties)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| GroupError::Client {
            bootstrap: bootstrap.to_string(),
            reason: e.to_string(),
        })
}

/// Commits `offsets` for `group` without joining it (a simple, generation-less commit, as
/// `kafka-consumer-groups --reset-offsets` does). The caller checks the group is inactive.
pub fn commit_offsets(
    bootstrap: &str,
    properties: &BTreeMap<String, String>,
    group: &str,
    offsets: &[PartitionOffset],
) -> Result<(), GroupError> {
    let consumer = group_consumer(bootstrap, properties, group)?;
    let commit_error = |e: KafkaError| GroupError::Commit {
        group: group.to_string(),
        bootstrap: bootstrap.to_string(),
        reason: e.to_string(),
    };
    let mut tpl = TopicPartitionList::new();
    for o in offsets {
        tpl.add_partition_offset(&o.topic, o.partition, Offset::Offset(o.offset))
            .map_err(commit_error)?;
    }
    consumer
        .commit(&tpl, CommitMode::Sync)
        .map_err(commit_error)
}

/// The offsets `group` has committed on `partitions`; -1 where it has none.
pub fn committed_offsets(
    bootstrap: &str,
    properties: &BTreeMap<String, String>,
    group: &str,
    partitions: &[(String, i32)],
    timeout: Duration,
) -> Result<Vec<PartitionOffset>, GroupError> {
    let consumer = group_consumer(bootstrap, properties, group)?;
    let read_error = |e: KafkaError| GroupError::Committed {
        group: group.to_string(),
        bootstrap: bootstrap.to_string(),
        reason: e.to_string(),
    };
    let mut tpl = TopicPartitionList::new();
    for (t, p) in partitions {
        tpl.add_partition(t, *p);
    }
    let got = consumer
        .committed_offsets(tpl, timeout)
        .map_err(read_error)?;
    Ok(got
        .elements()
        .iter()
        .map(|e| PartitionOffset {
            topic: e.topic().to_string(),
            partition: e.partition(),
            offset: match e.offset() {
                Offset::Offset(o) => o,
                _ => -1,
            },
        })
        .collect())
}
