//! The Debian package as an admin installs it: `dpkg -x` into a scratch root (no root
//! needed, nothing of the host touched), then the installed binary runs, and the man pages,
//! completions, unit and conffile are where Debian looks for them.
//!
//! The package is built by `cargo xtask package` (a release build: too slow here), and
//! `cargo xtask test` passes it in `BALANCER_DEB` with `BALANCER_REQUIRE_PACKAGE_TEST=1`,
//! where a missing package fails instead of skipping.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

fn deb_or_skip() -> Option<PathBuf> {
    match std::env::var_os("BALANCER_DEB") {
        Some(p) => Some(PathBuf::from(p)),
        None if std::env::var("BALANCER_REQUIRE_PACKAGE_TEST").as_deref() == Ok("1") => {
            panic!("BALANCER_REQUIRE_PACKAGE_TEST=1 but BALANCER_DEB names no package")
        }
        None => {
            eprintln!(
                "package: skipped, set BALANCER_DEB to a .deb from `cargo xtask package` \
                 (cargo xtask test does)"
            );
            None
        }
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "balancer-package-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn gunzip(path: &Path) -> String {
    run(Command::new("gzip").arg("-dc").arg(path))
}

const SUBCOMMANDS: [&str; 6] = ["report", "topology", "daemon", "plan", "restore", "top"];

#[test]
fn the_package_installs_a_working_balancer() {
    let Some(deb) = deb_or_skip() else {
        return;
    };
    assert!(deb.is_file(), "no package at {}", deb.display());
    let fields = run(Command::new("dpkg-deb").arg("--field").arg(&deb));
    assert!(fields.contains("Package: balancer\n"), "{fields}");
    assert!(
        fields.contains(&format!("Version: {}", env!("CARGO_PKG_VERSION"))),
        "{fields}"
    );
    assert!(
        fields.contains("Depends: "),
        "shared-library dependencies: {fields}"
    );

    // The config is a conffile: dpkg keeps the admin's edits on upgrade.
    let dir = scratch();
    let control = dir.join("control");
    run(Command::new("dpkg-deb")
        .arg("--control")
        .arg(&deb)
        .arg(&control));
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap_or_default();
    assert!(
        conffiles
            .lines()
            .any(|l| l == "/etc/balancer/balancer.toml"),
        "conffiles: {conffiles:?}"
    );
    // The unit is registered with deb-systemd-helper but neither enabled nor started: it
    // displaces irqbalance, the admin's call.
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap_or_default();
    assert!(postinst.contains("deb-systemd-helper"), "{postinst}");
    assert!(!postinst.contains("deb-systemd-invoke start"), "{postinst}");

    let root = dir.join("root");
    run(Command::new("dpkg").arg("-x").arg(&deb).arg(&root));
    let bin = root.join("usr/sbin/balancer");
    let version = run(Command::new(&bin).arg("--version"));
    assert_eq!(
        version.trim(),
        format!("balancer {}", env!("CARGO_PKG_VERSION"))
    );
    let help = run(Command::new(&bin).arg("--help"));
    for sub in SUBCOMMANDS {
        assert!(help.contains(sub), "--help lacks {sub}: {help}");
    }
    let help = run(Command::new(&bin).args(["daemon", "--help"]));
    assert!(help.contains("--oneshot"), "{help}");

    // The shipped config parses: the installed binary's `restore` reads it (and its lock
    // is redirected to the scratch directory by a copy, as the packaged path is /run's).
    let config = root.join("etc/balancer/balancer.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains("lock-file = \"/run/balancer/balancer.lock\""),
        "{text}"
    );
    let scratch_cfg = dir.join("balancer.toml");
    std::fs::write(
        &scratch_cfg,
        text.replace(
            "/run/balancer/balancer.lock",
            &dir.join("lock").display().to_string(),
        )
        .replace(
            "/var/lib/balancer/journal.json",
            &dir.join("journal.json").display().to_string(),
        ),
    )
    .unwrap();
    let restored = run(Command::new(&bin)
        .args(["restore", "--config"])
        .arg(&scratch_cfg));
    assert!(restored.contains("nothing to restore"), "{restored}");

    // One man page per command, gzipped, each a roff page of its command.
    let man = root.join("usr/share/man/man8");
    let page = gunzip(&man.join("balancer.8.gz"));
    assert!(page.contains(".TH balancer 8"), "{page}");
    for sub in SUBCOMMANDS {
        let page = gunzip(&man.join(format!("balancer-{sub}.8.gz")));
        assert!(
            page.contains(&format!(".TH balancer-{sub} 8")),
            "balancer-{sub}.8: {page}"
        );
    }
    assert!(gunzip(&man.join("balancer-daemon.8.gz")).contains("oneshot"));

    // Completions where bash-completion, zsh and fish look for vendor files.
    let bash = root.join("usr/share/bash-completion/completions/balancer");
    let zsh = root.join("usr/share/zsh/vendor-completions/_balancer");
    let fish = root.join("usr/share/fish/vendor_completions.d/balancer.fish");
    for (path, marker) in [
        (&bash, "complete -F _balancer"),
        (&zsh, "#compdef balancer"),
        (&fish, "complete -c balancer"),
    ] {
        let text =
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(text.contains(marker), "{}: {text}", path.display());
        assert!(
            text.contains("oneshot"),
            "{} lacks daemon flags",
            path.display()
        );
    }
    // bash accepts its file.
    run(Command::new("bash").arg("-n").arg(&bash));

    // The hardened unit, pointing at the installed binary.
    let unit = root.join("usr/lib/systemd/system/balancer.service");
    let text = std::fs::read_to_string(&unit).unwrap_or_else(|e| panic!("{}: {e}", unit.display()));
    for line in [
        "Type=notify",
        "ExecStart=/usr/sbin/balancer daemon --foreground",
        "RuntimeDirectory=balancer",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=CAP_BPF CAP_PERFMON CAP_NET_ADMIN",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(line)),
            "unit lacks {line}"
        );
    }
    let doc = root.join("usr/share/doc/balancer/copyright");
    assert!(doc.is_file(), "{} missing", doc.display());
    let _ = std::fs::remove_dir_all(&dir);
}
