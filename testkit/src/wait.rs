//! Waiting on a channel from a plain (non-async) test body: the audio tests drive the engine
//! from `#[test]` threads and read its update channels here.

use std::fmt::Debug;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::Receiver;

/// Receives from `rx` until `is_end` accepts an item (kept, last) or the channel closes; each
/// item comes with the instant it arrived. Panics, listing what arrived, when no item comes
/// for `timeout`.
pub fn collect_until<T: Debug>(
    rx: &mut Receiver<T>,
    timeout: Duration,
    is_end: impl Fn(&T) -> bool,
) -> Vec<(Instant, T)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap_or_else(|e| panic!("a runtime to wait on: {e}"));
    rt.block_on(async {
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout(timeout, rx.recv()).await {
                Ok(Some(item)) => {
                    let end = is_end(&item);
                    seen.push((Instant::now(), item));
                    if end {
                        return seen;
                    }
                }
                Ok(None) => return seen,
                Err(_) => panic!("no final item within {timeout:?}; got {seen:?}"),
            }
        }
    })
}
