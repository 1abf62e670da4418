//! kb-bench: the measurements behind `bench/run.sh`.
//!   gen     DIR ID TOPIC PARTITIONS RECORDS_PER_PARTITION VALUE_BYTES SEGMENT_RECORDS [foreign]
//!           `foreign`: segments as another tool writes them: one streamed zstd frame without
//!           a content size, no seek index, no min/max timestamps in the manifest
//!   decode  DIR ID [PASSES]   the worker's source stage (read with CRC, decode, filter;
//!           best of PASSES, wall and CPU time) vs in-process streaming zstd of the same bodies
//!   bodies  DIR ID OUT        concatenated zstd bodies, for the `zstd -d` baseline
//!   produce DIR ID BOOTSTRAP TOPIC [K=V...]   raw rdkafka producer ceiling, same records, same broker
//!   seek    DIR ID TOPIC PARTITION TS  time to the first record at or after TS
//!   consume BOOTSTRAP TOPIC [KEY=VALUE...]  a plain rdkafka consumer reading every partition
//!           of TOPIC to its high watermark, writing nothing (the backup's baseline); the
//!           settings used are printed with the figure; `consumers=N`: N such consumers
//!           on threads of their own, every N-th partition each
//!   metadata BOOTSTRAP        a bare client's first full metadata answer (dry-run baseline)
//!   median-run N CMD ARGS...  median wall time of N runs of a command, spawn to exit
//!   gen-manifest, scale-task, scale-workers: the coordinator at scale (see scale.rs)
//!   index-manifest DIR ID [STORE_URL]  writes the manifest.index of a manifest gen-manifest streamed
//!                             (with STORE_URL: stores manifest and index there)
//!   read-manifest DIR ID RUNS the planning read of a backup (index file when it has one)
//! Every command prints one JSON object on stdout.

mod scale;

use kafka_backup_common::frames::{build_indexed_segment, FrameCuts, DEFAULT_FRAME_BYTES};
use kafka_backup_common::manifest::{
    segment_key, Manifest, PartitionManifest, SegmentMeta, TopicManifest,
};
use kafka_backup_common::segment::{
    encode_record, DecodedSegment, SegmentHeader, FOOTER_LEN, HEADER_LEN,
};
use kafka_backup_common::storage::BackupStore;
use kafka_backup_proto::SegmentRef;
use kafka_backup_worker::pages::SegmentPages;
use kafka_backup_worker::source::{prefetch, RecordFilter};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;
use serde_json::json;
use std::collections::HashMap;
use std::time::{Duration, Instant};

pub(crate) type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// The restore's producer batch size and per-partition window, used by the raw baseline too.
use kafka_backup_worker::produce::{BATCH_BYTES, MAX_IN_FLIGHT_BYTES};

pub(crate) fn arg(args: &[String], i: usize, what: &str) -> Res<String> {
    args.get(i)
        .cloned()
        .ok_or_else(|| format!("missing argument {what}").into())
}

/// Deterministic pseudo-random bytes (xorshift), so runs are comparable.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

