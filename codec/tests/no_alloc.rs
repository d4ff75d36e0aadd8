//! Proves the hot path allocates nothing: decoding a typical MO status report or telemetry
//! batch (and walking its items), splitting it out of a frame, and reading the bus envelope.
//!
//! A counting global allocator needs `unsafe impl GlobalAlloc`; this file is the only place in
//! the codec that uses `unsafe`, and it only forwards to the system allocator.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use smartsolar_codec::mo::{StatusReport, TelemetryBatch};
use smartsolar_codec::*;

struct Counting;

thread_local! {
    // Per thread, so allocations by the test harness on other threads are not counted.
    // `const` initialisation: touching it never allocates.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counter is a
// thread-local `Cell`, which neither allocates nor can be observed from another thread.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during<R>(f: impl FnOnce() -> R) -> (usize, R) {
    let before = ALLOCATIONS.with(Cell::get);
    let r = f();
    (ALLOCATIONS.with(Cell::get) - before, r)
}

#[test]
fn typical_mo_decode_allocates_nothing() {
    let status = mo_to_vec(&MoMessage::StatusReport(StatusReport::typical(1518543688)));
    let telemetry = mo_to_vec(&MoMessage::Telemetry(TelemetryBatch::typical()));
    let mut framed = Vec::new();
    frame::encode_frame(&telemetry, frame::DEFAULT_MAX_FRAME, &mut framed).unwrap();
    let bus = encode_bus_envelope(&BusEnvelope {
        imei: "866771029491460",
        correlation_id: CorrelationId([3; 16]),
        received_at_ms: 1_518_543_688_000,
        transport: Transport::Tcp,
        ident: None,
        message: &status,
        mo_number: None,
    });

    let (n, enabled) = allocations_during(|| match decode_mo(&status) {
        Ok(MoMessage::StatusReport(s)) => s.enabled,
        other => panic!("{other:?}"),
    });
    assert_eq!(enabled, Some(true));
    assert_eq!(n, 0, "status report decode allocated");

    let (n, sum) = allocations_during(|| {
        let frame::Parsed::Frame { payload, .. } =
            frame::parse(&framed, frame::DEFAULT_MAX_FRAME).unwrap()
        else {
            panic!("incomplete")
        };
        let Ok(MoMessage::Telemetry(t)) = decode_mo(payload) else {
            panic!("not telemetry")
        };
        let mut sum = 0.0;
        for record in t.records {
            for v in record.values {
                sum += v.value.as_f64();
            }
        }
        sum
    });
    assert!(sum > 0.0);
    assert_eq!(n, 0, "telemetry frame + decode + iteration allocated");

    let (n, len) = allocations_during(|| decode_bus_envelope(&bus).unwrap().message.len());
    assert_eq!(len, status.len());
    assert_eq!(n, 0, "bus envelope decode allocated");

    // Sanity check that the counter works at all.
    let (n, _) = allocations_during(|| std::hint::black_box(vec![1u8; 16]));
    assert_eq!(n, 1);
}
