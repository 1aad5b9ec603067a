//! `lsq-webhooks`: provision LeadSquared webhooks for many tenant accounts through a
//! Redis job queue whose dispatch is the per-tenant rate limiter.
//!
//! A map of the crate, one line per module on what it owns:
//!
//! - [`secret`]: the `Secret` string type: access keys, secret keys and custom header
//!   values, redacted in every `Debug`/`Display`.
//! - [`tenant`]: a tenant account (name, API host, keys, calls per 5 s) and the tenants CSV.
//! - [`job`]: jobs as producers write them (JSON Lines), job ids and idempotency keys.
//! - [`leadsquared`]: the LeadSquared API contract: request types and validation, the HTTP
//!   client, and the classification of every answer (created, rate limited, transient,
//!   permanent).
//! - [`queue`]: the `Queue` trait (the contract; tests/queue_conformance.rs runs it on both
//!   backends), the reason texts it records (`queue::reason`), and its backends:
//!   `queue::redis` (per-tenant lists, a sorted set of tenants scored by their next allowed
//!   call; the limiter and leases in `dispatch.lua`) and `queue::embedded` (in-process:
//!   `window.rs` the limiter, `lease.rs` the leases, `state.rs` the store).
//! - [`producer`]: putting jobs on a queue: file import with validation and idempotency,
//!   and the `Producer` handle for Rust services.
//! - [`worker`]: the worker pool: permits, leases, retries with backoff, graceful shutdown.
//! - [`ops`]: what ops see: status, Prometheus metrics, the HTTP API and the status page.
//! - [`sim`]: a LeadSquared simulator with a strict sliding-window limit and injectable
//!   faults, for tests, demos and benchmarks.
//! - [`demo`]: `lsq-webhooks demo`: the simulator, a queue, jobs and the pool in one
//!   process, with live progress and a summary checked against the simulator.
//! - [`cli`]: the command line: argument types and one small file per command.

pub mod cli;
pub mod demo;
pub mod job;
pub mod leadsquared;
pub mod ops;
pub mod producer;
pub mod queue;
pub mod secret;
pub mod sim;
pub mod tenant;
pub mod worker;

/// The README's Rust examples, compiled by `cargo test` so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