async fn gen(args: &[String]) -> Res<()> {
    let (dir, id, topic) = (
        arg(args, 2, "DIR")?,
        arg(args, 3, "ID")?,
        arg(args, 4, "TOPIC")?,
    );
    let partitions: i32 = arg(args, 5, "PARTITIONS")?.parse()?;
    let per_partition: u64 = arg(args, 6, "RECORDS_PER_PARTITION")?.parse()?;
    let value_bytes: usize = arg(args, 7, "VALUE_BYTES")?.parse()?;
    let segment_records: u64 = arg(args, 8, "SEGMENT_RECORDS")?.parse()?;
    // Optional 10th argument: `foreign` (one streamed frame per segment, no index) or `text`
    // (values of JSON text that zstd -3 compresses ~4x, instead of nearly random bytes).
    let foreign = args.get(9).map(String::as_str) == Some("foreign");
    let text = args.get(9).map(String::as_str) == Some("text");
    let store = BackupStore::open(&dir, &HashMap::new(), true)?;
    let base_ts = 1_700_000_000_000i64;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut parts = Vec::new();
    let mut total_bytes = 0u64;
    for p in 0..partitions {
        let mut segments = Vec::new();
        let mut offset = 0i64;
        while (offset as u64) < per_partition {
            let n = segment_records.min(per_partition - offset as u64);
            let mut region = Vec::with_capacity(n as usize * (value_bytes + 64));
            // The seek index exactly as `backup` writes it.
            let mut cuts = FrameCuts::new(DEFAULT_FRAME_BYTES);
            let (mut min_ts, mut max_ts) = (i64::MAX, i64::MIN);
            let (mut first_ts, mut last_ts) = (0, 0);
            for i in 0..n {
                let o = offset + i as i64;
                // Mostly increasing timestamps with jitter: not monotonic, like real topics.
                let ts = base_ts + o * 10 + (rng.next() % 50) as i64 - 25;
                let key = format!("customer-{}", rng.next() % 100_000);
                // A JSON-ish prefix, then random bytes: nearly incompressible (zstd -3 1.07x on
                // the records), the costliest input for the backup's compression (zstd -3 runs
                // at ~155 MB/s per core on it, against ~170 MB/s on half-compressible values).
                let mut value = Vec::with_capacity(value_bytes);
                while value.len() < value_bytes {
                    if text {
                        let r = rng.next();
                        value.extend_from_slice(
                            format!(
                                r#"{{"order":{},"customer":"customer-{}","state":"{}","amount":{}.{:02}}}"#,
                                r % 1_000_000_000,
                                (r >> 30) % 100_000,
                                ["paid", "shipped", "refunded"][((r >> 50) % 3) as usize],
                                (r >> 20) % 10_000,
                                (r >> 40) % 100
                            )
                            .as_bytes(),
                        );
                    } else if value.len() % 2 == 0 {
                        value.extend_from_slice(br#"{"order":"#);
                    } else {
                        value.extend_from_slice(&rng.next().to_le_bytes());
                    }
                }
                value.truncate(value_bytes);
                let seq = o.to_string();
                cuts.record(region.len(), o, ts);
                let headers = [
                    ("trace-id", Some(seq.as_bytes())),
                    ("source", Some(&b"bench"[..])),
                ];
                encode_record(
                    &mut region,
                    o,
                    ts,
                    Some(key.as_bytes()),
                    Some(&value),
                    headers.into_iter(),
                );
                if i == 0 {
                    first_ts = ts;
                }
                last_ts = ts;
                min_ts = min_ts.min(ts);
                max_ts = max_ts.max(ts);
            }
            let header = SegmentHeader {
                compression: 1,
                record_count: n,
                start_offset: offset,
                end_offset: offset + n as i64 - 1,
            };
            let (bytes, frames) = if foreign {
                (streamed_segment(&region, header)?, Vec::new())
            } else {
                build_indexed_segment(&region, header, 3, &cuts)?
            };
            let key = segment_key(&id, &topic, p, offset);
            total_bytes += region.len() as u64;
            segments.push(SegmentMeta {
                key: key.clone(),
                start_offset: offset,
                end_offset: offset + n as i64 - 1,
                start_timestamp: first_ts,
                end_timestamp: last_ts,
                record_count: n,
                uncompressed_size: region.len() as u64,
                compressed_size: bytes.len() as u64,
                min_timestamp: (!foreign).then_some(min_ts),
                max_timestamp: (!foreign).then_some(max_ts),
                frames,
            });
            store.put(&key, bytes).await?;
            offset += n as i64;
        }
        parts.push(PartitionManifest {
            partition_id: p,
            segments,
            gaps: vec![],
        });
    }
    let segments: usize = parts.iter().map(|p| p.segments.len()).sum();
    store
        .write_manifest(&Manifest {
            backup_id: id.clone(),
            created_at: base_ts,
            source_cluster_id: None,
            source_brokers: None,
            compression: Some("zstd".into()),
            topics: vec![TopicManifest {
                name: topic,
                replication_factor: None,
                configs: None,
                original_partition_count: Some(partitions),
                partitions: parts,
            }],
            consumer_group_offsets: vec![],
        })
        .await?;
    println!(
        "{}",
        json!({"segments": segments, "uncompressed_bytes": total_bytes, "records": per_partition * partitions as u64})
    );
    Ok(())
}

/// A segment whose body is one zstd frame written by a streaming encoder, which (like the
/// Java writers of other backup tools) does not know the size up front and records none.
fn streamed_segment(region: &[u8], header: SegmentHeader) -> Res<Vec<u8>> {
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3)?;
    std::io::Write::write_all(&mut enc, region)?;
    Ok(kafka_backup_common::segment::assemble_segment(
        header,
        &enc.finish()?,
    ))
}

