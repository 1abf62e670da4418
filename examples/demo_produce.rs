//! Creates a demo topic and fills it with keyed records, for the README quickstart.
//! Usage: demo_produce BOOTSTRAP TOPIC PARTITIONS RECORDS
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        return Err("usage: demo_produce BOOTSTRAP TOPIC PARTITIONS RECORDS".into());
    }
    let (bootstrap, topic) = (&args[1], &args[2]);
    let partitions: i32 = args[3].parse()?;
    let records: usize = args[4].parse()?;
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", bootstrap);
    let admin: AdminClient<DefaultClientContext> = cfg.create()?;
    let created = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await?;
    for r in created {
        if let Err((t, code)) = r {
            eprintln!("topic {t}: {code}");
        }
    }
    let producer: FutureProducer = cfg.clone().set("enable.idempotence", "true").create()?;
    let now = chrono::Utc::now().timestamp_millis();
    let mut pending = Vec::new();
    for i in 0..records {
        let key = format!("key-{i}");
        let value = format!("{{\"order\":{i},\"amount\":{}}}", i * 7 % 1000);
        let rec = FutureRecord::to(topic)
            .partition((i % partitions as usize) as i32)
            .key(&key)
            .payload(&value)
            .timestamp(now - (records - i) as i64 * 10)
            .headers(OwnedHeaders::new().insert(Header {
                key: "source",
                value: Some("demo"),
            }));
        pending.push(producer.send_result(rec).map_err(|(e, _)| e)?);
        if pending.len() >= 1000 {
            for p in pending.drain(..) {
                p.await?.map_err(|(e, _)| e)?;
            }
        }
    }
    for p in pending {
        p.await?.map_err(|(e, _)| e)?;
    }
    println!("produced {records} records to {topic} ({partitions} partitions)");
    Ok(())
}
