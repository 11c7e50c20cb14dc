//! Virtual audio devices for tests, and helpers to judge what was played.
//!
//! [`with_virtual_audio`] runs a test body against real ALSA PCMs reached through cpal, with no
//! sound card: a JACK server on its dummy driver (clocked, bit-exact) under a unique server name,
//! and an ALSA config (ecosystem.md §7.3) defining
//! - `alsa:avs_mic`: a JACK-paced capture PCM whose samples come from `mic.raw` (ALSA `file`
//!   plugin `infile` over `plug` over `jack`), and
//! - `alsa:avs_speaker`: a JACK-paced playback PCM whose samples are teed into `played.raw`.
//!
//! ALSA reads `ALSA_CONFIG_PATH` and libjack reads `JACK_DEFAULT_SERVER` from the environment,
//! and changing the environment of a running multi-threaded test process is unsound (and
//! `unsafe` is forbidden here), so the body runs in a child process: the test binary re-runs
//! itself filtered to the one test, with those variables set. The parent holds a global lock
//! (one rig at a time per test binary), starts jackd, and kills it by its PID on drop.
//!
//! Helpers: reading raw/WAV recordings, normalized cross-correlation to find a clip in a
//! recording (offset + score), RMS, and the gain of a known clip inside a mix.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};

const ENV_DIR: &str = "AVS_AUDIO_RIG_DIR";
const ENV_TEST: &str = "AVS_AUDIO_RIG_TEST";
const ENV_RATE: &str = "AVS_AUDIO_RIG_RATE";
const ENV_PERIOD: &str = "AVS_AUDIO_RIG_PERIOD";
/// PID of the jackd the parent started, so the body can take the server away mid-test.
const ENV_JACKD_PID: &str = "AVS_AUDIO_RIG_JACKD_PID";
/// In the rig's dir: the PID of a jackd the test body restarted.
const RESTARTED_PID_FILE: &str = "jackd-restarted.pid";
/// Set to keep the rig's temp dir (config, recordings, jackd log) after the test.
const ENV_KEEP: &str = "AVS_KEEP_AUDIO_RIG";

/// JACK's registry holds 8 servers.
const SERVER_POOL: u32 = 8;

static RIG_LOCK: Mutex<()> = Mutex::new(());
static RIG_COUNTER: AtomicU32 = AtomicU32::new(0);

/// The cpal id of the virtual mic.
pub const MIC_DEVICE: &str = "alsa:avs_mic";
/// The cpal id of the virtual speaker.
pub const SPEAKER_DEVICE: &str = "alsa:avs_speaker";

/// A running jackd and the ALSA config that points at it.
pub struct VirtualAudio {
    dir: PathBuf,
    server: String,
    rate: u32,
    period_frames: u32,
    jackd: Child,
    keep: bool,
}

impl VirtualAudio {
    /// Starts `jackd --no-realtime -d dummy -r RATE -p PERIOD` under a unique name and writes
    /// the ALSA config. `period_frames` is JACK's period (e.g. 480 = 10 ms at 48 kHz).
    pub fn start(rate: u32, period_frames: u32) -> anyhow::Result<Self> {
        let n = RIG_COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("avs-audio-rig-{}-{n}-{nanos}", std::process::id()));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // JACK keeps at most 8 servers in its shared registry and only reclaims a dead server's
        // slot when a server of the same name starts, so names come from a small pool: a slot
        // left behind by a crashed run is reused, a name in use by a live rig is skipped.
        let mut last_err = None;
        let mut healed = false;
        let mut slot = 0;
        while slot < SERVER_POOL {
            let this_slot = slot;
            slot += 1;
            let server = format!("avsrig{this_slot}");
            match spawn_jackd(&dir.join("jackd.log"), &server, rate, period_frames) {
                Ok(jackd) => {
                    let mut va = VirtualAudio {
                        dir: dir.clone(),
                        server,
                        rate,
                        period_frames,
                        jackd,
                        keep: std::env::var_os(ENV_KEEP).is_some(),
                    };
                    match va.wait_ready() {
                        Ok(()) => {
                            fs::write(va.dir.join("asoundrc"), va.alsa_config())?;
                            // The capture PCM needs its infile to exist; a test replaces it
                            // before opening the mic.
                            write_raw_i16(
                                &va.dir.join("mic.raw"),
                                &vec![0i16; rate as usize * 30],
                            )?;
                            return Ok(va);
                        }
                        Err(e) => {
                            va.keep = true; // drop below must not delete the dir we still use
                            let full = e.to_string().contains("Too many servers");
                            drop(va);
                            if full && !healed && heal_jack_registry() {
                                healed = true;
                                slot = 0;
                            }
                            last_err = Some(e);
                        }
                    }
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("no JACK server name free")))
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        wait_jackd_ready(&mut self.jackd, &self.server, &self.dir.join("jackd.log"))
    }

