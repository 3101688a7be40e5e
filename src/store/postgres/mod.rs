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
use postgres::{Client, NoTls, Statement};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::error::Error;
use std::path::Path;
use std::pin::Pin;
use std::task::Poll;
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
                let config = omnigate_adapters::tls::client_config(ca_file)
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
    let mut setup = connect(target)?;
    if migrate {
        schema::migrate(&mut setup)?;
    } else {
        schema::check(&mut setup)?;
    }
    drop(setup);
    let writer = PgConn::connect(target)?;
    let readers = (0..READERS).map(|_| PgConn::connect(target)).collect::<Result<Vec<_>, _>>()?;
    let (events, _) = broadcast::channel(EVENT_BUFFER);
    let follower = follow::spawn(target, events.clone())?;
    // The follower broadcasts every replica's events, this one's included.
    let store = SqlStore::start(writer, readers, settings, events, Box::new(|_| {}))?;
    store.on_close(move || follower.stop());
    Ok(store)
}

/// A connection with its prepared statements; it reconnects when the server went away.
///
/// It runs on the asynchronous driver, on a runtime of its own that the owning thread
/// blocks on (the store's writer and readers are threads), because that driver sends
/// requests without waiting for the answers to earlier ones: a batch's inserts go out
/// together with the next statement that needs an answer, one round trip for them all.
pub struct PgConn {
    target: Target,
    /// Both always present but while being dropped.
    runtime: Option<tokio::runtime::Runtime>,
    client: Option<tokio_postgres::Client>,
    statements: HashMap<String, Statement>,
}

impl PgConn {
    pub fn connect(target: &Target) -> Result<Self, StoreError> {
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| {
                StoreError::Database(format!("cannot start the PostgreSQL driver: {e}"))
            })?;
        let client = runtime.block_on(connect_async(target))?;
        Ok(PgConn {
            target: target.clone(),
            runtime: Some(runtime),
            client: Some(client),
            statements: HashMap::new(),
        })
    }

    /// The connection, opened again when the server closed it.
    fn session(&mut self) -> Result<Session<'_>, StoreError> {
        let runtime = self.runtime.as_ref().ok_or(StoreError::Closed)?;
        if self.client.as_ref().is_none_or(tokio_postgres::Client::is_closed) {
            self.statements.clear();
            self.client = Some(runtime.block_on(connect_async(&self.target))?);
        }
        let PgConn { runtime: Some(runtime), client: Some(client), statements, .. } = self else {
            return Err(StoreError::Closed);
        };
        Ok(Session {
            runtime,
            client,
            statements: RefCell::new(statements),
            held: RefCell::new(Vec::new()),
            tail: Cell::new(None),
        })
    }
}

impl Drop for PgConn {
    fn drop(&mut self) {
        let Some(runtime) = self.runtime.take() else { return };
        // Dropping the client queues a goodbye to the server; the connection's task sends
        // it if it gets to run, which it cannot on an async worker (where the last owner
        // may be dropping the store), nor need to: the server also ends on a closed socket.
        drop(self.client.take());
        if tokio::runtime::Handle::try_current().is_err() {
            runtime.block_on(tokio::task::yield_now());
        }
        // Unlike dropping it, this does not block, so it may happen on an async worker.
        runtime.shutdown_background();
    }
}

/// A synchronous connection, for what the store does outside its batches: migrations and
/// waiting for notifications.
fn connect(target: &Target) -> Result<Client, StoreError> {
    let connected = match &target.tls {
        None => Client::connect(&target.url, NoTls),
        Some(tls) => Client::connect(&target.url, tls.clone()),
    };
    connected.map_err(connect_error)
}

async fn connect_async(target: &Target) -> Result<tokio_postgres::Client, StoreError> {
    let connected = match &target.tls {
        None => tokio_postgres::connect(&target.url, NoTls).await.map(|(client, connection)| {
            tokio::spawn(drive(connection));
            client
        }),
        Some(tls) => {
            tokio_postgres::connect(&target.url, tls.clone()).await.map(|(client, connection)| {
                tokio::spawn(drive(connection));
                client
            })
        }
    };
    connected.map_err(connect_error)
}

/// Moves the connection's messages while its owner waits on the runtime.
async fn drive(connection: impl Future<Output = Result<(), postgres::Error>>) {
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "PostgreSQL connection ended");
    }
}

fn connect_error(e: postgres::Error) -> StoreError {
    // The driver's Display hides the cause (a refused certificate, a bad password).
    let cause = std::error::Error::source(&e).map(|c| format!(": {c}")).unwrap_or_default();
    StoreError::Database(format!("connecting to PostgreSQL: {e}{cause}"))
}

impl Conn for PgConn {
    fn read<R>(
        &mut self,
        f: impl FnOnce(&dyn Db) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let session = self.session()?;
        let answer = f(&session)?;
        session.flush()?;
        Ok(answer)
    }

