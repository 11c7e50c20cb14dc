//! avs-testkit: helpers shared by the tests of every crate: an avs-sim on loopback with a fresh
//! CA, a raw HTTP/2 client that is not avsd, virtual audio devices, and waiting on a channel
//! from a plain test thread.

pub mod audio;
pub mod h2client;
pub mod sim;
pub mod skill;
pub mod wait;

/// A file of the repository's shared test inputs (`tests/fixtures/`: MP3s, multipart bodies,
/// JSON envelopes), used by avsd's and avs-sim's tests alike.
pub fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}
