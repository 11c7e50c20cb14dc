//! avsd-bench: dialog latencies, resource use and a soak run of the whole daemon against an
//! in-process avs-sim (TLS + HTTP/2 on loopback, code-based linking auto-approved), with the
//! bundled utterance as the microphone (`wav:` input) and a temporary WAV file as the speaker.
//!
//! ```text
//! cargo run --release --bin avsd-bench -- [--dialogs 20] [--idle-secs 20] [--json FILE]
//! cargo run --release --bin avsd-bench -- --soak 1000 [--json FILE]
//! ```
//!
//! Bench mode, two phases:
//! - latencies, with the daemon in this process (`Daemon::start`): cold start to `Connected`,
//!   then N progressive dialogs (interim speech, then the final one) timed from the `DialogStep`
//!   updates. The Speak stage is measured from the Speak directive leaving the multipart reader
//!   (the transport's `directive` debug event, captured by a tracing layer) to `SpeechStarted`
//!   (first sample taken by the device): the first attachment byte is not observable from
//!   outside the transport.
//! - resources, with the daemon in a child process (this binary re-run as `--child-daemon`) so
//!   the sim's memory and threads are not counted: VmRSS/VmHWM through one dialog, then CPU
//!   (utime+stime) and wakeups (voluntary + involuntary context switches of every thread) over
//!   `--idle-secs` with the connection up.
//!
//! Soak mode (`--soak N`): the child daemon runs N dialogs back to back, driven over its control
//! socket (progressive speech, an AudioPlayer.Play of an attachment, a local volume change),
//! reporting failures, RSS growth from dialog 10 to N and open descriptors at start and end.
//!
//! Player mode (`--player`, or either of its flags), issue 6:
//! - streaming: the child daemon plays an AudioPlayer.Play of a 128 kbps 44.1 kHz stereo MP3
//!   (made with `lame`, served over https by the sim's `/media/`) for `--stream-minutes M`
//!   (default 1; 10 for the documented figure); CPU (% of one core), VmRSS and VmHWM every 10 s,
//!   wakeups/s, then the audio engine's underruns and stutters (the child writes its audio
//!   counters at SIGTERM);
//! - alerts: `--alerts N` (default 10) timers 3 s apart set through the sim's SetAlert push, on
//!   an in-process daemon; lateness = scheduledTime → the mixer's "first sample handed to the
//!   device" debug event for the alarm (wall clock), p50/p95/max, once with the connection up
//!   and once with the sim stopped after the alerts were set.
//!
//! ```text
//! cargo run --release --bin avsd-bench -- --stream-minutes 10 --alerts 20 --json player.json
//! ```
//!
//! The `wav:` input holds its whole file in memory, and a real microphone has no such buffer:
//! the report gives that size so it can be taken off the RSS figures.

#[cfg(feature = "demo")]
mod bench {
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use anyhow::{Context, Result, bail};
    use avsd::config::Config;
    use avsd::daemon::Daemon;
    use avsd::dialog::{DialogCommand, DialogStep, DialogUpdate};
    use avsd::transport::LinkState;
    use serde::{Deserialize, Serialize};
    use serde_json::{Value, json};
    use tokio::sync::{broadcast, mpsc};
    use tokio_util::sync::CancellationToken;

    const UTTERANCE: &[u8] = include_bytes!("../../assets/demo/utterance.wav");

    /// The demo's answer: an interim speech while "the skill works", then the final one.
    const BENCH_SCENARIO: &str = r#"
[[turn]]
interim = [{ text = "Let me look that up for you.", delay_ms = 300 }]
final_speech = "It is five o'clock in the afternoon."
"#;

    /// Short speeches keep a soak dialog near five seconds; the Play is a real MP3 attachment.
    const SOAK_SCENARIO: &str = r#"
[[turn]]
interim = [{ text = "One moment.", delay_ms = 100 }]
final_speech = "Here it is."
play = { text = "Track.", source = "attachment" }
"#;

    /// Worst case per dialog (wait for speech in the looped mic, end of speech, answers).
    const DIALOG_BUDGET: Duration = Duration::from_secs(30);
    /// Mic audio provisioned per dialog in the looped input file.
    const MIC_SECS_PER_DIALOG: f64 = 12.0;

    struct Args {
        dialogs: usize,
        soak: Option<usize>,
        idle_secs: u64,
        cold_starts: usize,
        json: Option<PathBuf>,
        child: Option<String>,
        player: bool,
        stream_minutes: f64,
        alerts: usize,
    }

