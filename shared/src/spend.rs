//! Ad spend (issue 14): the cost of a campaign (with its source and medium) on one of the
//! tenant's days, as ad platforms report it, for the campaign report's cost, CPC, CPA and ROAS.
//!
//! It arrives two ways, both validated by the event contract ([`crate::event`], event type
//! [`AD_SPEND`]), so a figure reads the same whichever way it came:
//! - `ad_spend` events on the stream, from trusted producers: ingest stores them in `ad_spend`
//!   (never in `events`) in the batch's transaction, so exactly once with the batch's position;
//!   `collect` refuses them (write keys are public);
//! - a CSV upload ([`upload`]: `remarketable spend import`, `POST
//!   /api/v1/admin/tenants/{id}/spend`), each row read as the event it stands for.
//!
//! One row per (tenant, day, campaign, source, medium) holds the latest figure: a report replaces
//! the stored one when it is later by `reported_at` (an event's `event_time`, an upload's
//! transaction time), then by (cost, currency), so the same reports in any arrival order leave
//! the same row, and storing one twice changes nothing.

use crate::event::{parse_event, EventLimits, ValidEvent, AD_SPEND};
use crate::{Error, ErrorCode};
use chrono::{DateTime, NaiveDate, SubsecRound, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use std::collections::HashMap;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, GenericClient};

/// One campaign's cost on one day, as reported at `reported_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spend {
    pub tenant_id: i64,
    pub day: NaiveDate,
    pub campaign: String,
    /// '' where the report names none.
    pub source: String,
    pub medium: String,
    pub cost: Decimal,
    pub currency: String,
    pub reported_at: DateTime<Utc>,
}

type Key<'a> = (i64, NaiveDate, &'a str, &'a str, &'a str);

impl Spend {
    /// The spend an [`AD_SPEND`] event reports; `None` for any other event.
    pub fn from_event(event: &ValidEvent) -> Option<Spend> {
        let day = event.spend?;
        Some(Spend {
            tenant_id: event.tenant_id,
            day: day.day,
            campaign: event.campaign.clone().unwrap_or_default(),
            source: event.source.clone().unwrap_or_default(),
            medium: event.medium.clone().unwrap_or_default(),
            cost: day.cost,
            currency: event.currency.clone().unwrap_or_default(),
            // As the table keeps it (microseconds), so ranking here and in SQL agree.
            reported_at: event.event_time.trunc_subsecs(6),
        })
    }

    fn key(&self) -> Key<'_> {
        (
            self.tenant_id,
            self.day,
            &self.campaign,
            &self.source,
            &self.medium,
        )
    }

    /// Whether this report replaces `other` of the same key (the rule of the table's upsert).
    fn outranks(&self, other: &Spend) -> bool {
        (self.reported_at, self.cost, &self.currency)
            > (other.reported_at, other.cost, &other.currency)
    }
}

/// How a figure arrived, as stored in `ad_spend.origin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Stream,
    Upload,
}

impl Origin {
    fn as_str(self) -> &'static str {
        match self {
            Origin::Stream => "stream",
            Origin::Upload => "upload",
        }
    }
}

