//! avsd's decode path (`avsd::audio::decode::decode_stream`: symphonia probe, decoder, resampler
//! hand-off) on arbitrary bytes, the way a Speak attachment or a media stream reaches it: an
//! unseekable reader. Corrupt input must end in a `DecodeError`, never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let reader = std::io::Cursor::new(data.to_vec());
    let mut samples = 0usize;
    let _ = avsd::audio::decode::decode_stream(reader, None, |pcm, rate, channels| {
        assert!(
            rate > 0 && channels > 0,
            "decoded PCM without a rate or channels"
        );
        samples += pcm.len();
        Ok(())
    });
});
