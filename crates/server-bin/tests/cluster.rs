//! Two or more servers as one cluster: MariaDB for data, Redis between the
//! servers, nginx in front. Needs MariaDB, Redis and nginx with its stream
//! module (scripts/test provides them).

mod support;

use std::time::{Duration, Instant};

use chat_proto::{Delivery, ErrorCode, Framing, Request, ServerMsg, UserId};
use support::cluster::{
    BusKind, Deployment, Layers, Nginx, PrivateRedis, StoreKind, TransportKind,
};
use support::{delivered_text, error_code, Peer, Wire};

const CLUSTER: Layers = Layers {
    transport: TransportKind::Tokio,
    store: StoreKind::Mysql,
    bus: BusKind::Redis,
    wire: Wire::JsonStream,
};

fn login(peer: &mut Peer, id: UserId) -> ServerMsg {
    peer.call(Request::Login {
        id,
        password: "pw".into(),
        version: 2,
    })
}

#[test]
fn clients_behind_nginx_chat_across_servers_and_offline() {
    let cluster = Deployment::start(CLUSTER);
    let nginx = Nginx::start(&[cluster.servers[0].addr, cluster.servers[1].addr]);
    let (a, b, c) = (
        cluster.register("a"),
        cluster.register("b"),
        cluster.register("c"),
    );

    // Round robin: consecutive connections land on different servers.
    let mut pa = nginx.connect(Framing::Stream);
    pa.login(a);
    let mut pb = nginx.connect(Framing::Stream);
    pb.login(b);
    let on_servers: Vec<usize> = cluster
        .servers
        .iter()
        .map(|s| s.log().iter().filter(|l| l.contains("logged in")).count())
        .collect();
    assert_eq!(on_servers, vec![1, 1], "a and b are on different servers");

    pa.chat(b, "one to one across servers");
    assert_eq!(delivered_text(&pb.recv()), "one to one across servers");
    pb.chat(a, "and back");
    assert_eq!(delivered_text(&pa.recv()), "and back");

    let group = match pa.call(Request::CreateGroup {
        name: "team".into(),
        desc: String::new(),
    }) {
        ServerMsg::CreateGroupAck { id, .. } => id,
        other => panic!("{other:?}"),
    };
    assert!(matches!(
        pb.call(Request::AddGroup { group }),
        ServerMsg::AddGroupAck(_)
    ));
    let mut pc = nginx.connect(Framing::Stream);
    pc.login(c);
    assert!(matches!(
        pc.call(Request::AddGroup { group }),
        ServerMsg::AddGroupAck(_)
    ));
    pc.logout();

    assert!(matches!(
        pa.call(Request::GroupChat {
            group,
            text: "hi team".into()
        }),
        ServerMsg::ChatAck { .. }
    ));
    assert_eq!(delivered_text(&pb.recv()), "hi team");
    pb.chat(c, "while you were out");

    let login = pc.login(c);
    let texts: Vec<&str> = login.offline.iter().map(|d| text(d)).collect();
    assert_eq!(texts, ["hi team", "while you were out"]);

    // A one-shot script (`printf ... | nc -q1`) shuts down its sending side
    // right after its request: nginx must pass the half-close on and wait
    // for the reply rather than end the session.
    let mut x = nginx.connect(Framing::Stream);
    x.send(&Request::Register {
        name: "d".into(),
        password: "pw".into(),
    });
    x.stream
        .shutdown(std::net::Shutdown::Write)
        .expect("half-close");
    assert!(matches!(x.recv(), ServerMsg::RegAck(Ok(_))));
    assert!(x.recv_payload().is_none(), "then the close");
}

#[test]
fn a_second_login_anywhere_is_refused_even_when_racing() {
    let cluster = Deployment::start(CLUSTER);
    let a = cluster.register("a");
    let mut first = cluster.connect(0);
    first.login(a);
    let mut elsewhere = cluster.connect(1);
    assert_eq!(
        error_code(&login(&mut elsewhere, a)),
        ErrorCode::AlreadyOnline
    );
    first.logout();
    elsewhere.login(a);
    elsewhere.logout();

    for round in 0..10 {
        let mut p0 = cluster.connect(0);
        let mut p1 = cluster.connect(1);
        let bytes = p0.frame(&Request::Login {
            id: a,
            password: "pw".into(),
            version: 2,
        });
        p0.send_raw(&bytes);
        p1.send_raw(&bytes);
        let replies = [p0.recv(), p1.recv()];
        let won = replies
            .iter()
            .filter(|r| matches!(r, ServerMsg::LoginAck(Ok(_))))
            .count();
        assert_eq!(won, 1, "round {round}: {replies:?}");
        for (peer, reply) in [(&mut p0, &replies[0]), (&mut p1, &replies[1])] {
            if matches!(reply, ServerMsg::LoginAck(Ok(_))) {
                peer.logout();
            }
        }
    }
}