/// Stores `spend` (any tenants and keys) by the replacement rule, in one statement of the
/// caller's transaction. Reports of the same key in `spend` are settled here first: one
/// statement cannot upsert a row twice.
pub async fn store(
    client: &impl GenericClient,
    spend: &[Spend],
    origin: Origin,
) -> Result<(), tokio_postgres::Error> {
    let mut latest: HashMap<Key<'_>, &Spend> = HashMap::with_capacity(spend.len());
    for s in spend {
        let slot = latest.entry(s.key()).or_insert(s);
        if s.outranks(slot) {
            *slot = s;
        }
    }
    if latest.is_empty() {
        return Ok(());
    }
    // Sorted by key: concurrent batches touching the same rows lock them in one order.
    let mut rows: Vec<&Spend> = latest.into_values().collect();
    rows.sort_by(|a, b| a.key().cmp(&b.key()));
    let text = |f: fn(&Spend) -> &str| rows.iter().map(|s| f(s)).collect::<Vec<&str>>();
    let tenants: Vec<i64> = rows.iter().map(|s| s.tenant_id).collect();
    let days: Vec<NaiveDate> = rows.iter().map(|s| s.day).collect();
    let costs: Vec<Decimal> = rows.iter().map(|s| s.cost).collect();
    let reported: Vec<DateTime<Utc>> = rows.iter().map(|s| s.reported_at).collect();
    let (campaigns, sources, mediums, currencies) = (
        text(|s| &s.campaign),
        text(|s| &s.source),
        text(|s| &s.medium),
        text(|s| &s.currency),
    );
    client
        .execute_typed(
            include_str!("../sql/spend_store.sql"),
            &[
                (&tenants, Type::INT8_ARRAY),
                (&days, Type::DATE_ARRAY),
                (&campaigns, Type::TEXT_ARRAY),
                (&sources, Type::TEXT_ARRAY),
                (&mediums, Type::TEXT_ARRAY),
                (&costs, Type::NUMERIC_ARRAY),
                (&currencies, Type::TEXT_ARRAY),
                (&reported, Type::TIMESTAMPTZ_ARRAY),
                (&origin.as_str(), Type::TEXT),
            ],
        )
        .await?;
    Ok(())
}

/// Largest upload, in rows.
pub const MAX_UPLOAD_ROWS: usize = 100_000;

/// The columns of an upload; `source` and `medium` may be left out (or empty).
pub const UPLOAD_COLUMNS: [&str; 6] = ["date", "campaign", "source", "medium", "cost", "currency"];
const REQUIRED_COLUMNS: [&str; 4] = ["date", "campaign", "cost", "currency"];

/// What an upload did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UploadReport {
    pub tenant_id: i64,
    /// Data rows read.
    pub rows: usize,
    /// Keys not stored before.
    pub added: usize,
    /// Keys whose cost or currency the upload changed.
    pub changed: usize,
    /// Keys the upload found with the same figure (their `reported_at` moves to the upload).
    pub unchanged: usize,
    /// The days the upload covers (`null` for an upload of no rows).
    pub first_day: Option<NaiveDate>,
    pub last_day: Option<NaiveDate>,
    /// The sum of the uploaded costs, per currency.
    pub cost: HashMap<String, Decimal>,
}

/// A refused upload: nothing of it was stored.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The CSV is unreadable or a row is not a valid spend; `line` is 1 for the header.
    #[error("line {line}: {message}")]
    Invalid { line: u64, message: String },
    #[error("database error")]
    Database(#[from] tokio_postgres::Error),
}

impl From<UploadError> for Error {
    fn from(e: UploadError) -> Error {
        match e {
            UploadError::Invalid { .. } => Error::new(ErrorCode::BadSpend, e.to_string()),
            UploadError::Database(e) => Error::from(e),
        }
    }
}

fn invalid(line: u64, message: impl Into<String>) -> UploadError {
    UploadError::Invalid {
        line,
        message: message.into(),
    }
}

