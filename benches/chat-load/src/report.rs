//! Results: one [`Record`] per measured run, printed as a table for people
//! and as one JSON line each for tools.
//!
//! The JSON lines are the source of truth: `scripts/bench` collects them,
//! and `chat-load report` reads them back to compare variants, check the
//! targets and draw the plot. The table is a convenience and may change.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::track::{Counts, Latency};
use crate::watch::Spent;

/// One measured run of one scenario, case, variant and load shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// `login`, `direct`, `cross`, `group`, `offline`, `idle` or `echo`.
    pub scenario: String,
    /// What the scenario measured in this record, e.g. `rr` or `pipelined`
    /// for echo, `members=100` for group, `mariadb` for login's baseline.
    pub case: String,
    /// The deployment and wire, as `--variant` named them
    /// (e.g. `tokio/json/sqlite`).
    pub variant: String,
    /// `closed` (K in flight per connection), `open` (fixed rate), or a
    /// scenario's own: `backlog` (offline), `ramp` (idle).
    pub shape: String,
    /// Messages in flight per sender, for the closed loop.
    pub in_flight: Option<u32>,
    /// The open loop's rate, per second.
    pub target_rate: Option<f64>,
    /// Connections open during the measurement.
    pub connections: u64,
    /// Length of the measured window.
    pub seconds: f64,
    /// Messages (or logins, round trips) completed per second.
    pub msgs_per_s: f64,
    /// Deliveries per second: messages times recipients.
    pub deliveries_per_s: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub sent: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    /// Error replies and connections that failed.
    pub errors: u64,
    /// CPU and memory of each watched process.
    pub watch: BTreeMap<String, Spent>,
    /// Scenario-specific figures (PUBLISHes per message, memory per idle
    /// connection, ...).
    pub extra: BTreeMap<String, Value>,
    /// Which repetition of the suite this is, if `--run` said.
    pub run: Option<u32>,
    /// Anything a reader must know to read the figures right.
    pub note: String,
}

impl Record {
    /// A record with the identifying fields set.
    pub fn new(scenario: &str, case: &str, variant: &str, shape: &str) -> Record {
        Record {
            scenario: scenario.into(),
            case: case.into(),
            variant: variant.into(),
            shape: shape.into(),
            ..Record::default()
        }
    }

    /// Sets the latency quantiles.
    pub fn set_latency(&mut self, latency: &Latency) {
        self.p50_us = latency.quantile_us(0.5);
        self.p99_us = latency.quantile_us(0.99);
        self.p999_us = latency.quantile_us(0.999);
        self.max_us = latency.max_us();
    }

    /// Sets the loss and order counts.
    pub fn set_counts(&mut self, counts: &Counts) {
        self.sent = counts.sent;
        self.delivered = counts.delivered;
        self.lost = counts.lost;
        self.duplicated = counts.duplicated;
        self.out_of_order = counts.out_of_order;
    }

    /// Adds a scenario-specific figure.
    pub fn extra(&mut self, key: &str, value: impl Into<Value>) {
        self.extra.insert(key.into(), value.into());
    }

    /// Whether nothing was lost, duplicated or reordered, and nothing failed.
    pub fn is_clean(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.out_of_order == 0 && self.errors == 0
    }
}

/// Prints the table, then the JSON lines, to standard output, and appends
/// the JSON lines to `json` if given.
pub fn emit(records: &[Record], json: Option<&Path>) -> Result<()> {
    print!("{}", table(records));
    let mut lines = String::new();
    for record in records {
        lines.push_str(&serde_json::to_string(record).context("cannot encode a record")?);
        lines.push('\n');
    }
    print!("{lines}");
    if let Some(path) = json {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        file.write_all(lines.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// The records as an aligned text table.
pub fn table(records: &[Record]) -> String {
    let header = [
        "scenario",
        "case",
        "variant",
        "shape",
        "conns",
        "msg/s",
        "deliv/s",
        "p50 ms",
        "p99 ms",
        "p999 ms",
        "max ms",
        "sent",
        "deliv",
        "lost",
        "dup",
        "ooo",
        "err",
        "cpu µs/msg",
        "rss/conn KiB",
    ];
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            let shape = match (r.in_flight, r.target_rate) {
                (Some(k), _) => format!("{} K={k}", r.shape),
                (_, Some(rate)) => format!("{} {rate:.0}/s", r.shape),
                _ => r.shape.clone(),
            };
            vec![
                r.scenario.clone(),
                r.case.clone(),
                r.variant.clone(),
                shape,
                r.connections.to_string(),
                format!("{:.0}", r.msgs_per_s),
                format!("{:.0}", r.deliveries_per_s),
                ms(r.p50_us),
                ms(r.p99_us),
                ms(r.p999_us),
                ms(r.max_us),
                r.sent.to_string(),
                r.delivered.to_string(),
                r.lost.to_string(),
                r.duplicated.to_string(),
                r.out_of_order.to_string(),
                r.errors.to_string(),
                per_process(r, |s| s.cpu_us_per_msg.map(|v| format!("{v:.1}"))),
                per_process(r, |s| s.rss_per_conn_kib.map(|v| format!("{v:.1}"))),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", padded.join("  ").trim_end());
    };
    line(&mut out, header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(&mut out, row);
    }
    for record in records.iter().filter(|r| !r.note.is_empty()) {
        let _ = writeln!(
            out,
            "note ({} {}): {}",
            record.scenario, record.case, record.note
        );
    }
    out
}

/// Milliseconds with three decimals from microseconds.
pub fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

/// `name=value` for every watched process that has the value, the load
/// generator last.
fn per_process(record: &Record, value: impl Fn(&Spent) -> Option<String>) -> String {
    let mut parts: Vec<String> = record
        .watch
        .iter()
        .filter(|(name, _)| name.as_str() != "chat-load")
        .filter_map(|(name, spent)| value(spent).map(|v| format!("{name}={v}")))
        .collect();
    if let Some(v) = record.watch.get("chat-load").and_then(&value) {
        parts.push(format!("chat-load={v}"));
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_json_round_trip() {
        let mut record = Record::new("direct", "pairs", "tokio/json", "closed");
        record.in_flight = Some(1);
        record.extra("publishes_per_msg", 1.0);
        record.watch.insert(
            "server".into(),
            Spent {
                pid: 7,
                cpu_us_per_msg: Some(12.5),
                ..Spent::default()
            },
        );
        let line = serde_json::to_string(&record).expect("encodes");
        assert!(!line.contains('\n'));
        let back: Record = serde_json::from_str(&line).expect("decodes");
        assert_eq!(back, record);
    }

    #[test]
    fn table_names_every_record() {
        let a = Record::new("echo", "rr", "json", "closed");
        let mut b = Record::new("group", "members=100", "json", "open");
        b.target_rate = Some(500.0);
        b.note = "members on two servers".into();
        let text = table(&[a, b]);
        assert!(text.contains("echo") && text.contains("members=100"));
        assert!(text.contains("open 500/s"));
        assert!(text.contains("note (group members=100)"));
    }
}