async fn segments_of(dir: &str, id: &str) -> Res<Vec<(String, Vec<u8>)>> {
    let store = BackupStore::open(dir, &HashMap::new(), false)?;
    let m = store.read_manifest(id).await?;
    let mut out = Vec::new();
    for s in m.segments() {
        out.push((s.key.clone(), store.get(&s.key).await?.to_vec()));
    }
    Ok(out)
}

async fn decode(args: &[String]) -> Res<()> {
    let (dir, id) = (arg(args, 2, "DIR")?, arg(args, 3, "ID")?);
    let segs = segments_of(&dir, &id).await?;
    let passes: usize = args.get(4).map_or(Ok(1), |p| p.parse())?;
    // Baseline: decompress the same bodies, nothing else, as `zstd -d` does (streaming into
    // a reused buffer, output discarded).
    let t = Instant::now();
    let mut raw = 0usize;
    for (_, b) in &segs {
        let mut out = CountingSink(0);
        zstd::stream::copy_decode(&b[HEADER_LEN..b.len() - FOOTER_LEN], &mut out)?;
        raw += out.0;
    }
    let zstd_secs = t.elapsed().as_secs_f64();
    drop(segs);
    // Ours: the worker's source stage as a restore runs it (worker/src/source.rs), from the
    // backup directory: read each object with its CRC (the next one while this one is
    // decoded), decompress it piece by piece, then check and parse every record and apply
    // the task's filter, as the produce stage does before it hands a record to the producer.
    let store = BackupStore::open(&dir, &HashMap::new(), false)?;
    let manifest = store.read_manifest(&id).await?;
    let refs: Vec<SegmentRef> = manifest
        .segments()
        .map(|s| SegmentRef {
            key: s.key.clone(),
            start_offset: s.start_offset,
            end_offset: s.end_offset,
            record_count: s.record_count,
            compressed_size: s.compressed_size,
            frames: Vec::new(),
        })
        .collect();
    let filter = RecordFilter {
        from_offset: 0,
        from_ts: None,
        to_ts: None,
    };
    let (mut ours_secs, mut ours_cpu) = (f64::MAX, f64::MAX);
    let (mut kept, mut bytes) = (0u64, 0usize);
    for _ in 0..passes.max(1) {
        let (t, cpu) = (Instant::now(), cpu_seconds());
        (kept, bytes) = (0, 0);
        let mut pieces = prefetch(
            store.clone(),
            SegmentPages::fixed(refs.clone()),
            filter,
            false,
        );
        while let Some((_, piece)) = pieces.recv().await {
            let piece = piece?;
            bytes += piece.uncompressed_len();
            for r in piece.records() {
                let r = r?;
                if filter.keeps(&r) && r.value.is_some() {
                    kept += 1;
                }
            }
        }
        ours_secs = ours_secs.min(t.elapsed().as_secs_f64());
        ours_cpu = ours_cpu.min(cpu_seconds() - cpu);
    }
    assert_eq!(bytes, raw);
    println!(
        "{}",
        json!({"bytes": raw, "records": kept, "zstd_mb_s": raw as f64 / 1e6 / zstd_secs,
               "ours_mb_s": raw as f64 / 1e6 / ours_secs, "ours_cpu_ms": ours_cpu * 1e3,
               "ours_wall_ms": ours_secs * 1e3})
    );
    Ok(())
}

/// CPU time of this process so far (every thread, user and system).
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Counts what it is given and keeps nothing.
struct CountingSink(usize);

impl std::io::Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn bodies(args: &[String]) -> Res<()> {
    let segs = segments_of(&arg(args, 2, "DIR")?, &arg(args, 3, "ID")?).await?;
    let mut out = Vec::new();
    for (_, b) in &segs {
        out.extend_from_slice(&b[HEADER_LEN..b.len() - FOOTER_LEN]);
    }
    std::fs::write(arg(args, 4, "OUT")?, &out)?;
    println!("{}", json!({"bytes": out.len()}));
    Ok(())
}

