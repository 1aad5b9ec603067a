//! The HTTP client for a tenant's LeadSquared API: Create, Retrieve, Update and Delete.
//!
//! LeadSquared's Delete is undocumented: its method and path are [`ClientConfig::delete_call`]
//! (`--delete-call` / `LSQ_DELETE_CALL`), `GET /v2/Webhook.svc/Delete` unless told
//! otherwise, the Id in a `webhookId` query parameter (see `docs/decisions.md`, issue 18).
//!
//! One [`Client`] serves every tenant: it pools connections per host, authenticates each
//! call with the tenant's keys in the `x-LSQ-AccessKey` / `x-LSQ-SecretKey` headers (which
//! LeadSquared recommends over the query string, and which keeps keys out of URLs and so out
//! of every error message), refuses plain http except to a loopback simulator, follows no
//! redirect (it would carry the keys elsewhere), reads at most
//! [`ClientConfig::max_answer_bytes`] of an answer, and turns every outcome into a value or a
//! [`CallError`] through [`classify`]. No error it returns contains a key or a custom header
//! value: reasons are redacted before they leave.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use url::Url;

use super::answer::{CallError, classify};
use super::webhook::CreateWebhook;
use crate::tenant::{Tenant, is_loopback};

/// Path of Create under a tenant's API base.
pub const CREATE_PATH: &str = "/v2/Webhook.svc/Create";
/// Path of Retrieve under a tenant's API base.
pub const RETRIEVE_PATH: &str = "/v2/Webhook.svc/Retrieve";

/// Path of Update under a tenant's API base.
pub const UPDATE_PATH: &str = "/v2/Webhook.svc/Update";
/// The Delete call public integrators report (undocumented by LeadSquared).
pub const DEFAULT_DELETE_CALL: &str = "GET /v2/Webhook.svc/Delete";

/// Path of `UserByAccessKey.Get` (host discovery) under any region's host.
pub const DISCOVERY_PATH: &str = "/v2/Authentication.svc/UserByAccessKey.Get";
/// Where hosts are discovered unless `--discovery-url` / `LSQ_DISCOVERY_URL` says otherwise:
/// `UserByAccessKey.Get` answers on every region's host.
pub const DEFAULT_DISCOVERY_URL: &str = "https://api.leadsquared.com";

/// The most pages [`Client::retrieve_all`] reads before it stops (a bound on calls spent).
pub const MAX_RETRIEVE_PAGES: u32 = 100;

/// How the client talks to LeadSquared.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Longest wait for a TCP + TLS connection. A call that fails here never reached
    /// LeadSquared. Default 5 s.
    pub connect_timeout: Duration,
    /// Longest wait for a whole call, from sending to the last byte of the answer. A call
    /// that times out may have been processed. Default 30 s.
    pub timeout: Duration,
    /// The most bytes of an answer read; a longer answer is treated as unreadable (its status
    /// still counts). LeadSquared's answers are a few hundred bytes; Retrieve pages a few KB
    /// per webhook. Default 4 MiB.
    pub max_answer_bytes: usize,
    /// Idle connections kept per host (one host serves many tenants of a region). Default 64.
    pub pool_max_idle_per_host: usize,
    /// How long an idle pooled connection is kept. Default 60 s.
    pub pool_idle_timeout: Duration,
    /// `User-Agent` sent with every call.
    pub user_agent: String,
    /// How Delete is called: method and path (see [`DeleteCall`]).
    pub delete_call: DeleteCall,
}

/// The method and path of LeadSquared's Delete call, which LeadSquared does not document:
/// `METHOD /path`, e.g. `GET /v2/Webhook.svc/Delete` (the default). The webhook's Id goes in
/// a `webhookId` query parameter; a POST also carries `{"WebhookId": ..}` as its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteCall {
    /// `GET`, `POST` or `DELETE`.
    pub method: reqwest::Method,
    /// Path under the tenant's API base, starting with `/`.
    pub path: String,
}

impl Default for DeleteCall {
    fn default() -> Self {
        DeleteCall {
            method: reqwest::Method::GET,
            path: "/v2/Webhook.svc/Delete".into(),
        }
    }
}

