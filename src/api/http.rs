//! The HTTP ingress: provider webhooks at `/webhooks/{provider}/{account}/{hook}`, one-click
//! unsubscribe links at `/unsubscribe/{account}/{token}`, and `/healthz`, `/readyz`,
//! `/metrics`. A webhook is answered 2xx only after what it reported
//! is stored, so a provider redelivers anything we could not keep.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use omnigate_adapters::{Parsed, WebhookError, WebhookRequest};

use crate::app::AppState;

/// Webhook bodies larger than this are refused before parsing.
const MAX_WEBHOOK_BYTES: usize = 1024 * 1024;
/// How long `/readyz` waits for the store to answer.
const READY_STORE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Serves `app` until `stop`, then lets requests in flight finish. The ingress faces the
/// internet (providers call it), so a client that never completes its request headers is
/// cut off after `header_timeout` instead of holding a connection for good: axum's own
/// `serve` gives hyper no timer, and without one hyper's header timeout never fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    header_timeout: std::time::Duration,
    stop: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(header_timeout);
    let connections = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => break,
        };
        let stream = match accepted {
            Ok((mut stream, _)) => {
                omnigate_adapters::http::no_nagle(&mut stream);
                stream
            }
            Err(e) => {
                // Out of file descriptors, most likely: give connections time to close.
                tracing::warn!(error = %e, "the HTTP ingress cannot accept a connection");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(app.clone());
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        let connection = connections.watch(connection.into_owned());
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        });
    }
    connections.shutdown().await;
    Ok(())
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/webhooks/{provider}/{account}/{hook}",
            post(webhook)
                .get(handshake)
                .layer(axum::middleware::from_fn(crate::telemetry::trace_webhook)),
        )
        // A mail client POSTs (RFC 8058); a GET, which link scanners make, changes nothing.
        .route("/unsubscribe/{account}/{token}", post(unsubscribe))
        .fallback(no_route)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_WEBHOOK_BYTES))
        .with_state(state)
}

/// Says what was asked for, so that a provider's console (which shows the answer's body)
/// tells a mistyped webhook URL from a gateway that is down.
async fn no_route(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let why = format!(
        "no endpoint {method} {}: provider webhooks go to /webhooks/{{provider}}/{{account}}/{{hook}}",
        uri.path()
    );
    (StatusCode::NOT_FOUND, why).into_response()
}

/// Ready while not draining and while the store answers a read: a replica cut off from its
/// database can accept nothing durably, so a load balancer should send calls elsewhere.
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if !state.is_ready() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    let unavailable = |why: String| (StatusCode::SERVICE_UNAVAILABLE, why).into_response();
    match tokio::time::timeout(READY_STORE_WAIT, state.store.last_sequence()).await {
        Ok(Ok(_)) => (StatusCode::OK, "ready").into_response(),
        Ok(Err(e)) => unavailable(format!("store unavailable: {e}")),
        Err(_) => unavailable(format!("store unavailable: no answer in {READY_STORE_WAIT:?}")),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.encode())
        .into_response()
}

/// A one-click unsubscribe (RFC 8058): the link's signature names the person, whose mail
/// from the account is barred from then on. Answered 200 with no body once stored.
async fn unsubscribe(
    State(state): State<Arc<AppState>>,
    Path((account_id, token)): Path<(String, String)>,
) -> Response {
    let Some(one_click) = state.accounts.get(&account_id).and_then(|a| a.one_click.as_ref()) else {
        return (StatusCode::NOT_FOUND, format!("no unsubscribe links for account {account_id:?}"))
            .into_response();
    };
    let Some(address) = omnigate_adapters::email::unsubscribe::verify(&one_click.secret, &token)
    else {
        state.metrics.webhook(&account_id, "rejected");
        return (StatusCode::FORBIDDEN, "this unsubscribe link is not valid").into_response();
    };
    let identity = crate::model::Identity { channel: omnigate_adapters::Channel::Email, address };
    let reason = "one-click unsubscribe link".to_string();
    let opted_out = omnigate_adapters::Consent::OptedOut;
    match state.store.set_consent(&account_id, identity, (opted_out, false), reason).await {
        Ok(_) => {
            state.metrics.webhook(&account_id, "unsubscribed");
            StatusCode::OK.into_response()
        }
        Err(e) => {
            state.metrics.webhook(&account_id, "unavailable");
            tracing::error!(account = %account_id, error = %e, "unsubscribe not stored");
            (StatusCode::SERVICE_UNAVAILABLE, "not stored, retry later").into_response()
        }
    }
}

/// A provider's subscription handshake (Meta's `hub.challenge`).
async fn handshake(
    State(state): State<Arc<AppState>>,
    Path((provider, account_id, hook)): Path<(String, String, String)>,
    uri: Uri,
) -> Response {
    let Some(account) = state.accounts.get(&account_id).filter(|a| a.provider == provider) else {
        return (StatusCode::NOT_FOUND, format!("no {provider} account {account_id:?}"))
            .into_response();
    };
    match account.webhooks.verify_subscription(&hook, uri.query().unwrap_or_default()) {
        Ok(challenge) => (StatusCode::OK, challenge).into_response(),
        Err(e) => (refusal_status(&e), e.to_string()).into_response(),
    }
}

fn refusal_status(e: &WebhookError) -> StatusCode {
    match e {
        WebhookError::Signature(_) => StatusCode::FORBIDDEN,
        WebhookError::Malformed(_) => StatusCode::BAD_REQUEST,
        WebhookError::UnknownHook(_) => StatusCode::NOT_FOUND,
    }
}

async fn webhook(
    State(state): State<Arc<AppState>>,
    Path((provider, account_id, hook)): Path<(String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(account) = state.accounts.get(&account_id).filter(|a| a.provider == provider) else {
        return (StatusCode::NOT_FOUND, format!("no {provider} account {account_id:?}"))
            .into_response();
    };
    let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or(uri.path());
    let request = WebhookRequest {
        public_url: format!("{}{}", state.public_url, path_and_query),
        hook,
        headers: headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect::<BTreeMap<_, _>>(),
        body,
    };
    let Parsed { events, ack, ignored } = match account.webhooks.handle(&request) {
        Ok(parsed) => parsed,
        Err(e) => {
            let status = refusal_status(&e);
            let result = if status == StatusCode::FORBIDDEN { "rejected" } else { "malformed" };
            state.metrics.webhook(&account.id, result);
            tracing::warn!(account = %account.id, error = %e, "webhook refused");
            return (status, e.to_string()).into_response();
        }
    };
    if ignored > 0 {
        state.metrics.webhook_ignored(&account.id, ignored);
        tracing::debug!(account = %account.id, ignored, "webhook parts skipped as unknown or unreadable");
    }
    for event in events {
        let stored = crate::inbound::apply(&state, account, event).await;
        if let Err(e) = stored {
            state.metrics.webhook(&account.id, "unavailable");
            tracing::error!(account = %account.id, error = %e, "webhook not stored; the provider will redeliver");
            return (StatusCode::SERVICE_UNAVAILABLE, "not stored, retry later").into_response();
        }
    }
    state.metrics.webhook(&account.id, "ok");
    ([(header::CONTENT_TYPE, ack.content_type)], ack.body).into_response()
}
