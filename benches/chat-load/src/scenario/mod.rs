//! The scenarios, and what they share: the common flags, the load shapes,
//! and turning an outcome into a [`Record`].
//!
//! Each scenario is one file and runs alone: it sets up its users, runs
//! its load shapes, and returns records. Nothing here starts a chat server;
//! `scripts/bench` does, so that the same binary measures a server started
//! any way (by hand, in Docker, behind nginx).

pub mod echo;
pub mod group;
pub mod idle;
pub mod login;
pub mod offline;
pub mod pairs;

use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};

use crate::fleet::{CodecChoice, FramingChoice, Peer, Wire};
use crate::load::{self, Route, Shape, Timing};
use crate::report::Record;
use crate::watch::{Target, Watcher};

/// Flags every scenario takes.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Server or load balancer as HOST:PORT, on this machine; give it twice
    /// for two servers.
    #[arg(long = "addr", default_value = "127.0.0.1:6000", value_name = "ADDR")]
    pub addrs: Vec<String>,

    /// Payload codec.
    #[arg(long, value_enum, default_value_t = CodecChoice::Json)]
    pub codec: CodecChoice,

    /// Framing (protobuf is always length-prefixed).
    #[arg(long, value_enum, default_value_t = FramingChoice::Stream)]
    pub framing: FramingChoice,

    /// Name of the deployment in the results, e.g. `tokio/sqlite`; the
    /// codec and framing are added to it.
    #[arg(long, default_value = "")]
    pub variant: String,

    /// Which repetition of a suite this is, recorded with the results.
    #[arg(long)]
    pub run: Option<u32>,

    /// Also append the JSON lines to this file.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,

    /// A process to measure, as NAME=PID (repeatable): CPU per delivered
    /// message and memory per connection.
    #[arg(long = "watch", value_name = "NAME=PID")]
    pub watch: Vec<Target>,

    /// Seconds of load before the measured window.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,

    /// Seconds in the measured window.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,

    /// Seconds to wait for messages in flight after the window.
    #[arg(long, default_value_t = 10.0)]
    pub drain: f64,

    /// Bytes of chat text per message.
    #[arg(long, default_value_t = 64)]
    pub payload: usize,

    /// Most messages any one sender sends.
    #[arg(long, default_value_t = 10_000_000)]
    pub max_messages: u64,

    /// Redis of the cluster, for the PUBLISH count and the servers' presence.
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,

    /// Prefix of the cluster's Redis keys (the servers' --redis-prefix).
    #[arg(long, default_value = "chat:")]
    pub redis_prefix: String,
}

/// Which load shapes to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShapeChoice {
    Closed,
    Open,
    Both,
}

/// Flags of the scenarios that have a closed and an open loop.
#[derive(Debug, Clone, Args)]
pub struct ShapeArgs {
    /// `closed`, `open`, or `both` (closed first).
    #[arg(long, value_enum, default_value_t = ShapeChoice::Both)]
    pub shape: ShapeChoice,

    /// Closed loop: messages in flight per sender.
    #[arg(long, default_value_t = 1)]
    pub in_flight: u32,

    /// Open loop: messages per second, all senders together (a list runs
    /// once per rate).
    #[arg(long, value_delimiter = ',', value_name = "PER_SEC")]
    pub rate: Vec<f64>,

    /// Open loop without --rate: these fractions of what the closed loop
    /// reached (a list runs once per fraction).
    #[arg(long, value_delimiter = ',', default_value = "0.5")]
    pub rate_fraction: Vec<f64>,
}

impl ShapeArgs {
    /// The open loop's rates: those given, or the fractions of what the
    /// closed loop `reached`.
    pub fn open_rates(&self, reached: Option<f64>) -> Result<Vec<f64>> {
        if !self.rate.is_empty() {
            return Ok(self.rate.clone());
        }
        let Some(reached) = reached else {
            bail!("--shape open needs --rate");
        };
        Ok(self
            .rate_fraction
            .iter()
            .map(|fraction| (reached * fraction).max(1.0))
            .collect())
    }
}

/// What a scenario works with.
pub struct Ctx {
    pub common: Common,
    pub wire: Wire,
    pub watcher: Watcher,
    /// Unique to this run, for user and group names.
    pub tag: String,
}

impl Ctx {
    /// Checks the flags and takes the watcher's baseline.
    pub fn new(common: Common) -> Result<Ctx> {
        for addr in &common.addrs {
            ensure_loopback(addr)?;
        }
        if let Some(url) = &common.redis {
            ensure_loopback(&crate::redis::host_port(url)?)?;
        }
        if common.duration <= 0.0 || common.warmup < 0.0 || common.drain < 0.0 {
            bail!("--duration must be positive, --warmup and --drain not negative");
        }
        let wire = Wire {
            addrs: common.addrs.clone(),
            codec: common.codec,
            framing: common.framing,
        };
        Ok(Ctx {
            watcher: Watcher::new(&common.watch),
            wire,
            tag: crate::fleet::run_tag(),
            common,
        })
    }

