//! The embedded backend: one SQLite file in WAL mode, so readers never wait for the
//! writer. A file belongs to one gateway process at a time; at open, leases left by an
//! earlier process are void, since that process is gone.

mod checkpoint;
mod schema;

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, ToSql};
use tokio::sync::broadcast;

use super::StoreError;
use super::sql::db::{Arg, Conn, Db, Dialect, Row, Value, Verdict};
use super::sql::{EVENT_BUFFER, OnCommit, Settings, SqlStore};

const READERS: usize = 4;

pub type SqliteStore = SqlStore<SqliteConn>;

/// Opens (creating and migrating) the file at `path`.
pub fn open(path: &str, settings: Settings) -> Result<SqliteStore, StoreError> {
    let claim = claim(path)?;
    let mut conn = Connection::open(path)?;
    schema::configure(&conn)?;
    conn.pragma_update(None, "wal_autocheckpoint", checkpoint::WRITER_BOUND)?;
    schema::migrate(&mut conn)?;
    conn.execute("UPDATE outbox SET lease_owner = '', lease_until = 0", [])?;
    let readers = (0..READERS)
        .map(|_| {
            let c = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
            c.busy_timeout(Duration::from_secs(5))?;
            Ok(SqliteConn(c))
        })
        .collect::<Result<Vec<_>, rusqlite::Error>>()?;
    let checkpoints = Connection::open(path)?;
    schema::configure(&checkpoints)?;
    let (nudge, checkpointer) = checkpoint::spawn(checkpoints)
        .map_err(|e| StoreError::Database(format!("cannot start the checkpoint thread: {e}")))?;
    let (events, _) = broadcast::channel(EVENT_BUFFER);
    let feed = events.clone();
    // The only writer of this file: its commits are the whole log, in order.
    let on_commit: OnCommit = Box::new(move |committed| {
        nudge.after_commit();
        for event in committed {
            let _ = feed.send(Arc::new(event));
        }
    });
    let store = SqlStore::start(SqliteConn(conn), readers, settings, events, on_commit)?;
    // The writer has stopped by then, and with it the nudges that keep this thread alive.
    store.on_close(move || {
        let _ = checkpointer.join();
        drop(claim);
    });
    Ok(store)
}

/// Writes a copy of the store at `path` to the new file `to`, also while a gateway runs on
/// it: `VACUUM INTO` reads one snapshot of the file, so the copy holds every transaction
/// committed before it began and none in part, and it takes no lock a gateway waits on.
/// The copy is a store like any other, to serve from or to copy back. Answers its size.
pub fn backup(path: &str, to: &std::path::Path) -> Result<u64, StoreError> {
    if to.exists() {
        return Err(StoreError::Invalid(format!(
            "{} exists; a backup writes a new file and overwrites none",
            to.display()
        )));
    }
    if !std::path::Path::new(path).exists() {
        return Err(StoreError::NotFound(format!("a store at {path}")));
    }
    let target =
        to.to_str().ok_or_else(|| StoreError::Invalid(format!("{} is not UTF-8", to.display())))?;
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.execute("VACUUM INTO ?1", [target])?;
    std::fs::metadata(to)
        .map(|m| m.len())
        .map_err(|e| StoreError::Database(format!("reading {}: {e}", to.display())))
}

/// Makes this process the file's only gateway, for as long as the returned lock is held
/// (the operating system lets it go when the process ends, however it ends). A second
/// gateway on the same file would void the first one's leases and send its messages again,
/// as in a rolling deploy that starts the new process before the old one stopped.
fn claim(path: &str) -> Result<std::fs::File, StoreError> {
    let lock_path = format!("{path}-lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| StoreError::Database(format!("cannot open {lock_path}: {e}")))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Database(format!(
            "{path} is in use by another omnigate process (it holds {lock_path}); an embedded \
             store serves one gateway at a time, and replicas share PostgreSQL instead"
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(StoreError::Database(format!("cannot lock {lock_path}: {e}")))
        }
    }
}

