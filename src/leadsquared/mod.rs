//! The LeadSquared API contract: what the project sends and how it reads the answers.
//!
//! - [`webhook`]: the Create body ([`CreateWebhook`]), its enums, and the validation every
//!   job's `webhook` object passes before anything is sent.

pub mod webhook;

pub use webhook::{
    ContentType, CreateWebhook, CustomHeader, EventFamily, FieldError, Method, Problem, Rejection,
    WebhookEvent,
};