    fn alsa_config(&self) -> String {
        let d = self.dir.display();
        format!(
            r#"pcm.avs_jackcap {{ type jack; capture_ports {{ 0 system:capture_1 }} }}
pcm.avs_jackplay {{ type jack; playback_ports {{ 0 system:playback_1 }} }}
pcm.avs_cap16 {{ type plug; slave.pcm "avs_jackcap" }}
pcm.avs_play16 {{ type plug; slave.pcm "avs_jackplay" }}
pcm.avs_mic {{
    type file; slave.pcm "avs_cap16"; file "/dev/null"
    infile "{d}/mic.raw"; format "raw"
    hint {{ show on description "avs test mic: JACK-paced capture of mic.raw" }}
}}
pcm.avs_speaker {{
    type file; slave.pcm "avs_play16"
    file "{d}/played.raw"; format "raw"
    hint {{ show on description "avs test speaker: JACK-paced playback teed to played.raw" }}
}}
"#
        )
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn server_name(&self) -> &str {
        &self.server
    }

    /// Environment a process needs to see the virtual devices.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "ALSA_CONFIG_PATH".into(),
                format!("/usr/share/alsa/alsa.conf:{}/asoundrc", self.dir.display()),
            ),
            ("JACK_DEFAULT_SERVER".into(), self.server.clone()),
            ("JACK_NO_START_SERVER".into(), "1".into()),
            (ENV_DIR.into(), self.dir.display().to_string()),
            (ENV_RATE.into(), self.rate.to_string()),
            (ENV_PERIOD.into(), self.period_frames.to_string()),
            (ENV_JACKD_PID.into(), self.jackd.id().to_string()),
        ]
    }
}