impl std::str::FromStr for DeleteCall {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (method, path) = s
            .trim()
            .split_once(' ')
            .ok_or_else(|| format!("{s:?}: expected METHOD /path, e.g. {DEFAULT_DELETE_CALL:?}"))?;
        let method = match method.to_ascii_uppercase().as_str() {
            "GET" => reqwest::Method::GET,
            "POST" => reqwest::Method::POST,
            "DELETE" => reqwest::Method::DELETE,
            other => return Err(format!("{other:?}: the method must be GET, POST or DELETE")),
        };
        let path = path.trim();
        if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
            return Err(format!(
                "{path:?}: the path must start with / and have no query"
            ));
        }
        Ok(DeleteCall {
            method,
            path: path.to_string(),
        })
    }
}

/// What an Update or a Delete did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// LeadSquared did it.
    Done,
    /// LeadSquared has no webhook with that Id
    /// ([`super::answer::NOT_FOUND_EXCEPTION`]).
    NotFound,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(30),
            max_answer_bytes: 4 << 20,
            pool_max_idle_per_host: 64,
            pool_idle_timeout: Duration::from_secs(60),
            user_agent: concat!("lsq-webhooks/", env!("CARGO_PKG_VERSION")).to_string(),
            delete_call: DeleteCall::default(),
        }
    }
}

/// The HTTP client could not be built (TLS setup).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct ClientBuildError(String);

/// The Id LeadSquared gave a webhook.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WebhookId(pub String);

impl std::fmt::Display for WebhookId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One webhook as Retrieve lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookSummary {
    /// Its Id.
    pub webhook_id: WebhookId,
    /// Its description (what `SearchText` matches).
    pub description: String,
    /// The URL it posts to.
    pub url: String,
    /// Its event code (`EventCode`), when the answer gave a readable one.
    pub event: Option<u32>,
    /// LeadSquared's event name, e.g. `Lead_Post_Create`.
    pub event_name: Option<String>,
}

impl WebhookSummary {
    /// Whether this is the webhook the body would create: same description, URL and event.
    pub fn matches(&self, body: &CreateWebhook) -> bool {
        self.description == body.description
            && self.url == body.url
            && self.event == Some(body.event.code())
    }
}

/// One page of Retrieve.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetrievePage {
    /// How many webhooks match in all pages (`RecordCount`).
    pub record_count: u64,
    /// This page's webhooks.
    pub webhooks: Vec<WebhookSummary>,
}

/// A LeadSquared API client shared by every tenant (cheap to clone: the pool is shared).
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    config: ClientConfig,
}

