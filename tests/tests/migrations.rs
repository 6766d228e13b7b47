//! Migrations rewritten after their release (`db::REWRITTEN_MIGRATIONS`): a database that
//! applied the released text migrates on, and any other difference still stops `migrate`.

use remarketable_core::db::{self, MigrateError, REWRITTEN_MIGRATIONS};
use remarketable_tests::TestDb;

async fn recorded(client: &tokio_postgres::Client, version: i32) -> String {
    client
        .query_one(
            "SELECT checksum FROM refinery_schema_history WHERE version = $1",
            &[&version],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_released_text_is_accepted_and_any_other_divergence_refused() {
    let db = TestDb::create().await;
    let mut client = db.client().await;
    let mut rewritten = Vec::new();
    for (version, released) in REWRITTEN_MIGRATIONS {
        rewritten.push(recorded(&client, *version).await);
        assert_ne!(rewritten.last().unwrap(), &released.to_string());
        // As a database migrated before the rewrite has it.
        client
            .execute(
                "UPDATE refinery_schema_history SET checksum = $1 WHERE version = $2",
                &[&released.to_string(), version],
            )
            .await
            .unwrap();
    }
    let applied = db::migrate(&mut client)
        .await
        .expect("released texts accepted");
    assert!(applied.is_empty(), "nothing applied again: {applied:?}");
    for ((version, _), now) in REWRITTEN_MIGRATIONS.iter().zip(&rewritten) {
        assert_eq!(&recorded(&client, *version).await, now, "V{version}");
    }

    // Any other text is divergent, as before.
    client
        .execute(
            "UPDATE refinery_schema_history SET checksum = '12345' WHERE version = 12",
            &[],
        )
        .await
        .unwrap();
    let err = db::migrate(&mut client).await.unwrap_err();
    assert!(matches!(err, MigrateError::Migration(_)), "{err:?}");
    assert!(err.to_string().contains("is different than"), "{err}");
}
