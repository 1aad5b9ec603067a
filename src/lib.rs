//! `lsq-webhooks`: provision LeadSquared webhooks for many tenant accounts through a
//! Redis job queue whose dispatch is the per-tenant rate limiter.
//!
//! A map of the crate, one line per module on what it owns (with its folder where it has
//! one):
//!
//! - [`secret`]: the `Secret` string type: access keys, secret keys and custom header
//!   values, redacted in every `Debug`/`Display`.
//! - [`tenant`]: a tenant account (name, API host, keys, calls per 5 s) and the tenants CSV.
//! - [`job`]: jobs as producers write them (JSON Lines), job ids and idempotency keys.
//! - [`leadsquared`] (`src/leadsquared/`): the LeadSquared API contract: the Create body and
//!   every rule it must pass (`webhook/`), the classification of every answer (created, rate
//!   limited, transient, permanent: `answer.rs`), and the HTTP client (`client.rs`).
//! - [`queue`] (`src/queue/`): the `Queue` trait (the contract; tests/queue_conformance.rs
//!   runs it on both backends, and on a Redis Cluster), the reason texts it records
//!   (`reason.rs`), the tenants view's rows and state rules (`tenants.rs`), when a pushed
//!   job revises a done one (`revision.rs`), the queue split into shards behind one `Queue`
//!   (`sharded.rs`: tenants hashed to shards, dispatch in turns), and its backends: `redis/` (per-tenant lists, a
//!   sorted set of tenants scored by their next allowed call; the limiter and leases in
//!   `dispatch.lua`; one server, Sentinel or a Cluster in `target.rs` and `link.rs`) and
//!   `embedded/` (in-process: `window.rs` the limiter, `lease.rs` the leases, `state.rs` the
//!   store, `pulse.rs` what a scrape reads of shares, quotas and holds).
//! - [`producer`]: putting jobs on a queue: file import with validation and idempotency,
//!   and the `Producer` handle for Rust services.
//! - [`retry`] (`src/retry.rs`): retrying a store operation while the store cannot serve
//!   (bounded, jittered backoff; the caller says which errors are worth a retry), for worker
//!   and producer.
//! - [`worker`] (`src/worker/`): the worker pool: permits, heartbeats that keep each lease,
//!   retries with backoff, successes recorded in batches per process (`completions.rs`),
//!   graceful shutdown, and the hook that tells an observer each job's outcome.
//! - [`ops`] (`src/ops/`): what ops see: status, Prometheus metrics, the HTTP API (`api/`:
//!   auth, errors, routes, handlers) and the status page.
//! - [`sim`] (`src/sim/`): a LeadSquared simulator with a strict sliding-window limit, a
//!   daily quota, another client per account and injectable faults, for tests, demos and
//!   benchmarks.
//! - [`sync`] (`src/sync.rs`): `sync`'s plan: a job file as the desired state of its
//!   tenants, from the queue's records and a paged Retrieve per tenant (issue 18).
//! - [`demo`] (`src/demo/`): `lsq-webhooks demo`: the simulator, a queue, jobs and the pool
//!   in one process, with live progress and a summary checked against the simulator.
//! - [`cli`] (`src/cli/`): the command line: argument types and one small file per command.
//!
//! Where things live: the rate limiter is the queue's dispatch (`src/queue/`), not a separate
//! limiter, so it holds across every process sharing the queue; the LeadSquared contract is
//! `src/leadsquared/`; leases are granted, extended, expired and handed back by the queue
//! (`src/queue/`) and kept alive by the worker's heartbeats (`src/worker/job.rs`).

#[cfg(feature = "server")]
pub mod cli;
#[cfg(feature = "server")]
pub mod demo;
pub mod job;
pub mod leadsquared;
#[cfg(feature = "server")]
pub mod ops;
pub mod producer;
pub mod queue;
pub mod retry;
pub mod secret;
#[cfg(feature = "server")]
pub mod sim;
#[cfg(feature = "server")]
pub mod sync;
pub mod tenant;
#[cfg(feature = "server")]
pub mod worker;

/// The README's Rust examples, compiled by `cargo test` so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
