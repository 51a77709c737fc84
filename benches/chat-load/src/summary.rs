//! `chat-load report`: the JSON lines of a suite's repeated runs turned
//! into a table of medians, the targets checked as ratios within each run,
//! and the latency/throughput plot.
//!
//! Absolute figures on a shared 2-core machine move from one run to the
//! next; ratios between two measurements of the same run move much less.
//! So every target is computed per run (say direct against echo of run 2)
//! and the median of those ratios is what is reported, with each run's
//! value beside it.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::plot::{self, Series};
use crate::report::{ms, Record};

/// Flags of `report`.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// JSON lines written by the scenarios (repeatable); other lines are
    /// skipped.
    #[arg(long = "input", required = true, value_name = "PATH")]
    pub inputs: Vec<PathBuf>,

    /// Also write the summary (Markdown) here.
    #[arg(long, value_name = "PATH")]
    pub markdown: Option<PathBuf>,

    /// Write the latency/throughput plot here.
    #[arg(long, value_name = "PATH")]
    pub svg: Option<PathBuf>,
}

/// Reads, summarises, writes.
pub fn run(args: &ReportArgs) -> Result<()> {
    let mut records = Vec::new();
    for path in &args.inputs {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        for line in text.lines().filter(|l| l.starts_with('{')) {
            match serde_json::from_str::<Record>(line) {
                Ok(record) => records.push(record),
                Err(error) => eprintln!("skipping a line of {}: {error}", path.display()),
            }
        }
    }
    let text = summarise(&records);
    print!("{text}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, &text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.svg {
        let svg = plot::svg(
            "p99 latency against throughput (medians of the runs)",
            &series(&records),
        );
        std::fs::write(path, svg).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// The Markdown summary: results, then targets.
pub fn summarise(records: &[Record]) -> String {
    let mut out = String::new();
    let runs = records.iter().filter_map(|r| r.run).max().unwrap_or(1);
    let _ = writeln!(out, "### Results (median of {runs} run(s))\n");
    out.push_str(&results_table(records));
    let _ = writeln!(
        out,
        "\n### Targets (ratios within each run; median, then each run)\n"
    );
    out.push_str(&targets_table(records));
    out
}

/// What identifies one line of the results table across runs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Key {
    scenario: String,
    case: String,
    variant: String,
    shape: String,
}

/// A run of one scenario, case and variant.
type RunOf<'a> = (Option<u32>, &'a str, &'a str, &'a str);

/// The table key of each record. Open-loop rates differ between runs
/// (they are fractions of each run's closed loop), so open runs are keyed
/// by their rank within their run.
fn keys(records: &[Record]) -> Vec<Key> {
    // The open runs of each (run, scenario, case, variant), as (rate, index).
    let mut rank: HashMap<RunOf<'_>, Vec<(f64, usize)>> = HashMap::new();
    for (i, r) in records.iter().enumerate() {
        if r.shape == "open" {
            rank.entry((r.run, &r.scenario, &r.case, &r.variant))
                .or_default()
                .push((r.target_rate.unwrap_or(0.0), i));
        }
    }
    let mut open_label = HashMap::new();
    for list in rank.values_mut() {
        list.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (n, (_, i)) in list.iter().enumerate() {
            open_label.insert(*i, format!("open #{}", n + 1));
        }
    }
    records
        .iter()
        .enumerate()
        .map(|(i, r)| Key {
            scenario: r.scenario.clone(),
            case: r.case.clone(),
            variant: r.variant.clone(),
            shape: match (&open_label.get(&i), r.in_flight) {
                (Some(label), _) => (*label).clone(),
                (None, Some(k)) => format!("{} K={k}", r.shape),
                (None, None) => r.shape.clone(),
            },
        })
        .collect()
}

fn grouped(records: &[Record]) -> BTreeMap<Key, Vec<&Record>> {
    let mut groups: BTreeMap<Key, Vec<&Record>> = BTreeMap::new();
    for (key, record) in keys(records).into_iter().zip(records) {
        groups.entry(key).or_default().push(record);
    }
    groups
}