impl Drop for VirtualAudio {
    fn drop(&mut self) {
        stop_by_pid(&mut self.jackd);
        stop_restarted(&self.dir.join(RESTARTED_PID_FILE), &self.server);
        if !self.keep {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// `jackd --no-realtime -d dummy` under `server`, its output in `log`.
fn spawn_jackd(log: &Path, server: &str, rate: u32, period_frames: u32) -> anyhow::Result<Child> {
    let log = fs::File::create(log)?;
    let log2 = log.try_clone()?;
    Command::new("jackd")
        .args([
            "--no-realtime",
            "-n",
            server,
            "-d",
            "dummy",
            "-r",
            &rate.to_string(),
            "-p",
        ])
        .arg(period_frames.to_string())
        .args(["-C", "2", "-P", "2"])
        .env("JACK_NO_AUDIO_RESERVATION", "1")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .context("starting jackd (is jackd2 installed?)")
}

/// Whether a JACK server answers under `server`.
fn jack_answers(server: &str) -> bool {
    Command::new("jack_lsp")
        .env("JACK_DEFAULT_SERVER", server)
        .env("JACK_NO_START_SERVER", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Waits until `jackd` answers under `server` (and is still ours), or fails with its log.
fn wait_jackd_ready(jackd: &mut Child, server: &str, log: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Some(status) = jackd.try_wait()? {
            let log = fs::read_to_string(log).unwrap_or_default();
            bail!("jackd exited with {status}: {log}");
        }
        let ok = jack_answers(server);
        // jack_lsp may have reached another rig's server of the same name while ours was
        // still finding out that the name is taken: ours must still be alive.
        if ok {
            std::thread::sleep(Duration::from_millis(100));
            if let Some(status) = jackd.try_wait()? {
                let log = fs::read_to_string(log).unwrap_or_default();
                bail!("jackd exited with {status}: {log}");
            }
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("jackd did not come up within 15 s")
}

/// JACK's registry lists servers by name and PID; a server killed with SIGKILL stays listed, and
/// with 8 such entries no server can start ("Too many servers already active"). When no jackd
/// process is alive at all, the registry describes nothing and is removed (libjack recreates
/// it). Returns whether it did so.
fn heal_jack_registry() -> bool {
    let any_jackd = Command::new("pgrep")
        .args(["-x", "jackd"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(true);
    if any_jackd {
        return false;
    }
    let removed = fs::remove_file("/dev/shm/jack-shm-registry").is_ok();
    if removed {
        eprintln!("avs-testkit: removed a JACK server registry full of dead servers");
        // Their shared memory segments, sockets and semaphores are orphans now (no jackd runs).
        if let Ok(entries) = fs::read_dir("/dev/shm") {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("jack-") || name.starts_with("jack_") {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }
    removed
}

/// Stops a child by its PID: SIGTERM first, so jackd leaves JACK's server registry clean,
/// SIGKILL if it is still there after 5 s. Never by name: other rigs may run on this machine.
fn stop_by_pid(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// What a test body sees inside the child process.
pub struct AudioRig {
    dir: PathBuf,
    rate: u32,
    /// The JACK server the devices reach, to take it away and bring it back (`stop_jack`,
    /// `restart_jack`): the parent's jackd first, then the ones this process started.
    jack: Mutex<JackControl>,
}

struct JackControl {
    server: String,
    period_frames: u32,
    /// The parent's jackd, until stopped (the parent reaps it).
    parent_pid: Option<u32>,
    /// A jackd started by `restart_jack`, stopped on drop.
    own: Option<Child>,
    restarts: u32,
}

impl AudioRig {
    /// JACK's rate: the rate the virtual devices are clocked at.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    pub fn mic_device(&self) -> &'static str {
        MIC_DEVICE
    }

    pub fn speaker_device(&self) -> &'static str {
        SPEAKER_DEVICE
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What the mic will deliver, in the format the mic is opened with (s16le, interleaved).
    /// Call before opening the mic; pad with silence (past the end, ALSA returns garbage).
    pub fn write_mic(&self, samples: &[i16]) -> anyhow::Result<()> {
        write_raw_i16(&self.dir.join("mic.raw"), samples)
    }

    pub fn played_path(&self) -> PathBuf {
        self.dir.join("played.raw")
    }

    /// Everything played so far (s16le interleaved, as opened), downmixed to mono f32.
    /// The ALSA `file` plugin truncates `played.raw` each time the speaker is opened, so after a
    /// reopen this is what was played since.
    pub fn played(&self, channels: u16) -> anyhow::Result<Vec<f32>> {
        read_raw_i16_mono(&self.played_path(), channels)
    }

    /// Takes the JACK server away (SIGTERM, by PID), as when a sound server dies under a
    /// running daemon: every stream on the virtual devices loses its server. Returns once the
    /// process is gone.
    pub fn stop_jack(&self) -> anyhow::Result<()> {
        let mut j = self.jack.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mut own) = j.own.take() {
            stop_by_pid(&mut own);
            return Ok(());
        }
        let Some(pid) = j.parent_pid.take() else {
            bail!("no JACK server is running");
        };
        signal(pid, "-TERM")?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !alive(pid) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        signal(pid, "-KILL")?;
        while alive(pid) {
            if Instant::now() > deadline + Duration::from_secs(5) {
                bail!("jackd {pid} survived SIGKILL");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Starts a JACK server again under the same name, rate and period (after `stop_jack`), and
    /// waits until it answers. It is stopped when the rig ends.
    pub fn restart_jack(&self) -> anyhow::Result<()> {
        let mut j = self.jack.lock().unwrap_or_else(|e| e.into_inner());
        if j.parent_pid.is_some() || j.own.is_some() {
            bail!("the JACK server is still running; stop_jack first");
        }
        // While ours was down, a rig in another process may have taken the free name: starting
        // ours then would connect this test to that rig's server.
        if jack_answers(&j.server) {
            bail!(
                "another JACK server took the name {} while ours was stopped",
                j.server
            );
        }
        j.restarts += 1;
        let log = self.dir.join(format!("jackd-restart{}.log", j.restarts));
        let mut child = spawn_jackd(&log, &j.server, self.rate, j.period_frames)?;
        if let Err(e) = wait_jackd_ready(&mut child, &j.server, &log) {
            stop_by_pid(&mut child);
            return Err(e);
        }
        // If this process dies without dropping the rig, the parent stops it (see `VirtualAudio`).
        fs::write(self.dir.join(RESTARTED_PID_FILE), child.id().to_string())?;
        j.own = Some(child);
        Ok(())
    }
}

impl Drop for AudioRig {
    fn drop(&mut self) {
        let j = self.jack.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(mut own) = j.own.take() {
            stop_by_pid(&mut own);
        }
    }
}

/// Stops the jackd a crashed test body restarted (its PID in `pid_file`), if that PID is still
/// a jackd serving `server` (not a reused PID).
fn stop_restarted(pid_file: &Path, server: &str) {
    let Some(pid) = fs::read_to_string(pid_file)
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
    else {
        return;
    };
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let ours = args.first().is_some_and(|a| a.ends_with(b"jackd"))
        && args
            .windows(2)
            .any(|w| w[0] == b"-n" && w[1] == server.as_bytes());
    if ours && alive(pid) {
        let _ = signal(pid, "-TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if alive(pid) {
            let _ = signal(pid, "-KILL");
        }
    }
}

fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    let st = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running kill")?;
    // It may have exited on its own meanwhile.
    if !st.success() && alive(pid) {
        bail!("kill {sig} {pid} failed");
    }
    Ok(())
}

/// Whether `pid` is a live process: neither gone nor a zombie (the parent process, which is
/// jackd's parent, reaps it only at the end of the test).
fn alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name, which may itself contain ") ".
    stat.rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next())
        .is_some_and(|state| state != 'Z' && state != 'X')
}

/// Runs `body` against the virtual devices in a child process (see the module doc).
/// `test_name` must be the libtest name of the calling test (its path inside the test binary).
pub fn with_virtual_audio(test_name: &str, rate: u32, body: impl FnOnce(&AudioRig)) {
    if let Ok(t) = std::env::var(ENV_TEST) {
        if t != test_name {
            return;
        }
        let dir = PathBuf::from(std::env::var(ENV_DIR).unwrap_or_default());
        let rate = std::env::var(ENV_RATE)
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(rate);
        let env_num = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u32>().ok());
        let rig = AudioRig {
            dir,
            rate,
            jack: Mutex::new(JackControl {
                server: std::env::var("JACK_DEFAULT_SERVER").unwrap_or_default(),
                period_frames: env_num(ENV_PERIOD).unwrap_or(rate / 100),
                parent_pid: env_num(ENV_JACKD_PID),
                own: None,
                restarts: 0,
            }),
        };
        body(&rig);
        return;
    }
    let _guard = RIG_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let va = match VirtualAudio::start(rate, rate / 100) {
        Ok(v) => v,
        Err(e) => panic!("cannot start the virtual audio rig: {e:#}"),
    };
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let out_path = va.dir().join("child.out");
    let out = fs::File::create(&out_path)
        .unwrap_or_else(|e| panic!("creating {}: {e}", out_path.display()));
    let err = out.try_clone().unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = Command::new(exe);
    cmd.args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(ENV_TEST, test_name)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    for (k, v) in va.env() {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning the test child: {e}"));
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("waiting for the test child: {e}"),
        }
    };
    let output = fs::read_to_string(&out_path).unwrap_or_default();
    let ran = output.contains("1 passed");
    match status {
        Some(s) if s.success() && ran => {
            println!("{output}");
        }
        Some(s) => panic!("test body failed in the child ({s}):\n{output}"),
        None => panic!("test body timed out in the child:\n{output}"),
    }
}

/// Writes s16le samples.
pub fn write_raw_i16(path: &Path, samples: &[i16]) -> anyhow::Result<()> {
    let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Writes a mono 16-bit WAV file at `rate` (a `wav:` microphone's input).
pub fn write_wav_i16(path: &Path, rate: u32, samples: &[i16]) -> anyhow::Result<()> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec)
        .with_context(|| format!("creating {}", path.display()))?;
    for s in samples {
        w.write_sample(*s)?;
    }
    w.finalize()?;
    Ok(())
}

/// Reads s16le interleaved samples, downmixed to mono f32 in [-1, 1).
pub fn read_raw_i16_mono(path: &Path, channels: u16) -> anyhow::Result<Vec<f32>> {
    let mut bytes = Vec::new();
    fs::File::open(path)
        .with_context(|| format!("opening {}", path.display()))?
        .read_to_end(&mut bytes)?;
    let samples: Vec<f32> = bytes
        .chunks_exact(2)
        .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
        .collect();
    Ok(downmix(&samples, channels))
}

/// Reads a WAV file (any integer or float format) downmixed to mono f32, with its rate.
pub fn read_wav_mono(path: &Path) -> anyhow::Result<(Vec<f32>, u32)> {
    let mut r =
        hound::WavReader::open(path).with_context(|| format!("opening {}", path.display()))?;
    let spec = r.spec();
    let samples: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => r.samples::<f32>().collect::<Result<_, _>>()?,
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample - 1)) as f32;
            r.samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect::<Result<_, _>>()?
        }
    };
    Ok((downmix(&samples, spec.channels), spec.sample_rate))
}

fn downmix(samples: &[f32], channels: u16) -> Vec<f32> {
    let ch = usize::from(channels.max(1));
    samples
        .chunks_exact(ch)
        .map(|f| f.iter().sum::<f32>() / ch as f32)
        .collect()
}

/// Root mean square level.
pub fn rms(x: &[f32]) -> f32 {
    if x.is_empty() {
        return 0.0;
    }
    (x.iter().map(|s| f64::from(*s) * f64::from(*s)).sum::<f64>() / x.len() as f64).sqrt() as f32
}

/// Where a clip was found in a recording.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClipMatch {
    /// Sample index in the recording where the clip starts.
    pub offset: usize,
    /// Normalized cross-correlation at that offset, in [-1, 1]; 1 = identical up to a gain.
    pub score: f32,
}

fn ncc_at(rec: &[f32], clip: &[f32], offset: usize, clip_energy: f64) -> f32 {
    let seg = &rec[offset..offset + clip.len()];
    let mut dot = 0f64;
    let mut e = 0f64;
    for (a, b) in seg.iter().zip(clip) {
        dot += f64::from(*a) * f64::from(*b);
        e += f64::from(*a) * f64::from(*a);
    }
    if e <= 0.0 || clip_energy <= 0.0 {
        0.0
    } else {
        (dot / (e * clip_energy).sqrt()) as f32
    }
}

fn decimate(x: &[f32], d: usize) -> Vec<f32> {
    x.chunks(d)
        .map(|c| c.iter().sum::<f32>() / c.len() as f32)
        .collect()
}

/// Finds `clip` in `recording` by normalized cross-correlation. The coarse pass correlates the
/// loudest 8192-sample stretch of the clip on 8× decimated signals (cheap enough for long
/// recordings in a debug build); the best coarse offsets are then refined at full rate with the
/// whole clip, whose score is returned.
pub fn find_clip(recording: &[f32], clip: &[f32]) -> Option<ClipMatch> {
    if clip.is_empty() || recording.len() < clip.len() {
        return None;
    }
    let d = 8usize;
    let excerpt_len = clip.len().min(8192);
    let mut excerpt_at = 0usize;
    let mut best_e = -1f64;
    let mut k = 0usize;
    while k + excerpt_len <= clip.len() {
        let e: f64 = clip[k..k + excerpt_len]
            .iter()
            .map(|s| f64::from(*s) * f64::from(*s))
            .sum();
        if e > best_e {
            best_e = e;
            excerpt_at = k;
        }
        k += excerpt_len / 2 + 1;
    }
    let excerpt = &clip[excerpt_at..excerpt_at + excerpt_len];
    let max_off = recording.len() - clip.len();
    let mut candidates: Vec<usize> = Vec::new();
    let rd = decimate(
        &recording[excerpt_at..excerpt_at + max_off + excerpt_len],
        d,
    );
    let cd = decimate(excerpt, d);
    if cd.len() >= 4 && rd.len() >= cd.len() {
        let ce: f64 = cd.iter().map(|s| f64::from(*s) * f64::from(*s)).sum();
        let mut scores: Vec<(f32, usize)> = (0..=rd.len() - cd.len())
            .map(|k| (ncc_at(&rd, &cd, k, ce), k))
            .collect();
        scores.sort_by(|a, b| b.0.total_cmp(&a.0));
        candidates.extend(scores.into_iter().take(3).map(|(_, k)| k * d));
    } else {
        candidates.push(0);
    }
    let ce: f64 = clip.iter().map(|s| f64::from(*s) * f64::from(*s)).sum();
    let mut best: Option<ClipMatch> = None;
    for centre in candidates {
        let lo = centre.saturating_sub(2 * d);
        let hi = (centre + 2 * d).min(max_off);
        for off in lo..=hi {
            let s = ncc_at(recording, clip, off, ce);
            if best.is_none_or(|b| s > b.score) {
                best = Some(ClipMatch {
                    offset: off,
                    score: s,
                });
            }
        }
    }
    best
}

/// Least-squares gain of `clip` inside `recording` at `offset` (`<rec, clip> / <clip, clip>`):
/// the level of a known signal even when other, uncorrelated audio is mixed over it.
pub fn gain_at(recording: &[f32], clip: &[f32], offset: usize) -> f32 {
    let end = (offset + clip.len()).min(recording.len());
    let seg = &recording[offset.min(end)..end];
    let mut dot = 0f64;
    let mut e = 0f64;
    for (a, b) in seg.iter().zip(clip) {
        dot += f64::from(*a) * f64::from(*b);
        e += f64::from(*b) * f64::from(*b);
    }
    if e <= 0.0 { 0.0 } else { (dot / e) as f32 }
}

/// Finds `part` near `expected` (± `search` samples) and returns its gain there and the match
/// score. Robust to small shifts (an underrun or stutter earlier in the recording).
pub fn gain_near(
    recording: &[f32],
    part: &[f32],
    expected: usize,
    search: usize,
) -> Option<(f32, f32)> {
    let lo = expected.saturating_sub(search);
    let hi = (expected + part.len() + search).min(recording.len());
    if hi <= lo {
        return None;
    }
    let region = &recording[lo..hi];
    let m = find_clip(region, part)?;
    Some((gain_at(region, part, m.offset), m.score))
}

/// Compares `clip` with the recording window by window from `offset`: for each non-silent
/// window (speech pauses say nothing), its match score and gain after re-aligning it within
/// ±100 ms, so a glitch (an underrun under load) spoils only the window it falls in.
pub fn window_matches(
    recording: &[f32],
    clip: &[f32],
    offset: usize,
    window: usize,
    rate: u32,
) -> Vec<(f32, f32)> {
    let search = rate as usize / 10;
    clip.chunks_exact(window.max(1))
        .enumerate()
        .filter(|(_, part)| rms(part) >= 0.01)
        .map(|(i, part)| {
            gain_near(recording, part, offset + i * window, search)
                .map(|(g, sc)| (sc, g))
                .unwrap_or((0.0, 0.0))
        })
        .collect()
}

/// The median gain of `clip` over its well-matched windows (see [`window_matches`]).
pub fn median_gain(
    recording: &[f32],
    clip: &[f32],
    offset: usize,
    window: usize,
    rate: u32,
) -> f32 {
    let mut gains: Vec<f32> = window_matches(recording, clip, offset, window, rate)
        .into_iter()
        .filter(|(sc, _)| *sc > 0.5)
        .map(|(_, g)| g)
        .collect();
    if gains.is_empty() {
        return 0.0;
    }
    gains.sort_by(f32::total_cmp);
    gains[gains.len() / 2]
}

/// Where `clip` starts in `recording`, located by its first non-silent second (a whole-clip
/// correlation would be spoilt by any glitch in the middle).
pub fn locate(recording: &[f32], clip: &[f32], rate: u32) -> Option<ClipMatch> {
    let second = (rate as usize).min(clip.len());
    let hop = second / 4 + 1;
    let mut start = 0;
    while start + second < clip.len() && rms(&clip[start..start + second]) < 0.02 {
        start += hop;
    }
    let m = find_clip(recording, &clip[start..start + second])?;
    Some(ClipMatch {
        offset: m.offset.checked_sub(start)?,
        score: m.score,
    })
}

/// Deterministic white noise in [-amp, amp]: uncorrelated with anything else, sharp correlation
/// peak, so a clip is found at the exact sample.
pub fn noise(len: usize, seed: u32, amp: f32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x as f32 / u32::MAX as f32 * 2.0 - 1.0) * amp
        })
        .collect()
}

