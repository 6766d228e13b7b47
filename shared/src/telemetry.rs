//! Telemetry as typed events: one struct per thing worth knowing, with its fields. `emit()`
//! logs it once with structured fields (queryable in Application Insights or CloudWatch); its
//! `Display` is the one-line text the Azure host shows in an invocation's `Logs`.

use crate::ingest::BatchReport;
use crate::jobs::{MaintenanceRun, RollupRun};
use std::fmt;

/// An event of the service's life, logged with its fields.
pub trait Event: fmt::Display {
    fn emit(&self);
}

/// An ingest batch was committed (or found to hold nothing new).
pub struct BatchIngested<'a> {
    pub report: &'a BatchReport,
    pub took_ms: u128,
}

impl fmt::Display for BatchIngested<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.report;
        write!(
            f,
            "partition {} of {}: received {}, stored {}, duplicates {}, dead-lettered {}, position {}, {} ms",
            r.partition, r.source, r.received, r.stored, r.duplicates, r.dead_lettered, r.position, self.took_ms
        )
    }
}

impl Event for BatchIngested<'_> {
    fn emit(&self) {
        let r = self.report;
        tracing::info!(
            source = %r.source,
            partition = %r.partition,
            received = r.received,
            stored = r.stored,
            duplicates = r.duplicates,
            dead_lettered = r.dead_lettered,
            position = %r.position,
            took_ms = self.took_ms,
            "batch ingested"
        );
    }
}

/// The rollups ran (one line per rollup in `Logs`).
pub struct RollupsAdvanced<'a> {
    pub run: &'a RollupRun,
    pub past_due: bool,
}

impl fmt::Display for RollupsAdvanced<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.run.attribution)?;
        for a in &self.run.advances {
            write!(f, "\n{a}")?;
        }
        if self.past_due {
            write!(f, "\nthe run was past due")?;
        }
        Ok(())
    }
}

impl Event for RollupsAdvanced<'_> {
    fn emit(&self) {
        let t = &self.run.attribution;
        tracing::info!(
            window_start = t.window_start,
            window_end = t.window_end,
            touches = t.touches,
            conversions = t.conversions,
            milliseconds = t.milliseconds,
            past_due = self.past_due,
            "attribution advanced"
        );
        for a in &self.run.advances {
            tracing::info!(
                rollup = %a.rollup,
                window_start = a.window_start,
                window_end = a.window_end,
                rows = a.rows,
                milliseconds = a.milliseconds,
                past_due = self.past_due,
                "rollup advanced"
            );
        }
    }
}

/// Partition upkeep, ledger compaction and rollup retention ran.
pub struct MaintenanceDone<'a> {
    pub run: &'a MaintenanceRun,
    pub past_due: bool,
}

impl fmt::Display for MaintenanceDone<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let run = self.run;
        let (created, dropped) = (run.created(), run.dropped());
        write!(
            f,
            "partitions of events: {} created, {} dropped{}",
            created.len(),
            dropped.len(),
            if self.past_due {
                " (run was past due)"
            } else {
                ""
            }
        )?;
        if let (Some(first), Some(last)) = (created.first(), created.last()) {
            write!(f, "\ncreated {} .. {}", first.partition, last.partition)?;
        }
        if let (Some(first), Some(last)) = (dropped.first(), dropped.last()) {
            write!(f, "\ndropped {} .. {}", first.partition, last.partition)?;
        }
        write!(
            f,
            "\nledger: {} tenant-hour totals folded",
            run.ledger_totals_folded
        )?;
        let expired: Vec<String> = run
            .rollup_rows_deleted
            .iter()
            .map(|(rollup, rows)| format!("{rollup} {rows} rows deleted"))
            .collect();
        write!(f, "\nrollup retention: {}", expired.join(", "))
    }
}

impl Event for MaintenanceDone<'_> {
    fn emit(&self) {
        tracing::info!(
            created = self.run.created().len(),
            dropped = self.run.dropped().len(),
            ledger_totals_folded = self.run.ledger_totals_folded,
            past_due = self.past_due,
            "maintenance done"
        );
    }
}

/// `collect` accepted a request's events or refused the request.
pub enum CollectOutcome<'a> {
    Accepted(usize),
    Refused {
        code: crate::ErrorCode,
        message: &'a str,
    },
}

impl fmt::Display for CollectOutcome<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CollectOutcome::Accepted(n) => write!(f, "accepted {n} events"),
            CollectOutcome::Refused { code, message } => write!(f, "refused: {code} ({message})"),
        }
    }
}

impl Event for CollectOutcome<'_> {
    fn emit(&self) {
        match self {
            CollectOutcome::Accepted(n) => tracing::info!(accepted = n, "collect accepted"),
            CollectOutcome::Refused { code, message } => {
                tracing::info!(%code, %message, "collect refused")
            }
        }
    }
}

/// An administrative change, for the audit trail. Identifiers only (key and token ids, never
/// the secrets); `admin_key` is the id of the admin key that made the change.
pub enum Audit<'a> {
    TenantRegistered {
        tenant_id: i64,
        admin_key: &'a str,
    },
    KeyCreated {
        tenant_id: i64,
        key_id: &'a str,
        kind: crate::access::KeyKind,
        admin_key: &'a str,
    },
    /// A key was revoked, and with it the share tokens it had made.
    KeyRevoked {
        key_id: &'a str,
        admin_key: &'a str,
        share_tokens: usize,
    },
    ShareTokenCreated {
        tenant_id: i64,
        token_id: &'a str,
        expires_at: chrono::DateTime<chrono::Utc>,
    },
    /// By an admin key (`admin_key`) or by a key of the tenant (`None`).
    ShareTokenRevoked {
        tenant_id: i64,
        token_id: &'a str,
        admin_key: Option<&'a str>,
    },
    DashboardSaved {
        tenant_id: i64,
        dashboard: &'a str,
        version: i64,
    },
    DashboardDeleted {
        tenant_id: i64,
        dashboard: &'a str,
    },
    CollectLimitsSet {
        tenant_id: i64,
        admin_key: &'a str,
        overrides: &'a crate::quota::Overrides,
    },
}

