//! Media the sandboxes keep for people's inbound messages, and the CDN that serves it: a
//! listener of its own, so that it is another origin than the provider's API, as Twilio's
//! `mms.twiliocdn.com` and Meta's attachment hosts are. Like a CDN serving pre-signed URLs,
//! it refuses a request that carries an `Authorization` header (S3 answers 400, "Only one
//! auth mechanism allowed"): a client that forwarded the provider's credentials across a
//! redirect fails here instead of leaking them unnoticed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// One stored item.
#[derive(Clone)]
pub struct Item {
    pub mime_type: String,
    pub bytes: Bytes,
    /// Served as its bytes and then nothing more, the connection left open: a download that
    /// stalls, as one over a failing link does.
    pub stalls: bool,
}

#[derive(Default)]
struct Items {
    by_token: Mutex<HashMap<String, Item>>,
    next: AtomicU64,
}

/// The store and its CDN. Cloning shares both.
#[derive(Clone)]
pub struct Shelf {
    items: Arc<Items>,
    cdn: SocketAddr,
}

impl Shelf {
    /// Starts the CDN on a free port of `ip`.
    pub async fn start(ip: std::net::IpAddr) -> std::io::Result<Shelf> {
        let items = Arc::new(Items::default());
        let listener = tokio::net::TcpListener::bind((ip, 0)).await?;
        let cdn = listener.local_addr()?;
        let app = Router::new().route("/media/{token}", get(serve)).with_state(items.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "sandbox media CDN stopped");
            }
        });
        Ok(Shelf { items, cdn })
    }

    /// Keeps `bytes`; answers its token, an opaque id made of digits (Graph media ids are).
    pub fn put(&self, mime_type: &str, bytes: impl Into<Bytes>) -> String {
        self.keep(Item { mime_type: mime_type.to_string(), bytes: bytes.into(), stalls: false })
    }

    /// Keeps `item`; answers its token.
    pub fn keep(&self, item: Item) -> String {
        let token =
            format!("{}", 1_000_000_000_000_000 + self.items.next.fetch_add(1, Ordering::Relaxed));
        if let Ok(mut items) = self.items.by_token.lock() {
            items.insert(token.clone(), item);
        }
        token
    }

    /// Deletes an item; answers whether it was kept.
    pub fn remove(&self, token: &str) -> bool {
        self.items.by_token.lock().is_ok_and(|mut items| items.remove(token).is_some())
    }

    /// How many items are kept.
    pub fn len(&self) -> usize {
        self.items.by_token.lock().map(|items| items.len()).unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, token: &str) -> Option<Item> {
        self.items.by_token.lock().ok()?.get(token).cloned()
    }

    /// Where the CDN serves the item, with no credentials.
    pub fn cdn_url(&self, token: &str) -> String {
        format!("http://{}/media/{token}", self.cdn)
    }
}

async fn serve(
    State(items): State<Arc<Items>>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Response {
    if headers.contains_key(header::AUTHORIZATION) {
        return (StatusCode::BAD_REQUEST, "Only one auth mechanism allowed").into_response();
    }
    let item = items.by_token.lock().ok().and_then(|i| i.get(&token).cloned());
    match item {
        Some(item) => body(item),
        None => (StatusCode::NOT_FOUND, "no such media").into_response(),
    }
}

/// An item as a provider serves its bytes.
pub fn body(item: Item) -> Response {
    if item.stalls {
        use futures_util::StreamExt;
        let first = futures_util::stream::once(async move { Ok::<_, std::io::Error>(item.bytes) });
        let body = axum::body::Body::from_stream(first.chain(futures_util::stream::pending()));
        return ([(header::CONTENT_TYPE, item.mime_type)], body).into_response();
    }
    ([(header::CONTENT_TYPE, item.mime_type)], item.bytes).into_response()
}
