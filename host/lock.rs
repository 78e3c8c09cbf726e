//! The one way the host takes a `std::sync::Mutex`.
//!
//! A mutex is poisoned when a thread panicked while holding it. In the host that is a
//! connection's panic, which must end only that connection (a service panics, its thread or
//! task is unwound, the port goes on); every table the host guards is left consistent between
//! statements, so the data behind a poisoned lock is still sound and the lock is taken anyway.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, poisoned or not.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
