//! A login storm: many workers logging pre-registered users in and out as
//! fast as the server lets them, and the same reads straight against
//! MariaDB for comparison.
//!
//! A login reads the user (for the password hash), the friends, the groups
//! with their members, and the offline messages, then claims presence. On
//! MariaDB those four SELECTs are the floor: a server cannot log users in
//! faster than its database answers them. So when `--mysql` names the
//! server's database, the same workers then run exactly those statements
//! through `mysql_async` (the server's driver) with the server's pool size,
//! and the report compares the two in the same run. Password hashing
//! would otherwise dominate everything, so the server must run with
//! `--password-cost fast`; the record says whether it did.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use chat_client::Client;
use chat_proto::{Request, ServerMsg, UserId};
use clap::Args;
use mysql_async::prelude::Queryable;
use mysql_async::{Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts};

use super::{Common, Ctx, ShapeArgs, ShapeChoice};
use crate::fleet::{self, PASSWORD};
use crate::load::Shape;
use crate::ops;
use crate::report::Record;

/// The statements a login runs on MariaDB, as the MariaDB store writes
/// them (`crates/store-mysql/src/lib.rs`).
const LOGIN_READS: [&str; 4] = [
    "SELECT id, name, password_hash FROM `user` WHERE id = ?",
    "SELECT u.id, u.name FROM friend f JOIN `user` u ON u.id = f.friendid \
     WHERE f.userid = ? ORDER BY u.id",
    "SELECT g.id, g.groupname, g.groupdesc, u.id, u.name, gu.grouprole \
     FROM groupuser mine \
     JOIN allgroup g ON g.id = mine.groupid \
     JOIN groupuser gu ON gu.groupid = g.id \
     JOIN `user` u ON u.id = gu.userid \
     WHERE mine.userid = ? ORDER BY g.id, u.id",
    "SELECT id, payload FROM offlinemessage WHERE userid = ? ORDER BY id",
];

/// Flags of `login`.
#[derive(Debug, Clone, Args)]
pub struct LoginArgs {
    #[command(flatten)]
    pub common: Common,

    #[command(flatten)]
    pub shapes: ShapeArgs,

    /// Users registered before the storm; each worker cycles through its
    /// share of them.
    #[arg(long, default_value_t = 1000)]
    pub users: usize,

    /// Workers, each with one connection and one login in flight.
    #[arg(long, default_value_t = 32)]
    pub workers: usize,

    /// The server's MariaDB database (its --store URL): also measure the
    /// login's reads straight against it.
    #[arg(long, value_name = "URL")]
    pub mysql: Option<String>,

    /// Connections of the MariaDB pool, as the server's --mysql-pool.
    #[arg(long, default_value_t = 16)]
    pub mysql_pool: usize,
}

/// Runs the storm, then the database baseline if asked.
pub async fn run(ctx: &mut Ctx, args: &LoginArgs) -> Result<Vec<Record>> {
    let workers = args.workers.max(1);
    if args.users < workers {
        bail!(
            "--users ({}) must be at least --workers ({workers})",
            args.users
        );
    }
    let users = Arc::new(fleet::register(&ctx.wire, &format!("l{}_", ctx.tag), args.users).await?);
    let cost = match ctx.watcher.cmdline("server") {
        Some(line) if line.contains("--password-cost fast") => "server runs --password-cost fast",
        Some(_) => "server does NOT run --password-cost fast: hashing dominates",
        None => "password cost unknown (no --watch server=PID)",
    };

    let mut clients = Vec::with_capacity(workers);
    for _ in 0..workers {
        clients.push(Arc::new(ctx.wire.connect(0).await?));
    }
    ctx.watcher.rebase();
    let clients = Arc::new(clients);
    let mut records = Vec::new();
    let storm = |users: Arc<Vec<UserId>>, clients: Arc<Vec<Arc<Client>>>| {
        move |worker: usize, iteration: u64| {
            let user = pick(&users, workers, worker, iteration);
            let client = Arc::clone(&clients[worker]);
            async move { login_logout(&client, user).await }
        }
    };
    if args.shapes.shape != ShapeChoice::Open {
        let op = storm(users.clone(), clients.clone());
        let closed = Shape::Closed { in_flight: 1 };
        records.push(measure(ctx, "server", closed, workers, op).await?);
    }
    if args.shapes.shape != ShapeChoice::Closed {
        let reached = records.first().map(|r| r.msgs_per_s);
        for rate in args.shapes.open_rates(reached)? {
            let op = storm(users.clone(), clients.clone());
            records.push(measure(ctx, "server", Shape::Open { rate }, workers, op).await?);
        }
    }
    for record in &mut records {
        record.note = cost.into();
        record.extra("users", users.len() as u64);
    }

    if let Some(url) = &args.mysql {
        records.extend(mariadb(ctx, args, url, users, workers).await?);
    }
    Ok(records)
}

