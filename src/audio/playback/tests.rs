//! Engine-level tests on the `wav:` devices (no sound hardware, no JACK).
