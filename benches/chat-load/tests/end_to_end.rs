//! `chat-load` run for about a second against a real `chat-server`, and
//! against its own echo responder, checking the whole path: setup, both
//! load shapes, the accounting, the JSON lines and the report.
//!
//! The server binary belongs to another package, so cargo does not hand
//! its path to this test; it sits next to this test's own directory
//! (`target/<profile>/chat-server`), where `cargo test --workspace` has
//! built it for the server's own tests.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// A `chat-server` on a free port with an embedded store, stopped on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let binary = server_binary();
        assert!(
            binary.exists(),
            "{} is missing: build it first with `cargo build -p chat-server` \
             (`cargo test --workspace` does)",
            binary.display()
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let store = format!("sqlite:{}", dir.path().join("chat.db").display());
        // Port 0 and the address from the server's own log: a port picked
        // beforehand can be taken meanwhile, and polling a port nobody
        // listens on yet can connect to itself (TCP simultaneous open).
        let mut child = Command::new(&binary)
            .args(["--listen", "127.0.0.1:0", "--store", &store])
            .args(["--password-cost", "fast", "--log", "info"])
            .env_remove("CHAT_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chat-server starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (addr_tx, addr_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut log = Vec::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening") {
                    if let Some(addr) = listening_addr(&line) {
                        let _ = addr_tx.send(Ok(addr));
                    }
                }
                log.push(line);
            }
            // The server is gone: whoever still waits gets its log.
            let _ = addr_tx.send(Err(log.join("\n")));
        });
        let addr = match addr_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(addr)) => addr,
            Ok(Err(log)) => panic!("chat-server exited at start:\n{log}"),
            Err(_) => {
                let _ = child.kill();
                panic!("chat-server did not listen within 30 s");
            }
        };
        Server {
            child,
            addr,
            _dir: dir,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `target/<profile>/chat-server`, from this test's `target/<profile>/deps/`.
fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("tests run from target/<profile>/deps");
    profile_dir.join(format!("chat-server{}", std::env::consts::EXE_SUFFIX))
}

/// The `addr=` field of the server's "listening" log line.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("addr=")? + "addr=".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

fn chat_load(args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_chat-load"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("chat-load runs");
    assert!(
        output.status.success(),
        "chat-load {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn json_lines(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("every JSON line parses"))
        .collect()
}

fn assert_clean(record: &Value) {
    for field in ["lost", "duplicated", "out_of_order", "errors"] {
        assert_eq!(record[field], 0, "{field} in {record}");
    }
    assert!(
        record["delivered"].as_u64() > Some(0),
        "nothing delivered: {record}"
    );
    assert_eq!(record["sent"], record["delivered"], "{record}");
}

#[test]
fn direct_runs_clean_against_a_real_server() {
    let server = Server::start();
    let addr = server.addr.to_string();
    let watch = format!("server={}", server.child.id());
    let output = chat_load(&[
        "direct",
        "--addr",
        &addr,
        "--connections",
        "10",
        "--warmup",
        "0.2",
        "--duration",
        "1",
        "--drain",
        "5",
        "--watch",
        &watch,
        "--variant",
        "test",
    ]);
    let records = json_lines(&output);
    assert_eq!(records.len(), 2, "a closed and an open loop: {records:?}");
    assert_eq!(records[0]["shape"], "closed");
    assert_eq!(records[1]["shape"], "open");
    for record in &records {
        assert_clean(record);
        assert_eq!(record["scenario"], "direct");
        assert_eq!(record["variant"], "test/json/stream");
        assert!(record["msgs_per_s"].as_f64() > Some(0.0));
        assert!(record["p99_us"].as_u64() > Some(0));
        assert!(
            record["watch"]["server"]["rss_kib"].as_u64() > Some(0),
            "{record}"
        );
    }
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        table.starts_with("scenario"),
        "the table comes first: {table}"
    );
}

#[test]
fn echo_runs_clean_and_reports() {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("results.jsonl");
    let json = json.to_str().expect("a UTF-8 temp path");
    let output = chat_load(&[
        "echo",
        "--connections",
        "4",
        "--warmup",
        "0.1",
        "--duration",
        "0.5",
        "--pipeline",
        "4",
        "--codec",
        "protobuf",
        "--run",
        "1",
        "--json",
        json,
    ]);
    let records = json_lines(&output);
    let cases: Vec<&str> = records.iter().filter_map(|r| r["case"].as_str()).collect();
    assert_eq!(cases, ["rr", "rr", "pipelined"]);
    for record in &records {
        assert_clean(record);
        assert_eq!(record["variant"], "protobuf/length");
        assert!(
            record["watch"]["echo"]["pid"].as_u64() > Some(0),
            "{record}"
        );
    }

    let svg = dir.path().join("plot.svg");
    let svg = svg.to_str().expect("a UTF-8 temp path");
    let summary = chat_load(&["report", "--input", json, "--svg", svg]);
    let text = String::from_utf8_lossy(&summary.stdout);
    assert!(
        text.contains("| echo | pipelined | protobuf/length |"),
        "{text}"
    );
    assert!(std::fs::read_to_string(svg)
        .expect("the plot")
        .contains("<polyline"));
}
