//! The Graph API client the three Meta channels share: JSON over HTTPS with a Bearer token,
//! and Meta's error object and usage headers read the same way for all.

use std::time::Duration;

use serde_json::Value;

use crate::contract::SendFailure;
use crate::model::{ErrorCode, ProviderError};

use super::PROVIDER;
use super::config::MetaAccount;
use super::errors::{self, GraphError};

pub struct GraphClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl GraphClient {
    pub fn new(account: &MetaAccount) -> Self {
        GraphClient {
            base: format!("{}/{}", account.api_base.trim_end_matches('/'), account.version),
            token: account.access_token.clone(),
            http: crate::http::client(account.request_timeout),
        }
    }

    /// POSTs `body` to `/{version}/{path}`; answers the JSON of a 2xx, or the classified error.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, SendFailure> {
        self.call(self.http.post(format!("{}/{path}", self.base)).json(body)).await
    }

    /// GETs `/{version}/{path}` (a path and query); answers as [`GraphClient::post`] does.
    pub async fn get(&self, path: &str) -> Result<Value, SendFailure> {
        self.call(self.http.get(format!("{}/{path}", self.base))).await
    }

    /// DELETEs `/{version}/{path}`; answers as [`GraphClient::post`] does.
    pub async fn delete(&self, path: &str) -> Result<Value, SendFailure> {
        self.call(self.http.delete(format!("{}/{path}", self.base))).await
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    async fn call(&self, request: reqwest::RequestBuilder) -> Result<Value, SendFailure> {
        let response = request.bearer_auth(&self.token).send().await.map_err(|e| transport(&e))?;
        let status = response.status().as_u16();
        let retry_after = crate::http::retry_after(response.headers())
            .or_else(|| usage_backoff(response.headers()));
        let bytes = response.bytes().await.map_err(|e| transport(&e))?;
        let json: Option<Value> = serde_json::from_slice(&bytes).ok();
        if (200..300).contains(&status) {
            return json.ok_or_else(|| {
                SendFailure::permanent(ProviderError {
                    code: ErrorCode::Rejected,
                    message: "unreadable Graph answer; the message may have been sent".into(),
                    provider: PROVIDER.into(),
                    provider_code: status.to_string(),
                    retryable: false,
                })
            });
        }
        let error = json.as_ref().map(error_object).unwrap_or_else(|| GraphError {
            code: 0,
            subcode: None,
            message: format!("HTTP {status} from the Graph API"),
            is_transient: false,
        });
        Err(errors::classify(status, &error, retry_after))
    }
}

/// Reads `{"error": {"message", "type", "code", "error_subcode", "is_transient", ...}}`.
pub fn error_object(body: &Value) -> GraphError {
    let e = &body["error"];
    GraphError {
        code: e["code"].as_i64().unwrap_or(0),
        subcode: e["error_subcode"].as_i64(),
        message: e["message"].as_str().unwrap_or("Graph API error").to_string(),
        is_transient: e["is_transient"].as_bool().unwrap_or(false),
    }
}

/// `X-Business-Use-Case-Usage`: `{"<id>": [{"estimated_time_to_regain_access": minutes}]}`.
fn usage_backoff(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let raw = headers.get("x-business-use-case-usage")?.to_str().ok()?;
    let usage: Value = serde_json::from_str(raw).ok()?;
    let minutes = usage
        .as_object()?
        .values()
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(|u| u["estimated_time_to_regain_access"].as_u64())
        .max()?;
    (minutes > 0).then(|| Duration::from_secs(minutes * 60))
}

fn transport(err: &reqwest::Error) -> SendFailure {
    crate::http::transport_failure(err, PROVIDER, "Graph API")
}

#[cfg(test)]
mod tests {
    use super::usage_backoff;
    use reqwest::header::{HeaderMap, HeaderValue};
    use std::time::Duration;

    fn usage(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-business-use-case-usage", HeaderValue::from_str(value).expect("value"));
        headers
    }

    /// DETAILS.md §2.4: Meta sends no Retry-After when it throttles; the longest
    /// `estimated_time_to_regain_access` (minutes) of `X-Business-Use-Case-Usage` stands in.
    #[test]
    fn business_use_case_usage_gives_the_pause_in_minutes() {
        let throttled = usage(concat!(
            r#"{"102290129340398": [{"type": "whatsapp_business_management", "call_count": 100, "#,
            r#""total_cputime": 12, "total_time": 15, "estimated_time_to_regain_access": 7}], "#,
            r#""5550001": [{"type": "pages", "call_count": 40, "estimated_time_to_regain_access": 2}]}"#
        ));
        assert_eq!(usage_backoff(&throttled), Some(Duration::from_secs(7 * 60)));
        let fine = usage(r#"{"1": [{"call_count": 20, "estimated_time_to_regain_access": 0}]}"#);
        assert_eq!(usage_backoff(&fine), None, "nothing to wait for");
        assert_eq!(usage_backoff(&usage("not json")), None);
        assert_eq!(usage_backoff(&usage(r#"{"1": {"odd": "shape"}}"#)), None);
        assert_eq!(usage_backoff(&HeaderMap::new()), None);
    }
}
