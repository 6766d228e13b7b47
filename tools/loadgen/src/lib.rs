//! # remarketable-loadgen
//!
//! Realistic storefront traffic for ReMarketable's ingest path, a truth file saying what the
//! database must hold afterwards, and the check that compares the two.
//!
//! - [`traffic`]: the generator (Zipf tenants, devices, multi-event sessions, campaigns, late
//!   events, producer duplicates), deterministic per seed; every event carries its
//!   [`traffic::Expected`] outcome.
//! - [`malformed`]: malformed events of many kinds, each labelled with the dead-letter reason
//!   code the ingest path gives it.
//! - [`deliver`]: the two targets (a handler's `/ingest` as Event Hubs trigger invocations,
//!   encoded by devhost's encoder; devhost's hub producer endpoint as NDJSON) and the retry
//!   rules.
//! - [`send`]: the `send` loop, writing the truth file and sequence state as checkpoints.
//! - [`truth`]: the truth file, its format and its atomic, accumulating writes.
//! - [`check`]: the database against the truth.
//! - [`bench`], [`bench_rollup`], [`bench_reports`], [`bench_campaigns`], [`bench_isolation`],
//!   [`bench_import`]: the ingest, rollup, reports, campaign, noisy-neighbour and import benchmarks, each with the arguments of its subcommand;
//!   [`bench_db`]: the database they run in (made on plain PostgreSQL, prepared on Citus) and
//!   the engine they measured.
//!
//! The `loadgen` binary is a thin command line over these.

#![forbid(unsafe_code)]

pub mod bench;
pub mod bench_campaigns;
pub mod bench_db;
pub mod bench_import;
pub mod bench_isolation;
pub mod bench_lambda;
pub mod bench_large_event;
pub mod bench_reports;
pub mod bench_rollup;
pub mod check;
pub mod deliver;
pub mod fault_lambda;
pub mod history;
pub mod malformed;
pub mod send;
pub mod spend;
pub mod traffic;
pub mod truth;
