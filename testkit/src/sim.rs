//! Start an avs-sim on loopback (placeholder).