pub struct SqliteConn(Connection);

impl SqliteConn {
    /// A migrated database in memory, for tests of single operations.
    #[cfg(test)]
    pub fn in_memory() -> Result<Self, StoreError> {
        let mut conn = Connection::open_in_memory()?;
        schema::migrate(&mut conn)?;
        Ok(SqliteConn(conn))
    }
}

impl Conn for SqliteConn {
    fn read<R>(
        &mut self,
        f: impl FnOnce(&dyn Db) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        f(&SqliteDb::new(&self.0))
    }

    fn transaction(&mut self, body: &mut dyn FnMut(&dyn Db) -> Verdict) -> Result<bool, String> {
        let tx = self
            .0
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| e.to_string())?;
        if body(&SqliteDb::new(&tx)) == Verdict::Rollback {
            tx.rollback().map_err(|e| format!("rollback: {e}"))?;
            return Ok(false);
        }
        tx.commit().map_err(|e| e.to_string())?;
        Ok(true)
    }
}

struct SqliteDb<'a> {
    conn: &'a Connection,
    tail: Cell<Option<u64>>,
}

impl<'a> SqliteDb<'a> {
    fn new(conn: &'a Connection) -> Self {
        SqliteDb { conn, tail: Cell::new(None) }
    }
}

/// SQLite reads `$1` as a parameter named "$1", numbered by first appearance: each slot is
/// bound to the argument its name numbers, so the shared statements run as written. Slots
/// are read by number, which is an array look-up, where binding by name would search the
/// statement's names for every argument.
fn bind(stmt: &mut rusqlite::Statement<'_>, args: &[Arg<'_>]) -> Result<(), StoreError> {
    let slots = stmt.parameter_count();
    if args.len() != slots {
        return Err(StoreError::Database(format!(
            "statement takes {slots} arguments, given {}",
            args.len()
        )));
    }
    for slot in 1..=slots {
        let arg = stmt
            .parameter_name(slot)
            .and_then(|name| name.strip_prefix('$')?.parse::<usize>().ok())
            .and_then(|n| args.get(n.checked_sub(1)?))
            .ok_or_else(|| {
                StoreError::Database(format!("parameter {slot} is not one of $1..${slots}"))
            })?;
        stmt.raw_bind_parameter(slot, arg)?;
    }
    Ok(())
}

impl ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Arg::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Arg::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Arg::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        })
    }
}

impl Db for SqliteDb<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&self, sql: &str, args: &[Arg<'_>]) -> Result<u64, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        bind(&mut stmt, args)?;
        Ok(stmt.raw_execute()? as u64)
    }

    fn event_tail(&self) -> &Cell<Option<u64>> {
        &self.tail
    }

    fn query(&self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Row>, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let width = stmt.column_count();
        bind(&mut stmt, args)?;
        let mut rows = stmt.raw_query();
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let mut values = Vec::with_capacity(width);
            for i in 0..width {
                values.push(match row.get_ref(i)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(n) => Value::Int(n),
                    ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                    other => {
                        return Err(StoreError::Database(format!(
                            "column {i} has an unexpected type {:?}",
                            other.data_type()
                        )));
                    }
                });
            }
            out.push(Row(values));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::SqliteConn;
    use crate::store::sql::db::{Conn, args};

    #[test]
    fn placeholders_bind_by_number_whatever_their_order() {
        let mut conn = SqliteConn::in_memory().expect("db");
        let row = conn
            .read(|db| {
                db.query_opt("SELECT $2 || '-' || $1 || '-' || $2, $3 + 1", args!["a", "b", 41i64])
            })
            .expect("query")
            .expect("row");
        assert_eq!(row.text(0).expect("text"), "b-a-b");
        assert_eq!(row.int(1).expect("int"), 42);
        let wrong = conn.read(|db| db.query("SELECT $1, $2", args!["only one"]));
        assert!(wrong.is_err(), "a missing argument is an error, not a NULL");
    }
}
