use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::{Duration, SystemTime},
};

use super::*;
use crate::{
    attribution::testdata,
    config::Config,
    engine::{DryRun, Engine},
};

/// One interval of the fixture VM (IRQ 36: 100 interrupts and 0.2 ms of handlers on CPU 0,
/// 25 ms of polls on CPU 2) recorded into `m`, planned by a fresh engine in a dry run.
fn record(m: &mut Metrics, a: &Attribution, model: &SystemModel) {
    let snap = Snapshot::build(model, a);
    let mut engine = Engine::new(Config::default(), DryRun);
    let step = engine.step(&snap);
    m.record(&IntervalView {
        model,
        attribution: a,
        snapshot: &snap,
        plan: &step.plan,
        outcomes: &step.outcomes,
        history: engine.history(),
        at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    });
}

/// The samples of a text exposition: series (name and labels as written) -> value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').expect("sample line");
            (k.to_string(), v.parse().expect("value"))
        })
        .collect()
}

/// The rules of the text format 0.0.4 this module relies on: each family has one HELP and
/// one TYPE, before its samples, which are contiguous; counters end in `_total`; names and
/// label names are valid; label values are quoted; no series twice.
fn check_format(text: &str) {
    let valid_name = |n: &str| {
        !n.is_empty()
            && !n.starts_with(|c: char| c.is_ascii_digit())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut help = BTreeSet::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut done = BTreeSet::new();
    let mut current = String::new();
    let mut series = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap().to_string();
            assert!(help.insert(name.clone()), "HELP twice for {name}");
            assert!(!types.contains_key(&name), "HELP after TYPE for {name}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(help.contains(name), "TYPE without HELP for {name}");
            assert!(
                types.insert(name.into(), kind.into()).is_none(),
                "TYPE twice for {name}"
            );
            assert!(["counter", "gauge"].contains(&kind), "{line}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "counter {name} lacks _total");
            }
            if !current.is_empty() {
                done.insert(std::mem::take(&mut current));
            }
            current = name.to_string();
            continue;
        }
        assert!(!line.starts_with('#'), "stray comment {line}");
        let name = line.split(['{', ' ']).next().unwrap();
        assert!(valid_name(name), "{line}");
        assert_eq!(name, current, "sample outside its family: {line}");
        assert!(!done.contains(name), "family {name} split");
        if let Some(labels) = line
            .split_once('{')
            .and_then(|(_, r)| r.rsplit_once('}'))
            .map(|(l, _)| l)
        {
            for pair in labels.split("\",").filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').expect("label=value");
                assert!(valid_name(k) && !k.starts_with("__"), "label {k} in {line}");
                assert!(v.starts_with('"'), "unquoted label value in {line}");
            }
        }
        let (key, value) = line.rsplit_once(' ').unwrap();
        assert!(
            value.parse::<f64>().is_ok() || ["NaN", "+Inf", "-Inf"].contains(&value),
            "{line}"
        );
        assert!(series.insert(key.to_string()), "series twice: {key}");
    }
}

