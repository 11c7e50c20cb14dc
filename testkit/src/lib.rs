//! avs-testkit: helpers shared by the tests of every crate: an avs-sim on loopback with a fresh
//! CA, a raw HTTP/2 client that is not avsd, virtual audio devices, and waiting on a channel
//! from a plain test thread.

pub mod audio;
pub mod h2client;
pub mod sim;
pub mod skill;
pub mod wait;
