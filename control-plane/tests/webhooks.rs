//! Webhooks end to end: a real HTTP receiver on 127.0.0.1:0 that checks
//! every signature with the spec's algorithm, the delivery worker, the
//! outbox, on SQLite and on PostgreSQL.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use base64::Engine as _;
use common::{fresh_db_url, link, Backend, TestServer};
use control_plane::catalogue::{Column, ColumnType};
use control_plane::{dcm, outbox, ControlPlaneConfig};
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use sea_query::{Alias, Query};
use serde_json::{json, Value as Json};

both_backends!(
    subscribe_and_unsubscribe_follow_the_spec,
    outbox_notifications_are_delivered_signed,
    final_balance_is_published_on_dcm,
    retries_after_errors_and_timeouts_in_order,
    no_delivery_after_unsubscribe,
    nothing_is_lost_across_a_restart,
    two_workers_send_each_delivery_once,
    entity_subscribers_only_get_their_products,
    the_backlog_and_attempt_latency_are_measured,
);

/// What the receiver does with the next request.
#[derive(Debug, Clone, Copy)]
enum Reply {
    Status(u16),
    /// Sleeps past any test timeout, then answers 200 (too late to count).
    Hang,
}

/// One received request.
#[derive(Debug, Clone)]
struct Received {
    body: String,
    signature: String,
    content_type: String,
    notification_id: String,
}

#[derive(Default)]
struct Inner {
    /// Replies for the next requests, in order; 200 when empty.
    script: Mutex<Vec<Reply>>,
    /// Requests answered with 2xx.
    accepted: Mutex<Vec<Received>>,
    requests: AtomicUsize,
}

/// A subscriber's endpoint.
#[derive(Clone)]
struct Receiver {
    url: String,
    inner: Arc<Inner>,
    _stop: Arc<tokio::sync::oneshot::Sender<()>>,
}