    fn transaction(&mut self, body: &mut dyn FnMut(&dyn Db) -> Verdict) -> Result<bool, String> {
        let session = self.session().map_err(|e| e.to_string())?;
        if let Err(e) =
            session.simple(&format!("BEGIN; SELECT pg_advisory_xact_lock({BATCH_LOCK})"))
        {
            // Leave no open (or failed) block behind for the next batch to stumble on.
            let _ = session.simple("ROLLBACK");
            return Err(format!("taking the batch lock: {e}"));
        }
        let Verdict::Commit { events } = body(&session) else {
            session.held.borrow_mut().clear();
            session.simple("ROLLBACK").map_err(|e| format!("rollback: {e}"))?;
            return Ok(false);
        };
        let end = if events { format!("NOTIFY {EVENTS_CHANNEL}; COMMIT") } else { "COMMIT".into() };
        if let Err(e) = session.simple(&end) {
            // A held statement failed (the server then ends the block on COMMIT) or the
            // commit did: either way nothing of the batch is stored.
            let _ = session.simple("ROLLBACK");
            return Err(e.to_string());
        }
        Ok(true)
    }
}

type Pending<'a> = Pin<Box<dyn Future<Output = Result<u64, postgres::Error>> + 'a>>;

/// One connection's statements for one read or batch.
struct Session<'a> {
    runtime: &'a tokio::runtime::Runtime,
    client: &'a tokio_postgres::Client,
    statements: RefCell<&'a mut HashMap<String, Statement>>,
    /// Statements run with `execute_later`, not yet sent.
    held: RefCell<Vec<(Statement, Vec<Value>)>>,
    tail: Cell<Option<u64>>,
}

impl Session<'_> {
    fn statement(&self, sql: &str) -> Result<Statement, StoreError> {
        if let Some(statement) = self.statements.borrow().get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.runtime.block_on(self.client.prepare(sql))?;
        self.statements.borrow_mut().insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    /// Sends the held statements and then `last`, back to back, and waits for all their
    /// answers; the first error among them is the answer.
    fn send<T>(
        &self,
        last: impl Future<Output = Result<T, postgres::Error>>,
    ) -> Result<T, StoreError> {
        let held = std::mem::take(&mut *self.held.borrow_mut());
        let params: Vec<Vec<&(dyn ToSql + Sync)>> = held
            .iter()
            .map(|(_, args)| args.iter().map(|v| v as &(dyn ToSql + Sync)).collect())
            .collect();
        let pending: Vec<Pending<'_>> = held
            .iter()
            .zip(&params)
            .map(|((statement, _), p)| Box::pin(self.client.execute(statement, p)) as Pending<'_>)
            .collect();
        let (held, last) = self.runtime.block_on(in_order(pending, last));
        held?;
        Ok(last?)
    }

    /// Runs `sql` (statements without parameters) after the held ones.
    fn simple(&self, sql: &str) -> Result<(), StoreError> {
        self.send(self.client.batch_execute(sql))
    }

    /// Runs the held statements, if any.
    fn flush(&self) -> Result<(), StoreError> {
        if self.held.borrow().is_empty() {
            return Ok(());
        }
        self.send(async { Ok(()) })
    }
}

/// Polls `pending` in order and then `last` until all are done. The driver sends a request
/// when its future is first polled, so the server gets them in this order, pipelined.
async fn in_order<T>(
    mut pending: Vec<Pending<'_>>,
    last: impl Future<Output = Result<T, postgres::Error>>,
) -> (Result<(), postgres::Error>, Result<T, postgres::Error>) {
    let mut last = std::pin::pin!(last);
    let mut done = vec![false; pending.len()];
    let mut first_error = None;
    let mut answer = None;
    let last = std::future::poll_fn(|cx| {
        for (future, done) in pending.iter_mut().zip(done.iter_mut()).filter(|(_, d)| !**d) {
            if let Poll::Ready(outcome) = future.as_mut().poll(cx) {
                *done = true;
                if let Err(e) = outcome {
                    first_error.get_or_insert(e);
                }
            }
        }
        if answer.is_none()
            && let Poll::Ready(outcome) = last.as_mut().poll(cx)
        {
            answer = Some(outcome);
        }
        match answer.take() {
            Some(outcome) if done.iter().all(|d| *d) => Poll::Ready(outcome),
            unfinished => {
                answer = unfinished;
                Poll::Pending
            }
        }
    })
    .await;
    (first_error.map_or(Ok(()), Err), last)
}

impl Db for Session<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&self, sql: &str, args: &[Arg<'_>]) -> Result<u64, StoreError> {
        let statement = self.statement(sql)?;
        self.send(self.client.execute(&statement, &params(args)))
    }

    fn execute_later(&self, sql: &str, args: &[Arg<'_>]) -> Result<(), StoreError> {
        let statement = self.statement(sql)?;
        self.held.borrow_mut().push((statement, args.iter().map(|a| a.to_value()).collect()));
        Ok(())
    }

    fn query(&self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Row>, StoreError> {
        let statement = self.statement(sql)?;
        let rows = self.send(self.client.query(&statement, &params(args)))?;
        rows.iter().map(to_row).collect()
    }

    fn event_tail(&self) -> &Cell<Option<u64>> {
        &self.tail
    }
}

fn params<'a>(args: &'a [Arg<'a>]) -> Vec<&'a (dyn ToSql + Sync)> {
    args.iter().map(|a| a as &(dyn ToSql + Sync)).collect()
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

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        self.as_arg().to_sql(ty, out)
    }

    fn accepts(ty: &Type) -> bool {
        <Arg<'_> as ToSql>::accepts(ty)
    }

    to_sql_checked!();
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
