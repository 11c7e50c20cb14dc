//! The bundled earcons: short WAV files under `assets/earcons/` (made once with sox, see
//! `assets/earcons/README.md`), compiled into the binary so a speaker with a broken disk or no
//! network still beeps.

use super::Earcon;

const WAKE: &[u8] = include_bytes!("../../assets/earcons/wake.wav");
const END_OF_LISTENING: &[u8] = include_bytes!("../../assets/earcons/end_of_listening.wav");
const ERROR: &[u8] = include_bytes!("../../assets/earcons/error.wav");
const OFFLINE: &[u8] = include_bytes!("../../assets/earcons/offline.wav");
const ALARM: &[u8] = include_bytes!("../../assets/earcons/alarm.wav");
const TIMER: &[u8] = include_bytes!("../../assets/earcons/timer.wav");
const REMINDER: &[u8] = include_bytes!("../../assets/earcons/reminder.wav");
const ALERT_SHORT: &[u8] = include_bytes!("../../assets/earcons/alert_short.wav");

/// The WAV file of an earcon.
pub fn wav_bytes(earcon: Earcon) -> &'static [u8] {
    match earcon {
        Earcon::Wake => WAKE,
        Earcon::EndOfListening => END_OF_LISTENING,
        Earcon::Error => ERROR,
        Earcon::Offline => OFFLINE,
        Earcon::Alarm => ALARM,
        Earcon::Timer => TIMER,
        Earcon::Reminder => REMINDER,
        Earcon::AlertShort => ALERT_SHORT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::decode::decode_stream;

    #[test]
    fn every_earcon_decodes_and_is_short() {
        for e in [
            Earcon::Wake,
            Earcon::EndOfListening,
            Earcon::Error,
            Earcon::Offline,
            Earcon::Alarm,
            Earcon::Timer,
            Earcon::Reminder,
            Earcon::AlertShort,
        ] {
            let s =
                decode_stream(std::io::Cursor::new(wav_bytes(e)), None, |_, _, _| Ok(())).unwrap();
            let secs = s.frames as f64 / f64::from(s.rate);
            assert!((0.1..=1.5).contains(&secs), "{e:?} lasts {secs} s");
        }
    }
}
