//! `chat-client`: a terminal chat for people, and a line-by-line tool for
//! scripts.
//!
//! On a terminal it is a line editor: incoming messages appear above the
//! line being typed, never through it. When standard input or output is
//! not a terminal it reads commands a line at a time and prints plainly,
//! so the same commands can be piped in from a file or a test. Everything
//! that talks to the server is the `chat_client` library; this binary is
//! the part a person sees.

mod backoff;
mod command;
mod display;
mod session;
mod terminal;

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Context;
use chat_client::{ClientConfig, DEFAULT_ADDR};
use chat_proto::Framing;
use clap::{Parser, ValueEnum};
use tracing_subscriber::EnvFilter;

use crate::session::Session;

/// Chat with the users of a chat cluster, from a terminal or a script.
#[derive(Debug, Parser)]
#[command(version, after_help = after_help())]
struct Args {
    /// Server or load balancer to connect to, as host:port.
    #[arg(long, env = "CHAT_ADDR", value_name = "HOST:PORT", default_value = DEFAULT_ADDR)]
    addr: String,

    /// How messages are delimited on the wire: `stream` is bare JSON
    /// objects (what a person types into nc), `length` puts a 4-byte
    /// big-endian length before each.
    #[arg(long, env = "CHAT_FRAMING", value_enum, default_value_t = FramingArg::Stream)]
    framing: FramingArg,

    /// Seconds of silence after which a heartbeat is sent, so that a load
    /// balancer's idle timeout never cuts the connection; 0 turns it off.
    #[arg(
        long,
        env = "CHAT_HEARTBEAT",
        value_name = "SECONDS",
        default_value_t = 30
    )]
    heartbeat: u64,
}

/// The commands, and where the logs are.
fn after_help() -> String {
    format!(
        "Once running:\n{}\n\nLogs go to standard error when CHAT_LOG sets a filter, e.g. CHAT_LOG=debug.",
        command::HELP
    )
}

/// The framings, as spelled on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FramingArg {
    Stream,
    Length,
}

impl From<FramingArg> for Framing {
    fn from(arg: FramingArg) -> Framing {
        match arg {
            FramingArg::Stream => Framing::Stream,
            FramingArg::Length => Framing::Length,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Logs go to standard error and are quiet unless asked for, so that
    // they do not break into the chat on the terminal.
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("CHAT_LOG").unwrap_or_else(|_| "off".into()))
        .with_writer(std::io::stderr)
        .init();

    let config = ClientConfig {
        framing: args.framing.into(),
        heartbeat: Duration::from_secs(args.heartbeat),
        connect_timeout: Duration::from_secs(5),
        ..ClientConfig::new(args.addr)
    };

    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let face = match interactive {
        true => terminal::terminal().unwrap_or_else(|error| {
            eprintln!("no line editing on this terminal ({error}); reading plain lines");
            terminal::plain()
        }),
        false => terminal::plain(),
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(Session::new(config, face.output).run(face.lines));

    // The session has dropped its output; wait until the last of it is out.
    if face.printer.join().is_err() {
        eprintln!("the printing thread failed");
    }
    Ok(())
}
