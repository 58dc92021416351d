//! Fuzzes the SFTP wire decoders: bytes go through a `Framer`, every framed packet is
//! decoded as both a `ServerPacket` and a `ClientPacket`, and whatever decodes must
//! re-encode to bytes that decode to the same value.
//!
//! Run (needs a nightly toolchain and `cargo install cargo-fuzz`), from the crate root:
//!     cargo +nightly fuzz run decode -- -max_total_time=60
//! `cd fuzz && cargo check` builds it on stable without the fuzzing instrumentation.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sftpipe::proto::{ClientPacket, DecodeError, Framer, ServerPacket};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the framer's maximum and where the stream is split in two, so
    // oversized lengths and packets straddling reads are both exercised.
    let Some((&knob, stream)) = data.split_first() else {
        return;
    };
    let max = 1 + (usize::from(knob) << 4);
    let split = usize::from(knob).min(stream.len());
    let mut framer = Framer::new(max);
    for piece in [&stream[..split], &stream[split..]] {
        framer.push(piece);
        loop {
            match framer.next_packet() {
                Ok(Some(body)) => {
                    assert!(!body.is_empty() && body.len() <= max);
                    check(body);
                }
                Ok(None) => break,
                Err(DecodeError::BadLength { len, max: m }) => {
                    assert!(m == max && (len == 0 || len > max));
                    return;
                }
                Err(e) => panic!("framer returned {e:?}"),
            }
        }
    }
});

fn check(body: &[u8]) {
    if let Ok(p) = ServerPacket::decode(body) {
        let mut wire = Vec::new();
        p.encode(&mut wire);
        assert_length_prefix(&wire);
        let again = ServerPacket::decode(&wire[4..]).expect("re-encoded server packet decodes");
        assert_eq!(again, p);
    }
    if let Ok(p) = ClientPacket::decode(body) {
        let mut wire = Vec::new();
        p.encode(&mut wire);
        assert_length_prefix(&wire);
        let again = ClientPacket::decode(&wire[4..]).expect("re-encoded client packet decodes");
        assert_eq!(again, p);
    }
}

fn assert_length_prefix(wire: &[u8]) {
    let len = u32::from_be_bytes([wire[0], wire[1], wire[2], wire[3]]) as usize;
    assert_eq!(len, wire.len() - 4);
}