/// Reads an upload: a header naming [`UPLOAD_COLUMNS`] (any order; `source` and `medium`
/// optional), then one row per campaign, source, medium and day, each read as the `ad_spend`
/// event it stands for, reported at `now`. A key may appear once.
pub fn read_upload(
    csv_text: &[u8],
    tenant_id: i64,
    now: DateTime<Utc>,
    limits: &EventLimits,
) -> Result<Vec<Spend>, UploadError> {
    // Spreadsheets save UTF-8 CSV with a byte order mark.
    let csv_text = csv_text.strip_prefix(b"\xef\xbb\xbf").unwrap_or(csv_text);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(csv_text);
    let header = reader
        .headers()
        .map_err(|e| invalid(1, format!("not CSV: {e}")))?
        .clone();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, name) in header.iter().enumerate() {
        let name = name.trim();
        if !UPLOAD_COLUMNS.contains(&name) {
            return Err(invalid(
                1,
                format!(
                    "unknown column {name:?}; the columns are {}",
                    UPLOAD_COLUMNS.join(", ")
                ),
            ));
        }
        if index.insert(name, i).is_some() {
            return Err(invalid(1, format!("column {name} appears twice")));
        }
    }
    if let Some(missing) = REQUIRED_COLUMNS.iter().find(|c| !index.contains_key(*c)) {
        return Err(invalid(1, format!("the header has no {missing} column")));
    }
    let mut spend: Vec<Spend> = Vec::new();
    let mut seen: HashMap<(NaiveDate, String, String, String), u64> = HashMap::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line());
            invalid(line, format!("not CSV: {e}"))
        })?;
        let line = record.position().map_or(0, |p| p.line());
        if spend.len() == MAX_UPLOAD_ROWS {
            return Err(invalid(
                line,
                format!("an upload holds at most {MAX_UPLOAD_ROWS} rows"),
            ));
        }
        let mut event = serde_json::Map::new();
        event.insert("tenant_id".into(), tenant_id.into());
        event.insert("event_type".into(), AD_SPEND.into());
        for (name, &i) in &index {
            let cell = record.get(i).unwrap_or_default().trim();
            if !cell.is_empty() {
                event.insert((*name).into(), cell.into());
            }
        }
        let body = serde_json::Value::Object(event).to_string();
        let valid = parse_event(body.as_bytes(), now, now, limits)
            .map_err(|r| invalid(line, format!("{} ({})", r.message, r.reason)))?;
        let s = Spend::from_event(&valid).expect("an ad_spend event reports a spend");
        let key = (
            s.day,
            s.campaign.clone(),
            s.source.clone(),
            s.medium.clone(),
        );
        if let Some(first) = seen.insert(key, line) {
            return Err(invalid(
                line,
                format!(
                    "{} / {} / {} on {} is on line {first} already",
                    s.campaign, s.source, s.medium, s.day
                ),
            ));
        }
        spend.push(s);
    }
    Ok(spend)
}

