//! Prometheus text-format metrics without a metrics framework: counters and gauges are
//! atomics, the one latency histogram has fixed buckets, and a minimal HTTP endpoint serves
//! `GET /metrics`. Coordinator and worker each expose their own set.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A monotonically increasing counter.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    /// One more (several tasks of one worker move the same gauge at once).
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// One fewer, never below zero.
    pub fn dec(&self) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(1))
            });
    }
}

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// A latency histogram with fixed buckets.
#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; 10],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, seconds: f64) {
        for (i, b) in BUCKETS.iter().enumerate() {
            if seconds <= *b {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }
}

/// Renders metrics in the Prometheus text format.
#[derive(Default)]
pub struct Exposition(String);

impl Exposition {
    pub fn counter(&mut self, name: &str, help: &str, v: u64) -> &mut Self {
        let _ = writeln!(
            self.0,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
        self
    }
    pub fn gauge(&mut self, name: &str, help: &str, v: f64) -> &mut Self {
        let _ = writeln!(
            self.0,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}"
        );
        self
    }
    pub fn histogram(&mut self, name: &str, help: &str, h: &Histogram) -> &mut Self {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                self.0,
                "{name}_bucket{{le=\"{b}\"}} {}",
                h.counts[i].load(Ordering::Relaxed)
            );
        }
        let count = h.count.load(Ordering::Relaxed);
        let _ = writeln!(self.0, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            self.0,
            "{name}_sum {}",
            h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(self.0, "{name}_count {count}");
        self
    }
    pub fn finish(self) -> String {
        self.0
    }
}

/// Reads a request's head into `buf`: until its blank line, the buffer is full or the peer
/// stops sending. TCP may deliver a request in several pieces (a client writing it piece by
/// piece, under load): one read answered the first piece alone with a 404 and closed the
/// connection on the rest (a test's GET failed on a broken pipe).
async fn read_head(sock: &mut tokio::net::TcpStream, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
        match sock.read(&mut buf[n..]).await {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    n
}

/// Serves `render()` on `GET /metrics` (any other path: 404) until the task is dropped.
pub async fn serve(listener: TcpListener, render: impl Fn() -> String + Send + Sync + 'static) {
    let render = std::sync::Arc::new(render);
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let render = render.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let n = match tokio::time::timeout(
                std::time::Duration::from_secs(5),
                read_head(&mut sock, &mut buf),
            )
            .await
            {
                Ok(n) => n,
                Err(_) => return,
            };
            let head = String::from_utf8_lossy(&buf[..n]);
            let (status, body) = if head.starts_with("GET /metrics") {
                ("200 OK", render())
            } else {
                ("404 Not Found", "only /metrics is served\n".to_string())
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_arriving_in_pieces_is_answered_whole() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(serve(listener, || "up 1\n".to_string()));
        let mut sock = tokio::net::TcpStream::connect(addr).await.expect("connect");
        for piece in ["GET ", "/metrics", " HTTP/1.0\r\n", "\r\n"] {
            sock.write_all(piece.as_bytes()).await.expect("write");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let mut out = String::new();
        sock.read_to_string(&mut out).await.expect("read");
        server.abort();
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
        assert!(out.ends_with("up 1\n"), "{out}");
    }
}
