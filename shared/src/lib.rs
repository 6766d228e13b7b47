//! # remarketable-core
//!
//! The host-independent core of ReMarketable: the event contract ([`event`]) with its stable
//! dead-letter [`reason`] codes, typed [`config`]uration, the database layer ([`db`]: pool,
//! migrations, partition upkeep), the exactly-once [`ingest`] path and the incremental
//! [`rollup`]s.
//!
//! Hosts (the Azure Functions custom handler, the admin CLI, later AWS Lambda and devhost) are
//! thin binaries over this crate; it knows nothing about any of them.

#![forbid(unsafe_code)]

pub mod access;
pub mod attribution;
pub mod cache;
pub mod collect;
pub mod config;
pub mod dashboards;
pub mod db;
pub mod dead_letters;
pub mod error;
pub mod event;
pub mod funnels;
pub mod import;
pub mod ingest;
pub mod jobs;
pub mod json;
pub mod ledger;
pub mod partitions;
pub mod placement;
pub mod position;
pub mod quota;
pub mod reason;
pub mod replay;
pub mod reports;
pub mod rollup;
pub mod sketch;
pub mod spend;
pub mod telemetry;
pub mod tenants;
pub mod url;

pub use config::Settings;
pub use error::{Error, ErrorCode};
pub use ingest::{Batch, BatchReport, IncomingEvent, IngestError, Ingestor, Outcome};
pub use position::Position;
pub use reason::Reason;