impl Receiver {
    async fn start() -> Self {
        let inner = Arc::new(Inner::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks/smartsolar", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/hooks/smartsolar", axum::routing::post(receive))
            .with_state(inner.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        Self {
            url,
            inner,
            _stop: Arc::new(tx),
        }
    }

    fn script(&self, replies: &[Reply]) {
        *self.inner.script.lock().unwrap() = replies.to_vec();
    }

    fn accepted(&self) -> Vec<Received> {
        self.inner.accepted.lock().unwrap().clone()
    }

    fn requests(&self) -> usize {
        self.inner.requests.load(Ordering::SeqCst)
    }

    /// Waits until `n` requests were accepted (panics after 20 s).
    async fn wait_for(&self, n: usize) -> Vec<Received> {
        for _ in 0..400 {
            let got = self.accepted();
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("expected {n} deliveries, got {:?}", self.accepted());
    }
}

async fn receive(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> AxumStatus {
    inner.requests.fetch_add(1, Ordering::SeqCst);
    let reply = {
        let mut script = inner.script.lock().unwrap();
        if script.is_empty() {
            Reply::Status(200)
        } else {
            script.remove(0)
        }
    };
    let status = match reply {
        Reply::Status(s) => s,
        Reply::Hang => {
            // The sender has given up by now: not counted as accepted.
            tokio::time::sleep(Duration::from_secs(5)).await;
            return AxumStatus::OK;
        }
    };
    if (200..300).contains(&status) {
        let header = |k: &str| {
            headers
                .get(k)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        inner.accepted.lock().unwrap().push(Received {
            body: String::from_utf8(body.to_vec()).unwrap(),
            signature: header("X-BBOXX-Signature"),
            content_type: header("content-type"),
            notification_id: header("X-SmartSolar-Notification-Id"),
        });
    }
    AxumStatus::from_u16(status).unwrap()
}

/// The spec's verification code: base64(HMAC-SHA1(key, payload + url)).
fn spec_signature(key: &str, payload: &str, url: &str) -> String {
    let raw = format!("{payload}{url}");
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(raw.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn fast(config: &mut ControlPlaneConfig) {
    config.webhook_poll_interval_ms = 20;
    config.webhook_backoff_base_ms = 20;
    config.webhook_backoff_max_ms = 100;
    config.webhook_timeout_ms = 1_500;
}

/// Starts the delivery worker; dropping the guard stops it.
struct WorkerGuard {
    _stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<()>,
}

impl WorkerGuard {
    async fn stop(self) {
        drop(self._stop);
        self.handle.await.unwrap();
    }
}

fn worker(server: &TestServer) -> WorkerGuard {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = control_plane::webhooks::spawn_worker(server.state.clone(), async {
        let _ = rx.await;
    });
    WorkerGuard { _stop: tx, handle }
}

async fn subscribe(server: &TestServer, channel: &str, url: &str) -> String {
    let body = server
        .post_created(
            &format!("/v1/channels/{channel}/subscribe"),
            json!({"url": url}),
        )
        .await;
    body["data"]["key"].as_str().unwrap().to_string()
}

async fn enqueue(server: &TestServer, channel: &str, imei: Option<&str>, data: Json) -> i64 {
    let mut tx = server.state.db.begin().await.unwrap();
    let id = outbox::enqueue(&mut tx, channel, imei, data, control_plane::values::now())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    id
}

fn assert_signed(r: &Received, key: &str, url: &str) {
    assert_eq!(r.signature, spec_signature(key, &r.body, url), "signature");
    assert_eq!(r.content_type, "application/json");
}

async fn subscribe_and_unsubscribe_follow_the_spec(backend: Backend) {
    let server = TestServer::start(backend).await;
    let url = "http://127.0.0.1:9/example_endpoint";
    let body = server.get_ok("/v1/channels").await;
    let names: Vec<&str> = body["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["dcm", "product-alert", "product-status"]);

    let body = server
        .post_created("/v1/channels/product-status/subscribe", json!({"url": url}))
        .await;
    assert_eq!(body["status"], "success");
    assert_eq!(
        body["message"],
        format!("You have subscribed to the 'product-status' channel with the url: '{url}'")
    );
    assert_eq!(body["data"]["url"], url);
    assert_eq!(body["data"]["channel_name"], "product-status");
    let key = body["data"]["key"].as_str().unwrap();
    assert_eq!(key.len(), 24);
    // One url per channel.
    let (s, body) = server
        .post(
            "/v1/channels/product-status/subscribe",
            json!({"url": "http://127.0.0.1:9/other"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    // The key is stored encrypted and never shown again.
    let (_, subs) = server.get("/v1/subscribers").await;
    assert_eq!(subs["num_results"], 1);
    assert!(subs["objects"][0].get("key").is_none(), "{subs}");
    assert_eq!(subs["objects"][0]["created_by"], common::ADMIN);
    let stored = server
        .state
        .db
        .fetch_optional(
            &Query::select()
                .column(Alias::new("key"))
                .from(Alias::new("subscriber"))
                .to_owned(),
            &[&Column::computed("key", ColumnType::String)],
        )
        .await
        .unwrap()
        .unwrap();
    let stored = stored["key"].as_str().unwrap();
    assert!(
        stored.starts_with("v1:") && !stored.contains(key),
        "{stored}"
    );

    // Refused: unknown channel, other schemes, private addresses, no url.
    for (channel, body, status) in [
        ("nope", json!({"url": url}), StatusCode::NOT_FOUND),
        (
            "dcm",
            json!({"url": "ftp://127.0.0.1/x"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "dcm",
            json!({"url": "http://10.0.0.7/x"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "dcm",
            json!({"url": "http://169.254.169.254/x"}),
            StatusCode::BAD_REQUEST,
        ),
        ("dcm", json!({}), StatusCode::BAD_REQUEST),
    ] {
        let (s, b) = server
            .post(&format!("/v1/channels/{channel}/subscribe"), body.clone())
            .await;
        assert_eq!(s, status, "{channel} {body}: {b}");
    }
    // Permissions: ADMIN.
    let tech = server
        .user("tech@example.com", "TECHNICAL", "GLOBAL", None)
        .await;
    for action in ["subscribe", "unsubscribe"] {
        let (s, _) = server
            .post_as(
                &tech,
                &format!("/v1/channels/dcm/{action}"),
                json!({"url": url}),
            )
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{action}");
    }

    let body = server
        .post_ok(
            "/v1/channels/product-status/unsubscribe",
            json!({"url": url}),
        )
        .await;
    assert_eq!(
        body,
        json!({"status": "success",
               "message": format!("You have unsubscribed from the 'product-status' channel with the url: '{url}'"),
               "data": null})
    );
    let (s, _) = server
        .post(
            "/v1/channels/product-status/unsubscribe",
            json!({"url": url}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Free again.
    subscribe(&server, "product-status", "http://127.0.0.1:9/other").await;
}

async fn outbox_notifications_are_delivered_signed(backend: Backend) {
    let server = TestServer::start_with(backend, fast).await;
    let receiver = Receiver::start().await;
    let key = subscribe(&server, "product-status", &receiver.url).await;
    let w = worker(&server);
    let imei = server.seed("product", json!({})).await;
    let data = json!({"state": 5, "enabled_status": "pending_enabled", "user": "a@b.c"});
    let id = enqueue(&server, "product-status", imei.as_str(), data.clone()).await;
    let got = receiver.wait_for(1).await;
    assert_signed(&got[0], &key, &receiver.url);
    let body: Json = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(body["channel"], "product-status");
    assert_eq!(body["data"], data);
    assert!(body["timestamp"].is_string());
    assert_eq!(got[0].notification_id, id.to_string());
    // Other channels do not reach this subscriber.
    enqueue(
        &server,
        "product-alert",
        imei.as_str(),
        json!({"alert_id": 1}),
    )
    .await;

    // The delivery log, and re-sending.
    let (_, subs) = server.get("/v1/subscribers").await;
    let subscriber_id = subs["objects"][0]["subscriber_id"].as_i64().unwrap();
    let path = format!("/v1/subscribers/{subscriber_id}/deliveries");
    let mut log = json!(null);
    for _ in 0..100 {
        log = server.get(&path).await.1;
        if log["objects"][0]["status"] == "delivered" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(log["num_results"], 1, "{log}");
    let delivery = &log["objects"][0];
    assert_eq!(delivery["status"], "delivered");
    assert_eq!(delivery["channel"], "product-status");
    assert_eq!(delivery["attempts"], 1);
    assert_eq!(delivery["attempt_log"][0]["outcome"], "delivered");
    assert_eq!(delivery["attempt_log"][0]["status_code"], 200);
    let delivery_id = delivery["webhook_delivery_id"].as_i64().unwrap();
    server
        .call_expecting(
            StatusCode::OK,
            Method::POST,
            &format!("{path}/{delivery_id}/resend"),
            None,
        )
        .await;
    let got = receiver.wait_for(2).await;
    assert_eq!(got[1].body, got[0].body);
    assert_signed(&got[1], &key, &receiver.url);
    server
        .call_expecting(
            StatusCode::NOT_FOUND,
            Method::POST,
            &format!("{path}/999999/resend"),
            None,
        )
        .await;
    w.stop().await;
    assert_eq!(receiver.accepted().len(), 2);
}

async fn final_balance_is_published_on_dcm(backend: Backend) {
    let server = TestServer::start_with(backend, fast).await;
    let receiver = Receiver::start().await;
    let key = subscribe(&server, "dcm", &receiver.url).await;
    let w = worker(&server);
    let imei = server
        .seed("product", json!({"dcm_enabled_flag": true}))
        .await;
    let imei = imei.as_str().unwrap();
    for (category, value, tx) in [("payment", 500, "p1"), ("zero-command", 0, "z1")] {
        server
            .post_created(
                &format!("/v1/products/{imei}/add_payment_command"),
                json!({"value": value, "category": category, "transaction_id": tx}),
            )
            .await;
    }
    let mut tx = server.state.db.begin().await.unwrap();
    let zero = dcm::pending_commands(&mut tx, imei).await.unwrap()[1].payment_command_id;
    dcm::record_final_balance(
        &mut tx,
        &server.state.catalogue,
        imei,
        zero,
        321,
        "gateway",
        control_plane::values::now(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let got = receiver.wait_for(1).await;
    assert_signed(&got[0], &key, &receiver.url);
    let body: Json = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(body["channel"], "dcm");
    assert_eq!(body["data"]["final_balance"], 321);
    assert_eq!(body["data"]["total_added"], 500);
    assert_eq!(body["data"]["product_imei"], imei);
    assert_eq!(body["data"]["zero_command_id"], zero);
    w.stop().await;
}

async fn retries_after_errors_and_timeouts_in_order(backend: Backend) {
    let server = TestServer::start_with(backend, fast).await;
    let receiver = Receiver::start().await;
    let key = subscribe(&server, "product-alert", &receiver.url).await;
    receiver.script(&[Reply::Status(500), Reply::Hang, Reply::Status(503)]);
    for i in 1..=3 {
        enqueue(&server, "product-alert", None, json!({"alert_id": i})).await;
    }
    let w = worker(&server);
    let got = receiver.wait_for(3).await;
    w.stop().await;
    // The first notification waited through three failures; the later ones
    // waited for it: order by notification id is kept.
    let ids: Vec<i64> = got
        .iter()
        .map(|r| {
            serde_json::from_str::<Json>(&r.body).unwrap()["data"]["alert_id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(ids, [1, 2, 3]);
    for r in &got {
        assert_signed(r, &key, &receiver.url);
    }
    // The hung request completes at the receiver after the worker gave up on it.
    assert!(receiver.requests() >= 6, "{}", receiver.requests());
    let (_, subs) = server.get("/v1/subscribers").await;
    let subscriber_id = subs["objects"][0]["subscriber_id"].as_i64().unwrap();
    let (_, log) = server
        .get(&format!("/v1/subscribers/{subscriber_id}/deliveries"))
        .await;
    let first = log["objects"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(first["status"], "delivered", "{log}");
    assert_eq!(first["attempts"], 4, "{first}");
    let attempts = first["attempt_log"].as_array().unwrap();
    let outcomes: Vec<&str> = attempts
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["retry", "retry", "retry", "delivered"]);
    assert_eq!(attempts[0]["status_code"], 500);
    assert!(attempts[1]["status_code"].is_null());
    assert!(
        attempts[1]["error"].as_str().unwrap().contains("timed out"),
        "{first}"
    );
    assert_eq!(attempts[2]["status_code"], 503);
}

async fn no_delivery_after_unsubscribe(backend: Backend) {
    let server = TestServer::start_with(backend, fast).await;
    let receiver = Receiver::start().await;
    subscribe(&server, "product-status", &receiver.url).await;
    // Queued while subscribed, unsubscribed before the worker ran.
    enqueue(&server, "product-status", None, json!({"state": 1})).await;
    server
        .post_ok(
            "/v1/channels/product-status/unsubscribe",
            json!({"url": receiver.url}),
        )
        .await;
    let w = worker(&server);
    enqueue(&server, "product-status", None, json!({"state": 2})).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    w.stop().await;
    assert_eq!(receiver.requests(), 0);
}

async fn nothing_is_lost_across_a_restart(backend: Backend) {
    let (url, _dir) = fresh_db_url(backend).await;
    let receiver = Receiver::start().await;
    let first = TestServer::start_on(&url, fast).await;
    let key = subscribe(&first, "dcm", &receiver.url).await;
    // One notification fails while the first server runs; another is
    // written just before it stops.
    receiver.script(&[Reply::Status(500)]);
    let w = worker(&first);
    enqueue(&first, "dcm", None, json!({"n": 1})).await;
    for _ in 0..200 {
        if receiver.requests() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    w.stop().await;
    enqueue(&first, "dcm", None, json!({"n": 2})).await;
    assert!(receiver.accepted().is_empty());
    drop(first);

    let second = TestServer::start_on(&url, fast).await;
    let w = worker(&second);
    let got = receiver.wait_for(2).await;
    w.stop().await;
    let ns: Vec<i64> = got
        .iter()
        .map(|r| {
            serde_json::from_str::<Json>(&r.body).unwrap()["data"]["n"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(ns, [1, 2]);
    for r in &got {
        assert_signed(r, &key, &receiver.url);
    }
}

/// On PostgreSQL: two server instances (two pools) over one database, as
/// in a multi-instance deployment. On SQLite one process owns the database
/// (its single writer connection), so the workers share one server there.
async fn two_workers_send_each_delivery_once(backend: Backend) {
    let (url, _dir) = fresh_db_url(backend).await;
    let a = TestServer::start_on(&url, fast).await;
    let second = match backend {
        Backend::Postgres => Some(TestServer::start_on(&url, fast).await),
        Backend::Sqlite => None,
    };
    let b = second.as_ref().unwrap_or(&a);
    let receivers = [Receiver::start().await, Receiver::start().await];
    subscribe(&a, "product-status", &receivers[0].url).await;
    subscribe(&a, "product-alert", &receivers[1].url).await;
    let workers = [worker(&a), worker(b), worker(&a)];
    for i in 0..15 {
        enqueue(&a, "product-status", None, json!({"state": i})).await;
        enqueue(b, "product-alert", None, json!({"alert_id": i})).await;
    }
    for r in &receivers {
        r.wait_for(15).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for w in workers {
        w.stop().await;
    }
    for r in &receivers {
        let got = r.accepted();
        assert_eq!(got.len(), 15, "each exactly once");
        let ids: Vec<i64> = got
            .iter()
            .map(|g| g.notification_id.parse().unwrap())
            .collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        assert_eq!(ids, sorted, "in notification order");
    }
}

async fn entity_subscribers_only_get_their_products(backend: Backend) {
    let server = TestServer::start_with(backend, fast).await;
    let entity = server.seed("entity", json!({})).await.as_i64().unwrap();
    let other = server.seed("entity", json!({})).await.as_i64().unwrap();
    let mine = server.seed("product", json!({})).await;
    let theirs = server.seed("product", json!({})).await;
    link(&server, mine.as_str().unwrap(), entity).await;
    link(&server, theirs.as_str().unwrap(), other).await;
    let admin = server
        .user("entity-admin@example.com", "ADMIN", "ENTITY", Some(entity))
        .await;
    let receiver = Receiver::start().await;
    let (s, b) = server
        .post_as(
            &admin,
            "/v1/channels/product-status/subscribe",
            json!({"url": receiver.url}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    // A GLOBAL subscription on the same channel is a different scope.
    let global = Receiver::start().await;
    subscribe(&server, "product-status", &global.url).await;
    let w = worker(&server);
    enqueue(
        &server,
        "product-status",
        theirs.as_str(),
        json!({"state": 1}),
    )
    .await;
    enqueue(&server, "product-status", None, json!({"state": 2})).await;
    enqueue(
        &server,
        "product-status",
        mine.as_str(),
        json!({"state": 3}),
    )
    .await;
    let got = receiver.wait_for(1).await;
    global.wait_for(3).await;
    w.stop().await;
    assert_eq!(got.len(), 1);
    let body: Json = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(body["data"]["state"], 3);
    // The entity admin sees only its own subscription's log.
    let (_, subs) = server.get("/v1/subscribers").await;
    let global_id = subs["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["entity_id"].is_null())
        .unwrap()["subscriber_id"]
        .as_i64()
        .unwrap();
    let (s, _) = server
        .get_as(&admin, &format!("/v1/subscribers/{global_id}/deliveries"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

async fn the_backlog_and_attempt_latency_are_measured(backend: Backend) {
    common::metrics();
    let server = TestServer::start_with(backend, fast).await;
    let receiver = Receiver::start().await;
    subscribe(&server, "product-alert", &receiver.url).await;
    let worker = control_plane::webhooks::Worker::new(server.state.clone()).unwrap();
    let empty = worker.observe_backlog().await.unwrap();
    assert_eq!(empty.deliveries, 0);
    assert_eq!(empty.oldest_age_secs, 0.0);

    // The subscriber fails: both notifications stay waiting after a round.
    receiver.script(&[Reply::Status(500), Reply::Status(500)]);
    let retries = r#"smartsolar_webhook_attempt_duration_seconds_count{outcome="retry"}"#;
    let before = common::metric(retries);
    for i in 1..=2 {
        enqueue(&server, "product-alert", None, json!({"alert_id": i})).await;
    }
    worker.run_once().await.unwrap();
    // Old enough that an age read from the stored timestamp cannot round to 0.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let waiting = worker.observe_backlog().await.unwrap();
    assert_eq!(waiting.deliveries, 2, "{waiting:?}");
    assert!(waiting.oldest_age_secs >= 0.02, "{waiting:?}");
    assert!(common::metric(retries) >= before + 1.0, "attempt not timed");

    // Once the subscriber answers, the backlog drains to nothing.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        worker.run_once().await.unwrap();
        if worker.observe_backlog().await.unwrap().deliveries == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "backlog never drained"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(receiver.wait_for(2).await.len(), 2);
}
