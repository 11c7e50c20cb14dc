//! SSML as far as speech rendering needs it: text segments and the silences `<break>` (and
//! sentence/paragraph ends) stand for. Validation of SSML is not done here (progressive.rs checks
//! what the Progressive Response API must refuse).

use std::time::Duration;

/// A piece of the input after SSML markup is interpreted.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Segment {
    Text(String),
    Silence(Duration),
}

/// Strips SSML tags, keeping `<break>` as silence (and a short pause at paragraph and sentence
/// ends). Plain text comes back as one text segment.
pub(super) fn parse_ssml(input: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut rest = input;
    while let Some(open) = rest.find('<') {
        text.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('>') else {
            // An unterminated '<' is just text.
            text.push_str(&rest[open..]);
            rest = "";
            break;
        };
        let tag = &rest[open + 1..open + close];
        rest = &rest[open + close + 1..];
        let pause = tag_pause(tag);
        if let Some(pause) = pause {
            if !text.is_empty() {
                out.push(Segment::Text(decode_entities(&std::mem::take(&mut text))));
            }
            out.push(Segment::Silence(pause));
        }
    }
    text.push_str(rest);
    if !text.is_empty() {
        out.push(Segment::Text(decode_entities(&text)));
    }
    out
}

/// The silence a tag stands for, if any.
fn tag_pause(tag: &str) -> Option<Duration> {
    let tag = tag.trim();
    let name: String = tag
        .trim_start_matches('/')
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == ':')
        .collect();
    match name.as_str() {
        "break" => {
            if let Some(time) = attribute(tag, "time") {
                return Some(parse_break_time(&time).unwrap_or(Duration::from_millis(400)));
            }
            Some(match attribute(tag, "strength").as_deref() {
                Some("none") => Duration::ZERO,
                Some("x-weak") => Duration::from_millis(100),
                Some("weak") => Duration::from_millis(250),
                Some("strong") => Duration::from_millis(700),
                Some("x-strong") => Duration::from_millis(1000),
                _ => Duration::from_millis(400),
            })
        }
        "p" if tag.starts_with('/') => Some(Duration::from_millis(500)),
        "s" if tag.starts_with('/') => Some(Duration::from_millis(300)),
        _ => None,
    }
}

/// `time="500ms"` / `time="1.5s"`; SSML caps breaks at 10 s.
pub(super) fn parse_break_time(value: &str) -> Option<Duration> {
    let value = value.trim();
    let (number, scale) = if let Some(ms) = value.strip_suffix("ms") {
        (ms, 0.001)
    } else if let Some(s) = value.strip_suffix('s') {
        (s, 1.0)
    } else {
        return None;
    };
    let secs = number.trim().parse::<f64>().ok()? * scale;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(10.0)))
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let mut rest = tag;
    while let Some(at) = rest.find(name) {
        let after = rest[at + name.len()..].trim_start();
        let before_ok = at == 0 || rest[..at].ends_with(char::is_whitespace);
        if before_ok && let Some(value) = after.strip_prefix('=') {
            let value = value.trim_start();
            let quote = value.chars().next()?;
            if quote == '"' || quote == '\'' {
                let inner = &value[1..];
                return inner.find(quote).map(|end| inner[..end].to_owned());
            }
        }
        rest = &rest[at + name.len()..];
    }
    None
}

fn decode_entities(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}
