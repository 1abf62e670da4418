//! Live restore progress. On a terminal: a tree drawn with indicatif — one
//! entry per partition task (bar, bytes, records, elapsed) and an overall entry (bar,
//! throughput, ETA, records). Otherwise: one plain status line per second, so logs and CI
//! output stay readable.

use crate::cli_output::progress_line;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use kafka_backup_coordinator::ledger::{PlanState, TaskStatusState};
use kafka_backup_proto::PlanStatus;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

pub enum Progress {
    Tree(Tree),
    Lines { last: Option<Instant> },
    Off,
}

pub struct Tree {
    multi: MultiProgress,
    tasks: Vec<ProgressBar>,
    overall: ProgressBar,
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Progress {
    /// A tree on a terminal (stderr), plain lines otherwise; nothing when not asked for.
    pub fn new(enabled: bool) -> Self {
        if !enabled {
            Progress::Off
        } else if std::io::stderr().is_terminal() {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(4));
            let overall = ProgressBar::new(0).with_style(
                ProgressStyle::with_template(
                    "└─ Overall\n   ├─ Progress: {bar:10} {percent:>3}% ({bytes} / {total_bytes})\n   {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("█▓░"),
            );
            let overall = multi.add(overall);
            Progress::Tree(Tree {
                multi,
                tasks: vec![],
                overall,
            })
        } else {
            Progress::Lines { last: None }
        }
    }

    pub fn update(&mut self, s: &PlanStatus, started: Instant) {
        match self {
            Progress::Off => {}
            Progress::Lines { last } => {
                if last.is_none_or(|l| l.elapsed() >= Duration::from_secs(1)) {
                    *last = Some(Instant::now());
                    eprintln!("{}", progress_line(s, started.elapsed().as_secs_f64()));
                }
            }
            Progress::Tree(t) => t.update(s, started),
        }
    }

    pub fn finish(&mut self) {
        if let Progress::Tree(t) = self {
            for b in &t.tasks {
                b.finish();
            }
            t.overall.finish();
        }
    }
}

impl Tree {
    fn update(&mut self, s: &PlanStatus, started: Instant) {
        let style = ProgressStyle::with_template(
            "├─ {prefix}\n│  ├─ Progress: {bar:10} {percent:>3}% ({bytes} / {total_bytes})\n│  └─ {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("█▓░");
        if self.tasks.is_empty() {
            let _ = self.multi.println(format!(
                "Restoring backup: {}\n├─ Plan: {}\n├─ Partitions: {}\n├─ Total records: {}\n│",
                s.backup_id,
                s.plan_id,
                s.tasks.len(),
                thousands(s.records_total)
            ));
            for (i, t) in s.tasks.iter().enumerate() {
                let bar = self.multi.insert_before(
                    &self.overall,
                    ProgressBar::new(t.bytes_total.max(1)).with_style(style.clone()),
                );
                bar.set_prefix(format!(
                    "Task [{}/{}] {} → {}/{}",
                    i + 1,
                    s.tasks.len(),
                    crate::cli_output::source_label(
                        &t.source_topic,
                        t.source_partition,
                        &t.merged_source_partitions
                    ),
                    t.target_topic,
                    t.target_partition
                ));
                self.tasks.push(bar);
            }
        }
        let now_ms = chrono::Utc::now().timestamp_millis();
        for (bar, t) in self.tasks.iter().zip(&s.tasks) {
            bar.set_length(t.bytes_total.max(1));
            bar.set_position(
                if TaskStatusState::parse(&t.state) == Some(TaskStatusState::Completed) {
                    t.bytes_total.max(1)
                } else {
                    t.bytes_done
                },
            );
            let elapsed = if t.started_at_ms > 0 {
                (now_ms - t.started_at_ms).max(0) / 1000
            } else {
                0
            };
            bar.set_message(format!(
                "Records: {} / {} · {} · Elapsed: {elapsed}s",
                thousands(t.records_done),
                thousands(t.records_total),
                t.state
            ));
        }
        let secs = started.elapsed().as_secs_f64().max(0.001);
        let rate = s.bytes_done as f64 / secs;
        let eta = if rate > 0.0 && s.bytes_total > s.bytes_done {
            format!("{:.0}s", (s.bytes_total - s.bytes_done) as f64 / rate)
        } else {
            "-".into()
        };
        self.overall.set_length(s.bytes_total.max(1));
        self.overall.set_position(
            if PlanState::parse(&s.state) == Some(PlanState::Completed) {
                s.bytes_total.max(1)
            } else {
                s.bytes_done
            },
        );
        self.overall.set_message(format!(
            "├─ Throughput: {:.1} MB/s\n   ├─ ETA: {eta}\n   └─ Total records restored: {} / {}",
            rate / 1e6,
            thousands(s.records_done),
            thousands(s.records_total)
        ));
    }
}
