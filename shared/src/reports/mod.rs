//! Tenant reports over the rollups, in real time.
//!
//! Every figure merges two parts read in one statement, so in one snapshot: the rollup rows
//! (events up to the rollup's watermark) and the raw events above that watermark, aggregated
//! the same way. A committed event is therefore visible at once, and the seam counts nothing
//! twice: the watermark and the rollup rows move in the same transaction.
//!
//! Everything a caller chooses is a closed type ([`Granularity`], [`Dimension`], [`Filters`] of
//! bounded strings, [`Range`] of bounded length); values reach SQL only as bind parameters, and
//! the SQL text is assembled from `&'static str` pieces chosen by those enums.
//!
//! One module per job: `vocabulary` (the closed types callers choose and the results they
//! get), `sql` (the SQL text and its bind parameters), `series` (the time series), `rolled` (the kept
//! rolled parts of breakdowns and summaries, [`RolledCache`]), `oracle` (the full-statement
//! breakdown and summary the tests check the kept parts against), `top` (top lists),
//! `campaigns` (the campaign report over the attribution tables), `funnel` (the funnel report
//! over the per-session funnel state) and `health` (the ingest
//! ledger and dead letters).

mod campaigns;
mod funnel;
mod health;
#[doc(hidden)]
pub mod oracle;
mod rolled;
mod series;
mod sql;
mod top;
mod vocabulary;

pub use campaigns::{
    campaigns, AttributionFreshness, CampaignRow, CampaignTotals, Campaigns, Model,
};
pub use funnel::{funnel, FunnelBy, FunnelGroup, FunnelReport, StepCount};
pub use health::{ingest, IngestReport, LedgerHour};
pub use rolled::RolledCache;
pub use series::timeseries;
pub use top::{top, Top, TopItem, TopList};
pub use vocabulary::{
    Breakdown, BreakdownRow, Dimension, Filters, Freshness, Granularity, Metric, Metrics, Point,
    Range, Ranking, ReportError, Summary, TimeSeries, DISTINCT_ERROR_BOUND_95, MAX_BUCKETS,
    MAX_FILTER_BYTES, MAX_RANGE_DAYS,
};

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, TimeDelta, Utc};

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn granularity_follows_the_range_length() {
        let r = |h: i64| {
            Range::new(
                at("2026-01-01T00:00:00Z"),
                at("2026-01-01T00:00:00Z") + TimeDelta::hours(h),
            )
            .unwrap()
        };
        assert_eq!(Granularity::for_range(&r(1)), Granularity::FiveMinutes);
        assert_eq!(Granularity::for_range(&r(24)), Granularity::FiveMinutes);
        assert_eq!(Granularity::for_range(&r(25)), Granularity::Hour);
        assert_eq!(Granularity::for_range(&r(14 * 24)), Granularity::Hour);
        assert_eq!(Granularity::for_range(&r(15 * 24)), Granularity::Day);
    }

    #[test]
    fn closed_types_refuse_what_they_do_not_know() {
        assert_eq!("1h".parse::<Granularity>(), Ok(Granularity::Hour));
        assert!("1w".parse::<Granularity>().is_err());
        assert_eq!("country".parse::<Dimension>(), Ok(Dimension::Country));
        assert!("country; DROP TABLE events".parse::<Dimension>().is_err());
        assert!("revenue".parse::<TopList>().is_err());
        let t = at("2026-01-01T00:00:00Z");
        assert!(Range::new(t, t).is_err());
        assert!(Range::new(t, t + TimeDelta::days(MAX_RANGE_DAYS + 1)).is_err());
        assert_eq!(
            Range::new(t, t + TimeDelta::hours(2)).unwrap().previous(),
            Range::new(t - TimeDelta::hours(2), t).unwrap()
        );
    }

    #[test]
    fn fixed_filters_cannot_be_overridden() {
        let mut f = Filters::default();
        f.set(Dimension::Country, "DE").unwrap();
        f.set(Dimension::Country, "DE").unwrap();
        let err = f.set(Dimension::Country, "FR").unwrap_err();
        assert_eq!(err.code, crate::ErrorCode::FilterFixed);
        assert!(err.message.contains("fixed"), "{err}");
        let err = f.set(Dimension::Browser, &"x".repeat(300)).unwrap_err();
        assert_eq!(err.code, crate::ErrorCode::BadParameter);
        for nasty in ["a\0b", "tab\there", "\u{7f}"] {
            let err = f.set(Dimension::Campaign, nasty).unwrap_err();
            assert_eq!(err.code, crate::ErrorCode::BadParameter, "{nasty:?}");
        }
    }
}