fn results_table(records: &[Record]) -> String {
    let mut out = String::from(
        "| scenario | case | variant | shape | runs | conns | msg/s | deliveries/s | p50 ms | p99 ms | p999 ms | max ms | lost | dup | ooo | err | server CPU µs/msg | other CPU µs/msg | load CPU µs/msg | server RSS KiB/conn | notes |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (key, group) in grouped(records) {
        let med = |f: &dyn Fn(&Record) -> f64| median(group.iter().map(|r| f(r)).collect());
        let sum = |f: &dyn Fn(&Record) -> u64| group.iter().map(|r| f(r)).sum::<u64>();
        let cpu = |pick: &dyn Fn(&str) -> bool| {
            let values: Vec<f64> = group
                .iter()
                .filter_map(|r| {
                    let parts: Vec<f64> = r
                        .watch
                        .iter()
                        .filter(|(name, _)| pick(name))
                        .filter_map(|(_, s)| s.cpu_us_per_msg)
                        .collect();
                    (!parts.is_empty()).then(|| parts.iter().sum())
                })
                .collect();
            if values.is_empty() {
                "–".to_owned()
            } else {
                format!("{:.1}", median(values))
            }
        };
        let rss: Vec<f64> = group
            .iter()
            .filter_map(|r| {
                let parts: Vec<f64> = r
                    .watch
                    .iter()
                    .filter(|(name, _)| is_server(name))
                    .filter_map(|(_, s)| s.rss_per_conn_kib)
                    .collect();
                (!parts.is_empty()).then(|| parts.iter().sum())
            })
            .collect();
        let rss = if rss.is_empty() {
            "–".to_owned()
        } else {
            format!("{:.2}", median(rss))
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            key.scenario,
            key.case,
            key.variant,
            key.shape,
            group.len(),
            med(&|r| r.connections as f64),
            med(&|r| r.msgs_per_s),
            med(&|r| r.deliveries_per_s),
            ms(med(&|r| r.p50_us as f64) as u64),
            ms(med(&|r| r.p99_us as f64) as u64),
            ms(med(&|r| r.p999_us as f64) as u64),
            ms(med(&|r| r.max_us as f64) as u64),
            sum(&|r| r.lost),
            sum(&|r| r.duplicated),
            sum(&|r| r.out_of_order),
            sum(&|r| r.errors),
            cpu(&is_server),
            cpu(&|n| !is_server(n) && n != "chat-load"),
            cpu(&|n| n == "chat-load"),
            rss,
            notes(&group),
        );
    }
    out
}

/// Whether a watched process is the measured server (or the echo
/// responder standing in for one).
fn is_server(name: &str) -> bool {
    name.starts_with("server") || name == "echo"
}

/// The scenario-specific figures worth a column, medians over the runs.
fn notes(group: &[&Record]) -> String {
    const KEYS: [(&str, &str); 7] = [
        ("publishes_per_msg", "PUBLISH/msg"),
        ("publishes_expected_per_msg", "expected"),
        ("server_kib_per_conn", "server KiB/conn"),
        ("kernel_slab_bytes_per_conn", "kernel slab B/conn"),
        ("held", "held"),
        ("register_per_s", "REG/s"),
        ("in_login_ack", "in LOGIN_ACK"),
    ];
    let mut parts = Vec::new();
    for (key, label) in KEYS {
        let values: Vec<f64> = group
            .iter()
            .filter_map(|r| r.extra.get(key).and_then(|v| v.as_f64()))
            .collect();
        if !values.is_empty() {
            parts.push(format!("{label} {}", short(median(values))));
        }
    }
    parts.join(", ")
}

fn short(value: f64) -> String {
    if value.fract() == 0.0 || value.abs() >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

/// The median; 0 for no values.
fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// A variant label split into its parts: `tokio/sqlite/json/stream`.
struct Variant<'a> {
    transport: &'a str,
    deployment: String,
    codec: &'a str,
    framing: &'a str,
}

