//! Actuation against a copy of the kernel VM fixture: writes, journal, restore, EIO, ENOSPC,
//! rollback.
use std::collections::BTreeMap;

use super::*;
use crate::policy::Action;

use crate::test_support::copy_dir;

struct Fx {
    _dir: tempfile::TempDir,
    root: PathBuf,
    journal: PathBuf,
}

fn fixture() -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/vm-4cpu-2node");
    let root = dir.path().join("root");
    copy_dir(&src, &root);
    let journal = dir.path().join("state/journal.json");
    Fx {
        _dir: dir,
        root,
        journal,
    }
}

fn read(root: &Path, rel: &str) -> String {
    fs::read_to_string(root.join(rel)).unwrap()
}

fn mv(irq: u32, companions: &[u32], targets: &[u32]) -> Plan {
    Plan {
        actions: vec![Action {
            kind: ActionKind::Move {
                irq,
                companions: companions.to_vec(),
                from: CpuSet::from_cpus([0]),
                targets: targets.to_vec(),
                weight: 0.5,
            },
            reason: "test".into(),
        }],
        findings: vec![],
        overloaded: vec![],
        relievable: vec![],
        tick: 0,
        balancing: false,
        swaps: Vec::new(),
        checked: Vec::new(),
    }
}

#[test]
fn move_journal_restore_round_trip() {
    let fx = fixture();
    let orig36 = read(&fx.root, "proc/irq/36/smp_affinity");
    let orig37 = read(&fx.root, "proc/irq/37/smp_affinity");
    let mut act = Actuator::new(&fx.root, &fx.journal, Faults::new(RealSys)).unwrap();
    let out = act.apply(&mv(36, &[37], &[3]), 4);
    assert_eq!(out, vec![Outcome::applied(Some(3))]);
    assert_eq!(read(&fx.root, "proc/irq/36/smp_affinity"), "8");
    assert_eq!(read(&fx.root, "proc/irq/37/smp_affinity"), "8");
    // The journal was on disk before the first write and holds the originals.
    let j = Journal::load(&fx.journal).unwrap();
    assert_eq!(j.entries.len(), 2);
    assert_eq!(j.entries[0].original, orig36);

    // A second move of the same IRQ keeps the first original; a new actuator (a restart
    // after a crash) too.
    let mut act = Actuator::new(&fx.root, &fx.journal, Faults::new(RealSys)).unwrap();
    act.apply(&mv(36, &[], &[2]), 4);
    assert_eq!(
        Journal::load(&fx.journal).unwrap().entries[0].original,
        orig36
    );

    let r = restore(&fx.root, &fx.journal, &mut RealSys, false).unwrap();
    assert!(r.failed.is_empty(), "{r:?}");
    assert_eq!(r.restored.len(), 2);
    assert_eq!(
        read(&fx.root, "proc/irq/36/smp_affinity").trim(),
        orig36.trim()
    );
    assert_eq!(
        read(&fx.root, "proc/irq/37/smp_affinity").trim(),
        orig37.trim()
    );
    assert!(!fx.journal.exists(), "a fully restored journal is removed");
}

#[test]
fn eio_marks_unmovable_and_writes_nothing() {
    let fx = fixture();
    let orig = read(&fx.root, "proc/irq/36/smp_affinity");
    let sys = Faults::new(RealSys).fail("irq/36/smp_affinity", libc::EIO);
    let mut act = Actuator::new(&fx.root, &fx.journal, sys).unwrap();
    let out = act.apply(&mv(36, &[37], &[3, 2]), 4);
    assert!(!out[0].is_applied());
    assert_eq!(out[0].error(), None, "a managed IRQ is not an error");
    let refused = out[0].refusals().unwrap();
    assert_eq!(refused.unmovable.len(), 1);
    assert_eq!(refused.unmovable[0].0, 36);
    assert_eq!(read(&fx.root, "proc/irq/36/smp_affinity"), orig);
    assert!(act.sys.log.is_empty(), "nothing written");
    // Logged once: a second refusal adds no line (the set stays at one).
    act.apply(&mv(36, &[], &[3]), 4);
    assert_eq!(act.logged_unmovable.len(), 1);
}

