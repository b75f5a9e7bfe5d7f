//! Who is using a SQLite store: an advisory lock on `<store file>.lock`.
//!
//! Every process that opens the store (`keyward serve`, and the commands that open it directly:
//! `migrate`, `dev seed`, `retention run`, `audit verify`, `backup`) holds a *shared* lock on
//! this file for as long as its [`crate::SqliteStore`] lives; `keyward restore` takes it
//! *exclusively*, without waiting, so it refuses to replace a store that anything has open, and
//! nothing can open the store while a restore is installing it. The kernel drops a process's
//! locks when it exits, however it exits: a crashed server leaves no stale lock behind.
//!
//! SQLite's own locks cannot tell this: in WAL mode an idle connection holds no lock that
//! another process could see from SQL. The lock is `flock(2)` on a file of its own (never on
//! the database, whose `fcntl` locks are SQLite's); on platforms without `flock` there is no
//! lock and `restore` cannot detect a running server.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::StoreError;

/// A held lock; released when dropped (or when the process exits).
#[derive(Debug)]
pub(crate) struct StoreLock {
    _file: File,
}

/// The lock file of the store at `db`.
pub(crate) fn lock_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

/// Opens the lock file read-only (`flock` needs no write access, so a lock file made by
/// another user, e.g. root running `keyward backup` before the service ever started, does not
/// lock the service out), creating it (empty, mode 0644) when missing.
fn open_lock_file(db: &Path) -> Result<File, StoreError> {
    let path = lock_path(db);
    let err = |e: std::io::Error| StoreError::Open(format!("cannot open the lock file {}: {e}", path.display()));
    match File::open(&path) {
        Ok(f) => return Ok(f),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
        Err(_) => {}
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o644);
    }
    opts.open(&path).map_err(err)
}

/// Why an exclusive lock was not granted.
#[derive(Debug)]
pub(crate) enum Busy {
    /// Another process holds the lock.
    InUse,
    Failed(StoreError),
}

impl StoreLock {
    /// The shared lock of a process using the store. Refused (at once) while a restore holds
    /// the exclusive one.
    pub(crate) fn shared(db: &Path) -> Result<StoreLock, StoreError> {
        let file = open_lock_file(db)?;
        match try_lock(&file, false) {
            Ok(true) => Ok(StoreLock { _file: file }),
            Ok(false) => Err(StoreError::Open(format!(
                "{} is being restored (keyward restore holds its lock); try again when it is done",
                db.display()
            ))),
            Err(e) => Err(StoreError::Open(format!(
                "cannot lock {}: {e}",
                lock_path(db).display()
            ))),
        }
    }

    /// The exclusive lock of a restore: granted only when no process has the store open.
    pub(crate) fn exclusive(db: &Path) -> Result<StoreLock, Busy> {
        let file = open_lock_file(db).map_err(Busy::Failed)?;
        match try_lock(&file, true) {
            Ok(true) => Ok(StoreLock { _file: file }),
            Ok(false) => Err(Busy::InUse),
            Err(e) => Err(Busy::Failed(StoreError::Open(format!(
                "cannot lock {}: {e}",
                lock_path(db).display()
            )))),
        }
    }
}

/// `Ok(false)` when someone else holds a conflicting lock.
#[cfg(unix)]
fn try_lock(file: &File, exclusive: bool) -> std::io::Result<bool> {
    use rustix::fs::{flock, FlockOperation};
    let op = if exclusive {
        FlockOperation::NonBlockingLockExclusive
    } else {
        FlockOperation::NonBlockingLockShared
    };
    match flock(file, op) {
        Ok(()) => Ok(true),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(not(unix))]
fn try_lock(_file: &File, _exclusive: bool) -> std::io::Result<bool> {
    Ok(true)
}