#[test]
fn a_killed_servers_users_are_freed_within_the_ttl_and_lose_nothing() {
    let cluster = Deployment::start_with(CLUSTER, &["--presence-ttl", "2"]);
    let (a, b) = (cluster.register("a"), cluster.register("b"));
    let mut pb = cluster.connect(1);
    pb.login(b);
    let mut pa = cluster.connect(0);
    pa.login(a);
    let Deployment { mut servers, .. } = cluster;
    servers.pop().expect("two servers").kill();
    // B's presence still names the dead server until it expires: these
    // messages find no receiver there and must be kept.
    for i in 0..5 {
        pa.chat(b, &format!("m{i}"));
    }
    let mut again = Peer::connect(servers[0].addr, Framing::Stream);
    let deadline = Instant::now() + Duration::from_secs(8);
    let login = loop {
        match again.call(Request::Login {
            id: b,
            password: "pw".into(),
            version: 2,
        }) {
            ServerMsg::LoginAck(Ok(ok)) => break ok,
            reply => assert_eq!(error_code(&reply), ErrorCode::AlreadyOnline),
        }
        assert!(Instant::now() < deadline, "b still online");
        std::thread::sleep(Duration::from_millis(100));
    };
    let texts: Vec<&str> = login.offline.iter().map(|d| text(d)).collect();
    assert_eq!(texts, ["m0", "m1", "m2", "m3", "m4"]);
}

#[test]
fn a_clean_stop_releases_its_own_users_at_once_and_nobody_elses() {
    let cluster = Deployment::start(CLUSTER);
    let (a, b) = (cluster.register("a"), cluster.register("b"));
    let mut pa = cluster.connect(0);
    pa.login(a);
    let mut pb = cluster.connect(1);
    pb.login(b);
    let Deployment { mut servers, .. } = cluster;
    let s1 = servers.pop().expect("two servers");
    let (status, _, _) = s1.terminate();
    assert!(status.success());

    let mut p = Peer::connect(servers[0].addr, Framing::Stream);
    p.login(b);
    let mut q = Peer::connect(servers[0].addr, Framing::Stream);
    assert_eq!(
        error_code(&login(&mut q, a)),
        ErrorCode::AlreadyOnline,
        "a is still online on s0"
    );
    pa.chat(b, "still works");
    assert_eq!(delivered_text(&p.recv()), "still works");
}