async fn produce(args: &[String]) -> Res<()> {
    let segs = segments_of(&arg(args, 2, "DIR")?, &arg(args, 3, "ID")?).await?;
    let (bootstrap, topic) = (arg(args, 4, "BOOTSTRAP")?, arg(args, 5, "TOPIC")?);
    let decoded: Vec<DecodedSegment> = segs
        .iter()
        .map(|(k, b)| DecodedSegment::decode(k, b))
        .collect::<Result<_, _>>()?;
    let partitions = decoded
        .iter()
        .filter_map(|s| {
            s.key
                .split("partition=")
                .nth(1)
                .and_then(|s| s.split('/').next())
                .and_then(|s| s.parse::<i32>().ok())
        })
        .max()
        .map_or(1, |p| p + 1);
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()?;
    admin
        .create_topics(
            &[rdkafka::admin::NewTopic::new(
                &topic,
                partitions,
                rdkafka::admin::TopicReplication::Fixed(1),
            )],
            &rdkafka::admin::AdminOptions::new(),
        )
        .await?;
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("enable.sparse.connections", "false")
        .set("linger.ms", "5")
        .set("batch.size", BATCH_BYTES.to_string())
        .set("queue.buffering.max.kbytes", "65536")
        .set("message.max.bytes", "16777216");
    // KEY=VALUE after TOPIC override these (e.g. a smaller batch.size for a source topic).
    for kv in args.iter().skip(6) {
        let (k, v) = kv.split_once('=').ok_or("settings are KEY=VALUE")?;
        config.set(k, v);
    }
    let producer: FutureProducer = config.create()?;
    // The strongest plain producer we know for this broker: one client, every partition
    // sending at once, each with at most one batch awaiting acknowledgement (more than that
    // makes librdkafka's idempotent producer busy-poll; see worker/src/produce.rs).
    let mut by_partition: std::collections::BTreeMap<i32, Vec<&DecodedSegment>> =
        Default::default();
    for seg in &decoded {
        let p: i32 = seg
            .key
            .split("partition=")
            .nth(1)
            .and_then(|s| s.split('/').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        by_partition.entry(p).or_default().push(seg);
    }
    let t = Instant::now();
    // What the restore's worker does before its first record (it asks for the partition's
    // end offset): the answer also prompts librdkafka to request its producer id right away.
    {
        let (producer, topic) = (producer.clone(), topic.clone());
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_watermarks(&topic, 0, Duration::from_secs(10))
        })
        .await??;
    }
    let sends = by_partition.into_iter().map(|(p, segs)| {
        let (producer, topic) = (&producer, &topic);
        async move {
            let mut bytes = 0usize;
            let mut pending = std::collections::VecDeque::new();
            let mut in_flight = 0usize;
            for seg in segs {
                for r in seg.records() {
                    let r = r?;
                    while (in_flight + r.encoded_len) as u64 > MAX_IN_FLIGHT_BYTES
                        && !pending.is_empty()
                    {
                        if let Some((len, f)) = pending.pop_front() {
                            let f: rdkafka::producer::DeliveryFuture = f;
                            f.await?.map_err(|(e, _)| e)?;
                            in_flight -= len;
                        }
                    }
                    let mut fr: FutureRecord<'_, [u8], [u8]> =
                        FutureRecord::to(topic).partition(p).timestamp(r.timestamp);
                    if let Some(k) = r.key {
                        fr = fr.key(k);
                    }
                    if let Some(v) = r.value {
                        fr = fr.payload(v);
                    }
                    if !r.headers.is_empty() {
                        let mut h =
                            rdkafka::message::OwnedHeaders::new_with_capacity(r.headers.len());
                        for (key, value) in &r.headers {
                            h = h.insert(rdkafka::message::Header { key, value: *value });
                        }
                        fr = fr.headers(h);
                    }
                    let f = producer.send_result(fr).map_err(|(e, _)| e)?;
                    pending.push_back((r.encoded_len, f));
                    in_flight += r.encoded_len;
                    bytes += r.encoded_len;
                }
            }
            for (_, f) in pending {
                f.await?.map_err(|(e, _)| e)?;
            }
            Ok::<usize, Box<dyn std::error::Error>>(bytes)
        }
    });
    let mut bytes = 0usize;
    for sent in futures::future::join_all(sends).await {
        bytes += sent?;
    }
    producer.flush(Duration::from_secs(30))?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"bytes": bytes, "secs": secs, "mb_s": bytes as f64 / 1e6 / secs})
    );
    Ok(())
}

