//! `chat-load`: the chat cluster's load generator.
//!
//! It measures how fast and how lean a running `chat-server` (or a cluster
//! of them) is, with many long-lived logged-in connections built on the
//! project's own client library, and compares the figures with the
//! machine's own limit measured in the same run (`chat-load echo`). Each
//! scenario runs alone and stops by itself; `scripts/bench` starts the
//! servers and runs the standard suite, and `chat-load report` turns the
//! collected JSON lines into the tables, targets and plot of
//! `docs/benchmarks.md`.
//!
//! Load only ever goes to addresses on this machine.
//!
//! - [`track`]: the stamp in every chat text and the accounting of latency,
//!   loss, duplicates and reordering;
//! - [`load`] and [`ops`]: closed and open loops for messages and for
//!   request/response operations;
//! - [`fleet`]: registering users and logging connections in;
//! - [`scenario`]: `login`, `direct`, `cross`, `group`, `offline`, `idle`,
//!   `echo`;
//! - [`echo`]: the trivial responder the echo scenario measures;
//! - [`watch`]: CPU and memory of the watched processes and the kernel;
//! - [`redis`]: the two Redis questions the cluster scenarios ask;
//! - [`report`], [`summary`] and [`plot`]: the results, their summary over
//!   repeated runs, and the latency/throughput plot.

mod echo;
mod fleet;
mod load;
mod ops;
mod plot;
mod redis;
mod report;
mod scenario;
mod summary;
mod track;
mod watch;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use scenario::echo::EchoArgs;
use scenario::group::GroupArgs;
use scenario::idle::IdleArgs;
use scenario::login::LoginArgs;
use scenario::offline::OfflineArgs;
use scenario::pairs::PairArgs;
use scenario::{Common, Ctx};

/// Load generator for the chat cluster: throughput, latency, loss and
/// memory, against the machine's own echo limit.
#[derive(Debug, Parser)]
#[command(name = "chat-load", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Login storm of pre-registered users (the server should run with
    /// --password-cost fast), and the same reads straight on MariaDB.
    Login(LoginArgs),
    /// One-to-one pairs on one server.
    Direct(PairArgs),
    /// One-to-one pairs always on different servers (--addr twice, or one
    /// load balancer with --redis).
    Cross(PairArgs),
    /// Group fan-out to 10, 100 and 1,000 members over the servers.
    Group(GroupArgs),
    /// Many messages queued for users who are away, delivered at login.
    Offline(OfflineArgs),
    /// As many idle logged-in connections as allowed; memory per connection
    /// and ping latency during the ramp.
    Idle(IdleArgs),
    /// The same client machinery against a trivial echo responder: the
    /// machine's own limit.
    Echo(EchoArgs),
    /// Summarise JSON lines of several runs: medians, ratios, targets, plot.
    Report(summary::ReportArgs),
    /// The echo responder itself (started by `echo`).
    #[command(hide = true)]
    EchoResponder {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// Exit after this many seconds even if nobody stops it.
        #[arg(long, default_value_t = 3600)]
        max_secs: u64,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(cli.command))
}

async fn run(command: Command) -> Result<()> {
    let (records, common) = match command {
        Command::Report(args) => return summary::run(&args),
        Command::EchoResponder { listen, max_secs } => {
            scenario::ensure_loopback(&listen)?;
            return echo::serve(&listen, max_secs).await;
        }
        Command::Login(args) => {
            let mut ctx = Ctx::new(args.common.clone())?;
            (scenario::login::run(&mut ctx, &args).await?, args.common)
        }
        Command::Direct(args) => {
            let mut ctx = Ctx::new(args.common.clone())?;
            (scenario::pairs::direct(&mut ctx, &args).await?, args.common)
        }
        Command::Cross(args) => {
            let mut ctx = Ctx::new(args.common.clone())?;
            (scenario::pairs::cross(&mut ctx, &args).await?, args.common)
        }
        Command::Group(args) => {
            let mut ctx = Ctx::new(args.common.clone())?;
            (scenario::group::run(&mut ctx, &args).await?, args.common)
        }
        Command::Offline(args) => {
            let mut ctx = Ctx::new(args.common.clone())?;
            (scenario::offline::run(&mut ctx, &args).await?, args.common)
        }
        Command::Idle(args) => {
            let mut ctx = Ctx::new(args.common.clone())?;
            (scenario::idle::run(&mut ctx, &args).await?, args.common)
        }
        Command::Echo(args) => {
            let mut ctx = Ctx::new(args.common.clone())?;
            (scenario::echo::run(&mut ctx, &args).await?, args.common)
        }
    };
    report::emit(&records, common_json(&common))
}

fn common_json(common: &Common) -> Option<&std::path::Path> {
    common.json.as_deref()
}
