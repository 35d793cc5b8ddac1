//! The change epoch: one row that every write which changes what access
//! checks read (keys, users, plans, permissions, subscriptions) moves in its
//! own transaction, so that every instance's read cache learns of it.

use diesel::prelude::*;
use diesel::result::Error as DieselError;

use crate::connection::DbConnection;
use crate::schema::change_epoch;

/// A write transaction that changes what access checks read: it bumps the
/// change epoch in the same transaction.
pub(crate) fn change_tx<T, E, F>(c: &mut DbConnection, f: F) -> Result<T, E>
where
    F: FnOnce(&mut DbConnection) -> Result<T, E>,
    E: From<DieselError>,
{
    c.write_tx(|c| {
        bump_epoch(c)?;
        f(c)
    })
}

/// Inside a write transaction: moves the change epoch, so that every
/// instance's read cache learns of the change. This process's cache learns
/// which epoch is its own, so that it drops only what this change touched
/// (`Database::with_write`).
pub(crate) fn bump_epoch(c: &mut DbConnection) -> QueryResult<()> {
    diesel::update(change_epoch::table.find(1))
        .set(change_epoch::epoch.eq(change_epoch::epoch + 1))
        .execute(c)?;
    crate::usage::cache::note_bumped(change_epoch_now(c)?);
    Ok(())
}

/// The current change epoch.
pub(crate) fn change_epoch_now(c: &mut DbConnection) -> QueryResult<i64> {
    change_epoch::table
        .find(1)
        .select(change_epoch::epoch)
        .first(c)
}