/// The same workers running the login's reads on MariaDB: all four, and
/// the first one alone.
async fn mariadb(
    ctx: &Ctx,
    args: &LoginArgs,
    url: &str,
    users: Arc<Vec<UserId>>,
    workers: usize,
) -> Result<Vec<Record>> {
    let opts = Opts::from_url(url).context("invalid --mysql URL")?;
    super::ensure_loopback(&format!("{}:{}", opts.ip_or_hostname(), opts.tcp_port()))?;
    let constraints = PoolConstraints::new(1, args.mysql_pool.max(1))
        .context("the MariaDB pool needs at least one connection")?;
    // As the server's store: no reset on return, so prepared statements
    // stay cached on each connection.
    let pool_opts = PoolOpts::new()
        .with_constraints(constraints)
        .with_reset_connection(false);
    let pool = Pool::new(OptsBuilder::from_opts(opts).pool_opts(pool_opts));

    let mut records = Vec::new();
    for (case, statements) in [("mariadb-login-reads", 4), ("mariadb-select-by-id", 1)] {
        let op = {
            let (pool, users) = (pool.clone(), users.clone());
            move |worker: usize, iteration: u64| {
                let user = pick(&users, workers, worker, iteration);
                let pool = pool.clone();
                async move {
                    let mut conn = pool.get_conn().await?;
                    for sql in &LOGIN_READS[..statements] {
                        let _: Vec<mysql_async::Row> = conn.exec(*sql, (user,)).await?;
                    }
                    Ok(())
                }
            }
        };
        let shape = Shape::Closed { in_flight: 1 };
        let mut record = measure(ctx, case, shape, workers, op).await?;
        record.extra("statements_per_op", statements as u64);
        record.extra("mysql_pool", args.mysql_pool as u64);
        records.push(record);
    }
    if let Err(error) = pool.disconnect().await {
        eprintln!("closing the MariaDB pool: {error}");
    }
    Ok(records)
}

/// Runs `op` on `workers` workers and makes a record of it.
async fn measure<F, Fut>(
    ctx: &Ctx,
    case: &str,
    shape: Shape,
    workers: usize,
    op: F,
) -> Result<Record>
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let label = format!("login {case}");
    let outcome = ops::run(workers, shape, ctx.timing(), &label, &ctx.watcher, op).await?;
    let secs = outcome.window.secs();
    let mut record = ctx.record("login", case, shape.name());
    match shape {
        Shape::Closed { .. } => record.in_flight = Some(1),
        Shape::Open { rate } => record.target_rate = Some(rate),
    }
    record.connections = workers as u64;
    record.seconds = secs;
    record.msgs_per_s = outcome.in_window as f64 / secs;
    record.set_latency(&outcome.latency);
    record.sent = outcome.done + outcome.errors;
    record.delivered = outcome.done;
    record.errors = outcome.errors;
    record.watch = ctx.watcher.spent(
        &outcome.before,
        &outcome.after,
        secs,
        outcome.in_window,
        workers as u64,
    );
    if let Some(error) = outcome.first_error {
        record.extra("first_error", error);
    }
    Ok(record)
}

/// The user that `worker` logs in at `iteration`: each worker has its own
/// share of the users, so no two workers ever hold the same account.
fn pick(users: &[UserId], workers: usize, worker: usize, iteration: u64) -> UserId {
    let share = users.len() / workers;
    let index = worker + workers * (iteration as usize % share.max(1));
    users[index.min(users.len() - 1)]
}

/// One login and one logout on `client`.
async fn login_logout(client: &Client, user: UserId) -> Result<()> {
    let login = Request::Login {
        id: user,
        password: PASSWORD.into(),
        version: 2,
    };
    match client.request(login).await? {
        ServerMsg::LoginAck(Ok(_)) => {}
        ServerMsg::LoginAck(Err(failure)) => bail!("login of {user} failed: {failure}"),
        other => bail!("unexpected answer to LOGIN: {other:?}"),
    }
    match client.request(Request::Logout).await? {
        ServerMsg::LogoutAck => Ok(()),
        other => bail!("unexpected answer to LOGOUT: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_never_share_a_user() {
        let users: Vec<UserId> = (100..110).collect();
        let workers = 3;
        let mut seen = std::collections::HashMap::new();
        for worker in 0..workers {
            for iteration in 0..20 {
                let user = pick(&users, workers, worker, iteration);
                let owner = *seen.entry(user).or_insert(worker);
                assert_eq!(owner, worker, "user {user} used by two workers");
            }
        }
        // Everyone but the remainder (one user here) gets used.
        assert_eq!(seen.len(), 9);
    }
}