    fn parse_args() -> Result<Args> {
        let mut a = Args {
            dialogs: 20,
            soak: None,
            idle_secs: 20,
            cold_starts: 10,
            json: None,
            child: None,
            player: false,
            stream_minutes: 1.0,
            alerts: 10,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--dialogs" => a.dialogs = value()?.parse()?,
                "--soak" => a.soak = Some(value()?.parse()?),
                "--idle-secs" => a.idle_secs = value()?.parse()?,
                "--cold-starts" => a.cold_starts = value()?.parse()?,
                "--json" => a.json = Some(PathBuf::from(value()?)),
                "--child-daemon" => a.child = Some(value()?),
                "--player" => a.player = true,
                "--stream-minutes" => {
                    a.player = true;
                    a.stream_minutes = value()?.parse()?;
                }
                "--alerts" => {
                    a.player = true;
                    a.alerts = value()?.parse()?;
                }
                other => bail!(
                    "unknown flag {other}; usage: avsd-bench [--dialogs N] [--idle-secs S] [--cold-starts N] [--soak N] [--player] [--stream-minutes M] [--alerts N] [--json FILE]"
                ),
            }
        }
        Ok(a)
    }

    /// Everything a device needs to find the sim; passed to the child as JSON.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    struct DeviceSpec {
        endpoint: String,
        ca: PathBuf,
        dir: PathBuf,
        input: String,
        output: String,
        serial: String,
        /// Where the child writes its audio counters when it gets SIGTERM (player mode).
        #[serde(default)]
        stats_file: Option<PathBuf>,
    }

    impl DeviceSpec {
        fn config(&self) -> Result<Config> {
            let mut c = Config::defaults()?;
            c.cloud.endpoint = url::Url::parse(&self.endpoint)?;
            c.cloud.lwa_url = c.cloud.endpoint.clone();
            c.cloud.extra_ca_file = Some(self.ca.clone());
            c.state_dir = self.dir.join("state");
            c.control_socket = self.dir.join("control.sock");
            c.device.serial_number = self.serial.clone();
            c.audio.input = self.input.clone();
            c.audio.output = self.output.clone();
            Ok(c)
        }
    }

    // ---------------------------------------------------------------------------------------
    // Statistics and /proc readings.

    fn ms(d: Duration) -> f64 {
        (d.as_secs_f64() * 1000.0 * 100.0).round() / 100.0
    }

    /// Nearest-rank percentile (`p` in 0..=1) in milliseconds; None without samples.
    fn pct(samples: &[Duration], p: f64) -> Option<f64> {
        let mut v = samples.to_vec();
        v.sort();
        let last = v.len().checked_sub(1)?;
        let idx = ((v.len() as f64 * p).ceil() as usize)
            .saturating_sub(1)
            .min(last);
        Some(ms(v[idx]))
    }

    fn stage(samples: &[Duration]) -> Value {
        json!({"n": samples.len(), "median_ms": pct(samples, 0.5), "p95_ms": pct(samples, 0.95),
               "max_ms": pct(samples, 1.0)})
    }

    fn status_kb(pid: u32, key: &str) -> Result<u64> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {key} in /proc/{pid}/status"))
    }

    /// utime + stime of the whole process, in clock ticks (USER_HZ = 100 on Linux).
    fn cpu_ticks(pid: u32) -> Result<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let f: Vec<&str> = rest.split_whitespace().collect();
        let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        Ok(field(11) + field(12))
    }

    /// Voluntary + involuntary context switches summed over every thread.
    fn context_switches(pid: u32) -> Result<u64> {
        let mut total = 0;
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
            let Ok(text) = std::fs::read_to_string(task?.path().join("status")) else {
                continue; // the thread ended meanwhile
            };
            for l in text.lines() {
                if let Some(v) = l
                    .strip_prefix("voluntary_ctxt_switches:")
                    .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
                {
                    total += v.trim().parse::<u64>().unwrap_or(0);
                }
            }
        }
        Ok(total)
    }

    /// Per thread name: (cpu ticks, context switches), threads of one name summed.
    fn per_thread(pid: u32) -> Result<std::collections::BTreeMap<String, (u64, u64)>> {
        let mut out = std::collections::BTreeMap::new();
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
            let dir = task?.path();
            let (Ok(comm), Ok(stat), Ok(status)) = (
                std::fs::read_to_string(dir.join("comm")),
                std::fs::read_to_string(dir.join("stat")),
                std::fs::read_to_string(dir.join("status")),
            ) else {
                continue;
            };
            let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
            let f: Vec<&str> = rest.split_whitespace().collect();
            let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            let switches: u64 = status
                .lines()
                .filter_map(|l| {
                    l.strip_prefix("voluntary_ctxt_switches:")
                        .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
                })
                .filter_map(|v| v.trim().parse::<u64>().ok())
                .sum();
            let e = out.entry(comm.trim().to_owned()).or_insert((0, 0));
            e.0 += field(11) + field(12);
            e.1 += switches;
        }
        Ok(out)
    }

    fn open_fds(pid: u32) -> Result<usize> {
        Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
    }

    // ---------------------------------------------------------------------------------------
    // The microphone: the bundled utterance, looped.

    /// Writes the utterance's speech (0.2–2.1 s) plus 0.8 s of silence, repeated for `secs`,
    /// and returns the bytes the `wav:` input will hold in memory (f32 samples).
    fn write_looped_mic(path: &Path, secs: f64) -> Result<u64> {
        let mut reader = hound::WavReader::new(UTTERANCE)?;
        let spec = reader.spec();
        let samples: Vec<i16> = reader.samples::<i16>().collect::<Result<_, _>>()?;
        let rate = spec.sample_rate as usize;
        let speech = &samples[(rate / 5).min(samples.len())..(rate * 21 / 10).min(samples.len())];
        let cycle = speech.len() + rate * 8 / 10;
        let cycles = ((secs * rate as f64) / cycle as f64).ceil().max(1.0) as usize;
        let mut w = hound::WavWriter::create(path, spec)?;
        for _ in 0..cycles {
            for s in speech {
                w.write_sample(*s)?;
            }
            for _ in 0..rate * 8 / 10 {
                w.write_sample(0i16)?;
            }
        }
        w.finalize()?;
        Ok((cycles * cycle * usize::from(spec.channels) * 4) as u64)
    }

    // ---------------------------------------------------------------------------------------
    // The sim.

    struct Sim {
        handle: avs_sim::SimHandle,
        shutdown: CancellationToken,
    }

    async fn start_sim(scenario: &str, dir: &Path) -> Result<Sim> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let shutdown = CancellationToken::new();
        let handle = avs_sim::serve(
            listener,
            avs_sim::SimConfig {
                lwa: avs_sim::lwa::LwaConfig {
                    auto_approve: true,
                    poll_interval: Duration::from_millis(200),
                    ..Default::default()
                },
                scenario: avs_sim::Scenario::from_toml(scenario)?,
                state_dir: Some(dir.join("sim")),
                max_recognize_audio: Duration::from_secs(6),
                ..Default::default()
            },
            shutdown.clone(),
        )
        .await?;
        Ok(Sim { handle, shutdown })
    }

    impl Sim {
        fn spec(&self, dir: &Path, input: String, serial: &str) -> DeviceSpec {
            DeviceSpec {
                endpoint: self.handle.url.to_string(),
                ca: self.handle.ca_pem.clone(),
                dir: dir.to_owned(),
                input,
                output: format!("wav:{}", dir.join("speaker.wav").display()),
                serial: serial.to_owned(),
                stats_file: None,
            }
        }
    }

    async fn login(config: &Config) -> Result<()> {
        let auth = avsd::cli::auth_config(config).map_err(anyhow::Error::msg)?;
        tokio::time::timeout(Duration::from_secs(30), avsd::auth::login(&auth, |_| {}))
            .await
            .context("login timed out")??;
        Ok(())
    }

    // ---------------------------------------------------------------------------------------
    // Speak directives as they leave the multipart reader.

    mod speak_probe {
        use std::sync::{Arc, Mutex};
        use std::time::Instant;

        use tracing::field::{Field, Visit};
        use tracing_subscriber::layer::{Context, Layer};

        /// Records the instant of every `directive` debug event naming a Speak.
        #[derive(Clone, Default)]
        pub struct SpeakProbe(pub Arc<Mutex<Vec<Instant>>>);

        struct IsSpeak(bool);

        impl Visit for IsSpeak {
            fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
                if field.name() == "directive" {
                    self.0 = format!("{value:?}") == "SpeechSynthesizer.Speak";
                }
            }
        }

        impl<S: tracing::Subscriber> Layer<S> for SpeakProbe {
            fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
                let at = Instant::now();
                if event.metadata().target() != "avsd::transport::downchannel" {
                    return;
                }
                let mut v = IsSpeak(false);
                event.record(&mut v);
                if v.0 {
                    self.0.lock().unwrap_or_else(|p| p.into_inner()).push(at);
                }
            }
        }
    }

    /// The wall-clock time of every source start the mixer reports ("first sample handed to
    /// the device"), for alert lateness.
    #[derive(Clone, Default)]
    struct StartProbe(Arc<std::sync::Mutex<Vec<std::time::SystemTime>>>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for StartProbe {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            if event.metadata().target() == "avsd::audio::mixer" {
                self.0
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(std::time::SystemTime::now());
            }
        }
    }

    fn install_tracing(probe: &speak_probe::SpeakProbe, starts: &StartProbe) {
        use tracing_subscriber::Layer;
        use tracing_subscriber::filter::{LevelFilter, Targets};
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        let probe_filter =
            Targets::new().with_target("avsd::transport::downchannel", LevelFilter::DEBUG);
        let start_filter = Targets::new().with_target("avsd::audio::mixer", LevelFilter::DEBUG);
        let _ = tracing_subscriber::registry()
            .with(probe.clone().with_filter(probe_filter))
            .with(starts.clone().with_filter(start_filter))
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_filter(LevelFilter::WARN),
            )
            .try_init();
    }

    // ---------------------------------------------------------------------------------------
    // Latency phase (daemon in this process).

    #[derive(Default)]
    struct Stages {
        tap_to_first_frame: Vec<Duration>,
        stop_capture_to_mic_closed: Vec<Duration>,
        speak_to_first_sample: Vec<Duration>,
        interim_end_to_final_start: Vec<Duration>,
        tap_to_final_end: Vec<Duration>,
        failures: Vec<String>,
    }

    async fn next_update(
        rx: &mut broadcast::Receiver<DialogUpdate>,
        until: tokio::time::Instant,
    ) -> Result<DialogUpdate> {
        loop {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Err(_) => bail!("timed out"),
                Ok(Ok(u)) => return Ok(u),
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
                Ok(Err(broadcast::error::RecvError::Closed)) => bail!("the daemon stopped"),
            }
        }
    }

    /// One progressive dialog: returns its steps (tap first) once the final speech finished.
    async fn one_dialog(daemon: &Daemon) -> Result<(Instant, Vec<DialogUpdate>)> {
        let mut rx = daemon.dialog.updates.subscribe();
        let tap = Instant::now();
        daemon.dialog.commands.send(DialogCommand::Listen).await?;
        let until = tokio::time::Instant::now() + DIALOG_BUDGET;
        let mut steps = Vec::new();
        let (mut finished, mut closed) = (0, false);
        while finished < 2 || !closed {
            let u = next_update(&mut rx, until).await?;
            match &u.step {
                DialogStep::SpeechFinished { .. } => finished += 1,
                DialogStep::TurnClosed { status } => {
                    if status != "200" {
                        bail!("the Recognize ended with {status}");
                    }
                    closed = true;
                }
                DialogStep::Offline => bail!("offline"),
                _ => {}
            }
            steps.push(u);
        }
        // Let attention settle to IDLE so the next tap starts from rest.
        let mut attention = daemon.dialog.attention.clone();
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            attention.wait_for(|a| *a == avsd::attention::Attention::Idle),
        )
        .await;
        Ok((tap, steps))
    }

    fn first_at(steps: &[DialogUpdate], f: impl Fn(&DialogStep) -> bool) -> Option<Instant> {
        steps.iter().find(|u| f(&u.step)).map(|u| u.at)
    }

    fn record_stages(
        s: &mut Stages,
        tap: Instant,
        steps: &[DialogUpdate],
        speaks: &[Instant],
    ) -> Result<()> {
        let at = |f: &dyn Fn(&DialogStep) -> bool| first_at(steps, f);
        let first_frame =
            at(&|s| matches!(s, DialogStep::FirstFrameSent)).context("no FirstFrameSent")?;
        s.tap_to_first_frame.push(first_frame - tap);
        let stop = at(&|s| matches!(s, DialogStep::StopCaptureReceived))
            .context("no StopCaptureReceived")?;
        let closed = at(&|s| matches!(s, DialogStep::MicClosed { .. })).context("no MicClosed")?;
        s.stop_capture_to_mic_closed
            .push(closed.saturating_duration_since(stop));
        let started: Vec<Instant> = steps
            .iter()
            .filter(|u| matches!(u.step, DialogStep::SpeechStarted { .. }))
            .map(|u| u.at)
            .collect();
        let finished: Vec<Instant> = steps
            .iter()
            .filter(|u| matches!(u.step, DialogStep::SpeechFinished { .. }))
            .map(|u| u.at)
            .collect();
        // The interim Speak plays at once; the final one waits behind it by design, so only the
        // first Speak measures directive-to-first-sample.
        let speak = speaks
            .iter()
            .find(|t| **t >= tap)
            .context("no Speak directive seen")?;
        let first_start = started.first().context("no SpeechStarted")?;
        s.speak_to_first_sample
            .push(first_start.saturating_duration_since(*speak));
        let (Some(interim_end), Some(final_start)) = (finished.first(), started.get(1)) else {
            bail!("fewer than two speeches");
        };
        s.interim_end_to_final_start
            .push(final_start.saturating_duration_since(*interim_end));
        if let Some(end) = finished.get(1) {
            s.tap_to_final_end.push(*end - tap);
        }
        Ok(())
    }

    async fn latency_phase(
        sim: &Sim,
        dir: &Path,
        args: &Args,
        probe: &speak_probe::SpeakProbe,
    ) -> Result<Value> {
        std::fs::create_dir_all(dir.join("cold"))?;
        // Cold starts: Daemon::start to Connected, tokens already stored.
        let cold_spec = sim.spec(&dir.join("cold"), "none".into(), "BENCH-COLD");
        let cold_config = Arc::new(cold_spec.config()?);
        login(&cold_config).await?;
        let mut cold = Vec::new();
        for _ in 0..args.cold_starts {
            let t0 = Instant::now();
            let (daemon, shutdown) = start_connected(cold_config.clone(), "cold start").await?;
            cold.push(t0.elapsed());
            shutdown.cancel();
            daemon.supervise().await?;
        }

        let mic = dir.join("mic.wav");
        let mic_bytes = write_looped_mic(&mic, args.dialogs as f64 * MIC_SECS_PER_DIALOG + 30.0)?;
        let spec = sim.spec(dir, format!("wav:{}", mic.display()), "BENCH-DIALOG");
        let config = Arc::new(spec.config()?);
        login(&config).await?;
        let (daemon, shutdown) = start_connected(config, "dialogs").await?;
        let mut stages = Stages::default();
        for i in 0..args.dialogs {
            match one_dialog(&daemon).await {
                Ok((tap, steps)) => {
                    let speaks = probe.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    if let Err(e) = record_stages(&mut stages, tap, &steps, &speaks) {
                        stages.failures.push(format!("dialog {i}: {e:#}"));
                    }
                }
                Err(e) => stages.failures.push(format!("dialog {i}: {e:#}")),
            }
            eprint!("\rdialog {}/{}", i + 1, args.dialogs);
        }
        eprintln!();
        let audio = daemon.audio_stats();
        shutdown.cancel();
        daemon.supervise().await?;
        Ok(json!({
            "cold_start_to_connected": stage(&cold),
            "tap_to_first_frame_on_wire": stage(&stages.tap_to_first_frame),
            "stop_capture_to_mic_closed": stage(&stages.stop_capture_to_mic_closed),
            "speak_directive_to_first_sample": stage(&stages.speak_to_first_sample),
            "interim_end_to_final_start": stage(&stages.interim_end_to_final_start),
            "tap_to_final_speech_end": stage(&stages.tap_to_final_end),
            "output_period_frames": audio.output.as_ref().map(|o| o.granted_period_frames),
            "output_rate": audio.output.as_ref().map(|o| o.rate),
            "mic_file_bytes_in_memory": mic_bytes,
            "failures": stages.failures,
        }))
    }

    // ---------------------------------------------------------------------------------------
    // The daemon as a child process, driven over its control socket.

    struct ChildDaemon {
        child: Child,
        socket: PathBuf,
        /// Dialog steps and link changes from the control socket subscription.
        steps: mpsc::Receiver<Value>,
    }

    impl ChildDaemon {
        async fn spawn(spec: &DeviceSpec) -> Result<Self> {
            let config = spec.config()?;
            login(&config).await?;
            let exe = std::env::current_exe()?;
            let child = Command::new(exe)
                .arg("--child-daemon")
                .arg(serde_json::to_string(spec)?)
                .stdin(Stdio::null())
                .spawn()
                .context("starting the child daemon")?;
            let socket = config.control_socket.clone();
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let status = avsd::control::request(&socket, &avsd::control::Request::Status).await;
                if let Ok(v) = status
                    && v["link"] == "connected"
                {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("the child daemon did not connect within 20 s");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let (tx, steps) = mpsc::channel(1024);
            let sub_socket = socket.clone();
            tokio::spawn(async move {
                let _ = avsd::control::subscribe(&sub_socket, |v| {
                    let _ = tx.try_send(v);
                })
                .await;
            });
            Ok(Self {
                child,
                socket,
                steps,
            })
        }

        fn pid(&self) -> u32 {
            self.child.id()
        }

        async fn request(&self, r: avsd::control::Request) -> Result<()> {
            let v = avsd::control::request(&self.socket, &r).await?;
            if v["ok"] != true {
                bail!("control request refused: {v}");
            }
            Ok(())
        }

        /// Waits for a subscription line matching `f`.
        async fn wait_step(
            &mut self,
            until: tokio::time::Instant,
            f: impl Fn(&Value) -> bool,
        ) -> Result<Value> {
            loop {
                match tokio::time::timeout_at(until, self.steps.recv()).await {
                    Err(_) => bail!("timed out"),
                    Ok(None) => bail!("the control subscription ended"),
                    Ok(Some(v)) if f(&v) => return Ok(v),
                    Ok(Some(_)) => {}
                }
            }
        }

        fn drain(&mut self) {
            while self.steps.try_recv().is_ok() {}
        }

        /// SIGTERM, then SIGKILL if it has not stopped within 10 s.
        fn stop(mut self) -> Result<()> {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.pid().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if self.child.try_wait()?.is_some() {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            self.child.kill()?;
            self.child.wait()?;
            bail!("the child daemon ignored SIGTERM for 10 s")
        }
    }

    /// Runs one dialog on the child: tap, then the turn closed and two speeches finished; with
    /// `play`, also the AudioPlayer track finished (seen by the sim).
    async fn child_dialog(child: &mut ChildDaemon, sim: &Sim, play: bool) -> Result<()> {
        child.drain();
        let mark = sim.handle.recorder.len();
        child.request(avsd::control::Request::Listen).await?;
        let until = tokio::time::Instant::now() + DIALOG_BUDGET;
        let mut finished = 0;
        let mut closed = false;
        while finished < 2 || !closed {
            let v = child.wait_step(until, |_| true).await?;
            match v["step"].as_str() {
                Some("speech_finished") => finished += 1,
                Some("turn_closed") => {
                    if v["status"] != "200" {
                        bail!("the Recognize ended with {}", v["status"]);
                    }
                    closed = true;
                }
                Some("offline") => bail!("offline"),
                Some("lagged") => bail!("missed dialog steps: {v}"),
                _ => {}
            }
        }
        if play {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            sim.handle
                .recorder
                .wait_for(mark, left, "AudioPlayer.PlaybackFinished", |r| {
                    r.event.as_ref().is_some_and(|e| {
                        e.namespace == "AudioPlayer" && e.name == "PlaybackFinished"
                    })
                })
                .await?;
        }
        Ok(())
    }

    async fn resource_phase(sim: &Sim, dir: &Path, args: &Args) -> Result<Value> {
        std::fs::create_dir_all(dir)?;
        let utterance = dir.join("utterance.wav");
        std::fs::write(&utterance, UTTERANCE)?;
        let spec = sim.spec(dir, format!("wav:{}", utterance.display()), "BENCH-RSS");
        let mut child = ChildDaemon::spawn(&spec).await?;
        let pid = child.pid();
        let rss_connected_kb = status_kb(pid, "VmRSS:")?;
        let (anon_connected_kb, file_connected_kb) =
            (status_kb(pid, "RssAnon:")?, status_kb(pid, "RssFile:")?);
        // The utterance plays from the moment the audio engine opened: tap at once.
        let mut peak_rss_kb = rss_connected_kb;
        let dialog_result = {
            let dialog = child_dialog(&mut child, sim, false);
            tokio::pin!(dialog);
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            loop {
                tokio::select! {
                    r = &mut dialog => break r,
                    _ = tick.tick() => peak_rss_kb = peak_rss_kb.max(status_kb(pid, "VmRSS:").unwrap_or(0)),
                }
            }
        };
        let hwm_kb = status_kb(pid, "VmHWM:")?;
        // Settle (the output device pauses after 5 s without sound), then measure idle with
        // the connection up.
        let settle = avsd::audio::mixer::OUTPUT_IDLE_PAUSE + Duration::from_secs(1);
        tokio::time::sleep(settle).await;
        let threads0 = per_thread(pid)?;
        let (t0, c0, s0) = (Instant::now(), cpu_ticks(pid)?, context_switches(pid)?);
        tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
        let (c1, s1) = (cpu_ticks(pid)?, context_switches(pid)?);
        let wall = t0.elapsed().as_secs_f64();
        let threads1 = per_thread(pid)?;
        let mut by_thread = serde_json::Map::new();
        for (name, (c, s)) in &threads1 {
            let (c_0, s_0) = threads0.get(name).copied().unwrap_or((0, 0));
            by_thread.insert(
                name.clone(),
                json!({
                    "cpu_percent": ((c.saturating_sub(c_0)) as f64 / wall * 1000.0).round() / 1000.0,
                    "wakeups_per_s": ((s.saturating_sub(s_0)) as f64 / wall * 100.0).round() / 100.0,
                }),
            );
        }
        let rss_idle_kb = status_kb(pid, "VmRSS:")?;
        let (anon_idle_kb, file_idle_kb) =
            (status_kb(pid, "RssAnon:")?, status_kb(pid, "RssFile:")?);
        let exe_kb = std::fs::metadata(std::env::current_exe()?)?.len() / 1024;
        let threads = std::fs::read_dir(format!("/proc/{pid}/task"))?.count();
        child.stop()?;
        Ok(json!({
            "dialog": dialog_result.map(|()| "ok".to_owned()).unwrap_or_else(|e| format!("failed: {e:#}")),
            "rss_connected_kb": rss_connected_kb,
            "rss_peak_sampled_kb": peak_rss_kb,
            "vm_hwm_kb": hwm_kb,
            "rss_idle_after_dialog_kb": rss_idle_kb,
            // VmRSS = anonymous (heap, stacks) + file-backed (this binary's code, which here
            // also holds avs-sim, and the shared libraries): clean pages the kernel can drop.
            "rss_anon_connected_kb": anon_connected_kb,
            "rss_file_connected_kb": file_connected_kb,
            "rss_anon_idle_after_dialog_kb": anon_idle_kb,
            "rss_file_idle_after_dialog_kb": file_idle_kb,
            "binary_kb": exe_kb,
            "idle_secs": wall,
            "idle_settle_secs": settle.as_secs_f64(),
            "idle_cpu_percent_of_one_core": ((c1 - c0) as f64 / 100.0 / wall * 100.0 * 1000.0).round() / 1000.0,
            "idle_wakeups_per_s": ((s1 - s0) as f64 / wall * 100.0).round() / 100.0,
            "threads": threads,
            "idle_by_thread": by_thread,
            "mic_file_bytes_in_memory": UTTERANCE.len().saturating_sub(44) * 2,
        }))
    }

    // ---------------------------------------------------------------------------------------
    // Soak.

    /// Open descriptors once the last control-socket request has been closed on both sides
    /// (the daemon drops its end a moment after the answer).
    async fn settled_fds(pid: u32) -> Result<usize> {
        tokio::time::sleep(Duration::from_millis(300)).await;
        open_fds(pid)
    }

    /// Starts the daemon in this process and waits (15 s at most) for it to be connected.
    async fn start_connected(
        config: Arc<avsd::config::Config>,
        what: &str,
    ) -> Result<(Daemon, CancellationToken)> {
        let shutdown = CancellationToken::new();
        let daemon = Daemon::start(config, shutdown.clone()).await?;
        let mut link = daemon.link.clone();
        tokio::time::timeout(
            Duration::from_secs(15),
            link.wait_for(|s| *s == LinkState::Connected),
        )
        .await
        .with_context(|| format!("{what}: no connection in 15 s"))??;
        Ok((daemon, shutdown))
    }

    async fn soak(sim: &Sim, dir: &Path, n: usize) -> Result<Value> {
        std::fs::create_dir_all(dir)?;
        let mic = dir.join("mic.wav");
        let mic_bytes = write_looped_mic(&mic, n as f64 * MIC_SECS_PER_DIALOG / 2.0 + 30.0)?;
        let spec = sim.spec(dir, format!("wav:{}", mic.display()), "BENCH-SOAK");
        let mut child = ChildDaemon::spawn(&spec).await?;
        let pid = child.pid();
        let fds_start = open_fds(pid)?;
        let rss_start_kb = status_kb(pid, "VmRSS:")?;
        let mut rss_at_10_kb = None;
        let mut fds_at_10 = None;
        let mut failures = Vec::new();
        let started = Instant::now();
        for i in 0..n {
            let volume = 30 + (i % 2) as u8;
            let result = async {
                child_dialog(&mut child, sim, true).await?;
                let mark = sim.handle.recorder.len();
                child
                    .request(avsd::control::Request::Volume {
                        set: Some(volume),
                        adjust: None,
                    })
                    .await?;
                sim.handle
                    .recorder
                    .wait_for(
                        mark,
                        Duration::from_secs(10),
                        "Speaker.VolumeChanged",
                        |r| {
                            r.event.as_ref().is_some_and(|e| {
                                e.name == "VolumeChanged" && e.payload["volume"] == volume
                            })
                        },
                    )
                    .await?;
                anyhow::Ok(())
            }
            .await;
            if let Err(e) = result {
                failures.push(format!("dialog {}: {e:#}", i + 1));
            }
            if i + 1 == 10.min(n) {
                rss_at_10_kb = Some(status_kb(pid, "VmRSS:")?);
                fds_at_10 = Some(settled_fds(pid).await?);
            }
            eprint!("\rsoak dialog {}/{n}, {} failed", i + 1, failures.len());
        }
        eprintln!();
        let rss_end_kb = status_kb(pid, "VmRSS:")?;
        let fds_end = settled_fds(pid).await?;
        let hwm_kb = status_kb(pid, "VmHWM:")?;
        child.stop()?;
        let growth = rss_at_10_kb.map(|r| rss_end_kb as i64 - r as i64);
        Ok(json!({
            "dialogs": n,
            "failures": failures.len(),
            "failure_reasons": failures,
            "duration_s": started.elapsed().as_secs(),
            "rss_start_kb": rss_start_kb,
            "rss_after_dialog_10_kb": rss_at_10_kb,
            "rss_end_kb": rss_end_kb,
            "rss_growth_10_to_n_kb": growth,
            "vm_hwm_kb": hwm_kb,
            "fds_start": fds_start,
            "fds_after_dialog_10": fds_at_10,
            "fds_end": fds_end,
            "mic_file_bytes_in_memory": mic_bytes,
        }))
    }

    // ---------------------------------------------------------------------------------------
    // Player mode: streaming an MP3 over https, and alert lateness.

    /// Writes `secs` of 44.1 kHz stereo "music" (moving chords over a little noise) through
    /// `lame` as a 128 kbps CBR MP3 and returns its bytes.
    fn make_music_mp3(path: &Path, secs: f64) -> Result<Vec<u8>> {
        use std::io::Write as _;
        const RATE: f64 = 44_100.0;
        let mut lame = Command::new("lame")
            .args([
                "--quiet",
                "-r",
                "-s",
                "44.1",
                "--bitwidth",
                "16",
                "--signed",
                "--little-endian",
                "-m",
                "j",
                "--cbr",
                "-b",
                "128",
                "-",
            ])
            .arg(path)
            .stdin(Stdio::piped())
            .spawn()
            .context("running lame (the `lame` package) to make the stream MP3")?;
        let mut stdin = lame.stdin.take().context("lame stdin")?;
        let frames = (secs * RATE) as u64;
        let notes = [220.0, 246.9, 261.6, 293.7, 329.6, 349.2, 392.0];
        let mut noise: u32 = 0x1234_5678;
        let mut block = Vec::with_capacity(4096 * 4);
        for i in 0..frames {
            let t = i as f64 / RATE;
            let bar = (t * 2.0) as usize;
            let root = notes[bar % notes.len()];
            let mut l = 0.0;
            let mut r = 0.0;
            for (k, m) in [1.0, 1.25, 1.5, 2.0].iter().enumerate() {
                let v = (t * root * m * std::f64::consts::TAU).sin() * 0.12;
                if k % 2 == 0 {
                    l += v;
                    r += v * 0.7
                } else {
                    r += v;
                    l += v * 0.7
                }
            }
            noise = noise.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let n = (f64::from(noise >> 16) / 65_536.0 - 0.5) * 0.02;
            for v in [l + n, r - n] {
                block.extend_from_slice(&((v.clamp(-1.0, 1.0) * 32_000.0) as i16).to_le_bytes());
            }
            if block.len() >= 4096 * 4 {
                stdin.write_all(&block)?;
                block.clear();
            }
        }
        stdin.write_all(&block)?;
        drop(stdin);
        if !lame.wait()?.success() {
            bail!("lame failed");
        }
        Ok(std::fs::read(path)?)
    }

    async fn stream_phase(sim: &Sim, dir: &Path, minutes: f64) -> Result<Value> {
        std::fs::create_dir_all(dir)?;
        let secs = (minutes * 60.0).max(10.0);
        eprintln!("encoding {secs:.0} s of 128 kbps MP3 with lame");
        let mp3 = make_music_mp3(&dir.join("stream.mp3"), secs + 5.0)?;
        let mp3_bytes = mp3.len();
        let url = sim
            .handle
            .admin
            .put_media("stream.mp3", bytes::Bytes::from(mp3))?;
        let utterance = dir.join("utterance.wav");
        std::fs::write(&utterance, UTTERANCE)?;
        let mut spec = sim.spec(dir, format!("wav:{}", utterance.display()), "BENCH-STREAM");
        let stats_file = dir.join("audio-stats.json");
        spec.stats_file = Some(stats_file.clone());
        let child = ChildDaemon::spawn(&spec).await?;
        let pid = child.pid();
        let rss_connected_kb = status_kb(pid, "VmRSS:")?;
        let mark = sim.handle.recorder.len();
        let play = json!({"directive": {"header": {"namespace": "AudioPlayer", "name": "Play",
            "messageId": uuid::Uuid::new_v4().to_string()},
            "payload": {"playBehavior": "REPLACE_ALL", "audioItem": {"audioItemId": "bench-stream",
                "stream": {"url": url.as_str(), "offsetInMilliseconds": 0, "token": "bench-stream"}}}}});
        let pushed = Instant::now();
        sim.handle.admin.push(None, play.to_string()).await?;
        sim.handle
            .recorder
            .wait_for(
                mark,
                Duration::from_secs(20),
                "AudioPlayer.PlaybackStarted",
                |r| {
                    r.event.as_ref().is_some_and(|e| {
                        e.namespace == "AudioPlayer" && e.name == "PlaybackStarted"
                    })
                },
            )
            .await?;
        let play_to_started_event = pushed.elapsed();
        let t0 = Instant::now();
        let (c0, s0) = (cpu_ticks(pid)?, context_switches(pid)?);
        let mut samples = Vec::new();
        let (mut last_t, mut last_c) = (t0, c0);
        let end = t0 + Duration::from_secs_f64(secs);
        while Instant::now() < end {
            let next = (last_t + Duration::from_secs(10)).min(end);
            tokio::time::sleep_until(next.into()).await;
            let now = Instant::now();
            let c = cpu_ticks(pid)?;
            let dt = now.duration_since(last_t).as_secs_f64();
            samples.push(json!({
                "t_s": (now.duration_since(t0).as_secs_f64() * 10.0).round() / 10.0,
                "cpu_percent": ((c - last_c) as f64 / dt * 100.0).round() / 100.0,
                "vm_rss_kb": status_kb(pid, "VmRSS:")?,
                "rss_anon_kb": status_kb(pid, "RssAnon:")?,
                "vm_hwm_kb": status_kb(pid, "VmHWM:")?,
            }));
            (last_t, last_c) = (now, c);
            eprint!(
                "\rstreaming {:.0}/{secs:.0} s",
                now.duration_since(t0).as_secs_f64()
            );
        }
        eprintln!();
        let wall = t0.elapsed().as_secs_f64();
        let (c1, s1) = (cpu_ticks(pid)?, context_switches(pid)?);
        let threads = per_thread(pid)?;
        let hwm_kb = status_kb(pid, "VmHWM:")?;
        let rss_end_kb = status_kb(pid, "VmRSS:")?;
        let anon_end_kb = status_kb(pid, "RssAnon:")?;
        let ap_events: Vec<String> = sim
            .handle
            .recorder
            .events_since(mark)
            .into_iter()
            .filter(|e| e.namespace == "AudioPlayer")
            .map(|e| e.name)
            .collect();
        child.stop()?;
        let stats: Value = std::fs::read_to_string(&stats_file)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        let cpu: Vec<f64> = samples
            .iter()
            .filter_map(|v| v["cpu_percent"].as_f64())
            .collect();
        Ok(json!({
            "mp3": "128 kbps CBR, 44.1 kHz, joint stereo (lame), over https from avs-sim /media/",
            "mp3_bytes": mp3_bytes,
            "streamed_s": wall,
            "play_pushed_to_playback_started_event_ms": ms(play_to_started_event),
            "cpu_percent_of_one_core": ((c1 - c0) as f64 / wall * 100.0).round() / 100.0,
            "cpu_percent_max_10s": cpu.iter().copied().fold(0.0, f64::max),
            "wakeups_per_s": ((s1 - s0) as f64 / wall * 100.0).round() / 100.0,
            "rss_connected_before_play_kb": rss_connected_kb,
            "rss_end_kb": rss_end_kb,
            "rss_anon_end_kb": anon_end_kb,
            "vm_hwm_kb": hwm_kb,
            "every_10s": samples,
            "threads": threads.keys().cloned().collect::<Vec<_>>(),
            "audio": stats,
            "stutter_events": ap_events.iter().filter(|n| n.as_str() == "PlaybackStutterStarted").count(),
            "audioplayer_events": ap_events.len(),
            "failed": ap_events.iter().any(|n| n.as_str() == "PlaybackFailed"),
        }))
    }

    fn avs_time(t: std::time::SystemTime) -> Result<String> {
        let secs = t.duration_since(std::time::UNIX_EPOCH)?.as_secs();
        let d = time::OffsetDateTime::from_unix_timestamp(secs as i64)?;
        Ok(format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}+0000",
            d.year(),
            u8::from(d.month()),
            d.day(),
            d.hour(),
            d.minute(),
            d.second()
        ))
    }

    /// N timers 3 s apart; lateness of each from its scheduledTime to its first sample handed to
    /// the device. With `offline`, the sim is stopped once every SetAlert was acknowledged.
    async fn alerts_phase(
        sim: Sim,
        dir: &Path,
        n: usize,
        offline: bool,
        starts: &StartProbe,
    ) -> Result<Value> {
        const GAP: Duration = Duration::from_secs(3);
        std::fs::create_dir_all(dir)?;
        let spec = sim.spec(
            dir,
            "none".into(),
            if offline {
                "BENCH-ALERTS-OFF"
            } else {
                "BENCH-ALERTS"
            },
        );
        let config = Arc::new(spec.config()?);
        login(&config).await?;
        let (daemon, shutdown) = start_connected(config, "alerts").await?;
        let mut link = daemon.link.clone();
        let now = std::time::SystemTime::now();
        let first = std::time::UNIX_EPOCH
            + Duration::from_secs(now.duration_since(std::time::UNIX_EPOCH)?.as_secs() + 5);
        let mut scheduled = Vec::new();
        let mark = sim.handle.recorder.len();
        for i in 0..n {
            let at = first + GAP * i as u32;
            scheduled.push(at);
            let set = json!({"directive": {"header": {"namespace": "Alerts", "name": "SetAlert",
                "messageId": format!("bench-set-{i}")},
                "payload": {"token": format!("bench-{i}"), "type": "TIMER", "scheduledTime": avs_time(at)?}}});
            sim.handle.admin.push(None, set.to_string()).await?;
        }
        for i in 0..n {
            let token = format!("bench-{i}");
            sim.handle
                .recorder
                .wait_for(
                    mark,
                    Duration::from_secs(10),
                    "Alerts.SetAlertSucceeded",
                    |r| {
                        r.event.as_ref().is_some_and(|e| {
                            e.name == "SetAlertSucceeded" && e.payload["token"] == token.as_str()
                        })
                    },
                )
                .await?;
        }
        let mut link_during = "connected".to_owned();
        if offline {
            sim.shutdown.cancel();
            let down = tokio::time::timeout(
                Duration::from_secs(4),
                link.wait_for(|s| *s != LinkState::Connected),
            )
            .await;
            link_during = match down {
                Ok(Ok(s)) => format!("{:?}", *s),
                _ => "still connected (the sim did not drop the connection)".into(),
            };
        }
        let mut late = Vec::new();
        let mut missed = Vec::new();
        for (i, at) in scheduled.iter().enumerate() {
            let deadline = Instant::now()
                + at.duration_since(std::time::SystemTime::now())
                    .unwrap_or_default()
                + Duration::from_secs(2);
            let found = loop {
                let hit = starts
                    .0
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .find(|t| **t + Duration::from_millis(500) >= *at)
                    .copied();
                if let Some(t) = hit {
                    break Some(t);
                }
                if Instant::now() > deadline {
                    break None;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            match found {
                Some(t) => {
                    late.push(t.duration_since(*at).unwrap_or_default());
                    if t < *at {
                        missed.push(format!(
                            "alert {i} sounded {:?} early",
                            at.duration_since(t).unwrap_or_default()
                        ));
                    }
                }
                None => missed.push(format!("alert {i}: no alarm sample within 2 s")),
            }
            daemon.dialog.commands.send(DialogCommand::Stop).await?;
            eprint!(
                "\ralerts ({}): {}/{n}",
                if offline { "offline" } else { "connected" },
                i + 1
            );
        }
        eprintln!();
        let audio = daemon.audio_stats();
        shutdown.cancel();
        daemon.supervise().await?;
        sim.shutdown.cancel();
        Ok(json!({
            "alerts": n,
            "link_while_firing": link_during,
            "scheduled_to_first_sample": stage(&late),
            "problems": missed,
            "output_underruns": audio.output_underruns,
        }))
    }

    // ---------------------------------------------------------------------------------------
    // Child mode and reporting.

    fn child_daemon(spec_json: &str) -> Result<()> {
        avsd::cli::init_logging(0, "warn");
        let spec: DeviceSpec = serde_json::from_str(spec_json)?;
        let config = Arc::new(spec.config()?);
        let rt = tokio::runtime::Runtime::new()?;
        rt.block_on(async {
            let shutdown = CancellationToken::new();
            let daemon = Daemon::start(config, shutdown.clone()).await?;
            if let Some(path) = spec.stats_file {
                // The supervisor only reports to systemd; the daemon's tasks already run.
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
                term.recv().await;
                let a = daemon.audio_stats();
                let stats = json!({
                    "output_underruns": a.output_underruns,
                    "output_underrun_frames": a.output_underrun_frames,
                    "stutters": a.stutters,
                    "stutter_frames": a.stutter_frames,
                    "decode_corrupt_packets": a.decode_corrupt_packets,
                    "output_frames": a.output_frames,
                    "output_rate": a.output.as_ref().map(|o| o.rate),
                    "stream_errors": a.stream_errors,
                });
                std::fs::write(path, stats.to_string())?;
                shutdown.cancel();
            } else {
                tokio::spawn(avsd::service::stop_on_signal(shutdown));
            }
            daemon.supervise().await?;
            anyhow::Ok(())
        })
    }

    fn markdown(report: &Value) -> String {
        let mut out = String::new();
        let mut rows = Vec::new();
        fn walk(prefix: &str, v: &Value, rows: &mut Vec<(String, String)>) {
            match v {
                Value::Object(m) => {
                    for (k, v) in m {
                        let key = if prefix.is_empty() {
                            k.clone()
                        } else {
                            format!("{prefix}.{k}")
                        };
                        walk(&key, v, rows);
                    }
                }
                Value::Array(a) if a.is_empty() => rows.push((prefix.to_owned(), "none".into())),
                other => rows.push((prefix.to_owned(), other.to_string())),
            }
        }
        walk("", report, &mut rows);
        out.push_str("| metric | value |\n|---|---|\n");
        for (k, v) in rows {
            out.push_str(&format!("| {k} | {} |\n", v.replace('|', "/")));
        }
        out
    }

    pub fn main() -> Result<()> {
        let args = parse_args()?;
        if let Some(spec) = &args.child {
            return child_daemon(spec);
        }
        let probe = speak_probe::SpeakProbe::default();
        let starts = StartProbe::default();
        install_tracing(&probe, &starts);
        let dir = std::env::temp_dir().join(format!("avsd-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let report = rt.block_on(async {
            let mut report = json!({
                "bench": if args.soak.is_some() { "avsd-soak" } else if args.player { "avsd-player" } else { "avsd-dialog" },
                "command": std::env::args().collect::<Vec<_>>().join(" "),
            });
            if args.player {
                if args.stream_minutes > 0.0 {
                    let sim = start_sim("[[turn]]\nreject = true\n", &dir).await?;
                    report["stream"] =
                        stream_phase(&sim, &dir.join("stream"), args.stream_minutes).await?;
                    sim.shutdown.cancel();
                }
                if args.alerts > 0 {
                    for (key, offline) in [("alerts_connected", false), ("alerts_offline", true)] {
                        let sim = start_sim("[[turn]]\nreject = true\n", &dir.join(key)).await?;
                        report[key] =
                            alerts_phase(sim, &dir.join(key), args.alerts, offline, &starts)
                                .await?;
                    }
                }
            } else if let Some(n) = args.soak {
                let sim = start_sim(SOAK_SCENARIO, &dir).await?;
                report["soak"] = soak(&sim, &dir.join("soak"), n).await?;
                sim.shutdown.cancel();
            } else {
                let sim = start_sim(BENCH_SCENARIO, &dir).await?;
                report["latency"] =
                    latency_phase(&sim, &dir.join("latency"), &args, &probe).await?;
                report["resources"] = resource_phase(&sim, &dir.join("resources"), &args).await?;
                sim.shutdown.cancel();
            }
            anyhow::Ok(report)
        })?;
        let _ = std::fs::remove_dir_all(&dir);
        let text = serde_json::to_string_pretty(&report)?;
        if let Some(path) = &args.json {
            std::fs::write(path, &text)?;
        }
        println!("{text}\n\n{}", markdown(&report));
        Ok(())
    }
}

#[cfg(feature = "demo")]
fn main() -> anyhow::Result<()> {
    bench::main()
}

#[cfg(not(feature = "demo"))]
fn main() {
    eprintln!("avsd-bench embeds avs-sim: build it with the default `demo` feature");
}
