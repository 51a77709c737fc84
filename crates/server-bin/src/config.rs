//! Configuration: defaults, then a TOML file, then `CHAT_*` variables,
//! then flags, validated once into [`Settings`].
//!
//! Every option is an `Option` on the command line so that "not given" can
//! fall through to the file and then to the default; clap reads the
//! environment variable of each flag itself, which puts variables above the
//! file and below flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use chat_service::PasswordCost;
use clap::{Parser, ValueEnum};
use serde::Deserialize;

/// A chat server. With no options: one node on 127.0.0.1:6000, data in
/// ./chat.db, no other servers.
#[derive(Debug, Default, Parser)]
#[command(name = "chat-server", version)]
pub struct Args {
    /// TOML file with any of the options below (flag names with `_` for `-`).
    #[arg(long, env = "CHAT_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Address to listen on [default: 127.0.0.1:6000].
    #[arg(long, env = "CHAT_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Where data is kept: `sqlite:PATH` or `mysql://USER:PASS@HOST:PORT/DB` [default: sqlite:chat.db].
    #[arg(long, env = "CHAT_STORE", value_name = "URL")]
    pub store: Option<String>,

    /// How servers reach each other: `local` for a single server, or `redis://HOST:PORT` [default: local].
    #[arg(long, env = "CHAT_BUS", value_name = "URL")]
    pub bus: Option<String>,

    /// This server's name in the cluster; unique per server [default: HOSTNAME-PID].
    #[arg(long, env = "CHAT_SERVER_ID", value_name = "ID")]
    pub server_id: Option<String>,

    /// Network transport: `tokio`, or `mio` (one event loop per thread) [default: tokio].
    #[arg(long, env = "CHAT_TRANSPORT", value_enum)]
    pub transport: Option<Transport>,

    /// Log filter, e.g. `info` or `chat_service=debug` [default: info].
    #[arg(long, env = "CHAT_LOG", value_name = "FILTER")]
    pub log: Option<String>,

    /// Longest frame accepted, in bytes [default: 65536].
    #[arg(long, env = "CHAT_MAX_FRAME", value_name = "BYTES")]
    pub max_frame: Option<usize>,

    /// Longest chat message, in bytes of UTF-8 [default: 61440].
    #[arg(long, env = "CHAT_MAX_MESSAGE", value_name = "BYTES")]
    pub max_message: Option<usize>,

    /// Messages queued for a slow client before it is disconnected [default: 1024].
    #[arg(long, env = "CHAT_OUTBOUND_QUEUE", value_name = "MESSAGES")]
    pub outbound_queue: Option<usize>,

    /// Seconds a client may stay silent before it is disconnected [default: 90].
    #[arg(long, env = "CHAT_IDLE_TIMEOUT", value_name = "SECONDS")]
    pub idle_timeout: Option<u64>,

    /// Cost of new password hashes; `fast` is for tests and benchmarks only [default: standard].
    #[arg(long, env = "CHAT_PASSWORD_COST", value_enum)]
    pub password_cost: Option<Cost>,

    /// Connections to MariaDB this server may open [default: 16].
    #[arg(long, env = "CHAT_MYSQL_POOL", value_name = "N")]
    pub mysql_pool: Option<usize>,

    /// Prefix of every Redis key and channel, to share one Redis between clusters [default: chat:].
    #[arg(long, env = "CHAT_REDIS_PREFIX", value_name = "PREFIX")]
    pub redis_prefix: Option<String>,

    /// Seconds a killed server's users stay online in the cluster [default: 30].
    #[arg(long, env = "CHAT_PRESENCE_TTL", value_name = "SECONDS")]
    pub presence_ttl: Option<u64>,

    /// I/O threads of the mio transport [default: number of cores].
    #[arg(long, env = "CHAT_IO_THREADS", value_name = "N")]
    pub io_threads: Option<usize>,
}

/// The transports a server can be built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Tokio,
    Mio,
}

