//! The shared backend: PostgreSQL, for a fleet of replicas on one database. Each replica
//! runs the same group-committing writer as the embedded store, on a connection of its
//! own, plus a few reader connections and one that follows the event log.
//!
//! Every batch takes one advisory lock for its transaction, so batches commit one at a
//! time across the fleet and the event and message sequences they assign follow commit
//! order with no gaps: a reader never sees event N+1 before event N. A batch that appends
//! events NOTIFYs, so every replica's follower reads them at once, whoever wrote them.

mod follow;
mod schema;

use bytes::BytesMut;
use postgres::config::SslMode;
use postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use postgres::{Client, GenericClient, NoTls, Statement};
use std::cell::RefCell;
use std::collections::HashMap;
use std::error::Error;
use std::path::Path;
use tokio::sync::broadcast;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::StoreError;
use super::sql::db::{Arg, Conn, Db, Dialect, Row, Value, Verdict};
use super::sql::{EVENT_BUFFER, Settings, SqlStore};

/// Reader connections per replica.
const READERS: usize = 4;
/// The batch lock's key (any constant the fleet agrees on).
const BATCH_LOCK: i64 = 0x6f6d_6e69_6261_7463;
/// The channel batches notify on.
pub const EVENTS_CHANNEL: &str = "omnigate_events";

pub type PostgresStore = SqlStore<PgConn>;

/// How to reach the server: `url` (a libpq-style `postgres://` URL) and, for
/// `sslmode=require`, the CA file trusted beside the system's roots.
#[derive(Clone)]
pub struct Target {
    url: String,
    tls: Option<MakeRustlsConnect>,
}

impl Target {
    /// TLS only with `sslmode=require`, and then always verified (the server's certificate
    /// against the roots, and its name against the URL's host). `prefer`, the default,
    /// connects without TLS.
    pub fn new(url: &str, ca_file: Option<&Path>) -> Result<Target, StoreError> {
        let config: postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Invalid(format!("store.url is not a PostgreSQL URL: {e}")))?;
        let tls = match config.get_ssl_mode() {
            SslMode::Disable | SslMode::Prefer => None,
            _ => {
                let config = omnigate_adapters::email::tls::client_config(ca_file)
                    .map_err(|e| StoreError::Invalid(format!("store.ca_file: {e}")))?;
                Some(MakeRustlsConnect::new((*config).clone()))
            }
        };
        Ok(Target { url: url.to_string(), tls })
    }
}

/// Connects to the target, migrates when `migrate` is set (else checks that the schema is
/// current), and starts the store.
pub fn open(
    target: &Target,
    settings: Settings,
    migrate: bool,
) -> Result<PostgresStore, StoreError> {
    let mut writer = PgConn::connect(target)?;
    if migrate {
        schema::migrate(writer.client()?)?;
    } else {
        schema::check(writer.client()?)?;
    }
    let readers = (0..READERS).map(|_| PgConn::connect(target)).collect::<Result<Vec<_>, _>>()?;
    let (events, _) = broadcast::channel(EVENT_BUFFER);
    let follower = follow::spawn(target, events.clone())?;
    // The follower broadcasts every replica's events, this one's included.
    let store = SqlStore::start(writer, readers, settings, events, Box::new(|_| {}))?;
    store.on_close(move || follower.stop());
    Ok(store)
}

/// A connection with its prepared statements; it reconnects when the server went away.
pub struct PgConn {
    target: Target,
    /// Always present but while being dropped.
    client: Option<Client>,
    statements: HashMap<String, Statement>,
}

impl PgConn {
    pub(super) fn connect(target: &Target) -> Result<Self, StoreError> {
        Ok(PgConn {
            target: target.clone(),
            client: Some(connect(target)?),
            statements: HashMap::new(),
        })
    }

    pub(super) fn is_open(&self) -> bool {
        self.client.as_ref().is_some_and(|c| !c.is_closed())
    }

    /// The connection, opened again when the server closed it.
    pub(super) fn client(&mut self) -> Result<&mut Client, StoreError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.statements.clear();
            self.client = Some(connect(&self.target)?);
        }
        self.client.as_mut().ok_or(StoreError::Closed)
    }
}

impl Drop for PgConn {
    fn drop(&mut self) {
        // Closing the sync driver's connection blocks on its own runtime, which cannot
        // happen on an async worker: the last owner may be dropping the store there.
        if tokio::runtime::Handle::try_current().is_ok()
            && let Some(client) = self.client.take()
        {
            let _ = std::thread::spawn(move || drop(client));
        }
    }
}

