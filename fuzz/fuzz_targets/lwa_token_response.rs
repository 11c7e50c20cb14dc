//! The Login with Amazon answers avsd parses (`src/auth/lwa.rs`): the token and code-pair
//! responses (public serde types, parsed exactly as `LwaClient` does with `serde_json`), and the
//! error vocabulary mapping (`classify`) fed with whatever `error` string the body holds.
#![no_main]

use avsd::auth::lwa::{CodePairResponse, TokenResponse, classify};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = serde_json::from_slice::<TokenResponse>(data) {
        // Debug must never print the tokens: it reads the same whatever they hold. (A substring
        // test would trip on a token that happens to spell part of the Debug text itself.)
        let mut other = t.clone();
        other.access_token = format!("{}x", t.access_token);
        other.refresh_token = Some(format!("{}x", t.refresh_token.clone().unwrap_or_default()));
        assert_eq!(format!("{t:?}"), format!("{other:?}"));
    }
    let _ = serde_json::from_slice::<CodePairResponse>(data);
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let error = v["error"].as_str().unwrap_or_default();
        let description = v["error_description"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let _ = classify(error, description).is_transient();
    }
});
