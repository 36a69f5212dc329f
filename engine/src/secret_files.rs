//! Files that hold secrets: the edges file, a `--config` file with edges, a key or a token, the
//! edge's token and secret files, the hub's TLS key. The documented install makes them 0640,
//! owner root, group of the service (docs/operations.md); a file every local user can read gives
//! every edge's secret away, so reading one says so in a warning (not an error: refusing would
//! turn a fixable exposure into an outage at the next restart).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Permission bits for "other users" (not owner, not group).
const OTHERS: u32 = 0o007;

/// Warns once per read when `path` can be read or written by every local user.
pub(crate) fn warn_if_exposed(path: &Path) {
    let Ok(metadata) = std::fs::metadata(path) else {
        return;
    };
    let mode = metadata.permissions().mode() & 0o777;
    if mode & OTHERS != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = %format!("{mode:04o}"),
            "this file holds secrets and every local user can read it; `chmod o-rwx` it (the \
             documented mode is 0640, owner root, group of the service)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_access_by_others_counts() {
        assert_eq!(0o640 & OTHERS, 0);
        assert_ne!(0o644 & OTHERS, 0);
        assert_ne!(0o602 & OTHERS, 0);
    }
}