fn connect(target: &Target) -> Result<Client, StoreError> {
    let connected = match &target.tls {
        None => Client::connect(&target.url, NoTls),
        Some(tls) => Client::connect(&target.url, tls.clone()),
    };
    // The driver's Display hides the cause (a refused certificate, a bad password).
    connected.map_err(|e| {
        let cause = std::error::Error::source(&e).map(|c| format!(": {c}")).unwrap_or_default();
        StoreError::Database(format!("connecting to PostgreSQL: {e}{cause}"))
    })
}

impl Conn for PgConn {
    fn read<R>(
        &mut self,
        f: impl FnOnce(&dyn Db) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        self.client()?;
        let PgConn { client: Some(client), statements, .. } = self else {
            return Err(StoreError::Closed);
        };
        f(&PgDb { client: RefCell::new(client), statements: RefCell::new(statements) })
    }

    fn transaction(&mut self, body: &mut dyn FnMut(&dyn Db) -> Verdict) -> Result<bool, String> {
        self.client().map_err(|e| e.to_string())?;
        let PgConn { client: Some(client), statements, .. } = self else {
            return Err("the connection is closed".into());
        };
        let mut tx = client.transaction().map_err(|e| e.to_string())?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&BATCH_LOCK])
            .map_err(|e| format!("taking the batch lock: {e}"))?;
        let verdict = {
            let db = PgDb { client: RefCell::new(&mut tx), statements: RefCell::new(statements) };
            body(&db)
        };
        let Verdict::Commit { events } = verdict else {
            tx.rollback().map_err(|e| format!("rollback: {e}"))?;
            return Ok(false);
        };
        if events {
            tx.batch_execute(&format!("NOTIFY {EVENTS_CHANNEL}")).map_err(|e| e.to_string())?;
        }
        tx.commit().map_err(|e| e.to_string())?;
        Ok(true)
    }
}

struct PgDb<'a, G: GenericClient> {
    client: RefCell<&'a mut G>,
    statements: RefCell<&'a mut HashMap<String, Statement>>,
}

impl<G: GenericClient> PgDb<'_, G> {
    fn statement(&self, sql: &str) -> Result<Statement, StoreError> {
        if let Some(statement) = self.statements.borrow().get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.borrow_mut().prepare(sql)?;
        self.statements.borrow_mut().insert(sql.to_string(), statement.clone());
        Ok(statement)
    }
}

fn params<'a>(args: &'a [Arg<'a>]) -> Vec<&'a (dyn ToSql + Sync)> {
    args.iter().map(|a| a as &(dyn ToSql + Sync)).collect()
}

impl<G: GenericClient> Db for PgDb<'_, G> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&self, sql: &str, args: &[Arg<'_>]) -> Result<u64, StoreError> {
        let statement = self.statement(sql)?;
        Ok(self.client.borrow_mut().execute(&statement, &params(args))?)
    }

    fn query(&self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Row>, StoreError> {
        let statement = self.statement(sql)?;
        let rows = self.client.borrow_mut().query(&statement, &params(args))?;
        rows.iter().map(to_row).collect()
    }
}

fn to_row(row: &postgres::Row) -> Result<Row, StoreError> {
    let mut values = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let ty = column.type_();
        let value = if *ty == Type::INT8 {
            row.try_get::<_, Option<i64>>(i)?.map(Value::Int)
        } else if *ty == Type::INT4 {
            row.try_get::<_, Option<i32>>(i)?.map(|n| Value::Int(n.into()))
        } else if *ty == Type::TEXT || *ty == Type::VARCHAR || *ty == Type::NAME {
            row.try_get::<_, Option<String>>(i)?.map(Value::Text)
        } else {
            return Err(StoreError::Database(format!(
                "column {} has a type the store does not read: {ty}",
                column.name()
            )));
        };
        values.push(value.unwrap_or(Value::Null));
    }
    Ok(Row(values))
}

impl ToSql for Arg<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self {
            Arg::Null => Ok(IsNull::Yes),
            Arg::Int(n) if *ty == Type::INT4 => i32::try_from(*n)?.to_sql(ty, out),
            Arg::Int(n) => n.to_sql(ty, out),
            Arg::Text(s) => s.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        <i64 as ToSql>::accepts(ty) || <i32 as ToSql>::accepts(ty) || <&str as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}