/// Stores an upload of `tenant_id`'s spend (see [`read_upload`]) in one transaction: all of it
/// or, on any refusal, nothing. Uploads of one tenant are serialized, so the report's counts
/// are exact against other uploads (a stream report landing meanwhile may make them stale).
pub async fn upload(
    client: &mut Client,
    tenant_id: i64,
    csv_text: &[u8],
    limits: &EventLimits,
) -> Result<UploadReport, UploadError> {
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('ad_spend upload', $1))",
        &[&tenant_id],
    )
    .await?;
    // Read once the lock is held: of two uploads of a tenant, the later one is reported later.
    let now: DateTime<Utc> = tx
        .query_one("SELECT date_trunc('microseconds', clock_timestamp())", &[])
        .await?
        .get(0);
    let spend = read_upload(csv_text, tenant_id, now, limits)?;
    let mut report = UploadReport {
        tenant_id,
        rows: spend.len(),
        first_day: spend.iter().map(|s| s.day).min(),
        last_day: spend.iter().map(|s| s.day).max(),
        ..UploadReport::default()
    };
    if let (Some(first), Some(last)) = (report.first_day, report.last_day) {
        let stored = tx
            .query(
                "SELECT day, campaign, source, medium, cost, currency FROM ad_spend
                 WHERE tenant_id = $1 AND day BETWEEN $2 AND $3",
                &[&tenant_id, &first, &last],
            )
            .await?;
        let stored: HashMap<(NaiveDate, String, String, String), (Decimal, String)> = stored
            .iter()
            .map(|r| {
                (
                    (r.get(0), r.get(1), r.get(2), r.get(3)),
                    (r.get(4), r.get(5)),
                )
            })
            .collect();
        for s in &spend {
            let key = (
                s.day,
                s.campaign.clone(),
                s.source.clone(),
                s.medium.clone(),
            );
            match stored.get(&key) {
                None => report.added += 1,
                Some((cost, currency)) if *cost == s.cost && *currency == s.currency => {
                    report.unchanged += 1
                }
                Some(_) => report.changed += 1,
            }
            *report.cost.entry(s.currency.clone()).or_default() += s.cost;
        }
    }
    store(&tx, &spend, Origin::Upload).await?;
    tx.commit().await?;
    tracing::info!(
        tenant_id,
        rows = report.rows,
        added = report.added,
        changed = report.changed,
        "ad spend uploaded"
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 4, 12, 0, 0).unwrap()
    }

    fn read(csv: &str) -> Result<Vec<Spend>, UploadError> {
        read_upload(csv.as_bytes(), 7, now(), &EventLimits::default())
    }

    fn line_of(e: UploadError) -> (u64, String) {
        match e {
            UploadError::Invalid { line, message } => (line, message),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn rows_read_as_spend_events() {
        let rows = read(
            "date,campaign,source,medium,cost,currency\n\
             2026-12-01,spring,google,cpc,12.345,eur\n\
             2026-12-01,spring,,,0,USD\n",
        )
        .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].cost, Decimal::new(12345, 3));
        assert_eq!(rows[0].currency, "EUR");
        assert_eq!(rows[0].reported_at, now());
        assert_eq!((rows[1].source.as_str(), rows[1].medium.as_str()), ("", ""));
        // source and medium may be left out; columns in any order; a byte order mark and
        // CRLF line ends (as spreadsheets write) are fine.
        let rows = read("\u{feff}cost,currency,campaign,date\r\n3.5,EUR,x,2026-12-02\r\n").unwrap();
        assert_eq!(rows[0].campaign, "x");
    }

    #[test]
    fn refusals_name_the_line() {
        let header = "date,campaign,source,medium,cost,currency\n";
        let cases = [
            ("date,campaign,cost\n", 1, "no currency column"),
            ("date,campaign,cost,currency,clicks\n", 1, "unknown column"),
            ("date,date,campaign,cost,currency\n", 1, "appears twice"),
        ];
        for (csv, line, words) in cases {
            let (l, m) = line_of(read(csv).unwrap_err());
            assert_eq!(l, line, "{csv}");
            assert!(m.contains(words), "{m}");
        }
        let rows = [
            ("2026-12-01,x,g,cpc,-1,EUR", "bad_cost"),
            ("2026-12-01,x,g,cpc,ten,EUR", "bad_cost"),
            ("2026-12-01,,g,cpc,1,EUR", "missing_campaign"),
            ("2026-12-01,x,g,cpc,1,EURO", "bad_currency"),
            ("2026-13-01,x,g,cpc,1,EUR", "bad_spend_date"),
            ("2027-06-01,x,g,cpc,1,EUR", "bad_spend_date"),
            ("2026-12-01,x,g,cpc,1", "not CSV"),
        ];
        for (row, words) in rows {
            let csv = format!("{header}2026-11-30,ok,g,cpc,1,EUR\n{row}\n");
            let (l, m) = line_of(read(&csv).unwrap_err());
            assert_eq!(l, 3, "{row}: {m}");
            assert!(m.contains(words), "{row}: {m}");
        }
        let twice = format!("{header}2026-12-01,x,g,cpc,1,EUR\n2026-12-01,x,g,cpc,2,EUR\n");
        let (l, m) = line_of(read(&twice).unwrap_err());
        assert_eq!(l, 3);
        assert!(m.contains("on line 2 already"), "{m}");
    }

    #[test]
    fn the_later_report_wins_then_the_greater_figure() {
        let base = read("date,campaign,cost,currency\n2026-12-01,x,5,EUR\n").unwrap()[0].clone();
        let later = Spend {
            reported_at: base.reported_at + chrono::Duration::seconds(1),
            cost: Decimal::ONE,
            ..base.clone()
        };
        assert!(later.outranks(&base) && !base.outranks(&later));
        let same_time_more = Spend {
            cost: Decimal::TEN,
            ..base.clone()
        };
        assert!(same_time_more.outranks(&base));
        assert!(!base.outranks(&base));
    }
}
