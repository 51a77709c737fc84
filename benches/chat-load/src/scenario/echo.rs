//! The machine's own limit: the same client machinery against the trivial
//! echo responder of [`crate::echo`], one request at a time (`rr`) and
//! pipelined.
//!
//! The responder is started as a child process of this one (the same
//! binary, `chat-load echo-responder`), watched as `echo`, and stopped at
//! the end; `--addr` is ignored unless `--external` says a responder is
//! already running there.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::{close_all, Common, Ctx, ShapeArgs, ShapeChoice};
use crate::fleet::{self, Peer};
use crate::load::{Route, Target};
use crate::report::Record;
use crate::watch::Target as Watched;

/// Flags of `echo`.
#[derive(Debug, Clone, Args)]
pub struct EchoArgs {
    #[command(flatten)]
    pub common: Common,

    #[command(flatten)]
    pub shapes: ShapeArgs,

    /// Connections, each sending to itself.
    #[arg(long, default_value_t = 100)]
    pub connections: usize,

    /// Messages in flight per connection in the pipelined case.
    #[arg(long, default_value_t = 32)]
    pub pipeline: u32,

    /// Use the responder already listening at --addr instead of starting one.
    #[arg(long)]
    pub external: bool,
}

/// Runs `rr` in the asked shapes, then `pipelined` closed loop.
pub async fn run(ctx: &mut Ctx, args: &EchoArgs) -> Result<Vec<Record>> {
    let _responder = if args.external {
        None
    } else {
        let (child, addr) = start_responder().await?;
        if let Some(pid) = child.id() {
            ctx.watcher.add(Watched {
                name: "echo".into(),
                pid,
            });
        }
        ctx.wire.addrs = vec![addr];
        Some(child)
    };
    ctx.watcher.rebase();

    // The responder takes any id; no registration needed.
    let users: Vec<i64> = (1..=args.connections.max(1) as i64).collect();
    let peers = fleet::login_all(&ctx.wire, &users, |_| 0).await?;
    let routes: Vec<Route> = peers
        .iter()
        .enumerate()
        .map(|(i, peer): (usize, &Peer)| Route {
            sender: i,
            target: Target::User(peer.user),
        })
        .collect();
    let result = async {
        let mut records = ctx
            .messages("echo", "rr", &peers, &routes, &args.shapes)
            .await?;
        let pipelined = ShapeArgs {
            shape: ShapeChoice::Closed,
            in_flight: args.pipeline.max(1),
            ..args.shapes.clone()
        };
        records.extend(
            ctx.messages("echo", "pipelined", &peers, &routes, &pipelined)
                .await?,
        );
        Ok::<_, anyhow::Error>(records)
    }
    .await;
    close_all(peers).await;
    result
}

/// Starts `chat-load echo-responder` on a free loopback port; the child
/// ends when its standard input closes, that is when the returned `Child`
/// is dropped or this process ends.
async fn start_responder() -> Result<(Child, String)> {
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let mut child = Command::new(exe)
        .args(["echo-responder", "--listen", "127.0.0.1:0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the echo responder")?;
    let stdout = child.stdout.take().context("the responder's stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .context("the echo responder did not start in time")??;
    match line.as_deref().and_then(|l| l.strip_prefix("listening ")) {
        Some(addr) => Ok((child, addr.trim().to_owned())),
        None => bail!("the echo responder said {line:?} instead of its address"),
    }
}