impl<'a> Variant<'a> {
    fn parse(label: &'a str) -> Variant<'a> {
        let parts: Vec<&str> = label.split('/').collect();
        let n = parts.len();
        Variant {
            transport: parts.first().copied().unwrap_or(""),
            deployment: parts
                .get(1..n.saturating_sub(2))
                .map(|p| p.join("/"))
                .unwrap_or_default(),
            codec: parts.get(n.wrapping_sub(2)).copied().unwrap_or(""),
            framing: parts.last().copied().unwrap_or(""),
        }
    }

    fn is_json_stream(&self) -> bool {
        self.codec == "json" && self.framing == "stream"
    }
}

/// One target: a name, how to compute it in one run, and whether a value
/// meets it.
struct Check {
    name: &'static str,
    value: fn(&[&Record]) -> Option<f64>,
    met: fn(f64) -> bool,
    unit: &'static str,
}

fn closed<'a>(
    run: &[&'a Record],
    scenario: &str,
    case: &str,
    variant: impl Fn(&Variant) -> bool,
) -> Option<&'a Record> {
    run.iter().copied().find(|r| {
        r.scenario == scenario
            && r.case == case
            && r.shape == "closed"
            && variant(&Variant::parse(&r.variant))
    })
}

fn direct_json(run: &[&Record]) -> Option<f64> {
    let direct = closed(run, "direct", "pairs", |v| {
        v.transport == "tokio" && v.is_json_stream()
    })?;
    Some(direct.msgs_per_s)
}

fn echo_rr<'a>(run: &[&'a Record]) -> Option<&'a Record> {
    closed(run, "echo", "rr", |v| v.is_json_stream())
}

