//! The crate's one policy for poisoned std mutexes.
//!
//! A mutex is poisoned when a thread panicked while holding it. Nothing here panics under a lock
//! (the crate denies `unwrap`/`expect`, and locks are held for a lookup or an update, never across
//! an `.await`), and every value behind one stays consistent between statements, so the data is
//! still usable: take it and go on. The one exception fails closed instead: the login throttle
//! (`hub::auth::lock`), where a guess at the state could let a password guesser through.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, ignoring poisoning (see the module docs).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
