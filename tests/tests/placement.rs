//! `tenant stats`, `tenant isolate` and `cluster rebalance` on plain PostgreSQL (issue 16):
//! the figures add up to the raw events, the ledger and the table's size; isolation and
//! rebalancing say they need Citus. On a cluster: tests/citus.rs, `isolation_on_citus`.

use remarketable_core::jobs;
use remarketable_core::placement::{self, PlacementError, TransferMode};
use remarketable_tests::{event, ingest, TestDb};

#[tokio::test]
async fn stats_add_up_and_isolation_needs_citus() {
    let db = TestDb::create().await;
    let bodies: Vec<_> = (0..600).map(|n| event(1 + (n % 7 % 3), n)).collect();
    ingest(&db, "0", 0, &bodies, 100).await;
    let mut client = db.client().await;
    jobs::rollup(&mut client).await.unwrap();

    let stats = placement::stats(&client).await.unwrap();
    assert!(!stats.citus && !stats.queries_tracked);
    assert!(stats.events_bytes > 0);
    let raw: Vec<(i64, i64)> = db
        .json_rows(
            "SELECT tenant_id, count(*) AS n FROM events GROUP BY 1 ORDER BY n DESC, tenant_id",
        )
        .await
        .iter()
        .map(|r| (r["tenant_id"].as_i64().unwrap(), r["n"].as_i64().unwrap()))
        .collect();
    let got: Vec<(i64, i64)> = stats
        .tenants
        .iter()
        .map(|t| (t.tenant_id, t.raw_events))
        .collect();
    assert_eq!(got, raw, "largest first, equal to the raw events");
    for t in &stats.tenants {
        assert_eq!(t.events, t.raw_events);
        assert_eq!(
            t.stored_last_24h, t.raw_events,
            "the ledger's last 24 hours"
        );
        assert!(t.shard.is_none() && t.queries.is_none());
    }
    let estimated: i64 = stats.tenants.iter().map(|t| t.raw_bytes_estimate).sum();
    assert!(
        (estimated - stats.events_bytes).abs() <= stats.tenants.len() as i64,
        "{estimated} of {}",
        stats.events_bytes
    );

    for result in [
        placement::isolate(&client, 1, TransferMode::Auto)
            .await
            .map(|_| ()),
        placement::rebalance_start(&client, TransferMode::BlockWrites)
            .await
            .map(|_| ()),
    ] {
        let err = result.unwrap_err();
        assert!(matches!(err, PlacementError::NeedsCitus(_)), "{err:?}");
        assert!(err.to_string().contains("needs Citus"), "{err}");
    }
    assert_eq!(
        "block_writes".parse::<TransferMode>(),
        Ok(TransferMode::BlockWrites)
    );
    assert!("fast".parse::<TransferMode>().unwrap_err().contains("auto"));
}
