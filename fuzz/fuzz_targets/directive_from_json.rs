//! `avs_proto::Directive::from_json` (and `Event::from_json`, the sim's side) on arbitrary
//! bytes: malformed input must become an error carrying the raw text, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match avs_proto::Directive::from_json(data) {
        Ok(d) => {
            let _ = d.qualified_name();
            let _ = d.dialog_request_id();
        }
        Err(e) => {
            let _ = e.exception_type();
            let _ = e.to_string();
        }
    }
    let _ = avs_proto::Event::from_json(data);
});
