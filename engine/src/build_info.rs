//! What this binary is: the crate version and the git commit it was built from (embedded by
//! `build.rs`; "unknown" outside a git checkout). Shared by `--version`, the
//! `remoteingress_build_info` metric and the started log line, so they always agree.

/// The crate version (`Cargo.toml`).
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit (12 hex digits), or "unknown" when built outside a git checkout.
pub(crate) const COMMIT: &str = env!("REMOTEINGRESS_COMMIT");

#[cfg(test)]
mod tests {
    #[test]
    fn the_commit_is_a_short_hash_or_unknown() {
        assert!(
            super::COMMIT == "unknown"
                || (super::COMMIT.len() >= 7
                    && super::COMMIT.chars().all(|c| c.is_ascii_hexdigit())),
            "{}",
            super::COMMIT
        );
    }
}
