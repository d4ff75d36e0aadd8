//! The database presence registry that lets gateways in different processes
//! route MT commands to the node holding a unit. Two registry objects over
//! one database stand for two gateway processes: they share nothing else.
//! (The routing itself, given a registry, is tested with two gateways in
//! `gateway/tests`.)

mod common;

use ::rtc::PresenceRegistry;
use common::{Backend, TestServer};
use control_plane::rtc::DbPresenceRegistry;

both_backends!(claims_are_shared_and_released_compare_and_delete);

async fn claims_are_shared_and_released_compare_and_delete(backend: Backend) {
    let server = TestServer::start(backend).await;
    let node_a = DbPresenceRegistry::new(server.state.clone());
    let node_b = DbPresenceRegistry::new(server.state.clone());
    let imei = "356000000000001";
    assert_eq!(node_b.lookup(imei).await, None);
    node_a.claim(imei, "gw-a").await;
    assert_eq!(
        node_b.lookup(imei).await.as_deref(),
        Some("gw-a"),
        "B sees A's claim"
    );
    // The unit reconnects to B: the newest claim wins.
    node_b.claim(imei, "gw-b").await;
    assert_eq!(node_a.lookup(imei).await.as_deref(), Some("gw-b"));
    // A's late release of the old connection must not erase B's entry.
    node_a.release(imei, "gw-a").await;
    assert_eq!(node_a.lookup(imei).await.as_deref(), Some("gw-b"));
    node_b.release(imei, "gw-b").await;
    assert_eq!(node_a.lookup(imei).await, None);
}
