//! Start-up and shutdown: builds the store, the accounts, the dispatcher and both servers
//! from a [`Config`], recovers unfinished work, and drains on the way out.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use omnigate_adapters::email::sandbox::{self as smtp_sandbox, SmtpSandbox};
use omnigate_adapters::meta::sandbox::{self as meta_sandbox, SandboxHandle as MetaSandboxHandle};
use omnigate_adapters::twilio::sandbox::{self, SandboxHandle};
use omnigate_proto::v1::gateway_server::GatewayServer;
use sha2::Digest;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

use crate::accounts::{Accounts, SandboxBases};
use crate::api::auth::ApiTokens;
use crate::api::{grpc::GatewayService, http};
use crate::config::{Backend, Config, ConfigError};
use crate::dispatch::dispatcher::Policy;
use crate::dispatch::route::AccountRoute;
use crate::dispatch::{Backoff, Dispatcher, Outlet};
use crate::fleet::{Keeper, Ownership, WEBHOOKS, mailbox_key, route_key};
use crate::retention::{RETENTION, Retention};
use crate::store::Store;
use crate::store::sql::Settings;
use crate::telemetry::Metrics;
use crate::webhooks::Deliveries;

/// Recovery claims the outbox in pages of this many.
const RECOVERY_PAGE: usize = 1000;

/// What the API handlers share.
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub outlet: Outlet,
    pub accounts: Accounts,
    pub metrics: Arc<Metrics>,
    pub public_url: String,
    pub default_ttl: Duration,
    pub deliveries: Arc<Deliveries>,
    /// What this replica owns: routes it dispatches, webhooks, mailboxes.
    pub ownership: Arc<Ownership>,
    /// Cancelled when shutdown begins: long-lived streams end so the servers can stop.
    pub stopping: CancellationToken,
    pub api_tokens: ApiTokens,
    /// One permit per SendMessage waiting for the store (`server.max_pending_sends`).
    pub pending_sends: tokio::sync::Semaphore,
    ready: AtomicBool,
}

