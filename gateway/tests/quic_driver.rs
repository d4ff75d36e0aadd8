//! The QUIC endpoint driver gives back everything a connection held once the unit is gone.
//! Its own test binary: it reads the gateway's gauges from a real Prometheus recorder, which
//! is global to the binary, so no other test may run beside it.

mod common;

use std::time::Duration;

use common::*;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// The value of an unlabelled gauge in the recorder's exposition, or `None` before it is set.
fn gauge(handle: &PrometheusHandle, name: &str) -> Option<f64> {
    handle.render().lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(' ')?;
        rest.trim().parse().ok()
    })
}

#[tokio::test]
async fn the_endpoint_forgets_every_connection_once_its_units_are_gone() {
    let handle = PrometheusBuilder::new().install_recorder().unwrap();
    let world = World::new();
    let gw = world.start(config("a")).await;
    let open = || gauge(&handle, "smartsolar_gateway_quic_endpoint_connections");

    let mut units = Vec::new();
    for n in 0..30 {
        units.push(gw.quic_unit(n).await);
    }
    eventually("30 open", || open() == Some(30.0)).await;

    // Half leave properly, half vanish with a connection close; a further 20 come and go.
    for (i, u) in units.into_iter().enumerate() {
        if i % 2 == 0 {
            u.close().await.unwrap();
        } else {
            u.abort();
        }
    }
    for n in 0..20 {
        gw.quic_unit(n).await.close().await.unwrap();
    }
    // Draining takes three probe timeouts, well under a second on loopback.
    for _ in 0..200 {
        if open() == Some(0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(open(), Some(0.0), "every connection drained and forgotten");
    gw.shutdown().await;
}
