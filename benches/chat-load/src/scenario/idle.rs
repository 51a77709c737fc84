//! Idle users: as many logged-in connections as the limits allow, opened
//! at a steady pace while a few other connections ping the server.
//!
//! Most users of a chat server are idle most of the time, so what an idle
//! connection costs decides how many users one machine holds. The server's
//! resident memory is read before the ramp and after it, and divided by the
//! connections held; the kernel's share (socket buffers and the TCP slab
//! caches, for both ends since client and server share this machine) is
//! read from `/proc`. The pings measure whether the server stays
//! responsive to its users while thousands of others log in.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chat_proto::{Request, ServerMsg};
use clap::Args;
use tokio::sync::{watch, Semaphore};

use super::{close_all, Common, Ctx};
use crate::fleet::{self, Peer};
use crate::report::Record;
use crate::track::Latency;
use crate::watch::{open_files_limit, SockStat};

/// Logins in progress at once during the ramp.
const RAMP_AT_ONCE: usize = 64;

/// File descriptors kept free for everything else a process opens.
const SPARE_FDS: u64 = 256;

/// Flags of `idle`.
#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    #[command(flatten)]
    pub common: Common,

    /// Idle logged-in connections to open (fewer if a file limit is lower).
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,

    /// Connections opened and logged in per second during the ramp.
    #[arg(long, default_value_t = 2_000.0)]
    pub ramp_rate: f64,

    /// Connections that ping throughout the ramp.
    #[arg(long, default_value_t = 4)]
    pub pingers: usize,

    /// Milliseconds between one pinger's pings.
    #[arg(long, default_value_t = 20)]
    pub ping_interval_ms: u64,

    /// Seconds to hold the connections after the ramp before measuring.
    #[arg(long, default_value_t = 3.0)]
    pub hold: f64,
}

/// Ramps up, holds, measures.
pub async fn run(ctx: &mut Ctx, args: &IdleArgs) -> Result<Vec<Record>> {
    let (target, limits) = allowed(ctx, args.connections)?;
    let started = Instant::now();
    let users = fleet::register(&ctx.wire, &format!("i{}_", ctx.tag), target).await?;
    let register_per_s = target as f64 / started.elapsed().as_secs_f64();

    ctx.watcher.rebase();
    let before = ctx.watcher.sample();
    let kernel_before = SockStat::read()?;
    let (stop, stopped) = watch::channel(false);
    let mut pingers = Vec::new();
    for _ in 0..args.pingers.max(1) {
        let client = ctx.wire.connect(0).await?;
        let interval = Duration::from_millis(args.ping_interval_ms.max(1));
        pingers.push(tokio::spawn(ping(client, interval, stopped.clone())));
    }

    let ramp_started = Instant::now();
    let (peers, failures, first_error) = ramp(ctx, &users, args.ramp_rate).await;
    let ramp_secs = ramp_started.elapsed().as_secs_f64();
    let _ = stop.send(true);
    let mut pings = Latency::default();
    let mut ping_errors = 0;
    for pinger in pingers {
        let (latency, errors) = pinger.await?;
        pings.merge(&latency);
        ping_errors += errors;
    }

    tokio::time::sleep(Duration::from_secs_f64(args.hold.max(0.0))).await;
    let after = ctx.watcher.sample();
    let kernel_after = SockStat::read()?;
    let held = peers.len() as u64;

    let mut record = ctx.record("idle", "ramp", "ramp");
    record.connections = held;
    record.seconds = ramp_secs;
    record.msgs_per_s = held as f64 / ramp_secs;
    record.set_latency(&pings);
    record.sent = target as u64;
    record.delivered = held;
    record.errors = failures + ping_errors;
    record.watch = ctx.watcher.spent(&before, &after, ramp_secs, held, held);
    record.extra("target", target as u64);
    record.extra("held", held);
    record.extra("pings", pings.len());
    record.extra("register_per_s", register_per_s);
    record.extra("fd_limits", limits);
    if let Some(kib) = record.watch.get("server").and_then(|s| s.rss_per_conn_kib) {
        record.extra("server_kib_per_conn", kib);
    }
    if held > 0 {
        let buffers = kernel_after
            .tcp_mem_pages
            .saturating_sub(kernel_before.tcp_mem_pages)
            * 4096;
        record.extra(
            "kernel_tcp_buffer_bytes_per_conn",
            buffers as f64 / held as f64,
        );
        if let (Some(a), Some(b)) = (kernel_after.tcp_slab_bytes, kernel_before.tcp_slab_bytes) {
            record.extra(
                "kernel_slab_bytes_per_conn",
                a.saturating_sub(b) as f64 / held as f64,
            );
        }
        let sockets = kernel_after
            .tcp_inuse
            .saturating_sub(kernel_before.tcp_inuse);
        record.extra("tcp_sockets_added", sockets);
    }
    if let Some(error) = first_error {
        record.extra("first_error", error);
    }
    record.note = "latency is PING round trips during the ramp; memory is read after it".into();
    close_all(peers).await;
    Ok(vec![record])
}