impl AppState {
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

/// A running gateway.
pub struct Gateway {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub public_url: String,
    /// The in-process Twilio sandbox, when the config starts one.
    pub twilio_sandbox: Option<SandboxHandle>,
    /// The in-process Meta Graph API sandbox, when the config starts one.
    pub meta_sandbox: Option<MetaSandboxHandle>,
    /// The in-process SMTP sandbox, when the config starts one.
    pub email_sandbox: Option<SmtpSandbox>,
    state: Arc<AppState>,
    stop_servers: CancellationToken,
    mailboxes: Vec<JoinHandle<()>>,
    grpc: JoinHandle<Result<(), tonic::transport::Error>>,
    http: JoinHandle<std::io::Result<()>>,
    dispatcher: Dispatcher,
    keeper: JoinHandle<()>,
    retention: Option<JoinHandle<()>>,
    stop_keeper: CancellationToken,
    drain_timeout: Duration,
}

/// Opens the configured store (creating it, and migrating it unless `migrate` is off).
pub async fn open_store(
    config: &Config,
    node_id: &str,
    metrics: Arc<Metrics>,
    migrate: bool,
) -> anyhow::Result<Arc<dyn Store>> {
    let settings = Settings {
        owner: node_id.to_string(),
        lease: config.lease(),
        max_batch: config.store.group_commit_max,
        metrics,
    };
    let inactivity = Duration::from_secs(config.conversations.inactivity_timeout_secs);
    let backend = config.backend().context("store.url names no supported database")?;
    // Both drivers block: open them off the async workers.
    let store: Arc<dyn Store> = match backend {
        Backend::Sqlite(path) => {
            let path = path.to_string();
            tokio::task::spawn_blocking(move || {
                crate::store::sqlite::open(&path, settings)
                    .with_context(|| format!("opening store {path}"))
            })
            .await??
            .with_inactivity(inactivity)
            .into_arc()
        }
        Backend::Postgres(url) => {
            let target = crate::store::postgres::Target::new(url, config.store.ca_file.as_deref())?;
            tokio::task::spawn_blocking(move || {
                crate::store::postgres::open(&target, settings, migrate)
                    .context("opening the PostgreSQL store")
            })
            .await??
            .with_inactivity(inactivity)
            .into_arc()
        }
    };
    Ok(store)
}

pub fn node_id(config: &Config) -> String {
    if !config.server.node_id.is_empty() {
        return config.server.node_id.clone();
    }
    let host =
        std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    format!("{}-{}", if host.is_empty() { "omnigate" } else { &host }, std::process::id())
}

impl Gateway {
    pub async fn start(config: Config) -> anyhow::Result<Gateway> {
        // Settings read from files, checked before anything starts.
        let grpc_server = grpc_server(&config)?;
        let api_tokens = api_tokens(&config)?;
        let metrics = Arc::new(Metrics::default());
        let twilio_sandbox = match &config.sandbox.twilio {
            Some(sb) => {
                Some(sandbox::start(sb.clone()).await.context("starting the Twilio sandbox")?)
            }
            None => None,
        };
        let meta_sandbox = match &config.sandbox.meta {
            Some(sb) => {
                Some(meta_sandbox::start(sb.clone()).await.context("starting the Meta sandbox")?)
            }
            None => None,
        };
        let email_sandbox = match &config.sandbox.email {
            Some(sb) => {
                Some(smtp_sandbox::start(sb.clone()).await.context("starting the SMTP sandbox")?)
            }
            None => None,
        };
        let http_listener = TcpListener::bind(config.server.http_addr)
            .await
            .with_context(|| format!("binding server.http_addr {}", config.server.http_addr))?;
        let grpc_listener = TcpListener::bind(config.server.grpc_addr)
            .await
            .with_context(|| format!("binding server.grpc_addr {}", config.server.grpc_addr))?;
        let http_addr = http_listener.local_addr()?;
        let grpc_addr = grpc_listener.local_addr()?;
        let public_url = if config.server.public_url.is_empty() {
            format!("http://{http_addr}")
        } else {
            config.public_url()
        };

        let node = node_id(&config);
        let store =
            open_store(&config, &node, metrics.clone(), config.store.migrate_on_start).await?;
        let ownership = match config.backend() {
            Some(Backend::Postgres(_)) => Ownership::shared(),
            _ => Ownership::everything(),
        };
        let bases = SandboxBases {
            twilio: twilio_sandbox.as_ref().map(|s| s.api_base()),
            meta: meta_sandbox.as_ref().map(|s| s.api_base()),
            email: email_sandbox.as_ref().map(|s| s.addr),
        };
        let accounts = Accounts::build(&config, &public_url, &bases)?;
        if let Some(meta) = &meta_sandbox {
            for account in accounts.iter() {
                if let Some((endpoint, url)) = &account.sandbox_webhook {
                    meta.register(endpoint, account.channel, url);
                }
            }
        }
        let routes: HashMap<String, AccountRoute> = accounts
            .iter()
            .map(|a| {
                (
                    a.id.clone(),
                    AccountRoute::new(
                        a.sender.clone(),
                        a.status_callback.clone(),
                        a.rate,
                        a.pair_rate,
                    ),
                )
            })
            .collect();
        let d = &config.dispatch;
        let policy = Policy {
            fallback_after: config.fallback_after(),
            backoff: Backoff::try_new(
                Duration::from_millis(d.backoff_initial_ms),
                Duration::from_millis(d.backoff_max_ms),
                d.backoff_jitter,
            )?,
            max_attempts: d.max_attempts,
            max_in_flight: d.max_in_flight,
        };
        let dispatcher =
            Dispatcher::start(store.clone(), ownership.clone(), routes, policy, metrics.clone());
        let outlet = dispatcher.outlet();
        // Alone on its store, the process takes all unfinished work now; in a fleet, each
        // replica's keeper claims the work of the routes it comes to own.
        if !ownership.is_shared() {
            let recovered = recover(store.as_ref(), &outlet, &node, config.lease()).await?;
            if recovered > 0 {
                tracing::info!(
                    recovered,
                    "unfinished messages from an earlier run are queued again"
                );
            }
        }

        let deliveries = Deliveries::new(
            store.clone(),
            ownership.clone(),
            config.webhook_retry_schedule(),
            Duration::from_millis(config.webhooks.timeout_ms),
            metrics.clone(),
        );
        configured_webhooks(store.as_ref(), &config).await?;
        deliveries.resume().await.context("starting webhook deliveries")?;
        let stop_keeper = CancellationToken::new();
        let keeper = Keeper {
            store: store.clone(),
            ownership: ownership.clone(),
            routes: accounts
                .iter()
                .map(|a| {
                    let route = a.sender.route().to_string();
                    (route_key(&a.id, &route), (a.id.clone(), route))
                })
                .collect(),
            names: [WEBHOOKS, RETENTION]
                .into_iter()
                .map(str::to_string)
                .chain(accounts.iter().filter(|a| a.inbox.is_some()).map(|a| mailbox_key(&a.id)))
                .collect(),
            node: node.clone(),
            lease: config.lease(),
            outlet: outlet.clone(),
            deliveries: deliveries.clone(),
            metrics: metrics.clone(),
        }
        .spawn(stop_keeper.clone());
        let retention =
            Retention { events: config.events_retention(), messages: config.messages_retention() }
                .spawn(store.clone(), ownership.clone(), metrics.clone(), stop_keeper.clone());
        let stop_servers = CancellationToken::new();
        let state = Arc::new(AppState {
            deliveries,
            ownership,
            store,
            outlet,
            accounts,
            metrics,
            public_url: public_url.clone(),
            default_ttl: Duration::from_secs(d.default_ttl_secs),
            stopping: stop_servers.clone(),
            api_tokens,
            pending_sends: tokio::sync::Semaphore::new(config.server.max_pending_sends),
            ready: AtomicBool::new(true),
        });
        let mailboxes = crate::mailbox::spawn_all(&state, &stop_servers);
        let grpc = tokio::spawn(serve_grpc(
            grpc_server,
            max_request_bytes(&config),
            state.clone(),
            grpc_listener,
            stop_servers.clone(),
        ));
        let http = tokio::spawn(http::serve(
            http_listener,
            http::router(state.clone()),
            Duration::from_millis(config.server.http_header_timeout_ms),
            stop_servers.clone(),
        ));
        tracing::info!(%grpc_addr, %http_addr, %public_url, node, "omnigate is serving");
        Ok(Gateway {
            grpc_addr,
            http_addr,
            public_url,
            twilio_sandbox,
            meta_sandbox,
            email_sandbox,
            state,
            stop_servers,
            mailboxes,
            grpc,
            http,
            dispatcher,
            keeper,
            retention,
            stop_keeper,
            drain_timeout: Duration::from_secs(config.server.drain_timeout_secs),
        })
    }

    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Drains: refuses new sends, lets in-flight sends finish and record their outcomes,
    /// stops the servers and flushes the store. Answers whether every in-flight send
    /// finished within the drain timeout; anything else stays in the store.
    pub async fn shutdown(self) -> anyhow::Result<bool> {
        self.state.ready.store(false, Ordering::Release);
        let drained = self.dispatcher.drain(self.drain_timeout).await;
        // Webhook workers save their cursors before the keeper gives their lease back;
        // after the drain, in-flight outcomes are recorded, so the rest of the work can go.
        self.state.deliveries.close().await;
        self.stop_keeper.cancel();
        self.keeper.await?;
        if let Some(retention) = self.retention {
            retention.await?;
        }
        self.stop_servers.cancel();
        for reader in self.mailboxes {
            reader.await?;
        }
        self.grpc.await?.context("gRPC server")?;
        self.http.await?.context("HTTP server")?;
        self.state.store.close().await;
        tracing::info!(drained, "omnigate stopped");
        Ok(drained)
    }
}

/// Creates the config file's subscriptions that do not exist yet (by URL), from now on.
async fn configured_webhooks(store: &dyn Store, config: &Config) -> anyhow::Result<()> {
    let existing = store.list_webhooks().await?;
    for (i, sub) in config.webhooks.subscriptions.iter().enumerate() {
        if existing.iter().any(|w| w.url == sub.url) {
            continue;
        }
        // Named after its URL: replicas starting together make the same one, not two.
        let digest = sha2::Sha256::digest(sub.url.as_bytes());
        let webhook = crate::model::Webhook::new(
            format!("whk_cfg_{}", crate::model::hex(&digest[..8])),
            sub.url.clone(),
            sub.secret.resolve(&format!("webhooks.subscriptions[{i}].secret"))?,
            sub.kinds.clone(),
            store.last_sequence().await?,
        );
        let webhook = crate::model::Webhook { independent: sub.independent, ..webhook };
        store.save_webhook(webhook).await?;
    }
    Ok(())
}

async fn recover(
    store: &dyn Store,
    outlet: &Outlet,
    node: &str,
    lease: Duration,
) -> anyhow::Result<usize> {
    let mut total = 0;
    loop {
        let jobs =
            store.claim(node, lease, RECOVERY_PAGE, None).await.context("recovering the outbox")?;
        if jobs.is_empty() {
            return Ok(total);
        }
        total += jobs.len();
        jobs.into_iter().for_each(|job| outlet.submit(job));
    }
}

/// The configured API tokens, resolved; an open API beyond loopback is worth a warning.
fn api_tokens(config: &Config) -> Result<ApiTokens, ConfigError> {
    let tokens = config.api_tokens()?;
    if tokens.is_empty() && !config.server.grpc_addr.ip().is_loopback() {
        tracing::warn!(
            addr = %config.server.grpc_addr,
            "the gRPC API listens beyond loopback without server.api_tokens: anyone who reaches it can send"
        );
    }
    Ok(ApiTokens::new(tokens.iter().map(String::as_str)))
}

/// The gRPC server, over TLS (and asking for client certificates) when the config says so.
fn grpc_server(config: &Config) -> Result<tonic::transport::Server, ConfigError> {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    let s = &config.server;
    let (Some(cert), Some(key)) = (&s.tls_cert_file, &s.tls_key_file) else {
        return Ok(tonic::transport::Server::builder());
    };
    let read = |key: &str, path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| ConfigError::invalid(key, format!("cannot read {}: {e}", path.display())))
    };
    let identity =
        Identity::from_pem(read("server.tls_cert_file", cert)?, read("server.tls_key_file", key)?);
    let mut tls = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &s.tls_client_ca_file {
        tls = tls.client_ca_root(Certificate::from_pem(read("server.tls_client_ca_file", ca)?));
    }
    tonic::transport::Server::builder().tls_config(tls).map_err(|e| {
        ConfigError::invalid("server.tls_cert_file", format!("unusable certificate or key: {e}"))
    })
}

