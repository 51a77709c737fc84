//! Group chat fan-out: one message to 10, 100 and 1,000 members spread
//! over the servers.
//!
//! What matters for a group is the last member to get the message, so the
//! latency reported is that of the last recipient of each message; the
//! latency of single deliveries is kept beside it. The cluster's design
//! promises one PUBLISH per server holding recipients however many members
//! there are, and this scenario checks it: Redis' own count of PUBLISH
//! commands is read before and after each run (so the Redis must be the
//! benchmark's own, with nobody else publishing).

use std::collections::BTreeSet;
use std::sync::Arc;

use anyhow::Result;
use clap::Args;

use super::{close_all, Common, Ctx, ShapeArgs, ShapeChoice};
use crate::fleet;
use crate::load::{Route, Target};
use crate::redis::Redis;
use crate::report::Record;

/// Flags of `group`.
#[derive(Debug, Clone, Args)]
pub struct GroupArgs {
    #[command(flatten)]
    pub common: Common,

    #[command(flatten)]
    pub shapes: ShapeArgs,

    /// Group sizes to run, one after the other.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
    pub sizes: Vec<usize>,

    /// Members who send, spread over the servers like everyone else.
    #[arg(long, default_value_t = 2)]
    pub senders: usize,
}

/// Runs every group size in turn.
pub async fn run(ctx: &mut Ctx, args: &GroupArgs) -> Result<Vec<Record>> {
    let mut records = Vec::new();
    for &size in &args.sizes {
        records.extend(one_size(ctx, args, size.max(2)).await?);
    }
    Ok(records)
}

async fn one_size(ctx: &mut Ctx, args: &GroupArgs, size: usize) -> Result<Vec<Record>> {
    let servers = ctx.wire.addrs.len();
    let users = fleet::register(&ctx.wire, &format!("g{}_{size}_", ctx.tag), size).await?;
    ctx.watcher.rebase();
    let peers = fleet::login_all(&ctx.wire, &users, |i| i % servers).await?;
    let name = format!("g{}_{size}", ctx.tag);
    let group = fleet::group(&name, &peers[0], &peers).await?;
    let recipients = Arc::new(users.clone());
    let routes: Vec<Route> = (0..args.senders.clamp(1, size))
        .map(|sender| Route {
            sender,
            target: Target::Group {
                id: group,
                recipients: Arc::clone(&recipients),
            },
        })
        .collect();

    let mut redis = match &ctx.common.redis {
        Some(url) => Some(Redis::connect(url).await?),
        None => None,
    };
    let holding = match &mut redis {
        Some(redis) => {
            let presence = redis.presence(&ctx.common.redis_prefix, &users).await?;
            Some(
                presence
                    .into_iter()
                    .flatten()
                    .collect::<BTreeSet<String>>()
                    .len(),
            )
        }
        None => None,
    };

    let case = format!("members={size}");
    let mut records = Vec::new();
    let shapes = &args.shapes;
    let mut one = shapes.clone();
    let result: Result<()> = async {
        // One shape at a time, to read the PUBLISH count around each.
        if shapes.shape != ShapeChoice::Open {
            one.shape = ShapeChoice::Closed;
            let run = ctx.messages("group", &case, &peers, &routes, &one);
            records.extend(count_publishes(&mut redis, run).await?);
        }
        if shapes.shape != ShapeChoice::Closed {
            for rate in shapes.open_rates(records.first().map(|r| r.msgs_per_s))? {
                one.shape = ShapeChoice::Open;
                one.rate = vec![rate];
                let run = ctx.messages("group", &case, &peers, &routes, &one);
                records.extend(count_publishes(&mut redis, run).await?);
            }
        }
        Ok(())
    }
    .await;
    close_all(peers).await;
    result?;
    for record in &mut records {
        record.extra("members", size as u64);
        if let Some(holding) = holding {
            record.extra("servers_holding_members", holding as u64);
            // The sender's own server hands the message to its members
            // itself; every other server holding members costs one PUBLISH.
            record.extra(
                "publishes_expected_per_msg",
                holding.saturating_sub(1) as u64,
            );
        }
    }
    Ok(records)
}

/// Runs `load` and adds the PUBLISHes Redis ran meanwhile to its records.
async fn count_publishes(
    redis: &mut Option<Redis>,
    load: impl std::future::Future<Output = Result<Vec<Record>>>,
) -> Result<Vec<Record>> {
    let before = match redis {
        Some(redis) => Some(redis.publishes().await?),
        None => None,
    };
    let mut records = load.await?;
    let (Some(before), Some(redis)) = (before, redis) else {
        return Ok(records);
    };
    let publishes = redis.publishes().await?.saturating_sub(before);
    for record in &mut records {
        record.extra("publishes", publishes);
        let messages = record.extra.get("messages").and_then(|v| v.as_u64());
        if let Some(messages) = messages.filter(|&m| m > 0) {
            record.extra("publishes_per_msg", publishes as f64 / messages as f64);
        }
    }
    Ok(records)
}
