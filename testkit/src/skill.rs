//! The Alexa Skills Kit SDK skill used in tests (`tests/skill/skill_server.py`, a real skill on
//! the Python `ask-sdk-core` from PyPI, venv made by `scripts/skill-env`), run as a web service
//! on a free loopback port and killed (by its PID) on drop. It reports what it did as lines on
//! stdout (`LISTENING <port>`, `REQUEST ...`, `PR <label> <status> ...`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::mpsc;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// True (with a message) when `python3` is not installed, so the skill cannot run.
pub fn python_missing() -> bool {
    let missing = Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err();
    if missing {
        eprintln!("SKIPPED: python3 is not installed, so the ASK SDK skill cannot run");
    }
    missing
}

/// `scripts/skill-env`: the venv's python (installing the pinned SDK the first time).
pub fn skill_python() -> anyhow::Result<PathBuf> {
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/skill-env"))
        .output()
        .context("running scripts/skill-env")?;
    if !out.status.success() {
        bail!("scripts/skill-env failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    let stdout = String::from_utf8(out.stdout).context("skill-env output")?;
    let last = stdout.lines().last().context("skill-env printed nothing")?;
    Ok(PathBuf::from(last.trim()))
}

/// The Python skill web service.
pub struct PythonSkill {
    child: Child,
    /// Where the sim posts requests (`http://127.0.0.1:<port>/`).
    pub endpoint: String,
    lines: mpsc::Receiver<String>,
    /// Every line read so far.
    pub seen: Vec<String>,
}

impl PythonSkill {
    /// Starts the skill trusting `ca_pem` for its calls to the sim's Progressive Response API.
    pub async fn start(ca_pem: &Path) -> anyhow::Result<Self> {
        let mut child = Command::new(skill_python()?)
            .arg(repo_root().join("tests/skill/skill_server.py"))
            .args(["--port", "0"])
            .env("REQUESTS_CA_BUNDLE", ca_pem)
            .env("PYTHONUNBUFFERED", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the skill")?;
        let stdout = child.stdout.take().context("skill stdout")?;
        let (tx, lines) = mpsc::channel(256);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        });
        let mut skill = Self {
            child,
            endpoint: String::new(),
            lines,
            seen: Vec::new(),
        };
        let listening = skill.wait_line("LISTENING ", Duration::from_secs(30)).await?;
        let port: u16 = listening.trim_start_matches("LISTENING ").parse().context("skill port")?;
        skill.endpoint = format!("http://127.0.0.1:{port}/");
        Ok(skill)
    }

    /// The next line starting with `prefix` (earlier lines are kept in `seen`).
    pub async fn wait_line(&mut self, prefix: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let line = match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => line,
                Ok(None) => bail!("the skill exited; saw {:?}", self.seen),
                Err(_) => bail!("no {prefix:?} line from the skill; saw {:?}", self.seen),
            };
            self.seen.push(line.clone());
            if line.starts_with(prefix) {
                return Ok(line);
            }
        }
    }
}

impl Drop for PythonSkill {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