async fn seek(args: &[String]) -> Res<()> {
    let (dir, id, topic) = (
        arg(args, 2, "DIR")?,
        arg(args, 3, "ID")?,
        arg(args, 4, "TOPIC")?,
    );
    let partition: i32 = arg(args, 5, "PARTITION")?.parse()?;
    let ts: i64 = arg(args, 6, "TS")?.parse()?;
    let store = BackupStore::open(&dir, &HashMap::new(), false)?;
    let manifest = store
        .read_manifest_index(
            &id,
            kafka_backup_common::manifest_index::Sieve::window(Some(ts), None),
        )
        .await?;
    // What a worker does for a mid-partition --from-timestamp, through the worker's own
    // fetch stage: plan (prune segments by true min/max timestamps), lease the first segment
    // with its seek index, read from the first frame that can hold the window's first record,
    // decode, skip to that record.
    let t = Instant::now();
    let spec = kafka_backup_proto::RestoreSpec {
        backup_id: id.clone(),
        source_topics: vec![topic.clone()],
        source_partitions: vec![partition],
        from_timestamp_ms: Some(ts),
        ..Default::default()
    };
    let tasks = kafka_backup_coordinator::planner::plan(manifest, &spec)?;
    let segments: Vec<kafka_backup_proto::SegmentRef> = tasks
        .into_iter()
        .next()
        .map(|t| {
            t.segments
                .into_iter()
                .map(|s| {
                    let entry = kafka_backup_coordinator::ledger::SegmentEntry::from(s);
                    kafka_backup_coordinator::worker_service::segment_ref(&entry)
                })
                .collect()
        })
        .unwrap_or_default();
    let filter = kafka_backup_worker::source::RecordFilter {
        from_offset: segments.first().map_or(0, |s| s.start_offset),
        from_ts: Some(ts),
        to_ts: None,
    };
    let pages = kafka_backup_worker::pages::SegmentPages::fixed(segments);
    let mut rx = kafka_backup_worker::source::prefetch(store, pages, filter, false);
    let mut found = None;
    'outer: while let Some((_, seg)) = rx.recv().await {
        let seg = seg?;
        for r in seg.records() {
            let r = r?;
            if filter.keeps(&r) {
                found = Some(r.offset);
                break 'outer;
            }
        }
    }
    let ms = t.elapsed().as_secs_f64() * 1e3;
    println!("{}", json!({"ms": ms, "offset": found}));
    Ok(())
}

/// The broker's part of a dry run: a bare client's first metadata answer (client creation,
/// bootstrap connection, full metadata), measured on the same broker in the same run.
async fn metadata(args: &[String]) -> Res<()> {
    let bootstrap = arg(args, 2, "BOOTSTRAP")?;
    let t = Instant::now();
    // The same client settings as the coordinator's target client (see target.rs).
    let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("enable.sparse.connections", "false")
        .create()?;
    let md = rdkafka::consumer::Consumer::fetch_metadata(&consumer, None, Duration::from_secs(10))?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    println!("{}", json!({"ms": ms, "topics": md.topics().len()}));
    kafka_backup_common::kafka::drop_in_background(consumer);
    Ok(())
}

/// The fastest plain consumer configured here: fetches answered as soon as there is data,
/// and large enough to carry many batches per round trip. `KEY=VALUE` arguments override.
const CONSUMER_BASELINE: [(&str, &str); 5] = [
    ("fetch.wait.max.ms", "10"),
    ("fetch.min.bytes", "1"),
    ("max.partition.fetch.bytes", "16777216"),
    ("fetch.max.bytes", "67108864"),
    ("queued.max.messages.kbytes", "262144"),
];

