//! `chat-server`: reads the configuration, builds the layers it names
//! (transport, store, bus) from those compiled in, and runs until SIGINT or
//! SIGTERM, then logs everyone out and exits.
//!
//! This file is glue on purpose: every rule lives in `chat-service`, every
//! byte in `chat-proto` and the transports.

mod config;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use chat_service::{Bus, ChatService, ServiceConfig, Store};
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

use config::{Args, BusUrl, Settings, StoreUrl, Transport};

fn main() -> ExitCode {
    match start() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", report(&error));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each said once: the store and
/// database clients put their cause's text in their own message as well
/// as giving it as the source, so a plain chain repeats it.
fn report(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let message = cause.to_string();
        if text.contains(&message) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&message);
    }
    // The MariaDB client's own messages repeat a level too ("Input/output
    // error: Input/output error: …").
    let mut parts: Vec<&str> = text.split(": ").collect();
    parts.dedup();
    parts.join(": ")
}

fn start() -> Result<()> {
    let settings = Settings::load(Args::parse())?;
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&settings.log).context("invalid log filter")?)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(settings))
}

async fn run(settings: Settings) -> Result<()> {
    ensure_built_in(&settings)?;
    // The port first, then the bus, then the store: a server that cannot
    // listen or reach Redis should say so before it creates a database.
    let listener = std::net::TcpListener::bind(settings.listen)
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let bus = open_bus(&settings).await?;
    let store = open_store(&settings).await?;
    let service = ChatService::new(
        store.clone(),
        bus.clone(),
        ServiceConfig {
            password_cost: settings.password_cost,
            max_message_bytes: settings.max_message,
        },
    );
    service
        .start()
        .await
        .context("cannot start the message bus")?;

    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));

    match settings.transport {
        #[cfg(feature = "net-tokio")]
        Transport::Tokio => serve_tokio(listener, &settings, service.clone(), shutdown).await?,
        #[cfg(feature = "net-mio")]
        Transport::Mio => serve_mio(listener, &settings, service.clone(), shutdown).await?,
        #[allow(unreachable_patterns)]
        other => bail!("this chat-server was built without the {other:?} transport: rebuild with its cargo feature"),
    }
    service.shutdown().await;
    store.close().await;
    for (name, value) in bus.counters() {
        info!(counter = name, value, "bus counter");
    }
    info!("stopped");
    Ok(())
}

#[cfg(feature = "net-mio")]
async fn serve_mio(
    listener: std::net::TcpListener,
    settings: &Settings,
    service: ChatService,
    shutdown: CancellationToken,
) -> Result<()> {
    let config = chat_net_mio::TransportConfig {
        max_frame: settings.max_frame,
        outbound_queue: settings.outbound_queue,
        idle_timeout: settings.idle_timeout,
        threads: settings.io_threads,
    };
    let server = chat_net_mio::MioServer::start(
        listener,
        service,
        config,
        tokio::runtime::Handle::current(),
    )
    .context("cannot start the mio transport")?;
    info!(addr = %server.local_addr(), server_id = %settings.server_id, transport = "mio", threads = settings.io_threads, "listening");
    shutdown.cancelled().await;
    server.shutdown().await;
    Ok(())
}

#[cfg(feature = "net-tokio")]
async fn serve_tokio(
    listener: std::net::TcpListener,
    settings: &Settings,
    service: ChatService,
    shutdown: CancellationToken,
) -> Result<()> {
    listener
        .set_nonblocking(true)
        .context("cannot make the listener non-blocking")?;
    let listener =
        tokio::net::TcpListener::from_std(listener).context("cannot watch the listener")?;
    let addr = listener.local_addr().context("listener has no address")?;
    info!(%addr, server_id = %settings.server_id, transport = "tokio", "listening");
    let config = chat_net_tokio::TransportConfig {
        max_frame: settings.max_frame,
        outbound_queue: settings.outbound_queue,
        idle_timeout: settings.idle_timeout,
        ..Default::default()
    };
    chat_net_tokio::serve(listener, service, config, shutdown)
        .await
        .context("server failed")
}