impl fmt::Display for Audit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Audit::TenantRegistered {
                tenant_id,
                admin_key,
            } => write!(f, "tenant {tenant_id} registered by admin key {admin_key}"),
            Audit::KeyCreated {
                tenant_id,
                key_id,
                kind,
                admin_key,
            } => write!(
                f,
                "{kind} key {key_id} created for tenant {tenant_id} by admin key {admin_key}"
            ),
            Audit::KeyRevoked {
                key_id,
                admin_key,
                share_tokens,
            } => write!(
                f,
                "key {key_id} revoked with {share_tokens} share tokens by admin key {admin_key}"
            ),
            Audit::ShareTokenCreated {
                tenant_id,
                token_id,
                expires_at,
            } => write!(
                f,
                "share token {token_id} of tenant {tenant_id} created, expires {expires_at}"
            ),
            Audit::ShareTokenRevoked {
                tenant_id,
                token_id,
                admin_key,
            } => {
                write!(f, "share token {token_id} of tenant {tenant_id} revoked")?;
                match admin_key {
                    Some(k) => write!(f, " by admin key {k}"),
                    None => write!(f, " by a key of the tenant"),
                }
            }
            Audit::DashboardSaved {
                tenant_id,
                dashboard,
                version,
            } => write!(
                f,
                "dashboard {dashboard} of tenant {tenant_id} saved (version {version})"
            ),
            Audit::DashboardDeleted {
                tenant_id,
                dashboard,
            } => write!(f, "dashboard {dashboard} of tenant {tenant_id} deleted"),
            Audit::CollectLimitsSet {
                tenant_id,
                admin_key,
                overrides,
            } => write!(
                f,
                "collect limits of tenant {tenant_id} set to {overrides:?} by admin key {admin_key}"
            ),
        }
    }
}

impl Event for Audit<'_> {
    fn emit(&self) {
        match self {
            Audit::TenantRegistered {
                tenant_id,
                admin_key,
            } => tracing::info!(tenant_id, admin_key, "tenant registered"),
            Audit::KeyCreated {
                tenant_id,
                key_id,
                kind,
                admin_key,
            } => tracing::info!(
                tenant_id,
                key_id,
                kind = %kind,
                admin_key,
                "API key created"
            ),
            Audit::KeyRevoked {
                key_id,
                admin_key,
                share_tokens,
            } => tracing::info!(
                key_id,
                admin_key,
                share_tokens,
                "API key revoked with its share tokens"
            ),
            Audit::ShareTokenCreated {
                tenant_id,
                token_id,
                expires_at,
            } => tracing::info!(
                tenant_id,
                token_id,
                expires_at = %expires_at,
                "share token created"
            ),
            Audit::ShareTokenRevoked {
                tenant_id,
                token_id,
                admin_key,
            } => tracing::info!(tenant_id, token_id, admin_key, "share token revoked"),
            Audit::DashboardSaved {
                tenant_id,
                dashboard,
                version,
            } => tracing::info!(tenant_id, dashboard, version, "dashboard saved"),
            Audit::DashboardDeleted {
                tenant_id,
                dashboard,
            } => tracing::info!(tenant_id, dashboard, "dashboard deleted"),
            Audit::CollectLimitsSet {
                tenant_id,
                admin_key,
                overrides,
            } => tracing::info!(tenant_id, admin_key, ?overrides, "collect limits set"),
        }
    }
}

/// Lines of an event's text, for hosts that show one log entry per line (Azure `Logs`).
pub fn lines(event: &dyn Event) -> Vec<String> {
    event.to_string().lines().map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    /// The JSON lines `emit` writes while `f` runs.
    fn logged(f: impl FnOnce()) -> Vec<serde_json::Value> {
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn an_audit_event_is_logged_once_with_its_fields() {
        let lines = logged(|| {
            Audit::KeyCreated {
                tenant_id: 7,
                key_id: "k_abc",
                kind: crate::access::KeyKind::Read,
                admin_key: "k_admin",
            }
            .emit()
        });
        assert_eq!(lines.len(), 1, "{lines:?}");
        let fields = &lines[0]["fields"];
        assert_eq!(fields["message"], "API key created");
        assert_eq!(fields["tenant_id"], 7);
        assert_eq!(fields["key_id"], "k_abc");
        assert_eq!(fields["kind"], "read");
        assert_eq!(fields["admin_key"], "k_admin");
    }

    #[test]
    fn a_share_token_revoked_by_the_tenant_names_no_admin_key() {
        let event = Audit::ShareTokenRevoked {
            tenant_id: 7,
            token_id: "s_abc",
            admin_key: None,
        };
        assert_eq!(
            event.to_string(),
            "share token s_abc of tenant 7 revoked by a key of the tenant"
        );
        let lines = logged(|| event.emit());
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["fields"]["message"], "share token revoked");
        assert_eq!(lines[0]["fields"]["token_id"], "s_abc");
        assert!(lines[0]["fields"].get("admin_key").is_none());
    }
}
