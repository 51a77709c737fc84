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
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use chat_client::{ClientConfig, DEFAULT_ADDR};
use chat_proto::{Codec, Framing, JsonCodec, ProtobufCodec};
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
    /// big-endian length before each. The default is `stream` for JSON and
    /// `length` for protobuf, which has no other.
    #[arg(long, env = "CHAT_FRAMING", value_enum)]
    framing: Option<FramingArg>,

    /// How each message is encoded: `json`, the reference project's
    /// messages, or `protobuf`, the compact encoding of the project's
    /// schema.
    #[arg(long, env = "CHAT_CODEC", value_enum, default_value_t = CodecArg::Json)]
    codec: CodecArg,

    /// Seconds of silence after which a heartbeat is sent, so that a load
    /// balancer's idle timeout never cuts the connection; 0 turns it off.
    #[arg(
        long,
        env = "CHAT_HEARTBEAT",
        value_name = "SECONDS",
        default_value_t = 30
    )]
    heartbeat: u64,

    /// Print every message from the server as one JSON line (the
    /// protocol's own JSON form) instead of readable text: for scripts.
    /// The program's own notes (connection state, why a command failed)
    /// stay readable and, unless both ends are a terminal, go to standard
    /// error so that standard output is JSON lines only.
    #[arg(long, env = "CHAT_JSON")]
    json: bool,
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

/// The codecs, as spelled on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CodecArg {
    Json,
    Protobuf,
}

impl Args {
    /// The connection settings the flags ask for, if they make sense
    /// together.
    fn client_config(&self) -> anyhow::Result<ClientConfig> {
        let (framing, codec): (Framing, Arc<dyn Codec>) = match (self.codec, self.framing) {
            (CodecArg::Json, None | Some(FramingArg::Stream)) => {
                (Framing::Stream, Arc::new(JsonCodec))
            }
            (CodecArg::Json, Some(FramingArg::Length)) => (Framing::Length, Arc::new(JsonCodec)),
            (CodecArg::Protobuf, None | Some(FramingArg::Length)) => {
                (Framing::Length, Arc::new(ProtobufCodec))
            }
            (CodecArg::Protobuf, Some(FramingArg::Stream)) => {
                bail!("protobuf messages need `--framing length`: the stream framing is for JSON")
            }
        };
        Ok(ClientConfig {
            framing,
            codec,
            heartbeat: Duration::from_secs(self.heartbeat),
            connect_timeout: Duration::from_secs(5),
            ..ClientConfig::new(self.addr.clone())
        })
    }
}

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    // Logs go to standard error and are quiet unless asked for, so that
    // they do not break into the chat on the terminal.
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("CHAT_LOG").unwrap_or_else(|_| "off".into()))
        .with_writer(std::io::stderr)
        .init();

    let config = args.client_config()?;

    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let mut face = match interactive {
        true => terminal::terminal().unwrap_or_else(|error| {
            eprintln!("no line editing on this terminal ({error}); reading plain lines");
            terminal::plain()
        }),
        false => terminal::plain(),
    };

    if args.json && !interactive {
        face.output = face.output.notes_apart();
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let failures = runtime.block_on(Session::new(config, face.output, args.json).run(face.lines));

    // The session has dropped its output; wait until the last of it is out.
    if face.printer.join().is_err() {
        eprintln!("the printing thread failed");
    }
    // A script learns from the exit status whether every command worked;
    // a person has seen each failure already.
    if !interactive && failures > 0 {
        eprintln!("{failures} command(s) failed");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> anyhow::Result<ClientConfig> {
        let args = Args::try_parse_from([&["chat-client"], args].concat())?;
        args.client_config()
    }

    #[test]
    fn framing_follows_the_codec_unless_given() -> anyhow::Result<()> {
        assert_eq!(config(&[])?.framing, Framing::Stream);
        assert_eq!(config(&["--framing", "length"])?.framing, Framing::Length);
        assert_eq!(config(&["--codec", "protobuf"])?.framing, Framing::Length);
        let error = config(&["--codec", "protobuf", "--framing", "stream"]);
        assert!(error.is_err_and(|e| e.to_string().contains("--framing length")));
        Ok(())
    }

    #[test]
    fn flags_reach_the_configuration() -> anyhow::Result<()> {
        let config = config(&["--addr", "10.0.0.1:8000", "--heartbeat", "0"])?;
        assert_eq!(config.addr, "10.0.0.1:8000");
        assert!(config.heartbeat.is_zero());
        Ok(())
    }
}