/// Password hash cost, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cost {
    Standard,
    Fast,
}

/// The TOML file: the same options as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub store: Option<String>,
    pub bus: Option<String>,
    pub server_id: Option<String>,
    pub transport: Option<Transport>,
    pub log: Option<String>,
    pub max_frame: Option<usize>,
    pub max_message: Option<usize>,
    pub outbound_queue: Option<usize>,
    pub idle_timeout: Option<u64>,
    pub password_cost: Option<Cost>,
    pub mysql_pool: Option<usize>,
    pub redis_prefix: Option<String>,
    pub presence_ttl: Option<u64>,
    pub io_threads: Option<usize>,
}

/// Where data is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Sqlite(PathBuf),
    Mysql(String),
}

/// How servers reach each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusUrl {
    Local,
    Redis(String),
}

/// Validated settings, ready to build a server from.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub store: StoreUrl,
    pub bus: BusUrl,
    pub server_id: String,
    pub transport: Transport,
    pub log: String,
    pub max_frame: usize,
    pub max_message: usize,
    pub outbound_queue: usize,
    pub idle_timeout: Duration,
    pub password_cost: PasswordCost,
    pub mysql_pool: usize,
    // Read only by the layer it configures, which a build may leave out.
    #[cfg_attr(not(feature = "bus-redis"), allow(dead_code))]
    pub redis_prefix: String,
    pub presence_ttl: Duration,
    pub io_threads: usize,
}

impl Settings {
    /// Settings from flags and variables, and the file they name.
    pub fn load(args: Args) -> Result<Settings> {
        let file = match &args.config {
            None => FileConfig::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("invalid config file {}", path.display()))?
            }
        };
        Settings::merge(args, file)
    }

    fn merge(args: Args, file: FileConfig) -> Result<Settings> {
        let settings = Settings {
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or(([127, 0, 0, 1], 6000).into()),
            store: parse_store(
                &args
                    .store
                    .or(file.store)
                    .unwrap_or_else(|| "sqlite:chat.db".into()),
            )?,
            bus: parse_bus(&args.bus.or(file.bus).unwrap_or_else(|| "local".into()))?,
            server_id: args
                .server_id
                .or(file.server_id)
                .unwrap_or_else(default_server_id),
            transport: args
                .transport
                .or(file.transport)
                .unwrap_or(Transport::Tokio),
            log: args.log.or(file.log).unwrap_or_else(|| "info".into()),
            max_frame: args.max_frame.or(file.max_frame).unwrap_or(64 * 1024),
            max_message: args.max_message.or(file.max_message).unwrap_or(60 * 1024),
            outbound_queue: args.outbound_queue.or(file.outbound_queue).unwrap_or(1024),
            idle_timeout: Duration::from_secs(
                args.idle_timeout.or(file.idle_timeout).unwrap_or(90),
            ),
            password_cost: match args.password_cost.or(file.password_cost) {
                None | Some(Cost::Standard) => PasswordCost::Standard,
                Some(Cost::Fast) => PasswordCost::Fast,
            },
            mysql_pool: args.mysql_pool.or(file.mysql_pool).unwrap_or(16),
            redis_prefix: args
                .redis_prefix
                .or(file.redis_prefix)
                .unwrap_or_else(|| "chat:".into()),
            presence_ttl: Duration::from_secs(
                args.presence_ttl.or(file.presence_ttl).unwrap_or(30),
            ),
            io_threads: args.io_threads.or(file.io_threads).unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            }),
        };
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<()> {
        if self.max_frame < 1024 {
            bail!("max_frame must be at least 1024 bytes");
        }
        if self.max_message + 512 > self.max_frame {
            bail!(
                "max_message ({}) must leave room for the rest of a frame: at most max_frame - 512 ({})",
                self.max_message,
                self.max_frame - 512
            );
        }
        if self.outbound_queue == 0 {
            bail!("outbound_queue must be at least 1");
        }
        if self.idle_timeout < Duration::from_secs(5) {
            bail!("idle_timeout must be at least 5 seconds");
        }
        if self.server_id.is_empty() || self.server_id.contains(char::is_whitespace) {
            bail!("server_id must be a non-empty word without spaces");
        }
        if self.io_threads == 0 {
            bail!("io_threads must be at least 1");
        }
        if self.mysql_pool == 0 {
            bail!("mysql_pool must be at least 1");
        }
        if self.presence_ttl < Duration::from_secs(1) {
            bail!("presence_ttl must be at least 1 second");
        }
        Ok(())
    }
}

