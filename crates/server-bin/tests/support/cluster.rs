//! Deployments of one or several servers for the tests: the store and bus
//! they share (a fresh MariaDB database and Redis key prefix per test), and
//! nginx in front of them.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use chat_proto::{Framing, UserId};

use super::{Peer, Server, Wire};

/// Which store the servers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Sqlite,
    Mysql,
}

/// Which bus the servers use; Redis means two servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusKind {
    Local,
    Redis,
}

/// Which transport the servers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    Tokio,
    Mio,
}

/// The layers of a deployment and the clients' framing.
#[derive(Debug, Clone, Copy)]
pub struct Layers {
    pub transport: TransportKind,
    pub store: StoreKind,
    pub bus: BusKind,
    pub wire: Wire,
}

/// One or more servers sharing a store and a bus.
pub struct Deployment {
    pub servers: Vec<Server>,
    pub layers: Layers,
    _db: Option<TestDatabase>,
    _shared: tempfile::TempDir,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A name unique to this test process and call.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn mysql_url() -> String {
    std::env::var("CHAT_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

pub fn redis_url() -> String {
    std::env::var("CHAT_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

impl Deployment {
    /// Starts the servers that `layers` call for: one with the local bus,
    /// two with Redis.
    pub fn start(layers: Layers) -> Deployment {
        Deployment::start_with(layers, &[])
    }

    /// The same, with extra flags for every server.
    pub fn start_with(layers: Layers, extra: &[&str]) -> Deployment {
        Deployment::start_on(layers, &redis_url(), extra)
    }

    /// The same, on the Redis at `redis`.
    pub fn start_on(layers: Layers, redis: &str, extra: &[&str]) -> Deployment {
        let count = match layers.bus {
            BusKind::Local => 1,
            BusKind::Redis => 2,
        };
        let shared = tempfile::tempdir().expect("temp dir");
        let (store, db) = match layers.store {
            StoreKind::Sqlite => (
                format!("sqlite:{}", shared.path().join("chat.db").display()),
                None,
            ),
            StoreKind::Mysql => {
                let db = TestDatabase::new();
                (db.url.clone(), Some(db))
            }
        };
        if layers.bus == BusKind::Redis {
            require(redis, 6379, "Redis", "redis-server", "CHAT_TEST_REDIS_URL");
        }
        let prefix = format!("{}:", unique("chat_t"));
        let servers = (0..count)
            .map(|i| {
                let mut args: Vec<String> = vec!["--store".into(), store.clone()];
                let transport = match layers.transport {
                    TransportKind::Tokio => "tokio",
                    TransportKind::Mio => "mio",
                };
                args.extend([
                    "--transport".into(),
                    transport.into(),
                    "--io-threads".into(),
                    "2".into(),
                ]);
                if layers.bus == BusKind::Redis {
                    args.extend([
                        "--bus".into(),
                        redis.to_owned(),
                        "--redis-prefix".into(),
                        prefix.clone(),
                    ]);
                    args.extend(["--server-id".into(), format!("s{i}")]);
                }
                args.extend(extra.iter().map(|s| s.to_string()));
                Server::spawn(&args, tempfile::tempdir().expect("temp dir"))
            })
            .collect();
        Deployment {
            servers,
            layers,
            _db: db,
            _shared: shared,
        }
    }

    /// A client on server `n` (modulo the number of servers), so that
    /// users 0 and 1 of a test are on different servers in a cluster.
    pub fn connect(&self, n: usize) -> Peer {
        Peer::connect_wire(self.servers[n % self.servers.len()].addr, self.layers.wire)
    }

    /// A client on server `n` with a framing of its own.
    pub fn connect_with(&self, n: usize, framing: Framing) -> Peer {
        Peer::connect(self.servers[n % self.servers.len()].addr, framing)
    }

    /// Registers `name` (password `pw`) through server 0.
    pub fn register(&self, name: &str) -> UserId {
        self.connect(0).register(name, "pw")
    }
}

/// A fresh MariaDB database, dropped when the test ends.
pub struct TestDatabase {
    pub url: String,
    name: String,
}

impl TestDatabase {
    pub fn new() -> TestDatabase {
        require(
            &mysql_url(),
            3306,
            "MariaDB",
            "mariadb-server",
            "CHAT_TEST_MYSQL_URL",
        );
        let name = unique("chat_t");
        let url = format!("{}/{name}", mysql_url().trim_end_matches('/'));
        TestDatabase { url, name }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        let url = mysql_url();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        if let Ok(runtime) = runtime {
            runtime.block_on(async move {
                use mysql_async::prelude::Queryable;
                if let Ok(mut conn) = mysql_async::Conn::from_url(url).await {
                    let _ = conn
                        .query_drop(format!("DROP DATABASE IF EXISTS `{name}`"))
                        .await;
                    let _ = conn.disconnect().await;
                }
            });
        }
    }
}

/// nginx with the stream module in front of some servers, in the
/// foreground, from a generated configuration on a free port.
pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Nginx {
    pub fn start(upstreams: &[SocketAddr]) -> Nginx {
        let binary = std::env::var("CHAT_TEST_NGINX").unwrap_or_else(|_| "/usr/sbin/nginx".into());
        let module = std::env::var("CHAT_TEST_NGINX_STREAM_MODULE")
            .unwrap_or_else(|_| "/usr/lib/nginx/modules/ngx_stream_module.so".into());
        assert!(
            std::path::Path::new(&binary).exists() && std::path::Path::new(&module).exists(),
            "nginx with the stream module is needed: apt-get install nginx-light libnginx-mod-stream \
             (or run scripts/test, which installs it); looked for {binary} and {module}"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let servers: String = upstreams
            .iter()
            .map(|a| format!("        server {a} max_fails=1 fail_timeout=2s;\n"))
            .collect();
        let config = format!(
            "load_module {module};\n\
             daemon off;\nmaster_process on;\nworker_processes 1;\n\
             pid {dir}/nginx.pid;\nerror_log {dir}/error.log info;\n\
             events {{ worker_connections 1024; }}\n\
             stream {{\n    upstream chat {{\n{servers}    }}\n\
             \x20   server {{\n        listen 127.0.0.1:{port};\n        proxy_pass chat;\n\
             \x20       proxy_connect_timeout 1s;\n        proxy_timeout 5m;\n        proxy_half_close on;\n    }}\n}}\n",
            dir = dir.path().display()
        );
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, config).expect("write nginx.conf");
        let child = Command::new(&binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not listen: {}",
                log(&dir)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx { child, addr, dir }
    }

    pub fn connect(&self, framing: Framing) -> Peer {
        Peer::connect(self.addr, framing)
    }
}

fn log(dir: &tempfile::TempDir) -> String {
    std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-QUIT", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = &self.dir;
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A private Redis on a free port, for tests that stop and restart it.
pub struct PrivateRedis {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl PrivateRedis {
    pub fn start() -> PrivateRedis {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut redis = PrivateRedis {
            child: None,
            port: free_port(),
            dir,
        };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it again on the same port, empty, as after a crash.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let binary =
            std::env::var("CHAT_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let child = Command::new(&binary)
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{binary} does not start ({e}): apt-get install redis-server")
            });
        self.child = Some(child);
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().expect("address");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it at once.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Fails the test with what to install when a service does not answer.
fn require(url: &str, default_port: u16, what: &str, package: &str, variable: &str) {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let host_port = rest.rsplit_once('@').map_or(rest, |(_, hp)| hp);
    let host_port = host_port.split('/').next().unwrap_or(host_port);
    let target = if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:{default_port}")
    };
    let reachable = std::net::ToSocketAddrs::to_socket_addrs(&target)
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|addr| {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3)).is_ok()
        });
    assert!(
        reachable,
        "{what} does not answer at {target}: install and start {package} (scripts/test does both), \
         or point {variable} at a running one"
    );
}