fn consume(args: &[String]) -> Res<()> {
    let (bootstrap, topic) = (arg(args, 2, "BOOTSTRAP")?, arg(args, 3, "TOPIC")?);
    let mut settings: std::collections::BTreeMap<String, String> = CONSUMER_BASELINE
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for kv in args.iter().skip(4) {
        let (k, v) = kv.split_once('=').ok_or("settings are KEY=VALUE")?;
        settings.insert(k.to_string(), v.to_string());
    }
    // `consumers=N` is not a librdkafka setting: N plain consumers, each on a thread of its
    // own with every N-th partition (the baseline for a backup reading with N consumers).
    let consumers: usize = match settings.remove("consumers") {
        Some(n) => n.parse().map_err(|_| "consumers=N takes a number")?,
        None => 1,
    };
    let t = Instant::now();
    let shares = consumers.max(1);
    let results: Vec<Result<(u64, u64), String>> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..shares)
            .map(|i| {
                let (bootstrap, topic, settings) = (&bootstrap, &topic, &settings);
                s.spawn(move || {
                    consume_partitions(bootstrap, topic, settings, (i, shares))
                        .map_err(|e| e.to_string())
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err("a consumer thread panicked".to_string()))
            })
            .collect()
    });
    let (mut records, mut bytes) = (0u64, 0u64);
    for r in results {
        let (n, b) = r?;
        records += n;
        bytes += b;
    }
    let secs = t.elapsed().as_secs_f64();
    if consumers > 1 {
        settings.insert("consumers".into(), consumers.to_string());
    }
    println!(
        "{}",
        json!({"secs": secs, "records": records, "bytes": bytes, "settings": settings})
    );
    Ok(())
}

fn plain_consumer(
    bootstrap: &str,
    settings: &std::collections::BTreeMap<String, String>,
) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "kb-bench-consume")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    for (k, v) in settings {
        config.set(k, v);
    }
    config
}

/// One plain consumer reading share `i` of `n` of `topic`'s partitions (every n-th) to their
/// high watermarks; records and key + value bytes read.
fn consume_partitions(
    bootstrap: &str,
    topic: &str,
    settings: &std::collections::BTreeMap<String, String>,
    (i, n): (usize, usize),
) -> Res<(u64, u64)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Message, Offset, TopicPartitionList};
    let consumer: BaseConsumer = plain_consumer(bootstrap, settings).create()?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions = md.topics().first().map_or(0, |t| t.partitions().len()) as i32;
    let mut tpl = TopicPartitionList::new();
    let mut remaining = std::collections::HashMap::new();
    for p in (0..partitions).filter(|p| *p as usize % n == i) {
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        if high > low {
            tpl.add_partition_offset(topic, p, Offset::Offset(low))?;
            remaining.insert(p, high);
        }
    }
    consumer.assign(&tpl)?;
    let (mut records, mut bytes) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(600);
    while !remaining.is_empty() && Instant::now() < deadline {
        if let Some(msg) = consumer.poll(Duration::from_millis(100)) {
            let msg = msg?;
            records += 1;
            bytes += (msg.payload_len() + msg.key().map_or(0, <[u8]>::len)) as u64;
            if remaining
                .get(&msg.partition())
                .is_some_and(|h| msg.offset() >= h - 1)
            {
                remaining.remove(&msg.partition());
            }
        }
    }
    kafka_backup_common::kafka::drop_in_background(consumer);
    if !remaining.is_empty() {
        return Err("the consumer did not reach the high watermarks within 600 s".into());
    }
    Ok((records, bytes))
}

/// Median wall time of N runs of a command, spawn to exit: what a user waits for, without
/// the shell's own forks in the figure.
fn median_run(args: &[String]) -> Res<()> {
    let n: usize = arg(args, 2, "N")?.parse()?;
    let cmd = args
        .get(3..)
        .filter(|c| !c.is_empty())
        .ok_or("missing command")?;
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        let t = Instant::now();
        let status = std::process::Command::new(&cmd[0])
            .args(&cmd[1..])
            .stdout(std::process::Stdio::null())
            .status()?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        if !status.success() {
            return Err(format!("{} failed: {status}", cmd[0]).into());
        }
    }
    ms.sort_by(f64::total_cmp);
    println!("{}", json!({"ms": ms[ms.len() / 2], "runs": ms}));
    Ok(())
}

#[tokio::main]
async fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("gen") => gen(&args).await,
        Some("decode") => decode(&args).await,
        Some("bodies") => bodies(&args).await,
        Some("produce") => produce(&args).await,
        Some("seek") => seek(&args).await,
        Some("metadata") => metadata(&args).await,
        Some("consume") => consume(&args),
        Some("median-run") => median_run(&args),
        Some("gen-manifest") => scale::gen_manifest(&args),
        Some("scale-task") => scale::scale_task(&args).await,
        Some("scale-workers") => scale::scale_workers(&args).await,
        Some("read-manifest") => scale::read_manifest(&args).await,
        Some("index-manifest") => scale::index_manifest(&args).await,
        _ => Err("usage: kb-bench gen|decode|bodies|produce|seek ...".into()),
    }
}
