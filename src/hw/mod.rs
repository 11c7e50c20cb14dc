//! Hardware controls of the speaker: buttons read from a Linux input device (evdev, typically
//! the `gpio-keys` device-tree overlay on a Pi) and status LEDs (APA102 over spidev, or sysfs
//! LEDs) that show the attention state. This module owns those two tasks and their device I/O;
//! the logic inside them (key to action, debounce, press-and-hold; state to light pattern, SPI
//! frames) is pure and tested without hardware. It owns no dialog state: like the control
//! socket, it sends `DialogCommand`s and watches what the dialog core publishes.

pub mod buttons;
pub mod input;
pub mod leds;

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How long a task waits before looking for a missing device again.
pub const RETRY_DELAY: Duration = Duration::from_secs(2);

/// Sleeps `delay` unless `shutdown` comes first; false when shutting down.
async fn pause(delay: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(delay) => true,
    }
}