async fn open_store(settings: &Settings) -> Result<Arc<dyn Store>> {
    match &settings.store {
        #[cfg(feature = "store-sqlite")]
        StoreUrl::Sqlite(path) => {
            let store = chat_store_sqlite::SqliteStore::open(path)
                .with_context(|| format!("cannot open the store {}", path.display()))?;
            info!(path = %path.display(), "opened SQLite store");
            Ok(Arc::new(store))
        }
        #[cfg(feature = "store-mysql")]
        StoreUrl::Mysql(url) => {
            let store = chat_store_mysql::MysqlStore::connect(url, settings.mysql_pool)
                .await
                .context("cannot connect to MariaDB")?;
            info!(database = %redact(url), pool = settings.mysql_pool, "connected to MariaDB");
            Ok(Arc::new(store))
        }
        #[allow(unreachable_patterns)]
        other => bail!("this chat-server was built without support for the store {other:?}: rebuild with its cargo feature"),
    }
}

async fn open_bus(settings: &Settings) -> Result<Arc<dyn Bus>> {
    match &settings.bus {
        #[cfg(feature = "bus-local")]
        BusUrl::Local => Ok(Arc::new(chat_bus_local::LocalBus::new())),
        #[cfg(feature = "bus-redis")]
        BusUrl::Redis(url) => {
            let mut config = chat_bus_redis::RedisBusConfig::new(url.clone(), settings.server_id.clone());
            config.prefix = settings.redis_prefix.clone();
            config.presence_ttl = settings.presence_ttl;
            let bus = chat_bus_redis::RedisBus::connect(config)
                .await
                .context("cannot connect to Redis")?;
            info!(redis = %redact(url), server_id = %settings.server_id, "connected to Redis");
            Ok(Arc::new(bus))
        }
        #[allow(unreachable_patterns)]
        other => bail!("this chat-server was built without support for the bus {other:?}: rebuild with its cargo feature"),
    }
}

/// Refuses, before anything starts, a layer this binary was built without.
fn ensure_built_in(settings: &Settings) -> Result<()> {
    let (transport, built) = match settings.transport {
        Transport::Tokio => ("net-tokio", cfg!(feature = "net-tokio")),
        Transport::Mio => ("net-mio", cfg!(feature = "net-mio")),
    };
    let (store, store_built) = match settings.store {
        StoreUrl::Sqlite(_) => ("store-sqlite", cfg!(feature = "store-sqlite")),
        StoreUrl::Mysql(_) => ("store-mysql", cfg!(feature = "store-mysql")),
    };
    let (bus, bus_built) = match settings.bus {
        BusUrl::Local => ("bus-local", cfg!(feature = "bus-local")),
        BusUrl::Redis(_) => ("bus-redis", cfg!(feature = "bus-redis")),
    };
    for (feature, built) in [(transport, built), (store, store_built), (bus, bus_built)] {
        if !built {
            bail!(
                "this chat-server was built without {feature}: rebuild with `--features {feature}`"
            );
        }
    }
    Ok(())
}

/// A URL without its password, for logs.
#[allow(dead_code)]
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://…@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

async fn stop_on_signal(shutdown: CancellationToken) {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                warn!(error = %e, "cannot watch SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => info!("SIGINT: shutting down"),
        _ = terminate => info!("SIGTERM: shutting down"),
    }
    shutdown.cancel();
}

#[cfg(test)]
mod tests {
    use super::report;

    #[test]
    fn a_report_says_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let error = anyhow::Error::new(io)
            .context("Input/output error: Input/output error: refused")
            .context("cannot connect to MariaDB");
        assert_eq!(
            report(&error),
            "cannot connect to MariaDB: Input/output error: refused"
        );
    }
}
