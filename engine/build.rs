//! Embeds the git commit the binary is built from (`REMOTEINGRESS_COMMIT` at compile time, read
//! by `build_info::COMMIT`). Written by hand rather than with `vergen`/`built`: it is one
//! `git rev-parse`, and those crates pull in a dependency tree for it. Outside a git checkout
//! (a source tarball) the commit is "unknown", unless the packager sets
//! `REMOTEINGRESS_COMMIT` in the build's environment.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

fn main() {
    println!("cargo:rerun-if-env-changed=REMOTEINGRESS_COMMIT");
    let commit = std::env::var("REMOTEINGRESS_COMMIT")
        .ok()
        .filter(|commit| !commit.trim().is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=REMOTEINGRESS_COMMIT={commit}");
    // Built again when HEAD moves: a commit on the branch, a checkout of another one.
    let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    watched.extend(git(&["rev-parse", "--symbolic-full-name", "HEAD"]));
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--git-path", &name]) {
            // A path cargo cannot find would make it run this script at every build.
            if Path::new(&path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
}
