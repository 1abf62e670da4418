//! Separate hosts on one machine for network-fault tests: each host (coordinator, broker,
//! workers) is a network namespace with one veth into a bridge in a hub namespace, on the
//! subnet 10.77.N.0/24 that only this lab uses; the test process joins the bridge at
//! 10.77.N.254 to submit plans and read the target. Faults are nftables rules inside a host's
//! namespace (partitions, one-way drops, random loss) and a delaying TCP proxy for latency
//! (this kernel has no `sch_netem`, so `tc netem` cannot be used; see README). Everything is
//! removed when the lab is dropped, also when the test fails, and namespaces left by a killed
//! run are removed before a lab with the same number is made.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct NetLab {
    n: u16,
    hosts: Vec<String>,
}

/// Which of a host's packets a partition drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Both ways: nothing between the host and the peers.
    Both,
    /// Only packets the host sends to the peers (their replies would pass).
    Outbound,
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    run(Command::new("ip").args(args))
}

impl NetLab {
    /// A lab of `hosts` on subnet 10.77.`n`.0/24 (`n` unique among the labs that run at the
    /// same time). Returns `None` (the test is skipped, with the reason printed) when
    /// namespaces cannot be made here, unless `KAFKA_BACKUP_REQUIRE_SERVERS=1` (as in CI):
    /// then that is a failure, so the scenarios never pass without running.
    pub fn create(n: u16, hosts: &[&str]) -> Option<NetLab> {
        let lab = NetLab {
            n,
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
        };
        lab.remove();
        match lab.build() {
            Ok(()) => Some(lab),
            Err(e) => {
                let why = format!(
                    "network namespaces, veth pairs and nftables are needed (root, iproute2 and nftables; scripts/test-env.sh installs them): {e}"
                );
                if std::env::var("KAFKA_BACKUP_REQUIRE_SERVERS").is_ok_and(|v| v == "1") {
                    panic!("{why}");
                }
                use std::io::Write;
                let _ = writeln!(std::io::stderr(), "skipped: {why}");
                None
            }
        }
    }

    fn ns(&self, host: &str) -> String {
        format!("kb{}-{host}", self.n)
    }

    fn hub(&self) -> String {
        self.ns("hub")
    }

    fn root_link(&self) -> String {
        format!("kb{}root", self.n)
    }

    fn build(&self) -> Result<(), String> {
        let hub = self.hub();
        ip(&["netns", "add", &hub])?;
        ip(&["-n", &hub, "link", "set", "lo", "up"])?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        for (i, host) in self.hosts.iter().enumerate() {
            let ns = self.ns(host);
            let port = format!("p{i}");
            ip(&["netns", "add", &ns])?;
            ip(&[
                "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &port,
                "netns", &hub,
            ])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", self.ip(host)),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &hub, "link", "set", &port, "master", "br0", "up"])?;
        }
        let root = self.root_link();
        ip(&[
            "link", "add", &root, "type", "veth", "peer", "name", "root", "netns", &hub,
        ])?;
        ip(&["-n", &hub, "link", "set", "root", "master", "br0", "up"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", self.root_ip()),
            "dev",
            &root,
        ])?;
        ip(&["link", "set", &root, "up"])?;
        // nftables must work in the namespaces, or no fault could be injected.
        self.nft(
            &self.hosts[0],
            "add table inet probe\ndelete table inet probe\n",
        )
    }

    /// Removes every namespace and link of this lab (idempotent).
    fn remove(&self) {
        for host in &self.hosts {
            let _ = ip(&["netns", "del", &self.ns(host)]);
        }
        let _ = ip(&["netns", "del", &self.hub()]);
        let _ = ip(&["link", "del", &self.root_link()]);
    }

    /// The address of `host` (in the order given to `create`, from .1).
    pub fn ip(&self, host: &str) -> String {
        let i = self
            .hosts
            .iter()
            .position(|h| h == host)
            .unwrap_or_else(|| panic!("no host {host} in this lab"));
        format!("10.77.{}.{}", self.n, i + 1)
    }

    /// The test process's own address on the lab's bridge.
    pub fn root_ip(&self) -> String {
        format!("10.77.{}.254", self.n)
    }

    /// Starts `program args` on `host` in directory `cwd`, its stderr appended to `log`.
    pub fn spawn(
        &self,
        host: &str,
        program: impl AsRef<std::ffi::OsStr>,
        args: &[&str],
        cwd: &Path,
        log: &Path,
    ) -> Child {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        Command::new("ip")
            .args(["netns", "exec", &self.ns(host)])
            .arg(program)
            .args(args)
            .current_dir(cwd)
            .env("RUST_LOG", "info,librdkafka=warn,rdkafka=warn")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("ip netns exec")
    }

