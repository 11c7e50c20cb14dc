//! audio-bench: performance figures of avsd's audio engine, printed as JSON and a Markdown table.
//!
//! ```text
//! cargo run --release --bin audio-bench                 # 60 s loopback run
//! cargo run --release --bin audio-bench -- --minutes 10 # the long one
//! cargo run --release --bin audio-bench -- --input alsa:avs_mic --output alsa:avs_speaker
//! ```
//! Measures: decode speed of a speech MP3 (24 kHz mono) and a music MP3 (44.1 kHz stereo
//! 128 kbps) against `mpg123 -q -s FILE > /dev/null` on the same files; resampler cost; time
//! from the first encoded byte to the first sample handed to the device; CPU while capturing;
//! underruns/overruns over a run that plays and captures at once. By default the devices are
//! the `wav:` stand-ins (paced by a clock); pass cpal ids to measure real (or JACK) devices.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use avsd::audio::decode::decode_stream;
use avsd::audio::resample::StreamResampler;
use avsd::audio::{AudioConfig, AudioEngine, Channel, PlaybackUpdate, Source, SourceId};
use clap::Parser;
use serde_json::json;

#[derive(Parser)]
#[command(about = "Benchmarks of avsd's audio engine")]
struct Args {
    /// Length of the loopback run in minutes (default: 1).
    #[arg(long, default_value_t = 1.0)]
    minutes: f64,
    /// Capture device for the loopback run (default: a WAV file paced in real time).
    #[arg(long)]
    input: Option<String>,
    /// Playback device for the loopback run (default: a WAV file paced in real time).
    #[arg(long)]
    output: Option<String>,
    /// Directory with audio_speech_24k_mono.mp3 and audio_music_44k_stereo.mp3.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))]
    fixtures: PathBuf,
}

fn cpu_seconds() -> f64 {
    // utime + stime of this process, in clock ticks (USER_HZ = 100 on Linux).
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let Some(rest) = stat.rsplit(')').next() else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

struct DecodeFigures {
    audio_secs: f64,
    ours: Duration,
    mpg123: Option<Duration>,
}

fn bench_decode(path: &Path, rounds: u32) -> anyhow::Result<DecodeFigures> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut audio_secs = 0.0;
    let t = Instant::now();
    for _ in 0..rounds {
        let s = decode_stream(std::io::Cursor::new(bytes.clone()), None, |_, _, _| Ok(()))?;
        audio_secs = s.frames as f64 / f64::from(s.rate);
    }
    let ours = t.elapsed() / rounds;
    let t = Instant::now();
    let mut ok = true;
    for _ in 0..rounds {
        let st = Command::new("mpg123")
            .args(["-q", "-s"])
            .arg(path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        ok &= st.map(|s| s.success()).unwrap_or(false);
    }
    let mpg123 = ok.then(|| t.elapsed() / rounds);
    Ok(DecodeFigures {
        audio_secs,
        ours,
        mpg123,
    })
}

fn bench_resample(from: u32, to: u32, channels: usize, secs: u32) -> anyhow::Result<Duration> {
    let input: Vec<f32> = (0..from as usize * secs as usize * channels)
        .map(|i| ((i as f32) * 0.01).sin() * 0.5)
        .collect();
    let mut r = StreamResampler::new(from, to, channels, (from / 100) as usize)?;
    let mut out = Vec::with_capacity(to as usize * secs as usize * channels + 4096);
    let t = Instant::now();
    // 10 ms blocks, as the capture thread and the decoders feed it
    for block in input.chunks(from as usize / 100 * channels) {
        r.push(block, &mut out)?;
    }
    r.flush(&mut out)?;
    Ok(t.elapsed())
}

/// A reader that releases the MP3 in 4 KiB pieces every 20 ms (a modest network), noting when
/// the first byte went out.
struct Trickle {
    data: Vec<u8>,
    pos: usize,
    first_byte: Arc<Mutex<Option<Instant>>>,
}

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.data.len() {
            return Ok(0);
        }
        if self.pos > 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
        let n = buf.len().min(4096).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        if self.pos == 0 {
            *self.first_byte.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        }
        self.pos += n;
        Ok(n)
    }
}