#[test]
fn eperm_of_newer_kernels_marks_unmovable_too() {
    // Debian's 6.12 and later refuse writes to a managed IRQ with EPERM (5.10, 6.1: EIO).
    let fx = fixture();
    let orig = read(&fx.root, "proc/irq/36/smp_affinity");
    let sys = Faults::new(RealSys).fail("irq/36/smp_affinity", libc::EPERM);
    let mut act = Actuator::new(&fx.root, &fx.journal, sys).unwrap();
    let out = act.apply(&mv(36, &[37], &[3, 2]), 4);
    assert!(!out[0].is_applied());
    assert_eq!(out[0].error(), None);
    assert_eq!(out[0].refusals().unwrap().unmovable.len(), 1);
    assert_eq!(read(&fx.root, "proc/irq/36/smp_affinity"), orig);
}

#[test]
fn enospc_marks_the_cpu_full_and_tries_the_next() {
    let fx = fixture();
    // CPU 3's vectors are full: any write of mask 8 fails.
    struct Full;
    impl Sys for Full {
        fn read(&mut self, p: &Path) -> io::Result<String> {
            RealSys.read(p)
        }
        fn write(&mut self, p: &Path, v: &str) -> io::Result<()> {
            if v == "8" {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            RealSys.write(p, v)
        }
        fn thread_affinity(&mut self, _: u32) -> io::Result<CpuSet> {
            Err(io::Error::from_raw_os_error(libc::ESRCH))
        }
        fn set_thread_affinity(&mut self, _: u32, _: &CpuSet) -> io::Result<()> {
            Err(io::Error::from_raw_os_error(libc::ESRCH))
        }
    }
    let mut act = Actuator::new(&fx.root, &fx.journal, Full).unwrap();
    let out = act.apply(&mv(36, &[37], &[3, 2]), 4);
    assert_eq!(out[0].refusals().unwrap().full_cpus, vec![3]);
    assert_eq!(out[0].cpu(), Some(2));
    assert!(out[0].is_applied());
    assert_eq!(read(&fx.root, "proc/irq/36/smp_affinity"), "4");
    assert_eq!(read(&fx.root, "proc/irq/37/smp_affinity"), "4");
}

#[test]
fn a_failed_step_leaves_nothing_half_applied() {
    let fx = fixture();
    let orig36 = read(&fx.root, "proc/irq/36/smp_affinity");
    // The companion's write fails with an error that is neither EIO nor ENOSPC.
    let sys = Faults::new(RealSys).fail("irq/37/smp_affinity", libc::EINVAL);
    let mut act = Actuator::new(&fx.root, &fx.journal, sys).unwrap();
    let out = act.apply(&mv(36, &[37], &[3]), 4);
    assert!(!out[0].is_applied());
    assert!(out[0].error().unwrap().contains("irq/37"), "{out:?}");
    assert_eq!(
        read(&fx.root, "proc/irq/36/smp_affinity").trim(),
        orig36.trim(),
        "IRQ 36 was rolled back"
    );
    // A managed companion (EIO) stays; its rx IRQ still moves.
    let sys = Faults::new(RealSys).fail("irq/37/smp_affinity", libc::EIO);
    let mut act = Actuator::new(&fx.root, &fx.journal, sys).unwrap();
    let out = act.apply(&mv(36, &[37], &[3]), 4);
    assert!(out[0].is_applied());
    assert_eq!(out[0].refusals().unwrap().unmovable[0].0, 37);
    assert_eq!(read(&fx.root, "proc/irq/36/smp_affinity"), "8");
}

#[test]
fn rps_and_thread_pinning_are_journaled_and_restored() {
    let fx = fixture();
    let rps = "sys/class/net/eth1/queues/rx-0/rps_cpus";
    let orig = read(&fx.root, rps);
    // A NAPI kthread in the fixture's /proc.
    fs::create_dir_all(fx.root.join("proc/4242")).unwrap();
    fs::write(fx.root.join("proc/4242/comm"), "napi/eth1-8193\n").unwrap();
    let mut sys = Faults::new(RealSys);
    sys.threads = BTreeMap::from([(4242, CpuSet::first_n(4))]);
    let mut act = Actuator::new(&fx.root, &fx.journal, sys).unwrap();
    let plan = Plan {
        actions: vec![
            Action {
                kind: ActionKind::SetRps {
                    netdev: "eth1".into(),
                    queue: 0,
                    cpus: CpuSet::from_cpus([2, 3]),
                },
                reason: String::new(),
            },
            Action {
                kind: ActionKind::PinNapiThread {
                    netdev: "eth1".into(),
                    napi_id: 8193,
                    irq: 36,
                    cpus: CpuSet::from_cpus([2]),
                },
                reason: String::new(),
            },
            Action {
                kind: ActionKind::PinNapiThread {
                    netdev: "eth1".into(),
                    napi_id: 9999,
                    irq: 38,
                    cpus: CpuSet::from_cpus([2]),
                },
                reason: String::new(),
            },
        ],
        findings: vec![],
        overloaded: vec![],
        relievable: vec![],
        tick: 0,
        balancing: false,
        swaps: Vec::new(),
        checked: Vec::new(),
    };
    let out = act.apply(&plan, 4);
    assert!(out[0].is_applied() && out[1].is_applied(), "{out:?}");
    assert!(out[2].error().unwrap().contains("napi/eth1-9999"));
    assert_eq!(read(&fx.root, rps), "c");
    assert_eq!(act.sys.threads[&4242], CpuSet::from_cpus([2]));
    let mut sys = Faults::new(RealSys);
    sys.threads = act.sys.threads.clone();
    let r = restore(&fx.root, &fx.journal, &mut sys, false).unwrap();
    assert_eq!(r.restored.len(), 2, "{r:?}");
    assert_eq!(read(&fx.root, rps).trim(), orig.trim());
    assert_eq!(sys.threads[&4242], CpuSet::first_n(4));
}

#[test]
fn restore_keeps_what_failed() {
    let fx = fixture();
    let mut act = Actuator::new(&fx.root, &fx.journal, Faults::new(RealSys)).unwrap();
    act.apply(&mv(36, &[37], &[2]), 4);
    let mut sys = Faults::new(RealSys).fail("irq/37/smp_affinity", libc::EIO);
    let r = restore(&fx.root, &fx.journal, &mut sys, false).unwrap();
    assert_eq!(r.restored.len(), 1);
    assert_eq!(r.failed.len(), 1);
    let left = Journal::load(&fx.journal).unwrap();
    assert_eq!(left.entries.len(), 1);
    assert_eq!(
        left.entries[0].target,
        Target::File {
            path: "proc/irq/37/smp_affinity".into()
        }
    );
}

fn set_boot(root: &Path, id: &str) {
    let p = root.join(BOOT_ID);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, format!("{id}\n")).unwrap();
}

