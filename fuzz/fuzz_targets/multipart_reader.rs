//! `avs_proto::multipart::PartReader` on arbitrary `multipart/related` bodies, delivered in
//! chunks whose sizes vary with the input, driven by a futures executor. The boundary is taken
//! from the body's first line (`--BOUNDARY`), so captured bodies in `tests/fixtures/` are seeds
//! as they are. Every whole JSON part also goes through `Directive::from_json`, as the
//! transport does.
#![no_main]

use avs_proto::multipart::{Limits, MultipartKind, PartEvent, PartReader};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let first_line = data.split(|b| *b == b'\n').next().unwrap_or_default();
    let boundary = String::from_utf8_lossy(first_line.strip_prefix(b"--").unwrap_or(first_line))
        .trim()
        .to_owned();
    let content_type = format!("multipart/related; boundary={boundary}; type=\"application/json\"");
    // Small limits so the oversized paths run too.
    let limits = Limits {
        json_part_bytes: 2048,
        binary_part_bytes: 4096,
    };
    let step = 1 + data.len() % 61;
    let chunks: Vec<Result<Bytes, std::io::Error>> = data
        .chunks(step)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let stream = futures_util::stream::iter(chunks);
    let Ok(mut reader) = PartReader::new(&content_type, MultipartKind::Related, stream, limits)
    else {
        return;
    };
    futures_executor::block_on(async {
        // A body of n bytes cannot hold more than n events; more means the reader is looping.
        for _ in 0..=data.len() + 2 {
            match reader.next().await {
                Ok(Some(PartEvent::Json { body, .. })) => {
                    assert!(
                        body.len() <= limits.json_part_bytes,
                        "JSON part over its limit"
                    );
                    let _ = avs_proto::Directive::from_json(&body);
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return,
            }
        }
        panic!("PartReader produced more events than the body has bytes");
    });
});