#[test]
fn counters_accumulate_in_seconds_and_quiet_irqs_keep_their_series() {
    let (a, model) = testdata::attribution();
    let mut m = Metrics::new(true);
    record(&mut m, &a, &model);
    record(&mut m, &a, &model);
    // A quiet interval: nothing measured at all.
    let quiet = Attribution {
        duration_ns: 2_000_000_000,
        ..Attribution::default()
    };
    record(&mut m, &quiet, &model);
    let text = m.render();
    check_format(&text);
    let s = samples(&text);
    let get = |k: &str| *s.get(k).unwrap_or_else(|| panic!("no {k} in\n{text}"));
    assert_eq!(get("balancer_intervals_total"), 3.0);
    assert_eq!(get("balancer_dry_run"), 1.0);
    assert_eq!(get("balancer_last_interval_duration_seconds"), 2.0);
    assert_eq!(get("balancer_last_interval_timestamp_seconds"), 1.7e9);
    assert_eq!(
        get(r#"balancer_irq_interrupts_total{irq="36",cpu="0"}"#),
        200.0
    );
    assert_eq!(
        get(r#"balancer_irq_seconds_total{irq="36",cpu="0",mode="hardirq"}"#),
        0.0004
    );
    assert_eq!(
        get(r#"balancer_irq_seconds_total{irq="36",cpu="2",mode="softirq"}"#),
        0.05
    );
    assert_eq!(
        get(r#"balancer_cpu_hardirq_seconds_total{cpu="1"}"#),
        0.0036
    );
    assert_eq!(
        get(r#"balancer_cpu_softirq_seconds_total{cpu="2",vector="NET_RX"}"#),
        0.06
    );
    assert_eq!(
        get(r#"balancer_napi_polls_total{netdev="eth1",napi="",cpu="2"}"#),
        10000.0
    );
    assert_eq!(
        get(r#"balancer_napi_poll_seconds_total{netdev="(no_device)",napi="",cpu="1"}"#),
        0.002,
        "the backlog has no netdev and is kept"
    );
    assert!(!text.contains("veth0"), "not a netdev of the model: {text}");
    assert_eq!(
        get(r#"balancer_errors_total{stage="measure"}"#),
        0.0,
        "every stage present from the start"
    );
    // The descriptive labels are on the info series only.
    assert!(
        s.keys()
            .any(|k| k.starts_with(r#"balancer_irq_info{irq="36",name="virtio1-input.0""#)),
        "{text}"
    );
    assert!(
        s.contains_key(r#"balancer_cpu_info{cpu="2",node="1"}"#),
        "{text}"
    );
    // The quiet interval's shares are zero, not missing.
    assert_eq!(get(r#"balancer_cpu_irq_ratio{cpu="2"}"#), 0.0);
}

#[test]
fn series_of_vanished_irqs_and_netdevs_go() {
    let (a, mut model) = testdata::attribution();
    let mut m = Metrics::new(false);
    record(&mut m, &a, &model);
    let text = m.render();
    assert!(text.contains(r#"irq="38""#) && text.contains(r#"netdev="eth1""#));
    model.irqs.remove(&38);
    model.netdevs.remove("eth1");
    record(&mut m, &Attribution::default(), &model);
    let text = m.render();
    check_format(&text);
    assert!(!text.contains(r#"irq="38""#), "{text}");
    assert!(
        !text.contains(r#"balancer_napi_polls_total{netdev="eth1""#),
        "{text}"
    );
    assert!(text.contains(r#"balancer_irq_interrupts_total{irq="36",cpu="0"} 100"#));
}

#[test]
fn before_the_first_interval_build_info_and_zeros() {
    let mut m = Metrics::new(false);
    m.count_reload(false);
    m.count_error(Stage::Measure);
    let text = m.render();
    check_format(&text);
    let s = samples(&text);
    assert_eq!(
        s[&format!("balancer_build_info{{version=\"{VERSION}\"}}")],
        1.0
    );
    assert_eq!(s["balancer_intervals_total"], 0.0);
    assert_eq!(s["balancer_last_interval_timestamp_seconds"], 0.0);
    assert_eq!(s["balancer_moves_total"], 0.0);
    assert_eq!(s["balancer_config_reload_failures_total"], 1.0);
    assert_eq!(s[r#"balancer_errors_total{stage="measure"}"#], 1.0);
    assert!(!text.contains("balancer_irq_seconds_total"), "no IRQ yet");
}

#[test]
fn label_values_are_escaped() {
    let mut e = Expo::default();
    e.family("x_info", Kind::Gauge, "a\\b\nc");
    e.sample("x_info", &[("name", "a\"b\\c\nd")], 1.0);
    e.sample("x_info", &[("name", "inf")], f64::INFINITY);
    let text = e.finish();
    assert_eq!(
        text,
        "# HELP x_info a\\\\b\\nc\n# TYPE x_info gauge\n\
         x_info{name=\"a\\\"b\\\\c\\nd\"} 1\nx_info{name=\"inf\"} +Inf\n"
    );
}

/// `promtool check metrics` (the exposition linter of Prometheus) on a full rendering, when
/// promtool is installed (PROMTOOL names it, else PATH).
#[test]
fn promtool_accepts_the_exposition() {
    let promtool = std::env::var_os("PROMTOOL").unwrap_or_else(|| "promtool".into());
    let (a, model) = testdata::attribution();
    let mut m = Metrics::new(false);
    record(&mut m, &a, &model);
    let text = m.render();
    let child = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        eprintln!("skipped: no promtool ({promtool:?}); the format rules are checked apart");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sends `parts` (one write each, a pause between) and reads the whole answer (the server
/// closes: HTTP/1.0 or `Connection: close`).
fn exchange(addr: SocketAddr, parts: &[&[u8]]) -> String {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.set_nodelay(true).unwrap();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(200));
        }
        c.write_all(p).unwrap();
    }
    let mut got = String::new();
    c.read_to_string(&mut got).unwrap();
    got
}

fn server() -> (Endpoint, SocketAddr, Shared) {
    let shared = Metrics::new_shared(false);
    let mut ep = Endpoint::new(Arc::clone(&shared));
    let addr = ep
        .set(Some("127.0.0.1:0".parse().unwrap()))
        .unwrap()
        .unwrap();
    (ep, addr, shared)
}

#[test]
fn http_get_split_head_query_and_errors() {
    let (_ep, addr, _) = server();
    let get = exchange(addr, &[b"GET /metrics HTTP/1.0\r\n\r\n"]);
    assert!(get.starts_with("HTTP/1.0 200 OK\r\n"), "{get}");
    assert!(
        get.contains("content-type: text/plain; version=0.0.4"),
        "{get}"
    );
    let body = get.split_once("\r\n\r\n").unwrap().1;
    assert!(body.contains("balancer_build_info{version="), "{get}");

    let split = exchange(
        addr,
        &[
            b"GET /metr",
            b"ics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        ],
    );
    assert!(split.starts_with("HTTP/1.1 200 OK\r\n"), "{split}");
    assert!(split.contains("balancer_intervals_total 0\n"), "{split}");

    let head = exchange(addr, &[b"HEAD /metrics HTTP/1.0\r\n\r\n"]);
    assert!(head.starts_with("HTTP/1.0 200 OK\r\n"), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "HEAD has no body: {head}");
    assert!(
        head.contains(&format!("content-length: {}", body.len())),
        "{head}"
    );

    let query = exchange(addr, &[b"GET /metrics?name[]=x&y=1 HTTP/1.0\r\n\r\n"]);
    assert!(query.starts_with("HTTP/1.0 200 OK\r\n"), "{query}");

    let missing = exchange(addr, &[b"GET /nothing HTTP/1.0\r\n\r\n"]);
    assert!(missing.starts_with("HTTP/1.0 404 "), "{missing}");
    let post = exchange(
        addr,
        &[b"POST /metrics HTTP/1.0\r\nContent-Length: 2\r\n\r\nab"],
    );
    assert!(post.starts_with("HTTP/1.0 405 "), "{post}");
    assert!(post.contains("allow: GET, HEAD"), "{post}");
}

#[test]
fn answers_while_fifty_idle_connections_are_open() {
    let (_ep, addr, _) = server();
    // Connected, sending nothing (a half-written request for some).
    let idle: Vec<TcpStream> = (0..50)
        .map(|i| {
            let mut c = TcpStream::connect(addr).unwrap();
            if i % 2 == 0 {
                c.write_all(b"GET /met").unwrap();
            }
            c
        })
        .collect();
    // Answered at all within the client's 30 s read timeout: a server taking connections
    // one at a time would wait out each idle one's header timeout first (50 x 5 s).
    let got = exchange(addr, &[b"GET /metrics HTTP/1.0\r\n\r\n"]);
    assert!(got.starts_with("HTTP/1.0 200 OK\r\n"), "{got}");
    drop(idle);
}

#[test]
fn rebinding_keeps_the_old_listener_when_the_new_address_is_taken() {
    let (mut ep, first, shared) = server();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let err = ep.set(Some(taken.local_addr().unwrap())).unwrap_err();
    assert_eq!(err.still, Some(first));
    assert!(exchange(first, &[b"GET /metrics HTTP/1.0\r\n\r\n"]).starts_with("HTTP/1.0 200"));
    let text = exchange(first, &[b"GET /metrics HTTP/1.0\r\n\r\n"]);
    assert!(
        text.contains(r#"balancer_errors_total{stage="metrics_listen"} 1"#),
        "{text}"
    );
    // The same address again: nothing to do.
    assert_eq!(ep.set(Some("127.0.0.1:0".parse().unwrap())).unwrap(), None);
    // A free one: the new listener serves and the old one is closed.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let next = free.local_addr().unwrap();
    drop(free);
    assert_eq!(ep.set(Some(next)).unwrap(), Some(next));
    assert!(exchange(next, &[b"GET /metrics HTTP/1.0\r\n\r\n"]).starts_with("HTTP/1.0 200"));
    assert!(TcpStream::connect(first).is_err(), "old listener closed");
    ep.set(None).unwrap();
    assert!(TcpStream::connect(next).is_err(), "stopped");
    drop(shared);
}
