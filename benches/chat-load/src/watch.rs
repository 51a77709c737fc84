//! What the measured processes and the kernel spend, read from `/proc`.
//!
//! Throughput alone hides the cost: a server that keeps up by burning both
//! cores, or by holding megabytes per connection, is not lean. For every
//! process named with `--watch NAME=PID` (and the load generator itself),
//! the CPU time and resident memory are sampled at the start and the end of
//! the measured window, and reported per delivered message and per
//! connection. `/proc` is read directly: it is cheap, needs no agent, and
//! is what `ps` and `top` read too.

use std::collections::BTreeMap;
use std::fs;
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Clock ticks per second in `/proc/PID/stat`: the kernel's `USER_HZ`,
/// which is 100 on every Linux architecture this runs on.
const TICKS_PER_SEC: f64 = 100.0;

/// A process to watch, as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub pid: u32,
}

impl FromStr for Target {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Target> {
        let Some((name, pid)) = text.split_once('=') else {
            bail!("expected NAME=PID, got {text:?}");
        };
        let pid = pid.parse().with_context(|| format!("not a pid: {pid:?}"))?;
        if name.is_empty() {
            bail!("expected NAME=PID, got {text:?}");
        }
        Ok(Target {
            name: name.to_owned(),
            pid,
        })
    }
}

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// User plus system CPU time, in clock ticks, of every thread the
    /// process ever had.
    pub cpu_ticks: u64,
    /// Resident memory in KiB.
    pub rss_kib: u64,
}

impl Sample {
    /// Reads `/proc/PID/stat` and `/proc/PID/status`.
    pub fn read(pid: u32) -> Result<Sample> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("cannot read /proc/{pid}/stat: is process {pid} running?"))?;
        let status = fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("cannot read /proc/{pid}/status"))?;
        Ok(Sample {
            cpu_ticks: cpu_ticks(&stat).with_context(|| format!("odd /proc/{pid}/stat"))?,
            rss_kib: status_kib(&status, "VmRSS:").unwrap_or(0),
        })
    }
}

/// What a watched process spent during the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Spent {
    pub pid: u32,
    /// CPU time per delivered message (or operation), in microseconds.
    pub cpu_us_per_msg: Option<f64>,
    /// Share of one core used during the window, in percent.
    pub cpu_percent: f64,
    /// Resident memory at the end of the window.
    pub rss_kib: u64,
    /// Growth of resident memory since before the connections were opened,
    /// per connection.
    pub rss_per_conn_kib: Option<f64>,
}

/// The processes being watched, with a baseline reading of each taken
/// before the run's connections were opened.
#[derive(Debug, Clone)]
pub struct Watcher {
    targets: Vec<Target>,
    baseline: Vec<Option<Sample>>,
}

impl Watcher {
    /// Watches `targets` and this process (as `chat-load`), and takes the
    /// baseline memory reading now.
    pub fn new(targets: &[Target]) -> Watcher {
        let mut targets = targets.to_vec();
        targets.push(Target {
            name: "chat-load".into(),
            pid: std::process::id(),
        });
        let baseline = targets.iter().map(|t| Sample::read(t.pid).ok()).collect();
        Watcher { targets, baseline }
    }

    /// Adds a process found later (the echo responder) with its baseline.
    pub fn add(&mut self, target: Target) {
        self.baseline.push(Sample::read(target.pid).ok());
        self.targets.push(target);
    }

    /// Takes the baseline memory reading again (after a setup phase whose
    /// memory should not count, such as registering users).
    pub fn rebase(&mut self) {
        self.baseline = self
            .targets
            .iter()
            .map(|t| Sample::read(t.pid).ok())
            .collect();
    }

    /// Reads every watched process; `None` for one that cannot be read.
    pub fn sample(&self) -> Vec<Option<Sample>> {
        self.targets
            .iter()
            .map(|t| Sample::read(t.pid).ok())
            .collect()
    }

    /// The command line of the first watched process called `name`, with
    /// arguments separated by spaces.
    pub fn cmdline(&self, name: &str) -> Option<String> {
        let target = self.targets.iter().find(|t| t.name == name)?;
        cmdline(target.pid)
    }

    /// The watched processes other than the load generator.
    pub fn targets(&self) -> impl Iterator<Item = &Target> {
        self.targets.iter().filter(|t| t.pid != std::process::id())
    }