impl Client {
    /// Builds a client: rustls, pooled, no redirects, the configured timeouts.
    pub fn new(config: ClientConfig) -> Result<Client, ClientBuildError> {
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .pool_max_idle_per_host(config.pool_max_idle_per_host)
            .pool_idle_timeout(config.pool_idle_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(config.user_agent.clone())
            .build()
            .map_err(|e| ClientBuildError(e.to_string()))?;
        Ok(Client { http, config })
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Calls Create once. `Ok` is the new webhook's Id.
    pub async fn create(
        &self,
        tenant: &Tenant,
        body: &CreateWebhook,
    ) -> Result<WebhookId, CallError> {
        let header_values: Vec<&str> = body
            .custom_headers
            .iter()
            .map(|h| h.value.expose())
            .collect();
        let answer = self
            .call(tenant, CREATE_PATH, &body.to_value(), &header_values)
            .await?;
        let id = answer
            .get("Message")
            .and_then(|m| m.get("Id"))
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|id| !id.is_empty());
        match id {
            Some(id) => Ok(WebhookId(id.to_string())),
            // LeadSquared said 200 without an error but gave no Id: it may have created it.
            None => Err(CallError::Transient {
                reason: "Create answered 200 without Message.Id".into(),
                maybe_reached: true,
            }),
        }
    }

    /// Calls Update once: `body` (Create's) plus `WebhookId` replaces the webhook `id`.
    /// Update is idempotent, so a lost answer is safe to repeat.
    pub async fn update(
        &self,
        tenant: &Tenant,
        id: &WebhookId,
        body: &CreateWebhook,
    ) -> Result<Applied, CallError> {
        let header_values: Vec<&str> = body
            .custom_headers
            .iter()
            .map(|h| h.value.expose())
            .collect();
        let mut request = body.to_value();
        if let Some(o) = request.as_object_mut() {
            o.insert("WebhookId".into(), Value::String(id.0.clone()));
        }
        let answer = self
            .call(tenant, UPDATE_PATH, &request, &header_values)
            .await;
        applied(answer)
    }

    /// Calls Delete once, as [`ClientConfig::delete_call`] says. "No such webhook" is
    /// [`Applied::NotFound`], which a caller takes as done.
    pub async fn delete(&self, tenant: &Tenant, id: &WebhookId) -> Result<Applied, CallError> {
        let secrets = [tenant.access_key.expose(), tenant.secret_key.expose()];
        let result = async {
            let Some(base) = &tenant.api_base else {
                return Err(no_host());
            };
            let call = &self.config.delete_call;
            let mut url = endpoint(base, &call.path)?;
            url.query_pairs_mut().append_pair("webhookId", &id.0);
            let mut request = self.http.request(call.method.clone(), url);
            if call.method == reqwest::Method::POST {
                request = request.json(&json!({ "WebhookId": id.0 }));
            }
            self.send(tenant, request, &call.path).await
        }
        .await;
        applied(result.map_err(|e| e.redacted(&secrets)))
    }

    /// Calls Retrieve once: the tenant's webhooks whose name or description matches
    /// `search_text`, page `page_index` (1-based) of `page_size`.
    pub async fn retrieve(
        &self,
        tenant: &Tenant,
        search_text: &str,
        page_index: u32,
        page_size: u32,
    ) -> Result<RetrievePage, CallError> {
        let request = json!({
            "Parameter": { "SearchText": search_text },
            "Sorting": { "ColumnName": "ModifiedOn", "Direction": "1" },
            "Paging": { "PageIndex": page_index.max(1), "PageSize": page_size.max(1) },
        });
        let answer = self.call(tenant, RETRIEVE_PATH, &request, &[]).await?;
        parse_retrieve(&answer)
    }

    /// Every webhook matching `search_text`, reading pages of `page_size` until all
    /// `RecordCount` are read, a page comes back short, or [`MAX_RETRIEVE_PAGES`] pages.
    /// Each page is one API call against the tenant's limit.
    pub async fn retrieve_all(
        &self,
        tenant: &Tenant,
        search_text: &str,
        page_size: u32,
    ) -> Result<Vec<WebhookSummary>, CallError> {
        let page_size = page_size.max(1);
        let mut all = Vec::new();
        for page_index in 1..=MAX_RETRIEVE_PAGES {
            let page = self
                .retrieve(tenant, search_text, page_index, page_size)
                .await?;
            let short = page.webhooks.len() < page_size as usize;
            all.extend(page.webhooks);
            if short || all.len() as u64 >= page.record_count {
                return Ok(all);
            }
        }
        tracing::warn!(
            tenant = %tenant.name,
            pages = MAX_RETRIEVE_PAGES,
            "retrieve_all stopped at the page bound"
        );
        Ok(all)
    }

    /// The Id of a webhook that already matches the body (same description, URL and event),
    /// found with Retrieve by description; `None` if there is none.
    pub async fn find_existing(
        &self,
        tenant: &Tenant,
        body: &CreateWebhook,
        page_size: u32,
    ) -> Result<Option<WebhookId>, CallError> {
        let found = self
            .retrieve_all(tenant, &body.description, page_size)
            .await?;
        Ok(found
            .into_iter()
            .find(|w| w.matches(body))
            .map(|w| w.webhook_id))
    }

    /// One authenticated POST of a JSON body; the answer classified. `extra_secrets` are
    /// redacted from any reason along with the tenant's keys.
    async fn call(
        &self,
        tenant: &Tenant,
        path: &str,
        body: &Value,
        extra_secrets: &[&str],
    ) -> Result<Value, CallError> {
        let mut secrets = vec![tenant.access_key.expose(), tenant.secret_key.expose()];
        secrets.extend_from_slice(extra_secrets);
        self.call_unredacted(tenant, path, body)
            .await
            .map_err(|e| e.redacted(&secrets))
    }

    async fn call_unredacted(
        &self,
        tenant: &Tenant,
        path: &str,
        body: &Value,
    ) -> Result<Value, CallError> {
        let Some(base) = &tenant.api_base else {
            return Err(no_host());
        };
        let url = endpoint(base, path)?;
        self.send(tenant, self.http.post(url).json(body), path)
            .await
    }

    /// Sends an authenticated request and classifies the answer.
    async fn send(
        &self,
        tenant: &Tenant,
        request: reqwest::RequestBuilder,
        path: &str,
    ) -> Result<Value, CallError> {
        let access = key_header(tenant.access_key.expose(), "access_key")?;
        let secret = key_header(tenant.secret_key.expose(), "secret_key")?;
        let started = std::time::Instant::now();
        let response = request
            .header("x-LSQ-AccessKey", access)
            .header("x-LSQ-SecretKey", secret)
            .send()
            .await
            .map_err(|e| transport_error(&e, "sending the request"))?;
        let status = response.status();
        let headers = response.headers().clone();
        let read = read_capped(response, self.config.max_answer_bytes).await;
        tracing::debug!(
            tenant = %tenant.name,
            path,
            status = status.as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "LeadSquared answered"
        );
        match read {
            BodyRead::Complete(bytes) => classify(status, &headers, &bytes),
            BodyRead::TooLarge => unreadable(
                status,
                &headers,
                format!("answer larger than {} bytes", self.config.max_answer_bytes),
            ),
            BodyRead::Broken(e) => unreadable(status, &headers, format!("answer cut short ({e})")),
        }
    }

    /// Calls `UserByAccessKey.Get` on `discovery` (any region's host) with the tenant's
    /// keys: the API base its `LSQCommonServiceURLs.api` names (a host name, or a full
    /// URL). A 401 is [`CallError::Refused`]: the keys are refused everywhere.
    pub async fn discover(&self, tenant: &Tenant, discovery: &Url) -> Result<Url, CallError> {
        let secrets = [tenant.access_key.expose(), tenant.secret_key.expose()];
        let result = async {
            let url = endpoint(discovery, DISCOVERY_PATH)?;
            let answer = self
                .send(tenant, self.http.get(url), DISCOVERY_PATH)
                .await?;
            let api = answer
                .get("LSQCommonServiceURLs")
                .and_then(|u| u.get("api"))
                .and_then(Value::as_str)
                .ok_or_else(|| CallError::Transient {
                    reason: "UserByAccessKey.Get answered without LSQCommonServiceURLs.api".into(),
                    maybe_reached: false,
                })?;
            crate::tenant::api_base_from_host(api).map_err(|why| CallError::Transient {
                reason: format!("UserByAccessKey.Get named an unusable API host: {why}"),
                maybe_reached: false,
            })
        }
        .await;
        result.map_err(|e| e.redacted(&secrets))
    }
}

/// A call for a tenant whose host is still being discovered.
fn no_host() -> CallError {
    CallError::Permanent {
        reason: "the tenant's API host is not known yet (it is being discovered)".into(),
    }
}

/// An Update's or a Delete's answer: any success is done; LeadSquared's "no such webhook"
/// is [`Applied::NotFound`].
fn applied(answer: Result<Value, CallError>) -> Result<Applied, CallError> {
    match answer {
        Ok(_) => Ok(Applied::Done),
        Err(e) if super::answer::is_not_found(&e) => Ok(Applied::NotFound),
        Err(e) => Err(e),
    }
}

/// An answer whose body could not be read whole: its status still decides, but a 2xx (or
/// anything that would have needed the body) is transient and may have been processed.
fn unreadable(status: StatusCode, headers: &HeaderMap, why: String) -> Result<Value, CallError> {
    match classify(status, headers, b"") {
        Err(CallError::Transient { reason, .. }) => Err(CallError::Transient {
            reason: format!("{reason}; {why}"),
            maybe_reached: true,
        }),
        Err(
            e @ (CallError::RateLimited { .. }
            | CallError::Permanent { .. }
            | CallError::Refused { .. }
            | CallError::Unreachable { .. }
            | CallError::TimedOut { .. }),
        ) => Err(e),
        Ok(_) => Err(CallError::Transient {
            reason: format!("HTTP {} but {why}", status.as_u16()),
            maybe_reached: true,
        }),
    }
}

/// The URL of an API path under a tenant's base, refusing plain http to anything but a
/// loopback address: LeadSquared refuses plain HTTP, and the keys would travel in clear.
fn endpoint(api_base: &Url, path: &str) -> Result<Url, CallError> {
    match api_base.scheme() {
        "https" => {}
        "http" if is_loopback(api_base) => {}
        "http" => {
            return Err(CallError::Permanent {
                reason: format!(
                    "refusing plain http to {} (only a loopback simulator may use http)",
                    api_base.host_str().unwrap_or("?")
                ),
            });
        }
        other => {
            return Err(CallError::Permanent {
                reason: format!("api_base scheme {other:?} is not https"),
            });
        }
    }
    api_base.join(path).map_err(|e| CallError::Permanent {
        reason: format!("cannot build the API URL: {e}"),
    })
}

/// A key as a header value marked sensitive (never printed by the HTTP stack).
fn key_header(value: &str, name: &str) -> Result<HeaderValue, CallError> {
    let mut v = HeaderValue::from_str(value).map_err(|_| CallError::Permanent {
        reason: format!("the tenant's {name} is not a valid header value"),
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// A failure to send or to get an answer. A failure to connect never reached LeadSquared;
/// anything later (timeout, reset) may have.
fn transport_error(e: &reqwest::Error, doing: &str) -> CallError {
    if e.is_connect() {
        // Refused, DNS, TLS, connect timeout: nothing reached LeadSquared.
        let what = if e.is_timeout() {
            "timed out connecting"
        } else {
            "could not connect"
        };
        return CallError::Unreachable {
            reason: format!("{doing} {what}: {}", error_chain(e)),
        };
    }
    if e.is_timeout() {
        return CallError::TimedOut {
            reason: format!("{doing}: {}", error_chain(e)),
        };
    }
    CallError::Transient {
        reason: format!("{doing} failed: {}", error_chain(e)),
        maybe_reached: true,
    }
}

/// An error and its sources, joined (reqwest's top-level text alone hides the cause).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

enum BodyRead {
    Complete(Vec<u8>),
    TooLarge,
    Broken(String),
}

/// Reads at most `max` bytes of the body.
async fn read_capped(mut response: reqwest::Response, max: usize) -> BodyRead {
    let declared = response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return BodyRead::TooLarge;
    }
    let mut bytes = Vec::with_capacity(declared.map_or(1024, |n| n as usize));
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if bytes.len() + chunk.len() > max {
                    return BodyRead::TooLarge;
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(None) => return BodyRead::Complete(bytes),
            Err(e) => {
                let what = if e.is_timeout() { "timed out: " } else { "" };
                return BodyRead::Broken(format!("{what}{}", error_chain(&e)));
            }
        }
    }
}

/// Reads Retrieve's answer: `{"RecordCount": n, "Response": [ {...}, ... ]}`. Entries
/// without a `WebhookId` are skipped; numbers may come as strings.
fn parse_retrieve(answer: &Value) -> Result<RetrievePage, CallError> {
    let bad = |why: &str| CallError::Transient {
        reason: format!("Retrieve answer unreadable: {why}"),
        maybe_reached: true,
    };
    let items = match answer.get("Response") {
        Some(Value::Array(items)) => items.as_slice(),
        None | Some(Value::Null) => &[],
        Some(_) => return Err(bad("Response is not a list")),
    };
    let number = |v: Option<&Value>| -> Option<u64> {
        match v? {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    };
    let text = |item: &Value, k: &str| {
        item.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let webhooks: Vec<WebhookSummary> = items
        .iter()
        .filter_map(|item| {
            let id = item.get("WebhookId").and_then(Value::as_str)?.trim();
            (!id.is_empty()).then(|| WebhookSummary {
                webhook_id: WebhookId(id.to_string()),
                description: text(item, "Description"),
                url: text(item, "URL"),
                event: number(item.get("EventCode")).and_then(|n| u32::try_from(n).ok()),
                event_name: item
                    .get("EventName")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            })
        })
        .collect();
    let record_count = number(answer.get("RecordCount")).unwrap_or(webhooks.len() as u64);
    Ok(RetrievePage {
        record_count,
        webhooks,
    })
}
