//! The handler's sketch arithmetic against the `hll` extension itself: for sketches of every
//! representation (empty, explicit, sparse, full) and unions across them, the estimate merged
//! in Rust equals `hll_cardinality` of the database's own union, to the last bit.

use remarketable_core::sketch::Sketch;
use remarketable_tests::*;

/// Distinct values of the generated sets: around the explicit threshold of (14, 5) sketches
/// (1,280), the small-range correction and well past it.
const SIZES: [i64; 14] = [
    0, 1, 2, 37, 640, 1_279, 1_280, 1_281, 2_600, 9_000, 30_000, 41_000, 120_000, 400_000,
];

#[tokio::test]
async fn merged_estimates_equal_the_extension_bit_for_bit() {
    let db = TestDb::create().await;
    let client = db.client().await;
    // Set i holds [offset_i, offset_i + size_i): neighbours overlap by a third, so unions
    // count shared values once. Pairs are every set with every set, so explicit, sparse and
    // full sketches meet each other in both orders.
    let rows = client
        .query(
            "WITH sets AS (
                 SELECT i, size, (i * size) / 3 AS first
                 FROM unnest($1::int8[]) WITH ORDINALITY AS s (size, i)),
             sketches AS (
                 SELECT s.i, coalesce(
                            (SELECT hll_add_agg(hll_hash_bigint(g), 14, 5)
                             FROM generate_series(s.first, s.first + s.size - 1) g),
                            hll_empty(14, 5)) AS h
                 FROM sets s)
             SELECT a.i, b.i, hll_send(a.h), hll_send(b.h), hll_cardinality(a.h),
                    hll_cardinality(hll_union(a.h, b.h))
             FROM sketches a CROSS JOIN sketches b
             ORDER BY 1, 2",
            &[&SIZES.to_vec()],
        )
        .await
        .expect("sketches");
    assert_eq!(rows.len(), SIZES.len() * SIZES.len());
    let mut kinds = std::collections::BTreeSet::new();
    for row in &rows {
        let (i, j): (i64, i64) = (row.get(0), row.get(1));
        let (a_bytes, b_bytes): (Vec<u8>, Vec<u8>) = (row.get(2), row.get(3));
        // The representation: 1 empty, 2 explicit, 3 sparse, 4 full.
        kinds.insert(a_bytes[0] & 0x0f);
        let a = Sketch::from_bytes(&a_bytes).expect("the extension's storage format parses");
        let b = Sketch::from_bytes(&b_bytes).expect("the extension's storage format parses");
        let card: Option<f64> = row.get(4);
        assert_eq!(
            a.estimate().to_bits(),
            card.unwrap_or(0.0).to_bits(),
            "set {i} of {} values: {} here, {card:?} in the database",
            SIZES[i as usize - 1],
            a.estimate()
        );
        let union: Option<f64> = row.get(5);
        let merged = a.union(&b).expect("same shape").estimate();
        assert_eq!(
            merged.to_bits(),
            union.unwrap_or(0.0).to_bits(),
            "union of sets {i} and {j}: {merged} here, {union:?} in the database"
        );
    }
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        [1, 2, 3, 4],
        "the sets cover every representation"
    );
}