fn wait_started(
    rx: &mut tokio::sync::mpsc::Receiver<PlaybackUpdate>,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<Instant> {
    rt.block_on(async {
        loop {
            match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
                Ok(Some(PlaybackUpdate::Started)) => return Ok(Instant::now()),
                Ok(Some(PlaybackUpdate::Failed { error })) => bail!("source failed: {error}"),
                Ok(Some(_)) => {}
                Ok(None) => bail!("updates ended before Started"),
                Err(_) => bail!("no Started within 10 s"),
            }
        }
    })
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let speech = args.fixtures.join("audio_speech_24k_mono.mp3");
    let music = args.fixtures.join("audio_music_44k_stereo.mp3");
    let scratch = std::env::temp_dir().join(format!("avsd-audio-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;

    let ds = bench_decode(&speech, 20)?;
    let dm = bench_decode(&music, 10)?;
    let rs_mic = bench_resample(48_000, 16_000, 1, 10)?;
    let rs_tts = bench_resample(24_000, 48_000, 2, 10)?;
    let rs_music = bench_resample(44_100, 48_000, 2, 10)?;

    // first encoded byte → first sample handed to the (wav) device, 10 trials
    let out_wav = scratch.join("latency-out.wav");
    let engine = AudioEngine::start(&AudioConfig {
        input: "none".into(),
        output: args
            .output
            .clone()
            .unwrap_or_else(|| format!("wav:{}", out_wav.display())),
        ..AudioConfig::default()
    })?;
    let mp3 = std::fs::read(&speech)?;
    let mut latencies = Vec::new();
    for i in 0..10u64 {
        let first = Arc::new(Mutex::new(None));
        let src = Trickle {
            data: mp3.clone(),
            pos: 0,
            first_byte: first.clone(),
        };
        let mut rx =
            engine
                .playback()
                .enqueue(Channel::Dialog, SourceId(i), Source::Encoded(Box::new(src)));
        let started = wait_started(&mut rx, &rt)?;
        let first = first
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unwrap_or(started);
        latencies.push(started.saturating_duration_since(first));
        engine.playback().stop(SourceId(i));
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(engine);
    let first_sample = median(latencies.clone());

    // capture CPU: 10 s of mic with a listener reading frames
    let mic_wav = scratch.join("mic.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 48_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&mic_wav, spec)?;
    for i in 0..48_000 * 30 {
        w.write_sample((((i as f32) * 0.05).sin() * 8000.0) as i16)?;
    }
    w.finalize()?;
    let input = args
        .input
        .clone()
        .unwrap_or_else(|| format!("wav:{}", mic_wav.display()));
    let cap_engine = AudioEngine::start(&AudioConfig {
        input: input.clone(),
        output: format!("wav:{}", scratch.join("cap-out.wav").display()),
        input_rate: Some(48_000),
        ..AudioConfig::default()
    })?;
    let mut frames_rx = cap_engine.capture().open(false);
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let mut frames = 0u64;
    rt.block_on(async {
        while t0.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) =
                tokio::time::timeout(Duration::from_millis(200), frames_rx.recv()).await
            {
                frames += 1;
            }
        }
    });
    let capture_cpu = (cpu_seconds() - cpu0) / t0.elapsed().as_secs_f64();
    drop(frames_rx);
    drop(cap_engine);

    // loopback run: play music back to back while capturing; count xruns
    let run = Duration::from_secs_f64(args.minutes * 60.0);
    let loop_engine = AudioEngine::start(&AudioConfig {
        input,
        output: args
            .output
            .clone()
            .unwrap_or_else(|| format!("wav:{}", scratch.join("loop-out.wav").display())),
        input_rate: Some(48_000),
        ..AudioConfig::default()
    })?;
    let mut cap = loop_engine.capture().open(false);
    let music_bytes = std::fs::read(&music)?;
    let t0 = Instant::now();
    let cpu0 = cpu_seconds();
    let mut id = 1000u64;
    let mut pending = Vec::new();
    let mut captured = 0u64;
    rt.block_on(async {
        while t0.elapsed() < run {
            // keep two pieces queued so Content never runs dry
            pending.retain(|rx: &tokio::sync::mpsc::Receiver<PlaybackUpdate>| {
                !rx.is_closed() && rx.sender_strong_count() > 0
            });
            while pending.len() < 2 {
                id += 1;
                let src = Source::Encoded(Box::new(std::io::Cursor::new(music_bytes.clone())));
                pending.push(
                    loop_engine
                        .playback()
                        .enqueue(Channel::Content, SourceId(id), src),
                );
            }
            for rx in &mut pending {
                while rx.try_recv().is_ok() {}
            }
            while let Ok(Some(_)) =
                tokio::time::timeout(Duration::from_millis(20), cap.recv()).await
            {
                captured += 1;
            }
        }
    });
    let loop_cpu = (cpu_seconds() - cpu0) / t0.elapsed().as_secs_f64();
    let stats = loop_engine.stats();
    drop(cap);
    drop(loop_engine);
    let _ = std::fs::remove_dir_all(&scratch);

    let rt_x = |audio: f64, d: Duration| audio / d.as_secs_f64().max(1e-9);
    let report = json!({
        "decode": {
            "speech_24k_mono_mp3": {
                "audio_s": ds.audio_secs, "avsd_ms": ds.ours.as_secs_f64() * 1e3,
                "avsd_x_realtime": rt_x(ds.audio_secs, ds.ours),
                "mpg123_ms": ds.mpg123.map(|d| d.as_secs_f64() * 1e3),
                "avsd_time_over_mpg123": ds.mpg123.map(|m| ds.ours.as_secs_f64() / m.as_secs_f64()),
            },
            "music_44k_stereo_mp3": {
                "audio_s": dm.audio_secs, "avsd_ms": dm.ours.as_secs_f64() * 1e3,
                "avsd_x_realtime": rt_x(dm.audio_secs, dm.ours),
                "mpg123_ms": dm.mpg123.map(|d| d.as_secs_f64() * 1e3),
                "avsd_time_over_mpg123": dm.mpg123.map(|m| dm.ours.as_secs_f64() / m.as_secs_f64()),
            },
        },
        "resample_x_realtime": {
            "48k_to_16k_mono": rt_x(10.0, rs_mic),
            "24k_to_48k_stereo": rt_x(10.0, rs_tts),
            "44k1_to_48k_stereo": rt_x(10.0, rs_music),
        },
        "first_byte_to_first_sample_ms": {
            "median": first_sample.as_secs_f64() * 1e3,
            "all": latencies.iter().map(|d| d.as_secs_f64() * 1e3).collect::<Vec<_>>(),
        },
        "capture": { "cpu_fraction_of_one_core": capture_cpu, "frames_in_10s": frames },
        "loopback": {
            "seconds": run.as_secs_f64(), "cpu_fraction_of_one_core": loop_cpu,
            "captured_frames": captured,
            "output_underruns": stats.output_underruns, "output_underrun_frames": stats.output_underrun_frames,
            "input_overruns": stats.input_overruns, "capture_dropped_frames": stats.capture_dropped_frames,
            "stutters": stats.stutters, "decode_corrupt_packets": stats.decode_corrupt_packets,
        },
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    let ratio = |d: &DecodeFigures| {
        d.mpg123
            .map(|m| format!("{:.2}", d.ours.as_secs_f64() / m.as_secs_f64()))
            .unwrap_or("n/a".into())
    };
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| speech MP3 decode (24 kHz mono, {:.1} s) | {:.1} ms, {:.0}x real time, {} x mpg123's time |",
        ds.audio_secs,
        ds.ours.as_secs_f64() * 1e3,
        rt_x(ds.audio_secs, ds.ours),
        ratio(&ds)
    );
    println!(
        "| music MP3 decode (44.1 kHz stereo 128 kbps, {:.1} s) | {:.1} ms, {:.0}x real time, {} x mpg123's time |",
        dm.audio_secs,
        dm.ours.as_secs_f64() * 1e3,
        rt_x(dm.audio_secs, dm.ours),
        ratio(&dm)
    );
    println!(
        "| resample 48k→16k mono | {:.0}x real time |",
        rt_x(10.0, rs_mic)
    );
    println!(
        "| resample 24k→48k stereo | {:.0}x real time |",
        rt_x(10.0, rs_tts)
    );
    println!(
        "| resample 44.1k→48k stereo | {:.0}x real time |",
        rt_x(10.0, rs_music)
    );
    println!(
        "| first encoded byte → first sample to device (median of 10) | {:.1} ms |",
        first_sample.as_secs_f64() * 1e3
    );
    println!(
        "| CPU while capturing (48k mono → 16k frames) | {:.2} % of a core |",
        capture_cpu * 100.0
    );
    println!(
        "| loopback run {:.0} s: CPU | {:.2} % of a core |",
        run.as_secs_f64(),
        loop_cpu * 100.0
    );
    println!(
        "| loopback run: output underruns / input overruns / dropped frames / stutters | {} / {} / {} / {} |",
        stats.output_underruns, stats.input_overruns, stats.capture_dropped_frames, stats.stutters
    );
    Ok(())
}
