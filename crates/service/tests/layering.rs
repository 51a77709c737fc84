//! The rule of the layering, checked: the chat service depends on no
//! transport, store, bus, I/O driver or database crate, so swapping any of
//! those is a change to `chat-server` and its configuration alone.

use std::process::Command;

/// Crates the service must never pull in, directly or through another.
const FORBIDDEN: &[&str] = &[
    "chat-net-tokio",
    "chat-net-mio",
    "chat-store-sqlite",
    "chat-store-mysql",
    "chat-bus-local",
    "chat-bus-redis",
    "mio",
    "socket2",
    "tokio-util",
    "mysql_async",
    "mysql_common",
    "fred",
    "redis",
    "rusqlite",
    "libsqlite3-sys",
];

#[test]
fn the_service_depends_on_no_concrete_layer() {
    // `cargo tree -p` resolves features for this package alone, as a
    // build of it would; workspace-wide metadata would show the features
    // that other crates turn on for shared dependencies such as tokio.
    let output = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "chat-service",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8(output.stdout).expect("cargo prints UTF-8");
    let crates: Vec<&str> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert!(
        crates.contains(&"chat-service"),
        "unexpected output: {tree}"
    );
    let found: Vec<&&str> = FORBIDDEN
        .iter()
        .filter(|name| crates.contains(name))
        .collect();
    assert!(
        found.is_empty(),
        "chat-service depends on {found:?}:\n{tree}"
    );
}
