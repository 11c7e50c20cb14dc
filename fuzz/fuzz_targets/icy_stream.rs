//! avsd's ICY de-interleaver (`avsd::media::icy`: the metadata blocks a radio stream interleaves
//! with its audio) on arbitrary bytes and any `icy-metaint`: it must never panic, and what it
//! returns must not depend on how the network chunked the bytes.
#![no_main]

use avsd::media::icy::IcyDeinterleaver;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [metaint, chunk, body @ ..] = data else {
        return;
    };
    let Ok(mut whole) = IcyDeinterleaver::new(&(usize::from(*metaint) + 1).to_string()) else {
        return;
    };
    let Ok(mut split) = IcyDeinterleaver::new(&(usize::from(*metaint) + 1).to_string()) else {
        return;
    };
    let (mut audio_a, mut blocks_a) = (Vec::new(), Vec::new());
    whole.push(body, &mut audio_a, &mut blocks_a);
    let (mut audio_b, mut blocks_b) = (Vec::new(), Vec::new());
    for part in body.chunks(usize::from(*chunk % 17) + 1) {
        split.push(part, &mut audio_b, &mut blocks_b);
    }
    assert!(audio_a.len() <= body.len(), "more audio than input");
    assert_eq!(audio_a, audio_b, "audio depends on chunking");
    assert_eq!(blocks_a, blocks_b, "metadata depends on chunking");
});
