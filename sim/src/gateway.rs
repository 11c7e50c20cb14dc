//! AVS gateway: downchannel, events, ping (placeholder).