/// The largest request the API decodes: gRPC's customary 4 MiB, or more where an email
/// account takes inline attachments beyond that, with room for the text and HTML bodies.
fn max_request_bytes(config: &Config) -> usize {
    let attachments = config
        .accounts
        .iter()
        .filter_map(|a| match a {
            crate::config::AccountConfig::Email(e) => Some(e.max_attachment_bytes),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let bodies = 2 * crate::api::validate::MAX_EMAIL_BODY_BYTES + (64 << 10);
    usize::try_from(attachments).unwrap_or(usize::MAX).saturating_add(bodies).max(4 << 20)
}

async fn serve_grpc(
    builder: tonic::transport::Server,
    max_request_bytes: usize,
    state: Arc<AppState>,
    listener: TcpListener,
    stop: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<GatewayServer<GatewayService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(omnigate_proto::FILE_DESCRIPTOR_SET)
        .build_v1();
    let interceptor = state.api_tokens.clone().interceptor();
    let router = builder
        .trace_fn(crate::telemetry::grpc_span)
        .layer(crate::telemetry::CallsLayer::new(state.metrics.clone()))
        .add_service(health_service)
        .add_service(tonic::service::interceptor::InterceptedService::new(
            GatewayServer::new(GatewayService::new(state))
                .max_decoding_message_size(max_request_bytes),
            interceptor,
        ));
    let router = match reflection {
        Ok(reflection) => router.add_service(reflection),
        Err(e) => {
            tracing::warn!(error = %e, "gRPC reflection is off");
            router
        }
    };
    let stopping = {
        let health = health.clone();
        async move {
            stop.cancelled().await;
            health.set_not_serving::<GatewayServer<GatewayService>>().await;
        }
    };
    // tonic applies its own `tcp_nodelay` only to listeners it binds itself.
    let incoming = TcpListenerStream::new(listener).map(|accepted| {
        accepted.map(|mut stream| {
            omnigate_adapters::http::no_nagle(&mut stream);
            stream
        })
    });
    router.serve_with_incoming_shutdown(incoming, stopping).await
}
