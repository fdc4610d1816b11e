//! TNEF (`winmail.dat`): arbitrary bytes through `liaison_core::mail::tnef::decode`,
//! and the compressed-RTF and RTF readers on their own.
//!
//! Invariants: never panics; what comes out is bounded
//! (`MAX_ATTACHMENTS`, `MAX_OUTPUT_BYTES` in all), and a decompressed RTF
//! body is never longer than the limit asked for.
#![no_main]

use liaison_core::mail::tnef::{decode, decompress_rtf, rtf_to_text, MAX_ATTACHMENTS, MAX_OUTPUT_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = decode(data) {
        assert!(t.attachments.len() <= MAX_ATTACHMENTS);
        let total: usize = t.attachments.iter().map(|a| a.data.len()).sum();
        assert!(total <= MAX_OUTPUT_BYTES);
    }
    let limit = 1 << 16;
    if let Ok(rtf) = decompress_rtf(data, limit) {
        assert!(rtf.len() <= limit);
        let _ = rtf_to_text(&rtf);
    }
    let _ = rtf_to_text(data);
});
