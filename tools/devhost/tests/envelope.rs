//! The Event Hubs encoder against the committed fixtures, value for value.
//!
//! `eventhub.rs` checks the shape of what a running devhost sends; this checks the one encoder
//! that devhost and loadgen share: fed the fixture's own events, it must write the fixture back,
//! in both encodings, apart from `sys`, which holds the clock and a random GUID.

mod common;

use chrono::{DateTime, NaiveDateTime, Utc};
use common::fixture;
use remarketable_devhost::envelope::{self, Encoding, PartitionInfo};
use remarketable_devhost::hub::StoredEvent;
use serde_json::Value;
use std::sync::Arc;

/// The events and partition a plain fixture describes, read from its own fields.
fn events_of(plain: &Value) -> (Vec<Arc<StoredEvent>>, PartitionInfo) {
    let meta = &plain["Metadata"];
    let column = |key: &str| meta[key].as_array().unwrap().clone();
    let bodies = plain["Data"]["events"].as_array().unwrap();
    let sequences = column("SequenceNumberArray");
    let offsets = column("OffsetArray");
    let times = column("EnqueuedTimeUtcArray");
    let keys = column("PartitionKeyArray");
    let events = (0..bodies.len())
        .map(|i| {
            Arc::new(StoredEvent {
                seq: sequences[i].as_i64().unwrap(),
                offset: offsets[i].as_str().unwrap().parse().unwrap(),
                enqueued: enqueued(times[i].as_str().unwrap()),
                key: keys[i].as_str().map(str::to_string),
                body: bodies[i].as_str().unwrap().to_string(),
            })
        })
        .collect();
    let context = &meta["PartitionContext"];
    let text = |key: &str| context[key].as_str().unwrap().to_string();
    let partition = PartitionInfo {
        namespace: text("FullyQualifiedNamespace"),
        hub: text("EventHubName"),
        consumer_group: text("ConsumerGroup"),
        partition: text("PartitionId").parse().unwrap(),
    };
    (events, partition)
}

fn enqueued(text: &str) -> DateTime<Utc> {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .unwrap()
        .and_utc()
}

/// Takes `sys` out of an envelope, after checking what of it is not random.
fn without_sys(mut envelope: Value) -> Value {
    let sys = envelope["Metadata"]
        .as_object_mut()
        .unwrap()
        .remove("sys")
        .expect("an envelope has sys");
    assert_eq!(sys["MethodName"], "ingest");
    assert!(sys["UtcNow"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(sys["RandGuid"].as_str().map(str::len), Some(36));
    envelope
}

/// Replaces each double-encoded value (a string holding JSON) with the JSON it holds, after
/// checking that `other` encodes the same value the same way. The strings are compared by what
/// they hold, not by their text: inside them devhost writes object keys sorted, the host in its
/// own order, and no reader of JSON can tell.
fn decoded_like(envelope: &Value, other: &Value) -> Value {
    let mut out = envelope.clone();
    let mut places: Vec<Vec<String>> = vec![vec!["Data".into(), "events".into()]];
    for key in other["Metadata"].as_object().unwrap().keys() {
        places.push(vec!["Metadata".into(), key.clone()]);
    }
    for place in places {
        let theirs = &other[&place[0]][&place[1]];
        let ours = &mut out[&place[0]][&place[1]];
        assert_eq!(ours.is_string(), theirs.is_string(), "{place:?}");
        if let Value::String(text) = ours {
            if place[1] != "sys" {
                *ours = serde_json::from_str(text).unwrap();
            }
        }
    }
    out
}

#[test]
fn the_encoder_writes_the_fixtures_back_in_both_encodings() {
    let (events, partition) = events_of(&fixture("eventhub_batch_plain.json"));
    for (encoding, name) in [
        (Encoding::Plain, "eventhub_batch_plain.json"),
        (Encoding::Double, "eventhub_batch_double_encoded.json"),
    ] {
        let encoded = envelope::event_hub("ingest", "events", &events, &partition, None, encoding);
        let expected = fixture(name);
        assert_eq!(
            without_sys(decoded_like(&encoded, &expected)),
            without_sys(decoded_like(&expected, &encoded)),
            "{name}"
        );
    }
}
