#![no_main]
//! MO decoding: any bytes give a message or an error, never a panic; a decoded message
//! iterates exactly the items it announces (iteration re-reads the validated bytes).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    use smartsolar_codec::MoMessage;
    if let Ok(msg) = smartsolar_codec::decode_mo(data) {
        match msg {
            MoMessage::Telemetry(t) => {
                assert_eq!(t.records.iter().count(), t.records.len());
                for r in t.records {
                    assert_eq!(r.values.iter().count(), r.values.len());
                }
            }
            MoMessage::EventLog(l) => assert_eq!(l.events.iter().count(), l.events.len()),
            MoMessage::CellReport(c) => assert_eq!(c.cells.iter().count(), c.cells.len()),
            _ => {}
        }
    }
});
