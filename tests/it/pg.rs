//! Fresh PostgreSQL databases for tests, on the server `.ci/run` starts (or the one
//! `OMNIGATE_TEST_POSTGRES` names: a URL whose user may create databases).

use std::sync::atomic::{AtomicU32, Ordering};

const DEFAULT_SERVER: &str = "postgres://omnigate:omnigate@127.0.0.1:5432/postgres";

fn server() -> String {
    std::env::var("OMNIGATE_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_SERVER.to_string())
}

/// The CA that signed the test server's certificate (`scripts/postgres.sh`).
pub fn ca_file() -> std::path::PathBuf {
    std::env::var("OMNIGATE_TEST_POSTGRES_CA")
        .unwrap_or_else(|_| "/var/lib/omnigate-test-pg/ca.pem".into())
        .into()
}

/// Runs `f` with a connection to the server's admin database, off the async workers.
pub fn with_admin<R: Send + 'static>(
    f: impl FnOnce(&mut postgres::Client) -> R + Send + 'static,
) -> R {
    let url = server();
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("admin connection");
        f(&mut c)
    })
    .join()
    .expect("admin work")
}

/// A new empty database, dropped when this value is.
pub struct TestDb {
    pub url: String,
    pub name: String,
}

impl TestDb {
    pub fn create() -> TestDb {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "omnigate_t{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            omnigate::model::now_ms() % 100_000
        );
        let admin = server();
        let sql = format!("CREATE DATABASE {name}");
        run_blocking(&admin, &sql);
        let base =
            admin.rsplit_once('/').map(|(b, _)| b.to_string()).expect("server URL has a database");
        TestDb { url: format!("{base}/{name}"), name }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let admin = server();
        // Off any async runtime: the sync driver runs one of its own.
        let _ = std::thread::spawn(move || {
            if let Ok(mut c) = postgres::Client::connect(&admin, postgres::NoTls) {
                let _ = c.batch_execute(&sql);
            }
        })
        .join();
    }
}

fn run_blocking(url: &str, sql: &str) {
    let (url, sql) = (url.to_string(), sql.to_string());
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap_or_else(|e| {
            panic!("PostgreSQL is needed for these tests (run scripts/test.sh, or set OMNIGATE_TEST_POSTGRES): {url}: {e}")
        });
        c.batch_execute(&sql).expect(&sql);
    })
    .join()
    .expect("admin statement");
}