    fn nft(&self, host: &str, script: &str) -> Result<(), String> {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns(host), "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("nft: {e}"))?;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(script.as_bytes())
            .map_err(|e| format!("nft stdin: {e}"))?;
        let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "nft in {host}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    fn fault_table(&self, host: &str, input: &str, output: &str) {
        let script = format!(
            "table inet fault {{\n\
             chain in {{\ntype filter hook input priority 0; policy accept;\n{input}\n}}\n\
             chain out {{\ntype filter hook output priority 0; policy accept;\n{output}\n}}\n\
             }}\n"
        );
        self.heal(host);
        self.nft(host, &script).expect("inject fault");
    }

    /// Cuts `host` off from `peers` (by their lab host names) until `heal`.
    pub fn partition(&self, host: &str, peers: &[&str], direction: Direction) {
        let set = peers
            .iter()
            .map(|p| self.ip(p))
            .collect::<Vec<_>>()
            .join(", ");
        let input = match direction {
            Direction::Both => format!("ip saddr {{ {set} }} counter drop"),
            Direction::Outbound => String::new(),
        };
        self.fault_table(host, &input, &format!("ip daddr {{ {set} }} counter drop"));
    }

    /// Drops `percent` % of `host`'s packets at random, each way, until `heal`.
    pub fn loss(&self, host: &str, percent: u32) {
        let rule = format!("numgen random mod 100 < {percent} counter drop");
        self.fault_table(host, &rule, &rule);
    }

    /// Packets the faults on `host` have dropped so far.
    pub fn dropped(&self, host: &str) -> u64 {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns(host),
                "nft",
                "list",
                "table",
                "inet",
                "fault",
            ])
            .output()
            .expect("nft list");
        let text = String::from_utf8_lossy(&out.stdout);
        let words: Vec<&str> = text.split_whitespace().collect();
        words
            .windows(2)
            .filter(|w| w[0] == "packets")
            .filter_map(|w| w[1].parse::<u64>().ok())
            .sum()
    }

    /// Removes every fault from `host`.
    pub fn heal(&self, host: &str) {
        let _ = self.nft(host, "table inet fault {}\ndelete table inet fault\n");
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A TCP proxy that delays every chunk by a random 150–250 ms (each direction, order kept),
/// standing in for `tc netem delay 200ms 50ms`. While disabled it forwards at once.
pub struct DelayProxy {
    pub addr: SocketAddr,
    enabled: Arc<AtomicBool>,
    delayed: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl DelayProxy {
    pub async fn start(listen: &str, upstream: SocketAddr, seed: u64) -> DelayProxy {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .expect("proxy listen");
        let addr = listener.local_addr().expect("addr");
        let enabled = Arc::new(AtomicBool::new(false));
        let delayed = Arc::new(AtomicU64::new(0));
        let rng = Arc::new(AtomicU64::new(seed | 1));
        let (on, count) = (enabled.clone(), delayed.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let ends = (on.clone(), rng.clone(), count.clone());
                tokio::spawn(pump(cr, sw, ends.clone()));
                tokio::spawn(pump(sr, cw, ends));
            }
        });
        DelayProxy {
            addr,
            enabled,
            delayed,
            task,
        }
    }

    /// Chunks forwarded with a delay so far.
    pub fn delayed_chunks(&self) -> u64 {
        self.delayed.load(Ordering::SeqCst)
    }

    pub fn set_delay(&self, on: bool) {
        self.enabled.store(on, Ordering::SeqCst);
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn next_delay(rng: &AtomicU64) -> Duration {
    // xorshift64: reproducible from the seed, good enough for jitter.
    let mut x = rng.load(Ordering::Relaxed);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    rng.store(x, Ordering::Relaxed);
    Duration::from_millis(150 + x % 101)
}

/// Copies one direction; each chunk is written no earlier than its own delay after it was
/// read, and never before the chunk read before it.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    (enabled, rng, delayed): (Arc<AtomicBool>, Arc<AtomicU64>, Arc<AtomicU64>),
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let delay = if enabled.load(Ordering::SeqCst) {
                    delayed.fetch_add(1, Ordering::Relaxed);
                    next_delay(&rng)
                } else {
                    Duration::ZERO
                };
                if tx
                    .send((tokio::time::Instant::now() + delay, buf[..n].to_vec()))
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}