    /// The variant label: the deployment's name and the wire.
    pub fn variant(&self) -> String {
        match self.common.variant.as_str() {
            "" => self.wire.label(),
            name => format!("{name}/{}", self.wire.label()),
        }
    }

    /// The phase lengths from the flags.
    pub fn timing(&self) -> Timing {
        Timing {
            warmup: Duration::from_secs_f64(self.common.warmup),
            duration: Duration::from_secs_f64(self.common.duration),
            drain: Duration::from_secs_f64(self.common.drain),
            max_messages: self.common.max_messages,
        }
    }

    /// A record with the identifying fields set.
    pub fn record(&self, scenario: &str, case: &str, shape: &str) -> Record {
        let mut record = Record::new(scenario, case, &self.variant(), shape);
        record.run = self.common.run;
        record
    }

    /// Runs a message load in every shape `shapes` asks for and returns a
    /// record per run.
    pub async fn messages(
        &self,
        scenario: &str,
        case: &str,
        peers: &[Peer],
        routes: &[Route],
        shapes: &ShapeArgs,
    ) -> Result<Vec<Record>> {
        let mut records = Vec::new();
        if shapes.shape != ShapeChoice::Open {
            let closed = Shape::Closed {
                in_flight: shapes.in_flight.max(1),
            };
            records.push(
                self.message_run(scenario, case, peers, routes, closed)
                    .await?,
            );
        }
        if shapes.shape != ShapeChoice::Closed {
            let reached = records.first().map(|r| r.msgs_per_s);
            for rate in shapes.open_rates(reached)? {
                let open = Shape::Open { rate };
                records.push(
                    self.message_run(scenario, case, peers, routes, open)
                        .await?,
                );
            }
        }
        Ok(records)
    }

    async fn message_run(
        &self,
        scenario: &str,
        case: &str,
        peers: &[Peer],
        routes: &[Route],
        shape: Shape,
    ) -> Result<Record> {
        let label = match shape {
            Shape::Closed { in_flight } => format!("{scenario} {case} K={in_flight}"),
            Shape::Open { rate } => format!("{scenario} {case} {rate:.0}/s"),
        };
        let plan = load::Plan {
            peers,
            routes: routes.to_vec(),
            shape,
            timing: self.timing(),
            payload: self.common.payload,
            label,
        };
        let outcome = load::run(plan, &self.watcher).await?;
        let secs = outcome.window.secs();
        let mut record = self.record(scenario, case, shape.name());
        match shape {
            Shape::Closed { in_flight } => record.in_flight = Some(in_flight),
            Shape::Open { rate } => record.target_rate = Some(rate),
        }
        record.connections = peers.len() as u64;
        record.seconds = secs;
        record.msgs_per_s = outcome.completed_in_window as f64 / secs;
        record.deliveries_per_s = outcome.tally.in_window as f64 / secs;
        record.set_latency(&outcome.last);
        record.set_counts(&outcome.counts);
        record.errors = outcome.errors + outcome.tally.unreadable;
        record.watch = self.watcher.spent(
            &outcome.before,
            &outcome.after,
            secs,
            outcome.tally.in_window,
            peers.len() as u64,
        );
        record.extra("messages", outcome.messages);
        record.extra("acks", outcome.acks);
        record.extra("senders", routes.len() as u64);
        if outcome.last.len() != outcome.tally.latency.len() {
            record.extra("delivery_p50_us", outcome.tally.latency.quantile_us(0.5));
            record.extra("delivery_p99_us", outcome.tally.latency.quantile_us(0.99));
        }
        Ok(record)
    }
}

/// Refuses any address that is not on this machine: the load generator
/// never sends traffic elsewhere.
pub fn ensure_loopback(addr: &str) -> Result<()> {
    let resolved: Vec<_> = addr
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {addr}"))?
        .collect();
    if resolved.is_empty() || resolved.iter().any(|a| !a.ip().is_loopback()) {
        bail!("{addr} is not a loopback address: chat-load only loads servers on this machine");
    }
    Ok(())
}

/// Closes every peer's connection and waits until the server saw them go,
/// so that the next run starts from a quiet server.
pub async fn close_all(peers: Vec<Peer>) {
    let closes = peers.into_iter().filter_map(|peer| {
        std::sync::Arc::try_unwrap(peer.client)
            .ok()
            .map(|client| client.close())
    });
    futures::future::join_all(closes).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
}
