//! The LeadSquared API contract: what the project sends and how it reads the answers.
//!
//! - [`webhook`]: the Create body ([`CreateWebhook`]), its enums, and the validation every
//!   job's `webhook` object passes before anything is sent.
//! - [`answer`]: [`CallError`] and [`classify`], the one place that decides whether an
//!   answer is usable, rate limited, transient or permanent.
//! - [`client`]: the HTTP [`Client`] (Create, Retrieve) built from a [`ClientConfig`].

pub mod answer;
pub mod client;
pub mod webhook;

pub use answer::{CallError, Quota, classify};
pub use client::{
    Applied, Client, ClientBuildError, ClientConfig, DeleteCall, RetrievePage, WebhookId,
    WebhookSummary,
};
pub use webhook::{
    BodyLimits, ContentType, CreateWebhook, CustomHeader, EventFamily, FieldError, Method, Problem,
    Rejection, WebhookEvent,
};
