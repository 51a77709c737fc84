//! A few Redis commands over a plain RESP exchange.
//!
//! The load generator asks Redis two things: how many PUBLISHes it has run
//! (`INFO commandstats`, read before and after a group run, to check that
//! a message costs one PUBLISH per server and not one per recipient), and
//! which server holds each user (the presence keys, to pair users across
//! servers behind a load balancer). That is two commands; a client crate
//! would be more code to build than this file.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use chat_proto::UserId;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Longest reply accepted: `INFO` is a few KiB, an `MGET` of a thousand
/// presence keys a few tens.
const MAX_REPLY: usize = 16 * 1024 * 1024;

/// How long one command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// A RESP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

/// One connection to Redis.
pub struct Redis {
    stream: BufReader<TcpStream>,
}

impl Redis {
    /// Connects to `redis://HOST:PORT` (a path or credentials are not
    /// supported: the benchmark's Redis is local and open).
    pub async fn connect(url: &str) -> Result<Redis> {
        let addr = host_port(url)?;
        let stream = timeout(COMMAND_TIMEOUT, TcpStream::connect(&addr))
            .await
            .with_context(|| format!("connecting to Redis at {addr} timed out"))?
            .with_context(|| format!("cannot connect to Redis at {addr}"))?;
        Ok(Redis {
            stream: BufReader::new(stream),
        })
    }

    /// Runs one command and returns its reply.
    pub async fn command(&mut self, args: &[&str]) -> Result<Reply> {
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        let exchange = async {
            self.stream.get_mut().write_all(request.as_bytes()).await?;
            read_reply(&mut self.stream).await
        };
        timeout(COMMAND_TIMEOUT, exchange)
            .await
            .context("Redis did not answer in time")?
    }

    /// PUBLISH commands Redis has run since it started (or since
    /// `CONFIG RESETSTAT`).
    pub async fn publishes(&mut self) -> Result<u64> {
        match self.command(&["INFO", "commandstats"]).await? {
            Reply::Bulk(Some(text)) => Ok(publish_calls(&String::from_utf8_lossy(&text))),
            other => bail!("unexpected answer to INFO: {other:?}"),
        }
    }

    /// The server id each user's presence key names (`None` if offline),
    /// for keys `{prefix}presence:{user}`.
    pub async fn presence(
        &mut self,
        prefix: &str,
        users: &[UserId],
    ) -> Result<Vec<Option<String>>> {
        let keys: Vec<String> = users
            .iter()
            .map(|u| format!("{prefix}presence:{u}"))
            .collect();
        let mut args = vec!["MGET"];
        args.extend(keys.iter().map(String::as_str));
        match self.command(&args).await? {
            Reply::Array(Some(items)) if items.len() == users.len() => Ok(items
                .into_iter()
                .map(|item| match item {
                    Reply::Bulk(Some(value)) => Some(String::from_utf8_lossy(&value).into_owned()),
                    _ => None,
                })
                .collect()),
            other => bail!("unexpected answer to MGET: {other:?}"),
        }
    }
}

/// `HOST:PORT` of a `redis://` URL.
pub fn host_port(url: &str) -> Result<String> {
    let Some(rest) = url.strip_prefix("redis://") else {
        bail!("expected a redis://HOST:PORT URL, got {url:?}");
    };
    let host_port = rest.split('/').next().unwrap_or(rest);
    if host_port.contains('@') {
        bail!("credentials in the Redis URL are not supported: {url:?}");
    }
    if host_port.contains(':') {
        Ok(host_port.to_owned())
    } else {
        Ok(format!("{host_port}:6379"))
    }
}

/// The `calls` of `cmdstat_publish` in an `INFO commandstats` text.
fn publish_calls(info: &str) -> u64 {
    info.lines()
        .find_map(|line| line.strip_prefix("cmdstat_publish:"))
        .and_then(|stats| {
            stats
                .split(',')
                .find_map(|field| field.strip_prefix("calls="))
                .and_then(|calls| calls.trim().parse().ok())
        })
        .unwrap_or(0)
}

async fn read_reply<R: AsyncBufReadExt + Unpin>(reader: &mut R) -> Result<Reply> {
    let line = read_line(reader).await?;
    let (kind, rest) = line.split_at(1.min(line.len()));
    Ok(match kind {
        "+" => Reply::Simple(rest.to_owned()),
        "-" => Reply::Error(rest.to_owned()),
        ":" => Reply::Int(rest.parse().context("bad integer reply")?),
        "$" => {
            let len: i64 = rest.parse().context("bad bulk length")?;
            if len < 0 {
                Reply::Bulk(None)
            } else {
                let len = usize::try_from(len).context("bad bulk length")?;
                if len > MAX_REPLY {
                    bail!("Redis reply of {len} bytes is too long");
                }
                let mut data = vec![0; len + 2];
                reader.read_exact(&mut data).await?;
                data.truncate(len);
                Reply::Bulk(Some(data))
            }
        }
        "*" => {
            let len: i64 = rest.parse().context("bad array length")?;
            if len < 0 {
                Reply::Array(None)
            } else {
                let len = usize::try_from(len).context("bad array length")?;
                if len > MAX_REPLY {
                    bail!("Redis array of {len} items is too long");
                }
                let mut items = Vec::with_capacity(len.min(4096));
                for _ in 0..len {
                    items.push(Box::pin(read_reply(reader)).await?);
                }
                Reply::Array(Some(items))
            }
        }
        _ => bail!("not a RESP reply: {line:?}"),
    })
}

async fn read_line<R: AsyncBufReadExt + Unpin>(reader: &mut R) -> Result<String> {
    let mut line = Vec::new();
    let read = reader
        .take(64 * 1024)
        .read_until(b'\n', &mut line)
        .await
        .context("reading from Redis failed")?;
    if read == 0 || !line.ends_with(b"\r\n") {
        bail!("Redis closed the connection or sent a broken line");
    }
    line.truncate(line.len() - 2);
    String::from_utf8(line).context("Redis sent a line that is not UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_calls_are_found() {
        let info = "# Commandstats\r\ncmdstat_get:calls=3,usec=1\r\n\
                    cmdstat_publish:calls=1234,usec=99,usec_per_call=0.08\r\n";
        assert_eq!(publish_calls(info), 1234);
        assert_eq!(publish_calls("# Commandstats\r\n"), 0);
    }

    #[test]
    fn urls_give_an_address() {
        assert_eq!(
            host_port("redis://127.0.0.1:7000").expect("ok"),
            "127.0.0.1:7000"
        );
        assert_eq!(
            host_port("redis://127.0.0.1/0").expect("ok"),
            "127.0.0.1:6379"
        );
        assert!(host_port("http://x").is_err());
        assert!(host_port("redis://u:p@127.0.0.1:1").is_err());
    }

    #[tokio::test]
    async fn replies_parse() {
        let input: &[u8] = b"*3\r\n$5\r\nhello\r\n$-1\r\n:42\r\n+OK\r\n-ERR no\r\n";
        let mut reader = BufReader::new(input);
        assert_eq!(
            read_reply(&mut reader).await.expect("array"),
            Reply::Array(Some(vec![
                Reply::Bulk(Some(b"hello".to_vec())),
                Reply::Bulk(None),
                Reply::Int(42),
            ]))
        );
        assert_eq!(
            read_reply(&mut reader).await.expect("simple"),
            Reply::Simple("OK".into())
        );
        assert_eq!(
            read_reply(&mut reader).await.expect("error"),
            Reply::Error("ERR no".into())
        );
        assert!(read_reply(&mut reader).await.is_err());
    }
}