/// How many connections the file limits allow, after raising this
/// process's own to its hard limit; and a description of the limits.
fn allowed(ctx: &Ctx, wanted: usize) -> Result<(usize, String)> {
    let own =
        rlimit::increase_nofile_limit(u64::MAX).context("cannot raise the open-file limit")?;
    let mut allowed = own.saturating_sub(SPARE_FDS);
    let mut limits = vec![format!("chat-load {own}")];
    for target in ctx.watcher.targets() {
        if let Some(limit) = open_files_limit(target.pid) {
            limits.push(format!("{} {limit}", target.name));
            if target.name.starts_with("server") {
                allowed = allowed.min(limit.saturating_sub(SPARE_FDS));
            }
        }
    }
    let allowed = usize::try_from(allowed).unwrap_or(usize::MAX).min(wanted);
    if allowed < wanted {
        eprintln!("idle: open-file limits allow {allowed} of {wanted} connections ({limits:?})");
    }
    Ok((allowed, limits.join(", ")))
}

/// Opens and logs in one connection per user at `rate` per second.
async fn ramp(
    ctx: &Ctx,
    users: &[chat_proto::UserId],
    rate: f64,
) -> (Vec<Peer>, u64, Option<String>) {
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let bar = crate::load::progress("idle ramp", interval * users.len() as u32);
    let slots = std::sync::Arc::new(Semaphore::new(RAMP_AT_ONCE));
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(users.len());
    for (i, &user) in users.iter().enumerate() {
        tokio::time::sleep_until(start + interval * i as u32).await;
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        bar.set_position((interval * i as u32).as_millis() as u64);
        let wire = ctx.wire.clone();
        tasks.push(tokio::spawn(async move {
            let _slot = slot;
            let client = wire.connect(0).await?;
            fleet::login(&client, user).await?;
            Ok::<_, anyhow::Error>(Peer {
                client: std::sync::Arc::new(client),
                user,
            })
        }));
    }
    let mut peers = Vec::with_capacity(tasks.len());
    let (mut failures, mut first_error) = (0, None);
    for task in tasks {
        match task.await {
            Ok(Ok(peer)) => peers.push(peer),
            Ok(Err(error)) => {
                failures += 1;
                first_error.get_or_insert_with(|| format!("{error:#}"));
            }
            Err(error) => {
                failures += 1;
                first_error.get_or_insert_with(|| error.to_string());
            }
        }
    }
    bar.finish_and_clear();
    (peers, failures, first_error)
}

/// Pings every `interval` until told to stop; the round trips and the
/// pings that failed.
async fn ping(
    client: chat_client::Client,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) -> (Latency, u64) {
    let mut latency = Latency::default();
    let mut errors = 0;
    while !*stop.borrow() {
        let sent = Instant::now();
        match tokio::time::timeout(Duration::from_secs(5), client.request(Request::Ping)).await {
            Ok(Ok(ServerMsg::Pong)) => latency.record(sent.elapsed()),
            _ => errors += 1,
        }
        tokio::select! {
            _ = stop.changed() => {}
            () = tokio::time::sleep(interval) => {}
        }
    }
    client.close().await;
    (latency, errors)
}