    /// What each process spent between two samplings, for `ops` operations
    /// over `secs` seconds with `connections` connections open.
    pub fn spent(
        &self,
        before: &[Option<Sample>],
        after: &[Option<Sample>],
        secs: f64,
        ops: u64,
        connections: u64,
    ) -> BTreeMap<String, Spent> {
        let mut out = BTreeMap::new();
        for (i, target) in self.targets.iter().enumerate() {
            let (Some(Some(before)), Some(Some(after))) = (before.get(i), after.get(i)) else {
                continue;
            };
            let cpu_us =
                after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64 * 1e6 / TICKS_PER_SEC;
            let base = self.baseline.get(i).copied().flatten();
            let spent = Spent {
                pid: target.pid,
                cpu_us_per_msg: (ops > 0).then(|| cpu_us / ops as f64),
                cpu_percent: if secs > 0.0 {
                    cpu_us / 1e6 / secs * 100.0
                } else {
                    0.0
                },
                rss_kib: after.rss_kib,
                rss_per_conn_kib: match (base, connections) {
                    (Some(base), n) if n > 0 => {
                        Some(after.rss_kib.saturating_sub(base.rss_kib) as f64 / n as f64)
                    }
                    _ => None,
                },
            };
            out.insert(target.name.clone(), spent);
        }
        out
    }
}

/// The kernel's socket accounting, from `/proc/net/sockstat` and (as root)
/// the TCP slab caches of `/proc/slabinfo`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SockStat {
    /// TCP sockets in use.
    pub tcp_inuse: u64,
    /// Pages of buffered data in TCP sockets.
    pub tcp_mem_pages: u64,
    /// Bytes of the slab caches that hold TCP sockets, if readable.
    pub tcp_slab_bytes: Option<u64>,
}

impl SockStat {
    /// Reads the current values.
    pub fn read() -> Result<SockStat> {
        let text =
            fs::read_to_string("/proc/net/sockstat").context("cannot read /proc/net/sockstat")?;
        let mut stat = parse_sockstat(&text).context("odd /proc/net/sockstat")?;
        stat.tcp_slab_bytes = fs::read_to_string("/proc/slabinfo")
            .ok()
            .map(|text| tcp_slab_bytes(&text));
        Ok(stat)
    }
}

/// The kernel's limit on open files of process `pid`, from
/// `/proc/PID/limits`.
pub fn open_files_limit(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    // Columns: name (three words), soft limit, hard limit, unit.
    line.split_whitespace().nth(3)?.parse().ok()
}

/// A process's command line, arguments joined by spaces.
pub fn cmdline(pid: u32) -> Option<String> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    Some(args.join(" "))
}

/// User plus system time from the text of `/proc/PID/stat`.
fn cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces and parentheses; the
    // fields after its last `)` start with field 3, the state.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A `kB` value of `/proc/PID/status`.
fn status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

fn parse_sockstat(text: &str) -> Option<SockStat> {
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let value = |key: &str| -> Option<u64> {
        let at = words.iter().position(|w| *w == key)?;
        words.get(at + 1)?.parse().ok()
    };
    Some(SockStat {
        tcp_inuse: value("inuse")?,
        tcp_mem_pages: value("mem")?,
        tcp_slab_bytes: None,
    })
}

/// Bytes held by the slab caches of TCP sockets and their inodes.
fn tcp_slab_bytes(slabinfo: &str) -> u64 {
    const CACHES: [&str; 4] = [
        "TCP",
        "request_sock_TCP",
        "sock_inode_cache",
        "tcp_bind_bucket",
    ];
    slabinfo
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let name = *fields.first()?;
            if !CACHES.contains(&name) {
                return None;
            }
            let active: u64 = fields.get(1)?.parse().ok()?;
            let size: u64 = fields.get(3)?.parse().ok()?;
            Some(active * size)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_survives_odd_command_names() {
        let stat = "1234 (chat (a) b) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 4 0";
        assert_eq!(cpu_ticks(stat), Some(300));
        assert_eq!(cpu_ticks("garbage"), None);
    }

    #[test]
    fn status_and_sockstat_parse() {
        let status = "Name:\tchat\nVmRSS:\t   12345 kB\nThreads: 4\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(12345));
        let sockstat = "sockets: used 300\nTCP: inuse 12 orphan 0 tw 3 alloc 20 mem 7\n";
        let stat = parse_sockstat(sockstat).expect("parses");
        assert_eq!((stat.tcp_inuse, stat.tcp_mem_pages), (12, 7));
    }

    #[test]
    fn slab_lines_add_up() {
        let slabinfo = "slabinfo - version: 2.1\n\
            # name <active_objs> <num_objs> <objsize> ...\n\
            TCP 10 12 2432 13 8 : tunables 0 0 0\n\
            sock_inode_cache 100 120 832 39 8 : tunables 0 0 0\n\
            dentry 1000 1000 192 21 1 : tunables 0 0 0\n";
        assert_eq!(tcp_slab_bytes(slabinfo), 10 * 2432 + 100 * 832);
    }

    #[test]
    fn targets_parse() {
        let target: Target = "server=42".parse().expect("parses");
        assert_eq!(target.name, "server");
        assert_eq!(target.pid, 42);
        assert!("server".parse::<Target>().is_err());
        assert!("=42".parse::<Target>().is_err());
        assert!("a=b".parse::<Target>().is_err());
    }

    #[test]
    fn this_process_can_be_read() {
        let sample = Sample::read(std::process::id()).expect("own /proc entry");
        assert!(sample.rss_kib > 0);
        assert!(open_files_limit(std::process::id()).is_some());
    }
}