/// The host's name and this process's id: unique on a network of hosts
/// with distinct names, and in containers, where every server is PID 1 but
/// each has its own host name.
fn default_server_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().replace(char::is_whitespace, "-"))
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "server".into());
    format!("{host}-{}", std::process::id())
}

fn parse_store(url: &str) -> Result<StoreUrl> {
    match url.split_once(':') {
        Some(("sqlite", path)) if !path.is_empty() => Ok(StoreUrl::Sqlite(PathBuf::from(path))),
        Some(("mysql", rest)) if rest.starts_with("//") => Ok(StoreUrl::Mysql(url.to_owned())),
        _ => bail!("unknown store {url:?}: expected sqlite:PATH or mysql://USER:PASS@HOST:PORT/DB"),
    }
}

fn parse_bus(url: &str) -> Result<BusUrl> {
    match url.split_once(':') {
        None if url == "local" => Ok(BusUrl::Local),
        Some(("redis", rest)) if rest.starts_with("//") => Ok(BusUrl::Redis(url.to_owned())),
        _ => bail!("unknown bus {url:?}: expected local or redis://HOST:PORT"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_make_a_single_node() {
        let s =
            Settings::merge(Args::default(), FileConfig::default()).expect("defaults are valid");
        assert_eq!(s.listen, "127.0.0.1:6000".parse().unwrap());
        assert_eq!(s.store, StoreUrl::Sqlite("chat.db".into()));
        assert_eq!(s.bus, BusUrl::Local);
        assert_eq!(s.password_cost, PasswordCost::Standard);
    }

    #[test]
    fn flags_override_the_file() {
        let file: FileConfig =
            toml::from_str("listen = \"0.0.0.0:7000\"\nstore = \"sqlite:/tmp/x.db\"\n").unwrap();
        let args = Args {
            listen: Some("127.0.0.1:7001".parse().unwrap()),
            ..Args::default()
        };
        let s = Settings::merge(args, file).unwrap();
        assert_eq!(s.listen.port(), 7001);
        assert_eq!(s.store, StoreUrl::Sqlite("/tmp/x.db".into()));
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        let args = Args {
            store: Some("postgres://x".into()),
            ..Args::default()
        };
        let err = Settings::merge(args, FileConfig::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown store"), "{err}");
        let args = Args {
            max_message: Some(70_000),
            ..Args::default()
        };
        assert!(Settings::merge(args, FileConfig::default()).is_err());
        assert!(toml::from_str::<FileConfig>("colour = \"blue\"").is_err());
    }

    #[test]
    fn the_example_config_parses() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../config/chat-server.example.toml"
        );
        let text = std::fs::read_to_string(path).expect("example config exists");
        let file: FileConfig = toml::from_str(&text).expect("example config parses");
        Settings::merge(Args::default(), file).expect("example config is valid");

        // Every option of the file appears in the example, set or commented
        // out, so the example explains each one.
        let args = <Args as clap::CommandFactory>::command();
        for arg in args.get_arguments() {
            let key = arg.get_id().as_str().to_owned();
            if matches!(key.as_str(), "config" | "help" | "version") {
                continue;
            }
            assert!(
                text.lines().any(|line| line
                    .trim_start_matches(['#', ' '])
                    .starts_with(&format!("{key} = "))),
                "the example config does not explain `{key}`"
            );
        }
    }
}