const CHECKS: [Check; 11] = [
    Check {
        name: "direct ≥ 0.6 × echo round trips/s (100 connections)",
        value: |run| Some(direct_json(run)? / echo_rr(run)?.msgs_per_s),
        met: |v| v >= 0.6,
        unit: "×",
    },
    Check {
        name: "direct p99 ≤ 2 × echo p99",
        value: |run| {
            let direct = closed(run, "direct", "pairs", |v| {
                v.transport == "tokio" && v.is_json_stream()
            })?;
            Some(direct.p99_us as f64 / echo_rr(run)?.p99_us.max(1) as f64)
        },
        met: |v| v <= 2.0,
        unit: "×",
    },
    Check {
        name: "cross ≥ 0.5 × direct",
        value: |run| {
            let cross = closed(run, "cross", "pairs", |v| {
                v.transport == "tokio" && !v.deployment.contains("nginx") && v.is_json_stream()
            })?;
            Some(cross.msgs_per_s / direct_json(run)?)
        },
        met: |v| v >= 0.5,
        unit: "×",
    },
    Check {
        name: "cross through nginx ≥ 0.5 × direct",
        value: |run| {
            let cross = closed(run, "cross", "pairs", |v| {
                v.deployment.contains("nginx") && v.is_json_stream()
            })?;
            Some(cross.msgs_per_s / direct_json(run)?)
        },
        met: |v| v >= 0.5,
        unit: "×",
    },
    Check {
        name: "group of 100 on 2 servers: deliveries/s ≥ 0.5 × pipelined echo msgs/s",
        value: |run| {
            let group = closed(run, "group", "members=100", |v| v.is_json_stream())?;
            let echo = closed(run, "echo", "pipelined", |v| v.is_json_stream())?;
            Some(group.deliveries_per_s / echo.msgs_per_s)
        },
        met: |v| v >= 0.5,
        unit: "×",
    },
    Check {
        name: "group: PUBLISHes per message, at most one per other server holding members (worst excess shown; below 0 when messages shared PUBLISHes)",
        value: |run| {
            let groups: Vec<&&Record> = run.iter().filter(|r| r.scenario == "group").collect();
            let mut worst: Option<f64> = None;
            for r in groups {
                let got = r.extra.get("publishes_per_msg")?.as_f64()?;
                let want = r.extra.get("publishes_expected_per_msg")?.as_f64()?;
                let excess = got - want;
                worst = Some(worst.map_or(excess, |w: f64| w.max(excess)));
            }
            worst
        },
        met: |v| v < 0.005,
        unit: "",
    },
    Check {
        name: "login (MariaDB) ≥ 0.8 × MariaDB's own rate for the login's reads",
        value: |run| {
            let server = closed(run, "login", "server", |v| v.deployment.contains("mariadb"))?;
            let db = closed(run, "login", "mariadb-login-reads", |_| true)?;
            Some(server.msgs_per_s / db.msgs_per_s)
        },
        met: |v| v >= 0.8,
        unit: "×",
    },
    Check {
        name: "idle: server memory per logged-in connection ≤ 3 KiB",
        value: |run| {
            let idle = run.iter().find(|r| r.scenario == "idle")?;
            idle.extra.get("server_kib_per_conn")?.as_f64()
        },
        met: |v| v <= 3.0,
        unit: " KiB",
    },
    Check {
        name: "idle: 10,000 connections held, ping p99 ≤ 50 ms during the ramp (p99 ms shown)",
        value: |run| {
            let idle = run.iter().find(|r| r.scenario == "idle")?;
            let held = idle.extra.get("held")?.as_u64()?;
            // A shortfall in connections fails the target whatever the ping.
            Some(if held >= 10_000 {
                idle.p99_us as f64 / 1000.0
            } else {
                f64::INFINITY
            })
        },
        met: |v| v <= 50.0,
        unit: " ms",
    },
    Check {
        name: "mio within 0.8–1.25 × tokio on direct",
        value: |run| {
            let mio = closed(run, "direct", "pairs", |v| {
                v.transport == "mio" && v.is_json_stream()
            })?;
            Some(mio.msgs_per_s / direct_json(run)?)
        },
        met: |v| (0.8..=1.25).contains(&v),
        unit: "×",
    },
    Check {
        name: "protobuf ≥ JSON on direct",
        value: |run| {
            let pb = closed(run, "direct", "pairs", |v| {
                v.transport == "tokio" && v.codec == "protobuf"
            })?;
            Some(pb.msgs_per_s / direct_json(run)?)
        },
        met: |v| v >= 1.0,
        unit: "×",
    },
];

fn targets_table(records: &[Record]) -> String {
    let mut runs: BTreeMap<Option<u32>, Vec<&Record>> = BTreeMap::new();
    for record in records {
        runs.entry(record.run).or_default().push(record);
    }
    let mut out = String::from("| target | median | met | each run |\n|---|---|---|---|\n");
    for check in &CHECKS {
        let values: Vec<f64> = runs.values().filter_map(|run| (check.value)(run)).collect();
        if values.is_empty() {
            let _ = writeln!(out, "| {} | not measured | – | |", check.name);
            continue;
        }
        let each: Vec<String> = values.iter().map(|v| format!("{v:.2}")).collect();
        let value = median(values.clone());
        let met = if (check.met)(value) {
            "met"
        } else {
            "**missed**"
        };
        let _ = writeln!(
            out,
            "| {} | {value:.2}{} | {met} | {} |",
            check.name,
            check.unit,
            each.join(", ")
        );
    }
    let dirty: Vec<String> = records
        .iter()
        .filter(|r| !r.is_clean())
        .map(|r| {
            format!(
                "{} {} {} {} (run {}): lost {}, dup {}, ooo {}, err {}",
                r.scenario,
                r.case,
                r.variant,
                r.shape,
                r.run.unwrap_or(0),
                r.lost,
                r.duplicated,
                r.out_of_order,
                r.errors
            )
        })
        .collect();
    let met = if dirty.is_empty() {
        "met"
    } else {
        "**missed**"
    };
    let _ = writeln!(
        out,
        "| zero lost, duplicated, reordered (and no errors) everywhere | {} of {} records clean | {met} | |",
        records.len() - dirty.len(),
        records.len()
    );
    for line in dirty {
        let _ = writeln!(out, "\n- not clean: {line}");
    }
    out
}

