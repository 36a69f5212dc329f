//! The hub's state directory: where its generated identity (certificate and key) lives, so that a
//! restarted hub keeps the fingerprint its edges pinned. Without it every restart would lock out
//! every pinned edge for good.
//!
//! One file, `hub-identity.pem` (certificate, then key), mode 0600 in a 0700 directory. It is
//! created atomically and without replacing: written to a temporary file, synced, then hard-linked
//! into place, which fails if another process got there first (both then use the winner's). A
//! file that exists but does not parse is an error, never silently replaced: replacing it would
//! change the fingerprint under the edges' feet.
//!
//! The directory must be the hub's own: owned by its effective user and not writable by group
//! or others. Otherwise another local user could plant an identity whose key they hold (and read
//! every tunnel) or swap the file between restarts; such a directory is refused with what to fix,
//! before anything is read from or written to it. The CLI's default never falls back to a shared
//! directory such as `/tmp` itself: without `$XDG_STATE_HOME` and `$HOME` it uses
//! `$TMPDIR/remoteingress-<uid>`, which the same check guards.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::tls::{HubIdentity, TlsError};

/// The identity file's name inside the state directory.
pub(crate) const IDENTITY_FILE: &str = "hub-identity.pem";

/// Why the state directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot create the state directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not a valid hub identity ({reason}); it was left as it is: restore it, or \
         delete it to generate a new identity (edges that pinned the old fingerprint then need \
         new tokens)"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the state directory {path} {problem}: the hub's identity must be in a directory only \
         its user can write (chown it to uid {euid} and chmod 700, or give another state \
         directory)"
    )]
    NotPrivate {
        path: PathBuf,
        problem: String,
        euid: u32,
    },
    #[error("no hub identity in {0} yet: start the hub once with this state directory")]
    Missing(PathBuf),
    #[error("{0}")]
    Tls(#[from] TlsError),
}

/// The default state directory of the CLI: `/var/lib/remoteingress` for root, otherwise
/// `$XDG_STATE_HOME/remoteingress` (or `~/.local/state/remoteingress`).
pub(crate) fn default_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/remoteingress");
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|value| !value.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/state")));
    match base {
        Some(base) => base.join("remoteingress"),
        // A per-user name in the shared temporary directory; `check_private` refuses it if
        // someone else made it first.
        None => std::env::temp_dir().join(format!("remoteingress-{}", effective_uid())),
    }
}

fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Refuses a directory that another user owns or that group or others may write.
/// Who may own the state directory.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// This process's user: the hub serves with what it finds there.
    Me,
    /// Any user: `token issue` only reads the fingerprint, and root runs it on the directory
    /// of the service user the hub runs as.
    Anyone,
}

fn check_private(dir: &Path, owner: Owner) -> Result<(), StateError> {
    let metadata = std::fs::metadata(dir).map_err(|source| StateError::Read {
        path: dir.to_owned(),
        source,
    })?;
    let euid = effective_uid();
    let mode = metadata.permissions().mode();
    let problem = if !metadata.is_dir() {
        Some("is not a directory".to_owned())
    } else if owner == Owner::Me && metadata.uid() != euid {
        Some(format!("is owned by uid {}", metadata.uid()))
    } else if mode & 0o022 != 0 {
        Some(format!(
            "is writable by group or others (mode {:o})",
            mode & 0o7777
        ))
    } else {
        None
    };
    match problem {
        Some(problem) => Err(StateError::NotPrivate {
            path: dir.to_owned(),
            problem,
            euid,
        }),
        None => Ok(()),
    }
}

