//! `balancer report` as a user runs it: output shapes, bad input, missing privileges, and a
//! kernel without a tracepoint or without BTF.
use std::{path::Path, process::Command};

use balancer_tests::{balancer, balancer_bin, is_root, require_root};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn help_teaches_the_options() {
    let o = balancer(&["report", "--help"]);
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    for word in ["--duration", "--json", "--top", "Ctrl-C"] {
        assert!(text.contains(word), "report --help lacks {word}:\n{text}");
    }
}

/// `balancer --help` lists every exit code, each distinct.
#[test]
fn help_lists_the_exit_codes() {
    let o = balancer(&["--help"]);
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    let listed = text
        .split_once("Exit status:")
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("no exit status in --help:\n{text}"));
    let codes: Vec<&str> = listed
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(codes, ["0", "1", "2", "3", "4", "5", "6", "141"], "{text}");
    for word in [
        "usage",
        "permission",
        "configuration",
        "runtime",
        "busy",
        "journal",
    ] {
        assert!(
            listed.contains(word),
            "--help's exit status lacks {word}:\n{text}"
        );
    }
}

#[test]
fn wrong_flag_and_bad_duration_are_usage_errors() {
    let o = balancer(&["report", "--bogus"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--bogus"));

    let o = balancer(&["report", "--duration", "-1"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = balancer(&["report", "--duration", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    // clap's usage error: the value, the option and the one range of every duration.
    let first = err.lines().next().unwrap_or("");
    assert!(
        first.contains("'0' for '--duration <SECS>'")
            && first.contains("between 0.1 and 86400 seconds"),
        "{err}"
    );
    assert!(!err.contains("Caused by"), "no cause chain: {err}");
    // The same range for plan's --duration and top's --interval.
    let o = balancer(&["plan", "--duration", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("between 0.1 and 86400 seconds"));
    let o = balancer(&["top", "--interval", "90000"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("between 0.1 and 86400 seconds"));
    // --top 0 would print empty tables: refused.
    let o = balancer(&["report", "--top", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("must be at least 1"), "{}", stderr(&o));
}

/// A missing or bad proximity file is the same error, exit status 6, in every command,
/// every bad line listed at once.
#[test]
fn proximity_files_are_checked_the_same_everywhere() {
    let dir = std::env::temp_dir().join(format!("balancer-pxm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("pxm");
    std::fs::write(&bad, "zz node 1\n0000: node 0\n0000:01 color 2\n").unwrap();
    let missing = dir.join("missing");
    for file in [&bad, &missing] {
        let f = file.to_str().unwrap();
        let mut errs = Vec::new();
        for args in [
            vec!["topology", "--proximity", f],
            vec!["report", "--duration", "0.1", "--proximity", f],
        ] {
            let o = balancer(&args);
            assert_eq!(o.status.code(), Some(6), "{args:?}: {}", stderr(&o));
            errs.push(stderr(&o));
        }
        assert_eq!(errs[0], errs[1], "same message in every command");
        if file == &bad {
            assert!(
                errs[0].contains(&format!("{f}:1: the address")),
                "{}",
                errs[0]
            );
            assert!(
                errs[0].contains(&format!("{f}:3: expected `node`")),
                "{}",
                errs[0]
            );
        } else {
            assert!(errs[0].contains("No such file"), "{}", errs[0]);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Without root (or CAP_BPF and CAP_PERFMON): one line naming what is missing, exit code 5.
#[test]
fn non_root_gets_one_line_and_exit_5() {
    let o = if is_root() {
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
            ])
            .arg(balancer_bin())
            .args(["report", "--duration", "1"])
            .output()
            .expect("setpriv (util-linux)")
    } else {
        balancer(&["report", "--duration", "1"])
    };
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("CAP_BPF") && err.contains("CAP_PERFMON"),
        "{err}"
    );
    assert!(
        !err.contains("Backtrace") && !err.contains("panicked"),
        "{err}"
    );
}

fn report_json(envs: &[(&str, &str)], extra: &[&str]) -> serde_json::Value {
    let mut cmd = Command::new(balancer_bin());
    cmd.args(["report", "--duration", "0.5", "--json"])
        .args(extra);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let o = cmd.output().expect("running balancer");
    assert!(o.status.success(), "report failed: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).expect("report --json prints one JSON object")
}

#[test]
#[ignore = "needs root"]
fn json_has_every_section_and_text_fits_100_columns() {
    require_root();
    let v = report_json(&[], &[]);
    for key in ["meta", "cpus", "irqs", "softirqs", "napi", "unattributed"] {
        assert!(v.get(key).is_some(), "missing key {key}");
    }
    let meta = &v["meta"];
    assert!(meta["kernel"].is_string());
    assert!(meta["duration_s"].as_f64().unwrap() >= 0.5);
    assert_eq!(meta["methods"]["hardirq"]["active"], true);
    assert_eq!(meta["methods"]["softirq"]["active"], true);
    let cpus = v["cpus"].as_array().unwrap();
    assert!(!cpus.is_empty());
    for c in cpus {
        assert!(c["softirq_pct"]["NET_RX"].is_number());
        assert!(c.get("stat_softirq_pct").is_some());
    }
    // The names the typed rows serialise to are the JSON's contract.
    let names = |key: &str, field: &str| -> Vec<String> {
        v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r[field].as_str().unwrap_or("not a string").to_string())
            .collect()
    };
    let vectors = balancer_common::SOFTIRQ_NAMES;
    for vec in names("softirqs", "vec")
        .iter()
        .chain(&names("unattributed", "vec"))
    {
        assert!(vectors.contains(&vec.as_str()), "{vec}");
    }
    for bucket in names("unattributed", "bucket") {
        assert!(
            [
                "vector",
                "net-rx-overhead",
                "rps-backlog",
                "napi-without-irq"
            ]
            .contains(&bucket.as_str()),
            "{bucket}"
        );
    }
    for link in names("napi", "link") {
        assert!(
            [
                "exact",
                "napi-get",
                "queue-get",
                "co-occurrence",
                "backlog",
                "none"
            ]
            .contains(&link.as_str()),
            "{link}"
        );
    }
    let sysvecs = names("system_vectors", "vector");
    for vector in &sysvecs {
        assert!(
            balancer_common::SYSVEC_NAMES.contains(&vector.as_str()),
            "{vector}"
        );
    }
    if cfg!(target_arch = "x86_64") {
        // The local timer ticks on every online CPU within half a second (nohz aside).
        assert!(sysvecs.iter().any(|s| s == "local_timer"), "{sysvecs:?}");
    }
    for irq in v["irqs"].as_array().unwrap() {
        for key in ["smp_affinity", "effective_affinity"] {
            let aff = &irq[key];
            assert!(aff.is_null() || aff.is_string(), "{key}: {aff}");
        }
    }

    let o = Command::new(balancer_bin())
        .args(["report", "--duration", "0.5"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    for section in ["CPUs:", "IRQs by real CPU time", "Softirq time per CPU"] {
        assert!(text.contains(section), "no {section} in:\n{text}");
    }
    for line in text.lines() {
        assert!(
            line.chars().count() <= 100,
            "line over 100 columns: {line:?}"
        );
    }
    // Not a terminal: no progress line on stderr.
    assert!(!stderr(&o).contains("sampling"), "{}", stderr(&o));
}

/// A kernel without napi:napi_poll: the report runs without it and says so.
#[test]
#[ignore = "needs root"]
fn missing_tracepoint_is_reported_not_fatal() {
    require_root();
    // A tracefs view with the irq tracepoints only.
    let real = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.join("events/irq").is_dir())
        .expect("tracefs mounted (balancer mounts it on first run)");
    let fake = std::env::temp_dir().join(format!("balancer-tracefs-{}", std::process::id()));
    for tp in [
        "irq_handler_entry",
        "irq_handler_exit",
        "softirq_raise",
        "softirq_entry",
        "softirq_exit",
    ] {
        let dir = fake.join("events/irq").join(tp);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(
            real.join("events/irq").join(tp).join("format"),
            dir.join("format"),
        )
        .unwrap();
    }
    let v = report_json(&[("BALANCER_TRACEFS", fake.to_str().unwrap())], &[]);
    let _ = std::fs::remove_dir_all(&fake);
    let methods = &v["meta"]["methods"];
    assert_eq!(methods["napi"]["active"], false, "{methods}");
    assert!(
        methods["napi"]["detail"]
            .as_str()
            .unwrap()
            .contains("napi:napi_poll not in this kernel")
    );
    assert_eq!(methods["hardirq"]["active"], true);
    let missing: Vec<&str> = v["meta"]["missing"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m.as_str())
        .collect();
    assert!(
        missing.iter().any(|m| m.starts_with("napi:")),
        "{missing:?}"
    );
    assert!(v["napi"].as_array().unwrap().is_empty());
}

/// Without kernel BTF the exact NAPI -> IRQ link is off and the report says co-occurrence
/// takes over.
#[test]
#[ignore = "needs root"]
fn missing_btf_falls_back_to_cooccurrence() {
    require_root();
    let v = report_json(&[("BALANCER_BTF", "/nonexistent/vmlinux")], &[]);
    let exact = &v["meta"]["methods"]["napi_irq_exact"];
    assert_eq!(exact["active"], false);
    let detail = exact["detail"].as_str().unwrap();
    assert!(detail.contains("co-occurrence") && detail.contains("/nonexistent/vmlinux"));
}

fn topology_text(columns: Option<&str>, extra: &[&str]) -> String {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/vm-4cpu-2node");
    let mut cmd = Command::new(balancer_bin());
    cmd.arg("topology").arg("--root").arg(&fixture).args(extra);
    match columns {
        Some(c) => cmd.env("COLUMNS", c),
        None => cmd.env_remove("COLUMNS"),
    };
    let o = cmd.output().expect("running balancer");
    assert!(o.status.success(), "topology failed: {}", stderr(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// COLUMNS narrows the text to the terminal's width (80 at least); piped without COLUMNS,
/// or with --wide, the full layout.
#[test]
fn topology_text_fits_columns_and_is_full_when_piped() {
    let full = topology_text(None, &[]);
    assert!(
        full.lines().any(|l| l.chars().count() > 80),
        "the full layout is wider than 80:\n{full}"
    );
    assert!(full.contains("AFFINITY    EFFECTIVE ACTIONS"), "{full}");
    assert_eq!(topology_text(Some("80"), &["--wide"]), full);

    for columns in ["80", "40"] {
        let text = topology_text(Some(columns), &[]);
        for line in text.lines() {
            assert!(line.chars().count() <= 80, "COLUMNS={columns}: {line:?}");
        }
        for section in ["CPUs by node", "PCI devices", "Netdevs", "IRQs (node:"] {
            assert!(text.contains(section), "no {section} in:\n{text}");
        }
        assert!(text.contains("AFFINITY EFF   ACTIONS"), "{text}");
        // One cut mark, the same as report's and top's.
        assert!(text.contains("virtio_~") && !text.contains('…'), "{text}");
    }
}
