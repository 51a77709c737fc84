//! One-to-one chat between pairs of users: `direct` with both users on one
//! server, `cross` with the two always on different servers.
//!
//! Every user sends to its partner and receives from it, so each connection
//! both writes and reads, as a person chatting does. `direct` is the
//! server's own speed; `cross` adds the path through Redis, and comparing
//! the two in one run shows what that path costs. Behind a load balancer
//! the load generator cannot choose the server, so `cross` then asks Redis
//! which server holds each user and pairs users across servers.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use clap::Args;

use super::{close_all, Common, Ctx, ShapeArgs};
use crate::fleet::{self, Peer};
use crate::load::{Route, Target};
use crate::redis::Redis;
use crate::report::Record;

/// Flags of `direct` and `cross`.
#[derive(Debug, Clone, Args)]
pub struct PairArgs {
    #[command(flatten)]
    pub common: Common,

    #[command(flatten)]
    pub shapes: ShapeArgs,

    /// Connections, two per pair (rounded up to an even number).
    #[arg(long, default_value_t = 100)]
    pub connections: usize,
}

/// Pairs on one server: every connection to the first address.
pub async fn direct(ctx: &mut Ctx, args: &PairArgs) -> Result<Vec<Record>> {
    let count = args.connections.max(2).next_multiple_of(2);
    let users = fleet::register(&ctx.wire, &format!("d{}_", ctx.tag), count).await?;
    ctx.watcher.rebase();
    let peers = fleet::login_all(&ctx.wire, &users, |_| 0).await?;
    let pairs: Vec<(usize, usize)> = (0..count).step_by(2).map(|i| (i, i + 1)).collect();
    let routes = routes(&peers, &pairs);
    let records = ctx
        .messages("direct", "pairs", &peers, &routes, &args.shapes)
        .await;
    close_all(peers).await;
    records
}

/// Pairs across servers: alternate addresses if two are given, else ask
/// Redis where the load balancer put each user.
pub async fn cross(ctx: &mut Ctx, args: &PairArgs) -> Result<Vec<Record>> {
    let count = args.connections.max(2).next_multiple_of(2);
    let users = fleet::register(&ctx.wire, &format!("c{}_", ctx.tag), count).await?;
    ctx.watcher.rebase();
    let (peers, pairs, placement) = if ctx.wire.addrs.len() >= 2 {
        let peers = fleet::login_all(&ctx.wire, &users, |i| i % 2).await?;
        let pairs = (0..count).step_by(2).map(|i| (i, i + 1)).collect();
        (peers, pairs, "addresses")
    } else {
        let Some(url) = ctx.common.redis.clone() else {
            bail!(
                "cross through one address needs --redis, to learn which server holds whom \
                 (or give --addr once per server)"
            );
        };
        let peers = fleet::login_all(&ctx.wire, &users, |_| 0).await?;
        let servers = Redis::connect(&url)
            .await?
            .presence(&ctx.common.redis_prefix, &users)
            .await?;
        (peers, pair_across(&servers), "presence")
    };
    if pairs.is_empty() {
        close_all(peers).await;
        bail!("every user landed on the same server: are two servers behind the address?");
    }
    let routes = routes(&peers, &pairs);
    let result = ctx
        .messages("cross", "pairs", &peers, &routes, &args.shapes)
        .await;
    close_all(peers).await;
    let mut records = result?;
    for record in &mut records {
        record.extra("pairs", pairs.len() as u64);
        record.extra("placement", placement);
    }
    Ok(records)
}

/// Each pair sends both ways.
fn routes(peers: &[Peer], pairs: &[(usize, usize)]) -> Vec<Route> {
    pairs
        .iter()
        .flat_map(|&(a, b)| {
            [
                Route {
                    sender: a,
                    target: Target::User(peers[b].user),
                },
                Route {
                    sender: b,
                    target: Target::User(peers[a].user),
                },
            ]
        })
        .collect()
}

/// Pairs of indices whose servers differ, as many as the placement allows;
/// users with no known server are left out.
fn pair_across(servers: &[Option<String>]) -> Vec<(usize, usize)> {
    let mut by_server: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, server) in servers.iter().enumerate() {
        if let Some(server) = server {
            by_server.entry(server).or_default().push(i);
        }
    }
    let mut groups: Vec<Vec<usize>> = by_server.into_values().collect();
    let mut pairs = Vec::new();
    loop {
        // Take one from each of the two largest groups, so that an uneven
        // spread still pairs as many users as it can.
        groups.sort_by_key(|g| std::cmp::Reverse(g.len()));
        let [first, second, ..] = &mut groups[..] else {
            break;
        };
        let (Some(a), Some(b)) = (first.pop(), second.pop()) else {
            break;
        };
        pairs.push((a, b));
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(name: &str) -> Option<String> {
        Some(name.to_owned())
    }

    #[test]
    fn pairs_always_span_two_servers() {
        let servers = vec![
            server("a"),
            server("a"),
            server("a"),
            server("b"),
            None,
            server("b"),
            server("c"),
        ];
        let pairs = pair_across(&servers);
        assert_eq!(pairs.len(), 3);
        let mut used = std::collections::HashSet::new();
        for (x, y) in pairs {
            assert_ne!(servers[x], servers[y]);
            assert!(
                used.insert(x) && used.insert(y),
                "an index was paired twice"
            );
            assert!(x != 4 && y != 4, "a user with no server was paired");
        }
    }

    #[test]
    fn one_server_gives_no_pairs() {
        assert!(pair_across(&[server("a"), server("a")]).is_empty());
        assert!(pair_across(&[]).is_empty());
    }
}
