//! Standard output that cannot be written: a reader that went away ends a command quietly
//! (exit 141, as a shell shows for SIGPIPE, no message, no panic); any other write error
//! (ENOSPC on /dev/full) is one line and a non-zero exit.
use std::{
    path::Path,
    process::{Command, Output, Stdio},
};

use balancer_tests::balancer_bin;

fn fixture() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/vm-4cpu-2node")
        .to_string_lossy()
        .into_owned()
}

/// Runs balancer with stdout on a pipe whose read end is already closed: the first write
/// gets EPIPE, deterministically.
fn into_closed_pipe(args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    Command::new(balancer_bin())
        .args(args)
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

fn into_dev_full(args: &[&str]) -> Output {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    Command::new(balancer_bin())
        .args(args)
        .stdout(full)
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn topology_into_a_closed_pipe_ends_quietly() {
    let root = fixture();
    for extra in [&[][..], &["--json"][..]] {
        let mut args = vec!["topology", "--root", &root];
        args.extend_from_slice(extra);
        let o = into_closed_pipe(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(141), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?}: nothing on stderr, got: {err}");
    }
}

#[test]
fn topology_into_dev_full_is_one_line_and_fails() {
    let root = fixture();
    for extra in [&[][..], &["--json"][..]] {
        let mut args = vec!["topology", "--root", &root];
        args.extend_from_slice(extra);
        let o = into_dev_full(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.contains("writing standard output: No space left on device"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// The same output written to a pipe that is read: the run above failed for the pipe only.
#[test]
fn topology_into_a_read_pipe_succeeds() {
    let o = Command::new(balancer_bin())
        .args(["topology", "--root", &fixture()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("nr_cpu_ids 4"));
}

/// restore finishes its work and its warnings on stderr even when nobody reads stdout.
#[test]
fn restore_into_a_closed_pipe_still_restores_and_warns() {
    use balancer::{
        actuation::{Actuator, RealSys},
        cpumask::CpuSet,
        policy::{Action, ActionKind, Plan},
    };
    let dir = std::env::temp_dir().join(format!("balancer-output-cli-{}", std::process::id()));
    let root = dir.join("root");
    std::fs::create_dir_all(&dir).unwrap();
    let copy = Command::new("cp")
        .args(["-a", &fixture()])
        .arg(&root)
        .status()
        .unwrap();
    assert!(copy.success());
    let journal = dir.join("journal.json");
    let mut act = Actuator::new(&root, &journal, RealSys).unwrap();
    let plan = Plan {
        actions: vec![Action {
            kind: ActionKind::Move {
                irq: 36,
                companions: vec![37],
                from: CpuSet::from_cpus([0]),
                targets: vec![2],
                weight: 0.3,
            },
            reason: String::new(),
        }],
        findings: vec![],
        overloaded: vec![],
        relievable: vec![],
        tick: 0,
        balancing: false,
        swaps: Vec::new(),
        checked: Vec::new(),
    };
    assert!(act.apply(&plan, 4)[0].is_applied());
    std::fs::remove_dir_all(root.join("proc/irq/37")).unwrap();
    let cfg = dir.join("b.toml");
    std::fs::write(
        &cfg,
        format!("lock-file = \"{}\"\n", dir.join("lock").display()),
    )
    .unwrap();
    let o = into_closed_pipe(&[
        "restore",
        "--config",
        cfg.to_str().unwrap(),
        "--root",
        root.to_str().unwrap(),
        "--journal",
        journal.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(141), "{err}");
    assert!(err.contains("1 target(s) gone"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!journal.exists(), "restored all the same");
    let _ = std::fs::remove_dir_all(&dir);
}
