//! Writes the man pages (one per command, section 8: balancer is run by root) and the bash,
//! zsh and fish completions of the `balancer` CLI into a directory, for the Debian package:
//! `cargo run -p balancer --example gen-docs -- DIR` (what `cargo xtask package` runs).
//!
//! DIR/man/balancer.8, balancer-daemon.8, ... and DIR/completions/balancer.bash, _balancer,
//! balancer.fish.
use std::{fs, path::Path};

use anyhow::Context as _;
use clap_complete::Shell;

fn main() -> anyhow::Result<()> {
    let out = std::env::args_os().nth(1).context("usage: gen-docs DIR")?;
    let out = Path::new(&out);
    let cmd = balancer::cli::command();
    let man = out.join("man");
    fs::create_dir_all(&man).with_context(|| format!("creating {}", man.display()))?;
    write_man(&cmd, &man, "")?;
    let comp = out.join("completions");
    fs::create_dir_all(&comp).with_context(|| format!("creating {}", comp.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let path = clap_complete::generate_to(shell, &mut cmd.clone(), "balancer", &comp)
            .with_context(|| format!("writing {shell} completions to {}", comp.display()))?;
        eprintln!("gen-docs: {}", path.display());
    }
    Ok(())
}

/// `balancer.8`, then `balancer-<sub>.8` for each visible subcommand (as git does), each
/// page titled with its full name so that `man balancer-daemon` finds it.
fn write_man(cmd: &clap::Command, dir: &Path, prefix: &str) -> anyhow::Result<()> {
    let name = if prefix.is_empty() {
        cmd.get_name().to_string()
    } else {
        format!("{prefix}-{}", cmd.get_name())
    };
    // clap wants a 'static name (without its `string` feature); this program is short.
    let page = cmd
        .clone()
        .name(&*name.clone().leak())
        .bin_name(name.replace('-', " "));
    let mut text = Vec::new();
    clap_mangen::Man::new(page)
        .section("8")
        .manual("balancer")
        .render(&mut text)
        .with_context(|| format!("rendering the man page of {name}"))?;
    let path = dir.join(format!("{name}.8"));
    fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("gen-docs: {}", path.display());
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_man(sub, dir, &name)?;
    }
    Ok(())
}
