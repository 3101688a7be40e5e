//! The seam between the store's operations and a SQL database: statements with `$N`
//! placeholders, arguments that are integers, text or NULL, and rows of the same. Both
//! backends speak this much SQL alike, so every operation is written once.

use std::cell::Cell;

use crate::store::StoreError;

/// Where the two SQL dialects still differ, an operation asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// One connection (or transaction) that runs statements.
pub trait Db {
    fn dialect(&self) -> Dialect;
    /// Runs a statement; answers the number of rows it changed.
    fn execute(&self, sql: &str, args: &[Arg<'_>]) -> Result<u64, StoreError>;
    /// Runs a statement of which only success matters. A backend may hold it and send it
    /// with the statements after it, one round trip for several; its error then comes
    /// back from one of those or from the commit, and fails the transaction either way.
    fn execute_later(&self, sql: &str, args: &[Arg<'_>]) -> Result<(), StoreError> {
        self.execute(sql, args).map(drop)
    }
    fn query(&self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Row>, StoreError>;
    /// The last event sequence as this transaction knows it: read from the log once, then
    /// advanced by each event it appends (only one transaction appends at a time).
    fn event_tail(&self) -> &Cell<Option<u64>>;
}

impl dyn Db + '_ {
    pub fn query_opt(&self, sql: &str, args: &[Arg<'_>]) -> Result<Option<Row>, StoreError> {
        Ok(self.query(sql, args)?.into_iter().next())
    }
}

/// A connection a store keeps: it runs reads as they come and writes in transactions.
pub trait Conn: Send + 'static {
    fn read<R>(
        &mut self,
        f: impl FnOnce(&dyn Db) -> Result<R, StoreError>,
    ) -> Result<R, StoreError>;

    /// Runs `body` in one transaction and commits or rolls it back as `body` answers;
    /// answers whether it committed. An error means nothing was committed.
    fn transaction(&mut self, body: &mut dyn FnMut(&dyn Db) -> Verdict) -> Result<bool, String>;
}

/// What a transaction's body decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Rollback,
    /// Commit; `events` says whether it appended events (others follow the log on that).
    Commit {
        events: bool,
    },
}

/// A statement argument.
#[derive(Clone, Copy, Debug)]
pub enum Arg<'a> {
    Null,
    Int(i64),
    Text(&'a str),
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(s: &'a str) -> Self {
        Arg::Text(s)
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(s: &'a String) -> Self {
        Arg::Text(s)
    }
}

impl<'a> From<&'a Option<String>> for Arg<'a> {
    fn from(s: &'a Option<String>) -> Self {
        s.as_deref().map_or(Arg::Null, Arg::Text)
    }
}

impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(s: Option<&'a str>) -> Self {
        s.map_or(Arg::Null, Arg::Text)
    }
}

impl From<i64> for Arg<'_> {
    fn from(i: i64) -> Self {
        Arg::Int(i)
    }
}

impl From<Option<i64>> for Arg<'_> {
    fn from(i: Option<i64>) -> Self {
        i.map_or(Arg::Null, Arg::Int)
    }
}

impl From<u32> for Arg<'_> {
    fn from(i: u32) -> Self {
        Arg::Int(i.into())
    }
}

/// Counts and positions beyond i64 do not occur; they saturate rather than wrap.
impl From<u64> for Arg<'_> {
    fn from(i: u64) -> Self {
        Arg::Int(i64::try_from(i).unwrap_or(i64::MAX))
    }
}

impl From<usize> for Arg<'_> {
    fn from(i: usize) -> Self {
        Arg::Int(i64::try_from(i).unwrap_or(i64::MAX))
    }
}

/// `args![a, b]`: the arguments of a statement, in placeholder order.
macro_rules! args {
    ($($a:expr),* $(,)?) => { &[$($crate::store::sql::db::Arg::from($a)),*] };
}
pub(crate) use args;

/// A column value as read, or an argument kept past its statement's call.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
}

impl Value {
    pub fn as_arg(&self) -> Arg<'_> {
        match self {
            Value::Null => Arg::Null,
            Value::Int(n) => Arg::Int(*n),
            Value::Text(s) => Arg::Text(s),
        }
    }
}

impl Arg<'_> {
    pub fn to_value(self) -> Value {
        match self {
            Arg::Null => Value::Null,
            Arg::Int(n) => Value::Int(n),
            Arg::Text(s) => Value::Text(s.to_string()),
        }
    }
}

/// One result row.
#[derive(Debug)]
pub struct Row(pub Vec<Value>);

impl Row {
    fn column(&self, i: usize) -> Result<&Value, StoreError> {
        self.0.get(i).ok_or_else(|| StoreError::Database(format!("no column {i} in the result")))
    }

    pub fn text(&self, i: usize) -> Result<String, StoreError> {
        self.opt_text(i)?.ok_or_else(|| StoreError::Database(format!("column {i} is NULL")))
    }

    pub fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        match self.column(i)? {
            Value::Null => Ok(None),
            Value::Text(s) => Ok(Some(s.clone())),
            Value::Int(n) => Err(StoreError::Database(format!("column {i} is {n}, not text"))),
        }
    }

    pub fn int(&self, i: usize) -> Result<i64, StoreError> {
        self.opt_int(i)?.ok_or_else(|| StoreError::Database(format!("column {i} is NULL")))
    }

    pub fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError> {
        match self.column(i)? {
            Value::Null => Ok(None),
            Value::Int(n) => Ok(Some(*n)),
            other => Err(StoreError::Database(format!("column {i} is {other:?}, not an integer"))),
        }
    }

    /// A stored document (JSON text) as its type.
    pub fn doc<T: serde::de::DeserializeOwned>(&self, i: usize) -> Result<T, StoreError> {
        match self.column(i)? {
            Value::Text(s) => Ok(serde_json::from_str(s)?),
            other => Err(StoreError::Database(format!("column {i} is {other:?}, not a document"))),
        }
    }
}