/// f32 in [-1, 1] to i16.
pub fn to_i16(x: &[f32]) -> Vec<i16> {
    x.iter()
        .map(|s| (s.clamp(-1.0, 1.0) * 32767.0).round() as i16)
        .collect()
}

/// Runs `sox` (a test prerequisite) with the given arguments.
pub fn sox(args: &[&str]) -> anyhow::Result<()> {
    let st = Command::new("sox")
        .args(args)
        .status()
        .context("running sox (is sox installed?)")?;
    if !st.success() {
        bail!("sox {args:?} failed: {st}");
    }
    Ok(())
}

/// Decodes an MP3 with `mpg123` (the reference decoder) to a mono f32 signal at `rate`
/// (resampled by sox).
pub fn reference_decode_mp3(mp3: &Path, rate: u32, scratch: &Path) -> anyhow::Result<Vec<f32>> {
    let wav = scratch.join("ref-decoded.wav");
    let st = Command::new("mpg123")
        .args(["-q", "-w"])
        .arg(&wav)
        .arg(mp3)
        .status()
        .context("running mpg123 (is mpg123 installed?)")?;
    if !st.success() {
        bail!("mpg123 failed on {}: {st}", mp3.display());
    }
    let wav_rate = scratch.join("ref-resampled.wav");
    let (w, r) = (wav.display().to_string(), wav_rate.display().to_string());
    sox(&[&w, "-b", "16", "-c", "1", "-r", &rate.to_string(), &r])?;
    Ok(read_wav_mono(&wav_rate)?.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_noise_clip_at_the_exact_sample() {
        let clip = noise(4800, 7, 0.5);
        let mut rec = noise(48_000, 99, 0.05);
        for (i, s) in clip.iter().enumerate() {
            rec[12_345 + i] += s * 0.3;
        }
        let m = find_clip(&rec, &clip).unwrap();
        assert_eq!(m.offset, 12_345);
        assert!(m.score > 0.9, "{m:?}");
        let g = gain_at(&rec, &clip, m.offset);
        assert!((g - 0.3).abs() < 0.02, "{g}");
    }

    #[test]
    fn absent_clip_scores_low() {
        let clip = noise(4800, 7, 0.5);
        let rec = noise(48_000, 8, 0.5);
        let m = find_clip(&rec, &clip).unwrap();
        assert!(m.score < 0.2, "{m:?}");
    }
}