/// One plot line per message scenario, case and variant.
fn series(records: &[Record]) -> Vec<Series> {
    let mut lines: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for (key, group) in grouped(records) {
        if !["echo", "direct", "cross", "group"].contains(&key.scenario.as_str()) {
            continue;
        }
        let throughput = median(
            group
                .iter()
                .map(|r| match key.scenario.as_str() {
                    "group" => r.deliveries_per_s,
                    _ => r.msgs_per_s,
                })
                .collect(),
        );
        let p99 = median(group.iter().map(|r| r.p99_us as f64 / 1000.0).collect());
        let name = format!("{} {} {}", key.scenario, key.case, key.variant);
        lines.entry(name).or_default().push((throughput, p99));
    }
    lines
        .into_iter()
        .map(|(name, points)| Series { name, points })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(scenario: &str, case: &str, variant: &str, run: u32, rate: f64) -> Record {
        let mut r = Record::new(scenario, case, variant, "closed");
        r.in_flight = Some(1);
        r.run = Some(run);
        r.msgs_per_s = rate;
        r.deliveries_per_s = rate;
        r.p99_us = 1000;
        r
    }

    #[test]
    fn targets_are_ratios_within_each_run() {
        let records = vec![
            record("echo", "rr", "echo/json/stream", 1, 10_000.0),
            record("direct", "pairs", "tokio/sqlite/json/stream", 1, 7_000.0),
            // Run 2 is twice as fast overall; the ratio is what counts.
            record("echo", "rr", "echo/json/stream", 2, 20_000.0),
            record("direct", "pairs", "tokio/sqlite/json/stream", 2, 10_000.0),
            record("direct", "pairs", "mio/sqlite/json/stream", 2, 12_000.0),
        ];
        let text = summarise(&records);
        assert!(text.contains("| direct ≥ 0.6 × echo round trips/s (100 connections) | 0.60× | met | 0.70, 0.50 |"), "{text}");
        assert!(
            text.contains("| mio within 0.8–1.25 × tokio on direct | 1.20× | met | 1.20 |"),
            "{text}"
        );
        assert!(
            text.contains("| protobuf ≥ JSON on direct | not measured |"),
            "{text}"
        );
        assert!(text.contains("5 of 5 records clean"), "{text}");
    }

    #[test]
    fn open_runs_line_up_by_rank_across_runs() {
        let mut a = record("direct", "pairs", "tokio/sqlite/json/stream", 1, 100.0);
        a.shape = "open".into();
        a.target_rate = Some(500.0);
        let mut b = a.clone();
        b.run = Some(2);
        b.target_rate = Some(650.0);
        let records = [a, b];
        let groups = grouped(&records);
        assert_eq!(groups.len(), 1);
        assert_eq!(
            groups.keys().next().map(|k| k.shape.as_str()),
            Some("open #1")
        );
    }

    #[test]
    fn variants_split_into_parts() {
        let v = Variant::parse("tokio/redis+nginx/json/stream");
        assert_eq!(
            (v.transport, v.deployment.as_str()),
            ("tokio", "redis+nginx")
        );
        assert!(v.is_json_stream());
        let v = Variant::parse("echo/protobuf/length");
        assert_eq!(
            (v.transport, v.codec, v.framing),
            ("echo", "protobuf", "length")
        );
    }

    #[test]
    fn loss_anywhere_misses_the_last_target() {
        let mut r = record("cross", "pairs", "tokio/redis/json/stream", 1, 10.0);
        r.lost = 3;
        let text = targets_table(&[r]);
        assert!(text.contains("0 of 1 records clean | **missed**"), "{text}");
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0]), 2.5);
        assert_eq!(median(Vec::new()), 0.0);
    }
}
