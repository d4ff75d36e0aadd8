//! The outbox commits and rolls back with the change that causes it.

mod common;

use common::{fresh_db, Backend};
use control_plane::catalogue::{Column, ColumnType};
use control_plane::outbox;
use sea_query::{Alias, Expr, Query};
use serde_json::json;

both_backends!(notification_commits_and_rolls_back_with_its_transaction);

async fn notification_commits_and_rolls_back_with_its_transaction(backend: Backend) {
    let (db, _dir) = fresh_db(backend).await;
    let now = control_plane::values::now();
    let count = || {
        Query::select()
            .expr(Expr::col(Alias::new("notification_id")).count())
            .from(Alias::new("notification"))
            .to_owned()
    };
    let mut tx = db.begin().await.unwrap();
    outbox::enqueue(
        &mut tx,
        outbox::PRODUCT_STATUS,
        Some("000000000000001"),
        json!({"state": 2}),
        now,
    )
    .await
    .unwrap();
    drop(tx); // rolled back
    assert_eq!(db.fetch_i64(&count()).await.unwrap(), 0);
    let mut tx = db.begin().await.unwrap();
    let id = outbox::enqueue(&mut tx, outbox::DCM, None, json!({"balance": 5}), now)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(id > 0);
    let payload = Column::computed("payload", ColumnType::Text);
    let row = db
        .fetch_optional(
            &Query::select()
                .column(Alias::new("payload"))
                .from(Alias::new("notification"))
                .to_owned(),
            &[&payload],
        )
        .await
        .unwrap()
        .unwrap();
    let body: serde_json::Value = serde_json::from_str(row["payload"].as_str().unwrap()).unwrap();
    assert_eq!(body["channel"], json!("dcm"));
    assert_eq!(body["data"], json!({"balance": 5}));
    assert!(body["timestamp"].as_str().unwrap().contains('T'));
    // An unknown channel is refused by the foreign key.
    let mut tx = db.begin().await.unwrap();
    assert!(
        outbox::enqueue(&mut tx, "no-such-channel", None, json!({}), now)
            .await
            .is_err()
    );
}