#[test]
fn a_steady_stream_during_login_on_the_other_server_arrives_once_in_order() {
    let cluster = Deployment::start(CLUSTER);
    let (a, b) = (cluster.register("a"), cluster.register("b"));
    let mut pa = cluster.connect(0);
    pa.login(a);
    let total = 400;
    let sender = std::thread::spawn(move || {
        for i in 0..total {
            pa.chat(b, &format!("{i}"));
            if i % 20 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        pa
    });
    std::thread::sleep(Duration::from_millis(30));
    let mut pb = cluster.connect(1);
    let login = pb.login(b);
    let mut got: Vec<usize> = login
        .offline
        .iter()
        .map(|d| text(d).parse().expect("a number"))
        .collect();
    let _pa = sender.join().expect("sender");
    while got.len() < total {
        got.push(delivered_text(&pb.recv()).parse().expect("a number"));
    }
    assert_eq!(
        got,
        (0..total).collect::<Vec<_>>(),
        "each message once, in order"
    );
    assert!(
        pb.is_quiet(Duration::from_millis(300)),
        "no duplicates after"
    );
}

#[test]
fn a_group_message_costs_one_publish_per_server() {
    let cluster = Deployment::start(CLUSTER);
    let creator = cluster.register("owner");
    let mut owner = cluster.connect(0);
    owner.login(creator);
    let group = match owner.call(Request::CreateGroup {
        name: "big".into(),
        desc: String::new(),
    }) {
        ServerMsg::CreateGroupAck { id, .. } => id,
        other => panic!("{other:?}"),
    };
    let mut members = Vec::new();
    for i in 0..20 {
        let id = cluster.register(&format!("m{i}"));
        let mut peer = cluster.connect(i);
        peer.login(id);
        assert!(matches!(
            peer.call(Request::AddGroup { group }),
            ServerMsg::AddGroupAck(_)
        ));
        members.push(peer);
    }
    assert!(matches!(
        owner.call(Request::GroupChat {
            group,
            text: "all".into()
        }),
        ServerMsg::ChatAck { .. }
    ));
    for peer in &mut members {
        assert_eq!(delivered_text(&peer.recv()), "all");
    }
}

#[test]
fn a_client_reconnects_through_nginx_after_its_server_dies() {
    let cluster = Deployment::start(CLUSTER);
    let nginx = Nginx::start(&[cluster.servers[0].addr, cluster.servers[1].addr]);
    let a = cluster.register("a");
    let Deployment { mut servers, .. } = cluster;
    let mut p = nginx.connect(Framing::Stream);
    assert_eq!(p.call(Request::Ping), ServerMsg::Pong);
    servers.remove(0).kill();
    // New connections may first be tried on the dead server; nginx then
    // passes them to the next one, and marks the dead one as failed.
    let mut tries = 0;
    loop {
        tries += 1;
        let mut q = nginx.connect(Framing::Stream);
        q.send(&Request::Ping);
        if let Some(payload) = q.recv_payload() {
            assert_eq!(payload, b"{\"msgid\":16}");
            assert!(matches!(login(&mut q, a), ServerMsg::LoginAck(Ok(_))));
            break;
        }
        assert!(tries < 5, "nginx keeps sending clients to the dead server");
    }
}

fn text(d: &Delivery) -> &str {
    match d {
        Delivery::One(m) => &m.text,
        Delivery::Group(m) => &m.text,
    }
}

#[test]
fn clients_of_every_codec_talk_to_each_other_on_one_server_and_across() {
    let cluster = Deployment::start(CLUSTER);
    let wires = [Wire::JsonStream, Wire::JsonLength, Wire::Protobuf];
    let ids: Vec<UserId> = (0..wires.len() * 2)
        .map(|i| cluster.register(&format!("u{i}")))
        .collect();
    // User i speaks wires[i % 3] on server i % 2: every pair of codecs
    // meets on one server and across the two.
    let mut peers: Vec<Peer> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let mut peer = Peer::connect_wire(cluster.servers[i % 2].addr, wires[i % wires.len()]);
            peer.login(*id);
            peer
        })
        .collect();
    for from in 0..peers.len() {
        for to in 0..peers.len() {
            if from == to {
                continue;
            }
            let text = format!("{from}→{to} 你好😀");
            peers[from].chat(ids[to], &text);
            assert_eq!(
                delivered_text(&peers[to].recv()),
                text,
                "{:?} to {:?}",
                wires[from % 3],
                wires[to % 3]
            );
        }
    }
}

#[test]
fn servers_ride_out_a_redis_restart() {
    let mut redis = PrivateRedis::start();
    let cluster = Deployment::start_on(CLUSTER, &redis.url(), &[]);
    let (a, b, c) = (
        cluster.register("a"),
        cluster.register("b"),
        cluster.register("c"),
    );
    let mut pa = cluster.connect(0);
    pa.login(a);
    let mut pc = cluster.connect(0);
    pc.login(c);
    let mut pb = cluster.connect(1);
    pb.login(b);

    redis.stop();
    // Local delivery goes on; a message for the other server is kept.
    pa.chat(c, "same server while redis is down");
    assert_eq!(
        delivered_text(&pc.recv()),
        "same server while redis is down"
    );
    pa.chat(b, "other server while redis is down");

    redis.restart();
    // The servers reconnect, resubscribe, claim their users again and
    // wake them, so what was stored meanwhile is handed over at once.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut live = Vec::new();
    let mut i = 0;
    while !live.iter().any(|t: &String| t.starts_with("probe")) {
        assert!(
            Instant::now() < deadline,
            "messages do not cross servers after Redis came back: {live:?}"
        );
        i += 1;
        pa.chat(b, &format!("probe {i}"));
        while !pb.is_quiet(Duration::from_millis(300)) {
            live.push(delivered_text(&pb.recv()).to_owned());
        }
    }
    for s in &cluster.servers {
        assert!(
            s.log().iter().any(|l| l.contains("resubscribed")),
            "the server says it resubscribed: {:#?}",
            s.log()
        );
    }

    // The message kept during the outage arrives exactly once: live after
    // the wake, or at the next login.
    pb.logout();
    let login = pb.login(b);
    let all: Vec<String> = live
        .into_iter()
        .chain(login.offline.iter().map(|d| text(d).to_owned()))
        .collect();
    let kept = all
        .iter()
        .filter(|t| *t == "other server while redis is down")
        .count();
    assert_eq!(kept, 1, "{all:?}");
}
