//! Network faults between separate hosts (network namespaces on this machine, see
//! `netlab`): the coordinator, the target broker and each worker on hosts of their own, with
//! partitions, one-way drops, delay and loss injected between them for a bounded time. Each
//! scenario ends with the target read back and compared record by record with the source.
//!
//! Lease-bounded writes are what these test: a worker cut off from the coordinator keeps
//! reaching the broker, and must stop writing on its own clock before the coordinator lets
//! another worker take its task over.

mod common;
mod netlab;

use common::*;
use kafka_backup_common::segment::Record;
use kafka_backup_proto::PlanStatus;
use netlab::{DelayProxy, Direction, NetLab};
use std::process::Child;
use std::time::{Duration, Instant};

const BASE_TS: i64 = 1_731_500_000_000;
const TTL_S: u64 = 6;
const GRACE_S: u64 = 2;
const HOSTS: &[&str] = &["coord", "broker", "w1", "w2"];
/// 250 records/s per task, checkpoints 30 s apart: a report a cut-off worker cannot deliver
/// would stop it at once, so between reports only its own lease clock can stop its writes.
const LEASE_CLOCK_ONLY: &[&str] = &[
    "--max-records-per-sec",
    "250",
    "--checkpoint-interval",
    "30s",
];

/// A restore deployment spread over the lab's hosts.
pub struct Deployment {
    pub lab: NetLab,
    dir: tempfile::TempDir,
    pub url: String,
    /// What clients are told to bootstrap from (the broker, or the delay proxy before it).
    pub bootstrap: String,
    broker: Child,
    broker_args: Vec<String>,
    /// Where the running broker started writing tansu.log.
    broker_log_from: u64,
    coordinator: Option<Child>,
    workers: Vec<Option<Child>>,
    pub proxy: Option<DelayProxy>,
}

