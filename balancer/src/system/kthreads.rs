//! The NAPI kthreads of threaded NAPI (`napi/<dev>-<id>`), found by name in `/proc`.
//!
//! The netdev netlink family's `napi-get` also gives each instance's kthread pid, but it
//! answers only for the asking thread's network namespace, and devices in other namespaces
//! (containers, the tests' veths) poll too. Kthreads belong to no namespace: every one is in
//! `/proc`, each with its comm (truncated to 15 bytes, so the name gives the pid, not
//! always the instance; the poll events say which instance each poll is).
use std::{collections::BTreeSet, path::Path};

/// `PF_KTHREAD` in the flags field of `/proc/<pid>/stat`.
const PF_KTHREAD: u64 = 0x0020_0000;

/// Pids of the kernel threads named `napi/...` under `root`'s `proc`. Unreadable entries
/// (processes exiting meanwhile) are skipped.
///
/// Every kthread is a child of kthreadd (pid 2), so where the kernel lists children
/// (`CONFIG_PROC_CHILDREN`, set in Debian's kernels 5.10-7.x) one read names the
/// candidates and only they are read: a fleet machine runs thousands of processes and a
/// few hundred kthreads, and this runs every interval. Without the file, every process.
pub fn napi_kthreads(root: &Path) -> BTreeSet<u32> {
    let proc = root.join("proc");
    let is_napi = |pid: u32| {
        std::fs::read_to_string(proc.join(pid.to_string()).join("stat"))
            .is_ok_and(|stat| is_napi_kthread(&stat))
    };
    if let Ok(children) = std::fs::read_to_string(proc.join("2/task/2/children")) {
        return children
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .filter(|&pid| is_napi(pid))
            .collect();
    }
    let Ok(dir) = std::fs::read_dir(&proc) else {
        return BTreeSet::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|&pid| is_napi(pid))
        .collect()
}

/// Whether a `/proc/<pid>/stat` line is a kernel thread whose comm starts with `napi/`.
fn is_napi_kthread(stat: &str) -> bool {
    // "pid (comm) state ppid pgrp session tty_nr tpgid flags ..."; comm may hold spaces and
    // parentheses, so it ends at the last ')'.
    let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
        return false;
    };
    if close < open {
        return false;
    }
    let comm = &stat[open + 1..close];
    let flags = stat[close + 1..]
        .split_whitespace()
        .nth(6)
        .and_then(|f| f.parse::<u64>().ok());
    comm.starts_with("napi/") && flags.is_some_and(|f| f & PF_KTHREAD != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_kernel_threads_named_napi_count() {
        let kthread = "4242 (napi/bvb1a2b3-8) S 2 0 0 0 -1 2129984 0 0 0 0 0 3 0 0 20 0 1";
        assert!(is_napi_kthread(kthread));
        // A user process that calls itself napi/... has no PF_KTHREAD.
        assert!(!is_napi_kthread(
            "77 (napi/fake) S 1 77 77 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1"
        ));
        assert!(!is_napi_kthread(
            "12 (ksoftirqd/0) S 2 0 0 0 -1 69238880 0 0 0 0"
        ));
        // A comm with ") " inside still parses from the last ')'.
        assert!(is_napi_kthread("9 (napi/a) b-1) S 2 0 0 0 -1 2129984 0"));
        assert!(!is_napi_kthread("garbage"));
        assert!(!is_napi_kthread("1 )napi/x( S 2 0 0 0 -1 2129984"));
    }

    #[test]
    fn scans_a_fixture_proc() {
        let dir = std::env::temp_dir().join(format!("bal-kthreads-{}", std::process::id()));
        for (pid, stat) in [
            ("300", "300 (napi/eth0-8193) S 2 0 0 0 -1 2129984 0"),
            ("301", "301 (bash) S 1 301 301 0 -1 4194560 0"),
        ] {
            std::fs::create_dir_all(dir.join("proc").join(pid)).unwrap();
            std::fs::write(dir.join("proc").join(pid).join("stat"), stat).unwrap();
        }
        std::fs::create_dir_all(dir.join("proc/self")).unwrap();
        assert_eq!(napi_kthreads(&dir), BTreeSet::from([300]));
        assert!(napi_kthreads(&dir.join("nope")).is_empty());
        // With kthreadd's children listed, only they are read: 302 is not among them.
        std::fs::create_dir_all(dir.join("proc/2/task/2")).unwrap();
        std::fs::write(dir.join("proc/2/task/2/children"), "300 303 \n").unwrap();
        std::fs::create_dir_all(dir.join("proc/302")).unwrap();
        std::fs::write(
            dir.join("proc/302/stat"),
            "302 (napi/eth0-8194) S 2 0 0 0 -1 2129984 0",
        )
        .unwrap();
        assert_eq!(napi_kthreads(&dir), BTreeSet::from([300]));
        std::fs::write(dir.join("proc/2/task/2/children"), "300 302").unwrap();
        assert_eq!(napi_kthreads(&dir), BTreeSet::from([300, 302]));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