/// The identity in `dir`, generated and stored on first use.
pub(crate) fn load_or_create(dir: &Path) -> Result<HubIdentity, StateError> {
    if let Some(identity) = load(dir)? {
        return Ok(identity);
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| StateError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
    check_private(dir, Owner::Me)?;
    let (cert_pem, key_pem) = HubIdentity::generate_pem()?;
    let path = dir.join(IDENTITY_FILE);
    let temporary = dir.join(format!(
        ".{IDENTITY_FILE}.{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let written =
        write_synced(&temporary, format!("{cert_pem}{key_pem}").as_bytes()).and_then(|()| {
            match std::fs::hard_link(&temporary, &path) {
                // Another process created it first: use theirs.
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                other => other,
            }
        });
    let _ = std::fs::remove_file(&temporary);
    written.map_err(|source| StateError::Write {
        path: path.clone(),
        source,
    })?;
    if let Ok(directory) = std::fs::File::open(dir) {
        let _ = directory.sync_all();
    }
    let identity = load(dir)?.ok_or_else(|| StateError::Missing(dir.to_owned()))?;
    tracing::info!(path = %path.display(), fingerprint = %identity.fingerprint, "generated a new hub identity");
    Ok(identity)
}

/// The identity in `dir`, or `None` when there is none yet (`dir` itself may be missing).
pub(crate) fn load(dir: &Path) -> Result<Option<HubIdentity>, StateError> {
    load_owned_by(dir, Owner::Me)
}

/// The identity in `dir` to read its fingerprint (`token issue`), whoever owns `dir`; it must
/// exist and still not be writable by group or others.
pub(crate) fn load_to_read(dir: &Path) -> Result<HubIdentity, StateError> {
    load_owned_by(dir, Owner::Anyone)?.ok_or_else(|| StateError::Missing(dir.to_owned()))
}

fn load_owned_by(dir: &Path, owner: Owner) -> Result<Option<HubIdentity>, StateError> {
    if !dir.exists() {
        return Ok(None);
    }
    check_private(dir, owner)?;
    let path = dir.join(IDENTITY_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) if error.kind() == std::io::ErrorKind::InvalidData => {
            return Err(StateError::Corrupt {
                path,
                reason: "not UTF-8 text".to_owned(),
            })
        }
        Err(source) => return Err(StateError::Read { path, source }),
    };
    if let Ok(metadata) = std::fs::metadata(&path) {
        if metadata.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "the hub identity is readable by other users; chmod 600 it");
        }
    }
    let identity = HubIdentity::from_pem(&text, &text).map_err(|e| StateError::Corrupt {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    // A key that does not belong to the certificate would fail every handshake: refuse now.
    identity.server_config().map_err(|e| StateError::Corrupt {
        path,
        reason: e.to_string(),
    })?;
    Ok(Some(identity))
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "ri-state-test-{}-{:x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn the_identity_is_created_once_with_private_modes_and_then_reused() {
        let dir = temp_dir().join("nested");
        assert!(load(&dir).unwrap().is_none());
        let first = load_or_create(&dir).unwrap();
        let second = load_or_create(&dir).unwrap();
        assert_eq!(first.fingerprint, second.fingerprint);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join(IDENTITY_FILE)), 0o600);
        assert_eq!(mode(&dir), 0o700);
        let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
        let _ = std::fs::remove_dir_all(dir.parent().unwrap());
    }

    #[test]
    fn a_directory_others_own_or_may_write_is_refused_before_use() {
        use std::os::unix::fs::chown;
        let dir = temp_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let set_mode =
            |mode| std::fs::set_permissions(&dir, PermissionsExt::from_mode(mode)).unwrap();
        set_mode(0o777);
        let error = load_or_create(&dir).unwrap_err();
        assert!(matches!(error, StateError::NotPrivate { .. }), "{error}");
        assert!(
            error
                .to_string()
                .contains("writable by group or others (mode 777)"),
            "{error}"
        );
        assert!(!dir.join(IDENTITY_FILE).exists(), "nothing written");
        set_mode(0o775);
        assert!(load(&dir).is_err(), "group-writable is refused as well");
        // Owned by someone else: refused even with a private mode, and its identity not read.
        set_mode(0o700);
        if effective_uid() == 0 {
            let nobody = 65_534;
            chown(&dir, Some(nobody), Some(nobody)).unwrap();
            let error = load(&dir).unwrap_err();
            assert!(error.to_string().contains("owned by uid 65534"), "{error}");
            set_mode(0o777);
            assert!(load_or_create(&dir).is_err());
            chown(&dir, Some(0), Some(0)).unwrap();
        } else {
            eprintln!("the ownership case needs root");
        }
        set_mode(0o755);
        assert!(
            load_or_create(&dir).is_ok(),
            "owned by us, not writable by others"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn concurrent_starts_agree_on_one_identity() {
        let dir = temp_dir();
        let fingerprints: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| load_or_create(&dir).unwrap().fingerprint))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(fingerprints.windows(2).all(|w| w[0] == w[1]));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_corrupt_identity_is_an_error_and_is_not_replaced() {
        let dir = temp_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(IDENTITY_FILE);
        for content in [
            "garbage",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        ] {
            std::fs::write(&path, content).unwrap();
            let error = load_or_create(&dir).unwrap_err();
            assert!(matches!(error, StateError::Corrupt { .. }), "{error}");
            assert!(error.to_string().contains("delete it"), "{error}");
            assert_eq!(std::fs::read_to_string(&path).unwrap(), content);
        }
        // A key that belongs to another certificate.
        let (cert, _) = HubIdentity::generate_pem().unwrap();
        let (_, key) = HubIdentity::generate_pem().unwrap();
        std::fs::write(&path, format!("{cert}{key}")).unwrap();
        assert!(matches!(
            load_or_create(&dir),
            Err(StateError::Corrupt { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