impl Drop for Deployment {
    fn drop(&mut self) {
        let all = self
            .workers
            .iter_mut()
            .chain(std::iter::once(&mut self.coordinator))
            .flatten()
            .chain(std::iter::once(&mut self.broker));
        for child in all {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_addr(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let sock: std::net::SocketAddr = addr.parse().expect("socket address");
    while std::net::TcpStream::connect_timeout(&sock, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Deployment {
    /// Coordinator, broker and two workers (one task each) on lab `n`. With `delay_proxy`,
    /// the broker advertises a delaying proxy on the test's bridge address, so every client's
    /// broker traffic passes through it.
    pub async fn start(n: u16, delay_proxy: bool) -> Option<Deployment> {
        let lab = NetLab::create(n, HOSTS)?;
        let dir = temp_dir();
        let broker_addr = format!("{}:9092", lab.ip("broker"));
        let proxy = if delay_proxy {
            let upstream = broker_addr.parse().expect("addr");
            Some(DelayProxy::start(&format!("{}:0", lab.root_ip()), upstream, n as u64).await)
        } else {
            None
        };
        let bootstrap = proxy
            .as_ref()
            .map_or(broker_addr.clone(), |p| p.addr.to_string());
        let broker_args: Vec<String> = [
            "broker",
            "--listener-url",
            &format!("tcp://{broker_addr}"),
            "--advertised-listener-url",
            &format!("tcp://{bootstrap}"),
            "--storage-engine",
            "sqlite://target.db",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let broker = spawn_broker(&lab, dir.path(), &broker_args);
        wait_addr(&broker_addr);
        let listen = format!("{}:50051", lab.ip("coord"));
        let mut d = Deployment {
            url: format!("http://{listen}"),
            bootstrap,
            broker,
            broker_args,
            broker_log_from: 0,
            coordinator: None,
            workers: vec![None, None],
            proxy,
            lab,
            dir,
        };
        d.start_coordinator();
        for w in 0..2 {
            d.start_worker(w);
        }
        Some(d)
    }

    pub fn start_coordinator(&mut self) {
        let listen = format!("{}:50051", self.lab.ip("coord"));
        let ledger = self.dir.path().join("ledger");
        let child = self.lab.spawn(
            "coord",
            bin(),
            &[
                "coordinator",
                "--listen",
                &listen,
                "--state-dir",
                ledger.to_str().expect("utf8"),
                "--lease-ttl",
                &format!("{TTL_S}s"),
                "--lease-grace",
                &format!("{GRACE_S}s"),
            ],
            self.dir.path(),
            &self.dir.path().join("coordinator.log"),
        );
        self.coordinator = Some(child);
        wait_addr(&listen);
    }

    pub fn kill_coordinator(&mut self) {
        if let Some(mut c) = self.coordinator.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn start_worker(&mut self, w: usize) {
        let host = format!("w{}", w + 1);
        let child = self.lab.spawn(
            &host,
            bin(),
            &[
                "worker",
                "--coordinator",
                &self.url,
                "--worker-id",
                &host,
                "--max-tasks",
                "1",
            ],
            self.dir.path(),
            &self.dir.path().join(format!("{host}.log")),
        );
        self.workers[w] = Some(child);
    }

    pub fn kill_worker(&mut self, w: usize) {
        if let Some(mut c) = self.workers[w].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the broker again (same database) if it died: tansu 0.6 can panic in its produce
    /// path after a client vanished mid-request (see `RestartingBroker`).
    pub fn keep_broker_up(&mut self) {
        let log = self.dir.path().join("tansu.log");
        if matches!(self.broker.try_wait(), Ok(Some(_)))
            || tansu_panicked(&log, self.broker_log_from)
        {
            eprintln!("the target tansu died (its produce-path panic); restarting it");
            let _ = self.broker.kill();
            let _ = self.broker.wait();
            self.broker_log_from = log_len(&log);
            self.broker = spawn_broker(&self.lab, self.dir.path(), &self.broker_args);
            wait_addr(&format!("{}:9092", self.lab.ip("broker")));
        }
    }

    /// A source topic on the lab's broker, backed up: the lab's hosts and the test process
    /// reach it, and the shared test brokers stay out of these longer tests.
    pub async fn backed_up_topic(
        &self,
        name: &str,
        partitions: i32,
        per_partition: usize,
    ) -> (String, Vec<Vec<Record>>, tempfile::TempDir) {
        backed_up_topic_on(&self.bootstrap, name, partitions, per_partition, BASE_TS, 1).await
    }

    pub fn submit(
        &self,
        backup: &std::path::Path,
        topic: &str,
        target: &str,
        extra: &[&str],
    ) -> String {
        submit_detached_to(&self.url, &self.bootstrap, backup, topic, target, extra)
    }

    /// Polls the plan until `done` holds (keeping the broker up), failing after `within`.
    pub async fn wait_for(
        &mut self,
        plan: &str,
        within: Duration,
        what: &str,
        done: impl Fn(&PlanStatus) -> bool,
    ) -> PlanStatus {
        let deadline = Instant::now() + within;
        let mut last = None;
        loop {
            self.keep_broker_up();
            if let Some(st) = plan_status(&self.url, plan).await {
                if done(&st) {
                    return st;
                }
                last = Some(st);
            }
            if Instant::now() >= deadline {
                self.dump_logs();
                panic!("{what} not within {within:?}; last status: {last:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The end of every process's log, for a failure message (the directory goes with the
    /// test).
    fn dump_logs(&self) {
        for name in ["coordinator.log", "w1.log", "w2.log", "tansu.log"] {
            let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("---- last lines of {name}");
            for l in &lines[lines.len().saturating_sub(40)..] {
                eprintln!("{l}");
            }
        }
    }

    pub async fn completed(&mut self, plan: &str, within: Duration) -> PlanStatus {
        let st = self
            .wait_for(plan, within, "plan ended", |s| {
                matches!(s.state.as_str(), "completed" | "failed" | "cancelled")
            })
            .await;
        if st.state != "completed" {
            self.dump_logs();
            panic!("the plan ended {}: {st:?}", st.state);
        }
        st
    }

    /// Every partition of `target` holds exactly `records` of its source partition.
    pub fn assert_exact(&mut self, records: &[Vec<Record>], target: &str) {
        self.keep_broker_up();
        for (p, recs) in records.iter().enumerate() {
            assert_same_records(recs, &consume_all(&self.bootstrap, target, p as i32));
        }
    }
}

fn spawn_broker(lab: &NetLab, dir: &std::path::Path, args: &[String]) -> Child {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    lab.spawn("broker", tansu(), &args, dir, &dir.join("tansu.log"))
}

/// Who holds the plan's first task, and with which epoch.
fn holding(st: &PlanStatus) -> Option<(String, u64)> {
    st.tasks
        .iter()
        .find(|t| t.state == "leased")
        .map(|t| (t.worker_id.clone(), t.epoch))
}

/// A worker loses the coordinator (both ways, or only its own packets) but not the broker,
/// mid-task, for longer than TTL + grace; the other worker takes the task over; then the
/// network heals. The cut-off worker must have stopped writing before the takeover.
async fn cut_off_holder(n: u16, direction: Direction) {
    if skip_without_servers() {
        return;
    }
    let Some(mut d) = Deployment::start(n, false).await else {
        return;
    };
    let (topic, records, backup) = d.backed_up_topic("net-cut", 1, 4000).await;
    let target = unique("net-cut-target");
    // ~16 s undisturbed.
    let plan = d.submit(backup.path(), &topic, &target, LEASE_CLOCK_ONLY);
    let st = d
        .wait_for(&plan, Duration::from_secs(60), "a worker restoring", |s| {
            holding(s).is_some()
        })
        .await;
    let (holder, epoch) = holding(&st).expect("holder");
    // Mid-task: records flowing, the last checkpoint well behind.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cut = Duration::from_secs(TTL_S + GRACE_S + 6);
    d.lab.partition(&holder, &["coord"], direction);
    eprintln!(
        "injected: {holder} cut off from the coordinator ({direction:?}) for {cut:?}; the broker stays reachable"
    );
    let started = Instant::now();
    let taken = d
        .wait_for(&plan, cut, "takeover by the other worker", |s| {
            s.tasks[0].worker_id != holder && s.tasks[0].epoch > epoch
        })
        .await;
    eprintln!(
        "{} took the task over (epoch {} -> {}) {:?} after the cut",
        taken.tasks[0].worker_id,
        epoch,
        taken.tasks[0].epoch,
        started.elapsed()
    );
    tokio::time::sleep(cut.saturating_sub(started.elapsed())).await;
    let dropped = d.lab.dropped(&holder);
    d.lab.heal(&holder);
    eprintln!(
        "healed after {:?}; {dropped} packets dropped",
        started.elapsed()
    );
    assert!(dropped > 0, "the partition dropped nothing");
    let done = d.completed(&plan, Duration::from_secs(90)).await;
    assert_eq!(done.records_done, 4000);
    d.assert_exact(&records, &target);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_cut_off_from_the_coordinator_but_not_the_broker_stops_before_its_successor_starts(
) {
    cut_off_holder(11, Direction::Both).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_asymmetric_partition_drops_only_the_workers_packets_to_the_coordinator() {
    cut_off_holder(12, Direction::Outbound).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_coordinator_cut_off_from_every_worker_for_twice_the_ttl() {
    if skip_without_servers() {
        return;
    }
    let Some(mut d) = Deployment::start(13, false).await else {
        return;
    };
    let (topic, records, backup) = d.backed_up_topic("net-coord", 2, 3000).await;
    let target = unique("net-coord-target");
    let plan = d.submit(backup.path(), &topic, &target, LEASE_CLOCK_ONLY);
    d.wait_for(
        &plan,
        Duration::from_secs(60),
        "both workers restoring",
        |s| s.tasks.iter().all(|t| t.state == "leased"),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cut = Duration::from_secs(2 * TTL_S);
    d.lab.partition("coord", &["w1", "w2"], Direction::Both);
    eprintln!("injected: coordinator cut off from both workers for {cut:?}");
    tokio::time::sleep(cut).await;
    let dropped = d.lab.dropped("coord");
    d.lab.heal("coord");
    eprintln!("healed; {dropped} packets dropped");
    assert!(dropped > 0, "the partition dropped nothing");
    let done = d.completed(&plan, Duration::from_secs(90)).await;
    assert_eq!(done.records_done, 6000);
    d.assert_exact(&records, &target);
}

#[tokio::test(flavor = "multi_thread")]
async fn delay_and_loss_on_the_broker_link_for_the_whole_restore() {
    if skip_without_servers() {
        return;
    }
    let Some(mut d) = Deployment::start(14, true).await else {
        return;
    };
    let (topic, records, backup) = d.backed_up_topic("net-slow", 2, 2000).await;
    let target = unique("net-slow-target");
    d.proxy.as_ref().expect("proxy").set_delay(true);
    d.lab.loss("broker", 5);
    eprintln!("injected: 150-250 ms delay each way and 5% packet loss on every broker connection, for the whole restore");
    let started = Instant::now();
    let plan = d.submit(backup.path(), &topic, &target, &[]);
    let done = d.completed(&plan, Duration::from_secs(240)).await;
    let proxy = d.proxy.as_ref().expect("proxy");
    let (delayed, dropped) = (proxy.delayed_chunks(), d.lab.dropped("broker"));
    proxy.set_delay(false);
    d.lab.heal("broker");
    eprintln!(
        "restore under delay and loss took {:?}: {delayed} chunks delayed, {dropped} packets dropped",
        started.elapsed()
    );
    assert!(delayed > 0 && dropped > 0, "faults were not in the path");
    assert_eq!(done.records_done, 4000);
    d.assert_exact(&records, &target);
}

/// One fault of the soak, with how long it lasts.
#[derive(Debug, Clone)]
enum Fault {
    KillWorker {
        worker: usize,
        down: Duration,
    },
    RestartCoordinator {
        down: Duration,
    },
    CutWorker {
        worker: usize,
        direction: Direction,
        for_: Duration,
    },
    CutCoordinator {
        for_: Duration,
    },
    SlowBroker {
        for_: Duration,
    },
}

/// xorshift64: the soak's faults are reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn secs(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from * 1000 + self.below((to - from) * 1000))
    }
}

impl Fault {
    fn pick(rng: &mut Rng) -> Fault {
        let worker = rng.below(2) as usize;
        match rng.below(5) {
            0 => Fault::KillWorker {
                worker,
                down: rng.secs(0, 3),
            },
            1 => Fault::RestartCoordinator {
                down: rng.secs(0, 3),
            },
            2 => Fault::CutWorker {
                worker,
                direction: if rng.below(2) == 0 {
                    Direction::Both
                } else {
                    Direction::Outbound
                },
                for_: rng.secs(2, 2 * (TTL_S + GRACE_S)),
            },
            3 => Fault::CutCoordinator {
                for_: rng.secs(2, 2 * TTL_S),
            },
            _ => Fault::SlowBroker {
                for_: rng.secs(3, 15),
            },
        }
    }

    /// Injects the fault, waits it out, and heals it.
    async fn apply(&self, d: &mut Deployment) {
        match *self {
            Fault::KillWorker { worker, down } => {
                d.kill_worker(worker);
                tokio::time::sleep(down).await;
                d.start_worker(worker);
            }
            Fault::RestartCoordinator { down } => {
                d.kill_coordinator();
                tokio::time::sleep(down).await;
                d.start_coordinator();
            }
            Fault::CutWorker {
                worker,
                direction,
                for_,
            } => {
                let host = format!("w{}", worker + 1);
                d.lab.partition(&host, &["coord"], direction);
                tokio::time::sleep(for_).await;
                d.lab.heal(&host);
            }
            Fault::CutCoordinator { for_ } => {
                d.lab.partition("coord", &["w1", "w2"], Direction::Both);
                tokio::time::sleep(for_).await;
                d.lab.heal("coord");
            }
            Fault::SlowBroker { for_ } => {
                let proxy = d.proxy.as_ref().expect("proxy");
                proxy.set_delay(true);
                d.lab.loss("broker", 5);
                tokio::time::sleep(for_).await;
                d.proxy.as_ref().expect("proxy").set_delay(false);
                d.lab.heal("broker");
            }
        }
    }
}

/// A bounded randomized soak (run by `scripts/net-soak.sh`, not in CI): for
/// `KB_NET_SOAK_MINUTES` (default 5) minutes, restore after restore, each with one to three
/// random faults (kill -9 of a worker, coordinator kill -9 and restart, a worker or the
/// coordinator cut off, delay and loss on the broker link), from seed `KB_NET_SOAK_SEED`
/// (default: the clock) plus the run number. One line per run; any lost or duplicated record
/// fails it.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a soak of several minutes: scripts/net-soak.sh"]
async fn network_soak() {
    if skip_without_servers() {
        return;
    }
    let minutes: u64 = std::env::var("KB_NET_SOAK_MINUTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let seed: u64 = std::env::var("KB_NET_SOAK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_secs())
        });
    let Some(mut d) = Deployment::start(20, true).await else {
        return;
    };
    let (topic, records, backup) = d.backed_up_topic("net-soak", 2, 3000).await;
    let total: u64 = records.iter().map(|r| r.len() as u64).sum();
    let until = Instant::now() + Duration::from_secs(minutes * 60);
    let mut run = 0u64;
    println!("network soak: {minutes} min, seeds from {seed}");
    while Instant::now() < until {
        run += 1;
        let run_seed = seed + run;
        let mut rng = Rng(run_seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let faults: Vec<Fault> = (0..1 + rng.below(3))
            .map(|_| Fault::pick(&mut rng))
            .collect();
        let target = unique("net-soak-target");
        let started = Instant::now();
        // ~6 s per partition undisturbed; the faults land while it runs.
        let plan = d.submit(
            backup.path(),
            &topic,
            &target,
            &["--max-records-per-sec", "500"],
        );
        for f in &faults {
            tokio::time::sleep(rng.secs(0, 3)).await;
            f.apply(&mut d).await;
        }
        let done = d.completed(&plan, Duration::from_secs(300)).await;
        assert_eq!(
            done.records_done, total,
            "run {run} seed {run_seed}: {faults:?}"
        );
        d.assert_exact(&records, &target);
        println!(
            "run {run} seed {run_seed}: exact, {total} records in {:.1} s; faults {faults:?}",
            started.elapsed().as_secs_f64()
        );
    }
    println!(
        "network soak: {run} runs, seeds {}..={}, 0 records lost or duplicated",
        seed + 1,
        seed + run
    );
}
