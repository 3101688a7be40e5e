//! A local Graph API for WhatsApp, Messenger and Instagram: it authenticates the Bearer
//! token, validates send bodies as Meta does, answers with real-shaped ids and Graph error
//! objects, and posts signed webhooks (statuses, receipts, inbound messages) to the URL
//! registered for each phone number, Page or Instagram account. Rules keyed by a recipient
//! prefix inject throughput errors, server errors, slow answers, rejections and failed
//! deliveries.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::signature;
use crate::model::Channel;
use crate::sandbox_media::Shelf;
use crate::sandbox_rules::RuleSet;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxConfig {
    #[serde(default = "crate::sandbox_rules::loopback_any")]
    pub addr: SocketAddr,
    /// The Bearer token every send must carry.
    pub access_token: String,
    /// Signs the webhooks the sandbox posts.
    pub app_secret: String,
    #[serde(default = "crate::sandbox_rules::default_callback_delay_ms")]
    pub callback_delay_ms: u64,
    #[serde(default)]
    pub latency_ms: u64,
    /// Faults by recipient prefix (`to` digits for WhatsApp, `recipient.id` otherwise).
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// A fault rule of this sandbox.
pub type Rule = crate::sandbox_rules::Rule<Fault>;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum Fault {
    /// HTTP 400 with a Graph error object of this code (130429 throughput, 131056 pair
    /// rate, 131048 spam rate, 4 application limit, 131047 window, 190 token...).
    Error {
        code: i64,
        subcode: Option<i64>,
        http_status: Option<u16>,
    },
    /// HTTP 500 with code 2 (service temporarily unavailable).
    ServerError,
    Slow {
        delay_ms: u64,
    },
    /// Accept, then report `failed` with this code (WhatsApp statuses).
    Failed {
        code: i64,
    },
    /// Take the message (its receipts follow), then answer after `delay_ms`: longer than
    /// the client waits, the answer is lost.
    Lost {
        delay_ms: u64,
    },
}

/// What a send's receipts are about.
struct Receipt {
    endpoint_id: String,
    channel: Channel,
    recipient: String,
    id: String,
    failed: Option<i64>,
    /// The send's `biz_opaque_callback_data`, which WhatsApp statuses echo, or its
    /// `message.metadata`, which Messenger's `message_echoes` carry.
    echo: Option<String>,
}

#[derive(Clone, Debug)]
pub struct RecordedSend {
    pub endpoint_id: String,
    pub body: Value,
    pub id: String,
    pub at: Instant,
}

struct Endpoint {
    channel: Channel,
    webhook_url: String,
}

struct Sandbox {
    config: SandboxConfig,
    endpoints: Mutex<HashMap<String, Endpoint>>,
    rules: RuleSet<Fault>,
    sent: Mutex<Vec<RecordedSend>>,
    requests: AtomicU64,
    next_id: AtomicU64,
    http: reqwest::Client,
    /// People's media, by media id.
    shelf: Shelf,
    /// Read receipts and sender actions, by endpoint, in arrival order.
    marks: Mutex<Vec<(String, Value)>>,
    /// Where it listens (the config may name port 0).
    addr: SocketAddr,
}

#[derive(Clone)]
pub struct SandboxHandle {
    pub addr: SocketAddr,
    inner: Arc<Sandbox>,
}

pub async fn start(config: SandboxConfig) -> std::io::Result<SandboxHandle> {
    let shelf = Shelf::start(config.addr.ip()).await?;
    let listener = tokio::net::TcpListener::bind(config.addr).await?;
    let addr = listener.local_addr()?;
    let inner = Arc::new(Sandbox {
        addr,
        rules: RuleSet::new(config.rules.clone()),
        config,
        endpoints: Mutex::new(HashMap::new()),
        sent: Mutex::new(Vec::new()),
        requests: AtomicU64::new(0),
        next_id: AtomicU64::new(1),
        http: crate::http::client(Duration::from_secs(15)),
        shelf,
        marks: Mutex::new(Vec::new()),
    });
    let app = Router::new()
        .route("/{version}/{endpoint}/messages", post(send))
        .route("/{version}/{media_id}", get(media_lookup).delete(media_delete))
        .route("/{version}/{waba_id}/message_templates", get(message_templates))
        .route("/whatsapp_business/attachments/", get(media_download))
        .with_state(inner.clone());
    tokio::spawn(async move {
        // As a provider's servers answer: without Nagle's algorithm.
        if let Err(e) = axum::serve(listener.tap_io(crate::http::no_nagle), app).await {
            tracing::error!(error = %e, "Meta sandbox stopped");
        }
    });
    Ok(SandboxHandle { addr, inner })
}

impl SandboxHandle {
    pub fn api_base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Tells the sandbox where an endpoint's webhooks go (the app's callback URL).
    pub fn register(&self, endpoint_id: &str, channel: Channel, webhook_url: &str) {
        if let Ok(mut e) = self.inner.endpoints.lock() {
            e.insert(
                endpoint_id.to_string(),
                Endpoint { channel, webhook_url: webhook_url.to_string() },
            );
        }
    }

    pub fn sent(&self) -> Vec<RecordedSend> {
        self.inner.sent.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn request_count(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// Every read receipt and `mark_seen`/`typing_*` sender action taken, with its endpoint.
    pub fn marks(&self) -> Vec<(String, Value)> {
        self.inner.marks.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Posts `body` to the endpoint's webhook URL, signed; answers the HTTP status.
    pub async fn post_webhook(&self, endpoint_id: &str, body: &Value) -> reqwest::Result<u16> {
        let url = self.inner.webhook_url(endpoint_id).unwrap_or_default();
        self.inner.post_signed(&url, body).await
    }

    /// A person writes to a WhatsApp number: `message` is the `messages[]` item.
    pub async fn whatsapp_inbound(
        &self,
        phone_number_id: &str,
        message: Value,
    ) -> reqwest::Result<u16> {
        let profile = message["from"].as_str().unwrap_or_default().to_string();
        let body = whatsapp_envelope(
            phone_number_id,
            json!({
                "contacts": [{ "profile": { "name": "Sandbox User" }, "wa_id": profile }],
                "messages": [message],
            }),
        );
        self.post_webhook(phone_number_id, &body).await
    }

    /// A person writes on Messenger (`object` "page") or Instagram ("instagram").
    pub async fn messaging_inbound(
        &self,
        endpoint_id: &str,
        sender: &str,
        message: Value,
    ) -> reqwest::Result<u16> {
        let object = match self.inner.channel(endpoint_id) {
            Some(Channel::Instagram) => "instagram",
            _ => "page",
        };
        let body = messaging_envelope(
            object,
            endpoint_id,
            json!({
                "sender": { "id": sender },
                "recipient": { "id": endpoint_id },
                "timestamp": now_ms(),
                "message": message,
            }),
        );
        self.post_webhook(endpoint_id, &body).await
    }

    pub fn new_id(&self, channel: Channel) -> String {
        self.inner.new_id(channel)
    }

    /// Keeps media a person sent on WhatsApp; answers its media id, for the `id` of an
    /// inbound `image`/`audio`/`document`... object.
    pub fn keep_media(&self, mime_type: &str, bytes: &[u8]) -> String {
        self.inner.shelf.put(mime_type, bytes.to_vec())
    }

    /// How many media items the sandbox still keeps.
    pub fn media_kept(&self) -> usize {
        self.inner.shelf.len()
    }

    /// Keeps a Messenger or Instagram attachment; answers its `payload.url`, on the CDN.
    pub fn attachment_url(&self, mime_type: &str, bytes: &[u8]) -> String {
        let token = self.inner.shelf.put(mime_type, bytes.to_vec());
        self.inner.shelf.cdn_url(&token)
    }

    /// As [`SandboxHandle::attachment_url`], for a download that stalls after `bytes`.
    pub fn stalling_attachment_url(&self, mime_type: &str, bytes: &[u8]) -> String {
        let item = crate::sandbox_media::Item {
            mime_type: mime_type.into(),
            bytes: bytes.to_vec().into(),
            stalls: true,
        };
        self.inner.shelf.cdn_url(&self.inner.shelf.keep(item))
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn whatsapp_envelope(phone_number_id: &str, value: Value) -> Value {
    let mut value = value;
    value["messaging_product"] = json!("whatsapp");
    value["metadata"] =
        json!({ "display_phone_number": "15550001234", "phone_number_id": phone_number_id });
    json!({
        "object": "whatsapp_business_account",
        "entry": [{ "id": "102290129340398", "changes": [{ "field": "messages", "value": value }] }]
    })
}

pub fn messaging_envelope(object: &str, endpoint_id: &str, event: Value) -> Value {
    json!({ "object": object, "entry": [{ "id": endpoint_id, "time": now_ms(), "messaging": [event] }] })
}

impl Sandbox {
    fn new_id(&self, channel: Channel) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        match channel {
            // Shaped like Meta's: base64 of an opaque blob after a fixed prefix.
            Channel::Whatsapp => format!("wamid.HBgLMTU1NTAwMDEyMzQVAgARGBI{n:020X}AA=="),
            _ => format!("m_sandbox{n:016x}{}", now_ms()),
        }
    }

    fn webhook_url(&self, endpoint_id: &str) -> Option<String> {
        self.endpoints.lock().ok()?.get(endpoint_id).map(|e| e.webhook_url.clone())
    }

    fn channel(&self, endpoint_id: &str) -> Option<Channel> {
        self.endpoints.lock().ok()?.get(endpoint_id).map(|e| e.channel)
    }

    async fn post_signed(&self, url: &str, body: &Value) -> reqwest::Result<u16> {
        let raw = serde_json::to_vec(body).unwrap_or_default();
        let response = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("x-hub-signature-256", signature::sign(&self.config.app_secret, &raw))
            .body(raw)
            .send()
            .await?;
        Ok(response.status().as_u16())
    }

    /// Posts the receipts a real delivery would produce.
    async fn report(self: Arc<Self>, receipt: Receipt) {
        let Receipt { endpoint_id, channel, recipient, id, failed, echo } = receipt;
        let Some(url) = self.webhook_url(&endpoint_id) else { return };
        let pause = Duration::from_millis(self.config.callback_delay_ms);
        let bodies: Vec<Value> = match channel {
            Channel::Whatsapp => {
                let statuses: Vec<Value> = match failed {
                    Some(code) => vec![json!({
                        "id": id, "status": "failed", "timestamp": (now_ms() / 1000).to_string(), "recipient_id": recipient,
                        "errors": [{ "code": code, "title": "Message failed to send", "message": "Message failed to send",
                                     "error_data": { "details": "sandbox rule" } }]
                    })],
                    None => ["sent", "delivered", "read"]
                        .iter()
                        .map(|s| json!({ "id": id, "status": s, "timestamp": (now_ms() / 1000).to_string(), "recipient_id": recipient }))
                        .collect(),
                };
                statuses
                    .into_iter()
                    .map(|mut s| {
                        if let Some(echo) = &echo {
                            s["biz_opaque_callback_data"] = echo.as_str().into();
                        }
                        whatsapp_envelope(&endpoint_id, json!({ "statuses": [s] }))
                    })
                    .collect()
            }
            Channel::Messenger => {
                // The page's own echo first (with our metadata), then the person's receipts.
                let page = |event: Value| messaging_envelope("page", &endpoint_id, event);
                let echoed = echo.map(|metadata| {
                    page(json!({
                        "sender": { "id": endpoint_id }, "recipient": { "id": recipient }, "timestamp": now_ms(),
                        "message": { "mid": id, "is_echo": true, "app_id": 1, "metadata": metadata }
                    }))
                });
                let delivered = page(json!({
                    "sender": { "id": recipient }, "recipient": { "id": endpoint_id }, "timestamp": now_ms(),
                    "delivery": { "mids": [id], "watermark": now_ms() }
                }));
                let read = page(json!({
                    "sender": { "id": recipient }, "recipient": { "id": endpoint_id }, "timestamp": now_ms(),
                    "read": { "watermark": now_ms() }
                }));
                echoed.into_iter().chain([delivered, read]).collect()
            }
            // Instagram has no delivery receipts, only "seen".
            _ => vec![messaging_envelope(
                "instagram",
                &endpoint_id,
                json!({
                    "sender": { "id": recipient }, "recipient": { "id": endpoint_id }, "timestamp": now_ms(),
                    "read": { "mid": id }
                }),
            )],
        };
        for body in bodies {
            tokio::time::sleep(pause).await;
            if let Err(e) = self.post_signed(&url, &body).await {
                tracing::warn!(error = %e, "Meta sandbox webhook failed");
            }
        }
    }
}

impl Sandbox {
    /// Graph's answer to a missing or wrong token, if it is.
    fn refusal(&self, headers: &HeaderMap) -> Option<Response> {
        let expected = format!("Bearer {}", self.config.access_token);
        headers.get(header::AUTHORIZATION).is_none_or(|v| v.as_bytes() != expected.as_bytes()).then(
            || graph_error(StatusCode::UNAUTHORIZED, 190, None, "Invalid OAuth access token."),
        )
    }
}

/// `GET /{version}/{media-id}` (OpenAPI `retrieveMediaUrl`): the media's short-lived URL,
/// MIME type, SHA-256 and size (a string).
async fn media_lookup(
    State(sandbox): State<Arc<Sandbox>>,
    Path((_version, media_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(refusal) = sandbox.refusal(&headers) {
        return refusal;
    }
    let Some(item) = sandbox.shelf.get(&media_id) else {
        return no_object("get", &media_id);
    };
    use sha2::Digest;
    let sha256: String =
        sha2::Sha256::digest(&item.bytes).iter().map(|b| format!("{b:02x}")).collect();
    let addr = sandbox.addr;
    let url = format!("http://{addr}/whatsapp_business/attachments/?mid={media_id}&ext=1");
    let found = json!({
        "messaging_product": "whatsapp",
        "url": url,
        "mime_type": item.mime_type,
        "sha256": sha256,
        "file_size": item.bytes.len().to_string(),
        "id": media_id,
    });
    (StatusCode::OK, axum::Json(found)).into_response()
}

/// `DELETE /{version}/{media-id}` (OpenAPI `deleteMedia`): `{"success": true}`.
async fn media_delete(
    State(sandbox): State<Arc<Sandbox>>,
    Path((_version, media_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(refusal) = sandbox.refusal(&headers) {
        return refusal;
    }
    if !sandbox.shelf.remove(&media_id) {
        return no_object("delete", &media_id);
    }
    (StatusCode::OK, axum::Json(json!({ "success": true }))).into_response()
}

/// The templates every sandbox WhatsApp Business Account has: those of the OpenAPI
/// document's example answer (`hello_world` among them, which the demo sends).
fn sandbox_templates() -> Vec<Value> {
    let raw = include_str!("../../spec/meta/whatsapp-templates-example.json");
    let example: Value = serde_json::from_str(raw).unwrap_or_default();
    example["example"]["data"].as_array().cloned().unwrap_or_default()
}

#[derive(Deserialize)]
struct TemplateQuery {
    name: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
}

/// `GET /{version}/{waba-id}/message_templates`: `data`, and `paging` with cursors (and
/// `next` while more follow), as Graph pages.
async fn message_templates(
    State(sandbox): State<Arc<Sandbox>>,
    Path((version, waba_id)): Path<(String, String)>,
    Query(query): Query<TemplateQuery>,
    headers: HeaderMap,
) -> Response {
    if let Some(refusal) = sandbox.refusal(&headers) {
        return refusal;
    }
    use base64::Engine;
    let cursor = |n: usize| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(n.to_string());
    let start = query
        .after
        .and_then(|a| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(a).ok())
        .and_then(|b| String::from_utf8(b).ok()?.parse::<usize>().ok())
        .unwrap_or(0);
    let limit = query.limit.unwrap_or(25).max(1);
    let all: Vec<Value> = sandbox_templates()
        .into_iter()
        .filter(|t| query.name.as_deref().is_none_or(|n| t["name"] == n))
        .collect();
    let page: Vec<Value> = all.iter().skip(start).take(limit).cloned().collect();
    let end = start + page.len();
    let mut paging = json!({ "cursors": { "before": cursor(start), "after": cursor(end) } });
    if end < all.len() {
        let addr = sandbox.addr;
        paging["next"] = json!(format!(
            "http://{addr}/{version}/{waba_id}/message_templates?limit={limit}&after={}",
            cursor(end)
        ));
    }
    (StatusCode::OK, axum::Json(json!({ "data": page, "paging": paging }))).into_response()
}

#[derive(Deserialize)]
struct Download {
    mid: String,
}

/// The URL a lookup answered (OpenAPI `downloadMedia`): the bytes, for the same token only.
async fn media_download(
    State(sandbox): State<Arc<Sandbox>>,
    Query(download): Query<Download>,
    headers: HeaderMap,
) -> Response {
    if let Some(refusal) = sandbox.refusal(&headers) {
        return refusal;
    }
    match sandbox.shelf.get(&download.mid) {
        Some(item) => crate::sandbox_media::body(item),
        None => (StatusCode::NOT_FOUND, "no such media").into_response(),
    }
}

/// Graph's answer for an object id it cannot load (code 100, subcode 33).
fn no_object(method: &str, id: &str) -> Response {
    let message = format!(
        "Unsupported {method} request. Object with ID '{id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation."
    );
    graph_error(StatusCode::BAD_REQUEST, 100, Some(33), &message)
}

fn graph_error(status: StatusCode, code: i64, subcode: Option<i64>, message: &str) -> Response {
    let mut error = json!({
        "message": message,
        "type": if code == 190 { "OAuthException" } else { "GraphMethodException" },
        "code": code,
        "fbtrace_id": "AbCdEfGhIjKlMnOpQrStUv",
    });
    if let Some(sub) = subcode {
        error["error_subcode"] = json!(sub);
    }
    (status, axum::Json(json!({ "error": error }))).into_response()
}

/// A read receipt (WhatsApp `status: read`) or a `mark_seen`/`typing_*` sender action: no
/// message, no receipts. `None` for anything else, reactions included.
fn mark(sandbox: &Sandbox, channel: Channel, endpoint_id: &str, body: &Value) -> Option<Response> {
    let refuse =
        |why: &str| graph_error(StatusCode::BAD_REQUEST, 100, None, &format!("(#100) {why}"));
    let answer = if channel == Channel::Whatsapp {
        if body["status"] != "read" {
            return None;
        }
        if body["messaging_product"] != "whatsapp" {
            return Some(refuse("messaging_product must be whatsapp"));
        }
        if !body["message_id"].as_str().is_some_and(|id| id.starts_with("wamid.")) {
            return Some(refuse("message_id must be the wamid of a message received"));
        }
        if !body["typing_indicator"].is_null() && body["typing_indicator"]["type"] != "text" {
            return Some(refuse("typing_indicator.type must be text"));
        }
        json!({ "success": true })
    } else {
        let action = body["sender_action"].as_str()?;
        if !matches!(action, "mark_seen" | "typing_on" | "typing_off") {
            return None;
        }
        if !body["message"].is_null() {
            return Some(refuse("a sender_action is sent instead of a message, not with one"));
        }
        let Some(recipient) = body["recipient"]["id"].as_str() else {
            return Some(refuse("recipient.id is required"));
        };
        json!({ "recipient_id": recipient })
    };
    if let Ok(mut marks) = sandbox.marks.lock() {
        marks.push((endpoint_id.to_string(), body.clone()));
    }
    Some((StatusCode::OK, axum::Json(answer)).into_response())
}

/// What a real Graph API refuses, before any fault rule.
fn validate(channel: Channel, body: &Value) -> Result<String, String> {
    if channel == Channel::Whatsapp {
        if body["messaging_product"] != "whatsapp" {
            return Err("messaging_product must be whatsapp".into());
        }
        let to = body["to"].as_str().ok_or("to is required")?;
        let echo = &body["biz_opaque_callback_data"];
        if !echo.is_null()
            && echo.as_str().is_none_or(|d| d.len() > super::whatsapp::MAX_CALLBACK_DATA)
        {
            return Err(
                "biz_opaque_callback_data must be a string of at most 512 characters".into()
            );
        }
        let kind = body["type"].as_str().unwrap_or("text");
        let object = body.get(kind).ok_or_else(|| format!("the {kind} object is required"))?;
        let ok = match kind {
            "text" => object["body"].as_str().is_some_and(|b| !b.is_empty()),
            "image" | "audio" | "video" | "document" | "sticker" => {
                object.get("link").or(object.get("id")).is_some()
            }
            "template" => object["name"].is_string() && object["language"]["code"].is_string(),
            "interactive" => object["body"]["text"].is_string() && object["action"].is_object(),
            "location" => object["latitude"].is_number() && object["longitude"].is_number(),
            "reaction" => object["message_id"].is_string(),
            _ => false,
        };
        return if ok { Ok(to.to_string()) } else { Err(format!("invalid {kind} object")) };
    }
    let to = body["recipient"]["id"].as_str().ok_or("recipient.id is required")?;
    let message = &body["message"];
    let ok = body["sender_action"].is_string()
        || message["text"].as_str().is_some_and(|t| !t.is_empty())
        || message["attachment"]["payload"]["url"].is_string();
    if !ok {
        return Err("message needs text or an attachment".into());
    }
    if message["metadata"].as_str().is_some_and(|m| m.len() > super::messenger::MAX_METADATA) {
        return Err("metadata is longer than 1000 characters".into());
    }
    if message["quick_replies"].as_array().is_some_and(|q| q.len() > 13) {
        return Err("at most 13 quick replies".into());
    }
    Ok(to.to_string())
}

async fn send(
    State(sandbox): State<Arc<Sandbox>>,
    Path((_version, endpoint_id)): Path<(String, String)>,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    sandbox.requests.fetch_add(1, Ordering::Relaxed);
    if let Some(refusal) = sandbox.refusal(&headers) {
        return refusal;
    }
    let Some(channel) = sandbox.channel(&endpoint_id) else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            100,
            Some(33),
            "Unsupported post request. Object does not exist",
        );
    };
    let Ok(body) = serde_json::from_slice::<Value>(&raw) else {
        return graph_error(StatusCode::BAD_REQUEST, 100, None, "Invalid JSON body");
    };
    if let Some(answer) = mark(&sandbox, channel, &endpoint_id, &body) {
        return answer;
    }
    let to = match validate(channel, &body) {
        Ok(to) => to,
        Err(reason) => {
            return graph_error(StatusCode::BAD_REQUEST, 100, None, &format!("(#100) {reason}"));
        }
    };
    if sandbox.config.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(sandbox.config.latency_ms)).await;
    }
    let (mut failed, mut lost) = (None, None);
    match sandbox.rules.fault_for(&to) {
        Some(Fault::Error { code, subcode, http_status }) => {
            let status = http_status
                .and_then(|s| StatusCode::from_u16(s).ok())
                .unwrap_or(StatusCode::BAD_REQUEST);
            return graph_error(status, *code, *subcode, "Rejected by sandbox rule");
        }
        Some(Fault::ServerError) => {
            return graph_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                2,
                None,
                "Service temporarily unavailable",
            );
        }
        Some(Fault::Slow { delay_ms }) => {
            tokio::time::sleep(Duration::from_millis(*delay_ms)).await
        }
        Some(Fault::Failed { code }) => failed = Some(*code),
        Some(Fault::Lost { delay_ms }) => lost = Some(Duration::from_millis(*delay_ms)),
        None => {}
    }
    let id = sandbox.new_id(channel);
    if let Ok(mut sent) = sandbox.sent.lock() {
        sent.push(RecordedSend {
            endpoint_id: endpoint_id.clone(),
            body: body.clone(),
            id: id.clone(),
            at: Instant::now(),
        });
    }
    let answer = match channel {
        Channel::Whatsapp => json!({
            "messaging_product": "whatsapp",
            "contacts": [{ "input": to, "wa_id": to.trim_start_matches('+') }],
            "messages": [{ "id": id }],
        }),
        _ => json!({ "recipient_id": to, "message_id": id }),
    };
    // A sender action (a reaction) produces no receipts.
    if body["sender_action"].is_null() {
        let echo = body["biz_opaque_callback_data"]
            .as_str()
            .or(body["message"]["metadata"].as_str())
            .map(str::to_string);
        let receipt = Receipt { endpoint_id, channel, recipient: to, id, failed, echo };
        tokio::spawn(sandbox.clone().report(receipt));
    }
    if let Some(delay) = lost {
        tokio::time::sleep(delay).await;
    }
    (StatusCode::OK, axum::Json(answer)).into_response()
}