const BOOT_A: &str = "6f1c0c4e-5b1a-4d7e-9a55-0a1b2c3d4e5f";
const BOOT_B: &str = "0d9e8f7a-1111-4222-8333-944455566677";

#[test]
fn the_journal_records_the_boot_and_restore_refuses_another_unless_forced() {
    let fx = fixture();
    set_boot(&fx.root, BOOT_A);
    let orig = read(&fx.root, "proc/irq/36/smp_affinity");
    let mut act = Actuator::new(&fx.root, &fx.journal, Faults::new(RealSys)).unwrap();
    act.apply(&mv(36, &[], &[3]), 4);
    let j = Journal::load(&fx.journal).unwrap();
    assert_eq!(j.version, JOURNAL_VERSION);
    assert_eq!(j.boot_id.as_deref(), Some(BOOT_A));

    set_boot(&fx.root, BOOT_B);
    let mut sys = Faults::new(RealSys);
    let err = restore(&fx.root, &fx.journal, &mut sys, false).unwrap_err();
    assert!(matches!(err, JournalError::OtherBoot { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(BOOT_A) && msg.contains(BOOT_B), "{msg}");
    assert!(msg.contains("--force"), "{msg}");
    assert!(sys.log.is_empty(), "nothing written");
    assert_eq!(read(&fx.root, "proc/irq/36/smp_affinity"), "8");
    assert!(fx.journal.exists());

    let r = restore(&fx.root, &fx.journal, &mut sys, true).unwrap();
    assert_eq!(r.restored.len(), 1, "{r:?}");
    assert_eq!(read(&fx.root, "proc/irq/36/smp_affinity"), orig.trim_end());
}

#[test]
fn the_daemon_sets_a_journal_of_another_boot_aside() {
    let fx = fixture();
    set_boot(&fx.root, BOOT_A);
    let mut act = Actuator::new(&fx.root, &fx.journal, Faults::new(RealSys)).unwrap();
    act.apply(&mv(36, &[], &[3]), 4);
    drop(act);
    // A reboot: the kernel put the default back, and the boot id changed.
    fs::write(fx.root.join("proc/irq/36/smp_affinity"), "f").unwrap();
    set_boot(&fx.root, BOOT_B);
    let mut act = Actuator::new(&fx.root, &fx.journal, Faults::new(RealSys)).unwrap();
    assert!(act.journal.entries.is_empty());
    assert_eq!(act.journal.boot_id.as_deref(), Some(BOOT_B));
    let aside = previous_boot_path(&fx.journal);
    assert_eq!(
        Journal::load(&aside).unwrap().boot_id.as_deref(),
        Some(BOOT_A)
    );
    // The new journal's original is this boot's value, not the old boot's.
    act.apply(&mv(36, &[], &[2]), 4);
    let j = Journal::load(&fx.journal).unwrap();
    assert_eq!(j.entries[0].original, "f");
    assert_eq!(j.boot_id.as_deref(), Some(BOOT_B));
}

#[test]
fn a_journal_that_records_no_boot_needs_force() {
    let fx = fixture();
    set_boot(&fx.root, BOOT_A);
    fs::create_dir_all(fx.journal.parent().unwrap()).unwrap();
    // Version 1, as older balancers wrote it.
    fs::write(
        &fx.journal,
        r#"{"version":1,"entries":[{"target":{"kind":"file","path":"proc/irq/36/smp_affinity"},"original":"2\n"}]}"#,
    )
    .unwrap();
    let err = restore(&fx.root, &fx.journal, &mut RealSys, false).unwrap_err();
    assert!(err.to_string().contains("records no boot"), "{err}");
    let err = Actuator::new(&fx.root, &fx.journal, RealSys).err().unwrap();
    assert!(matches!(err, JournalError::OtherBoot { written: None, .. }));
    let r = restore(&fx.root, &fx.journal, &mut RealSys, true).unwrap();
    assert_eq!(r.restored.len(), 1);
    assert_eq!(read(&fx.root, "proc/irq/36/smp_affinity"), "2");
}

#[test]
fn targets_that_are_gone_are_skipped_and_dropped() {
    let fx = fixture();
    set_boot(&fx.root, BOOT_A);
    let mut act = Actuator::new(&fx.root, &fx.journal, Faults::new(RealSys)).unwrap();
    act.apply(&mv(36, &[37], &[3]), 4);
    act.apply(&mv(38, &[], &[3]), 4);
    // IRQ 37 vanished (its device went); IRQ 38's file says ENOENT; 36 refuses for now.
    fs::remove_dir_all(fx.root.join("proc/irq/37")).unwrap();
    let mut sys = Faults::new(RealSys)
        .fail("irq/38/smp_affinity", libc::ENOENT)
        .fail("irq/36/smp_affinity", libc::EBUSY);
    let r = restore(&fx.root, &fx.journal, &mut sys, false).unwrap();
    assert_eq!(r.gone.len(), 2, "{r:?}");
    assert_eq!(r.failed.len(), 1, "{r:?}");
    let left = Journal::load(&fx.journal).unwrap();
    assert_eq!(left.boot_id.as_deref(), Some(BOOT_A));
    assert_eq!(
        left.entries.iter().map(|e| &e.target).collect::<Vec<_>>(),
        vec![&Target::File {
            path: "proc/irq/36/smp_affinity".into()
        }],
        "only the failed entry stays"
    );
    // The next run restores it and no longer trips over the gone ones.
    let r = restore(&fx.root, &fx.journal, &mut RealSys, false).unwrap();
    assert_eq!((r.restored.len(), r.gone.len(), r.failed.len()), (1, 0, 0));
    assert!(!fx.journal.exists());
}

fn write_journal(path: &Path, entries: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, format!(r#"{{"version":2,"entries":[{entries}]}}"#)).unwrap();
}

#[test]
fn foreign_targets_are_refused_before_any_write() {
    let fx = fixture();
    let victim = fx.journal.parent().unwrap().join("victim.txt");
    fs::create_dir_all(victim.parent().unwrap()).unwrap();
    fs::write(&victim, "precious\n").unwrap();
    let orig = read(&fx.root, "proc/irq/36/smp_affinity");
    let good = r#"{"target":{"kind":"file","path":"proc/irq/36/smp_affinity"},"original":"2"}"#;
    let bad = [
        format!(
            r#"{{"target":{{"kind":"file","path":"{}"}},"original":"1"}}"#,
            victim.display()
        ),
        r#"{"target":{"kind":"file","path":"proc/irq/36/../../../state/victim.txt"},"original":"1"}"#.into(),
        r#"{"target":{"kind":"file","path":"proc/irq/36//smp_affinity"},"original":"1"}"#.into(),
        r#"{"target":{"kind":"file","path":"proc/irq/x/smp_affinity"},"original":"1"}"#.into(),
        r#"{"target":{"kind":"file","path":"proc/sys/kernel/core_pattern"},"original":"1"}"#.into(),
        r#"{"target":{"kind":"file","path":"sys/class/net/eth1/queues/tx-0/xps_cpus"},"original":"1"}"#.into(),
        r#"{"target":{"kind":"file","path":"proc/irq/36/smp_affinity"},"original":"|rm -rf /"}"#.into(),
        r#"{"target":{"kind":"thread","pid":1,"comm":"systemd"},"original":"0"}"#.into(),
    ];
    for b in &bad {
        // The bad entry comes last, so it would be written first: nothing may be.
        write_journal(&fx.journal, &format!("{good},{b}"));
        let mut sys = Faults::new(RealSys);
        let err = restore(&fx.root, &fx.journal, &mut sys, false).unwrap_err();
        assert!(
            matches!(err, JournalError::ForeignTarget { index: 2, .. }),
            "{b}: {err}"
        );
        assert!(sys.log.is_empty(), "{b}: wrote {:?}", sys.log);
        assert!(fx.journal.exists(), "{b}: the journal stays");
    }
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!(read(&fx.root, "proc/irq/36/smp_affinity"), orig);
    // The daemon's own kinds pass.
    write_journal(
        &fx.journal,
        &format!(
            "{good},{},{}",
            r#"{"target":{"kind":"file","path":"sys/class/net/eth1/queues/rx-0/rps_cpus"},"original":"0"}"#,
            r#"{"target":{"kind":"file","path":"proc/irq/37/smp_affinity_list"},"original":"0-3"}"#
        ),
    );
    let r = restore(&fx.root, &fx.journal, &mut RealSys, false).unwrap();
    assert_eq!(r.restored.len(), 3, "{r:?}");
}

#[test]
fn unknown_versions_and_damaged_journals_are_explained() {
    let fx = fixture();
    fs::create_dir_all(fx.journal.parent().unwrap()).unwrap();
    let cases: [(&str, &str); 5] = [
        (r#"{"version":99,"entries":[]}"#, "format version 99"),
        ("", "the file is empty"),
        (r#"{"version":2,"entries":[{"tar"#, "not JSON"),
        ("\u{1}garbage\u{ff}", "not JSON"),
        (r#"{"entries":[]}"#, "no `version` key"),
    ];
    for (text, want) in cases {
        fs::write(&fx.journal, text).unwrap();
        let mut sys = Faults::new(RealSys);
        let err = restore(&fx.root, &fx.journal, &mut sys, true).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(want), "{text:?}: {msg}");
        assert!(msg.contains("nothing was restored"), "{msg}");
        assert!(msg.contains("inspect it"), "{msg}");
        assert!(sys.log.is_empty());
        assert_eq!(
            fs::read_to_string(&fx.journal).unwrap(),
            text,
            "kept as it is"
        );
        // The daemon refuses to start on it with the same words.
        let err = Actuator::new(&fx.root, &fx.journal, RealSys).err().unwrap();
        assert!(err.to_string().contains(want));
    }
}

#[test]
fn journaled_rps_names_the_rx_queues_of_rps_entries() {
    let file = |p: &str| (Target::File { path: p.into() }, "0".to_owned());
    let entries = vec![
        file("proc/irq/40/smp_affinity"),
        file("sys/class/net/eth1/queues/rx-2/rps_cpus"),
        file("sys/class/net/enp1s0f0/queues/rx-13/rps_cpus"),
        file("sys/class/net/eth1/queues/tx-2/xps_cpus"),
        (
            Target::Thread {
                pid: 7,
                comm: "napi/eth1-8193".into(),
            },
            "0-3".to_owned(),
        ),
    ];
    assert_eq!(
        journaled_rps(&entries),
        vec![("eth1".to_owned(), 2), ("enp1s0f0".to_owned(), 13)]
    );
}

/// Two moves exchanging IRQs 36 and 38 between CPUs 1 and 3, as one swap.
fn swap_plan() -> Plan {
    let half = |irq: u32, from: u32, to: u32| Action {
        kind: ActionKind::Move {
            irq,
            companions: vec![],
            from: CpuSet::from_cpus([from]),
            targets: vec![to],
            weight: 0.3,
        },
        reason: "swap: test".into(),
    };
    Plan {
        actions: vec![half(36, 1, 3), half(38, 3, 1)],
        swaps: vec![0],
        checked: Vec::new(),
        ..mv(36, &[], &[3])
    }
}

#[test]
fn a_swap_is_written_whole_or_not_at_all() {
    let fx = fixture();
    let mut act = Actuator::new(&fx.root, &fx.journal, Faults::new(RealSys)).unwrap();
    let out = act.apply(&swap_plan(), 4);
    assert_eq!(
        out,
        vec![Outcome::applied(Some(3)), Outcome::applied(Some(1))]
    );
    assert_eq!(read(&fx.root, "proc/irq/36/smp_affinity"), "8");
    assert_eq!(read(&fx.root, "proc/irq/38/smp_affinity"), "2");

    // The second half refused (its target has no free vector): the first is taken back.
    let fx = fixture();
    let orig36 = read(&fx.root, "proc/irq/36/smp_affinity");
    let orig38 = read(&fx.root, "proc/irq/38/smp_affinity");
    let sys = Faults::new(RealSys).fail("irq/38/smp_affinity", libc::ENOSPC);
    let mut act = Actuator::new(&fx.root, &fx.journal, sys).unwrap();
    let out = act.apply(&swap_plan(), 4);
    assert!(out.iter().all(|o| !o.is_applied()), "{out:?}");
    assert!(
        out[0]
            .error()
            .is_some_and(|e| e.contains("nothing changed")),
        "{out:?}"
    );
    assert_eq!(
        out[1].refusals().map(|r| r.full_cpus.clone()),
        Some(vec![1])
    );
    assert_eq!(out[0].refusals().map(|r| r.full_cpus.len()), Some(0));
    assert_eq!(
        read(&fx.root, "proc/irq/36/smp_affinity").trim(),
        orig36.trim()
    );
    assert_eq!(
        read(&fx.root, "proc/irq/38/smp_affinity").trim(),
        orig38.trim()
    );
}
