//! A real SMTP server for tests: `controller/tests/support/smtp_server.py`
//! (Python's aiosmtpd) on a free loopback port, requiring AUTH with one user,
//! storing what it accepts in a Maildir. Killed when dropped (it also exits
//! when its stdin closes, should the test process die first).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

/// The user the server accepts.
pub const SMTP_USER: &str = "worker";
/// Its password.
pub const SMTP_PASSWORD: &str = "smtp-pass-word";

/// A running SMTP server.
pub struct SmtpServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    maildir: tempfile::TempDir,
    _child: tokio::process::Child,
}

impl SmtpServer {
    /// Starts the server; panics with what to install when aiosmtpd is missing.
    pub async fn start() -> SmtpServer {
        let check = std::process::Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match check {
            Ok(status) if status.success() => {}
            Ok(_) => panic!("Python's aiosmtpd is missing: the SMTP tests need it. Run `pip install aiosmtpd`."),
            Err(e) => {
                panic!("cannot run python3 ({e}): the SMTP tests need Python 3 with aiosmtpd (`pip install aiosmtpd`)")
            }
        }
        let maildir = tempfile::tempdir().expect("tempdir");
        let mut child = tokio::process::Command::new("python3")
            .arg(script())
            .args([
                "--port",
                "0",
                "--user",
                SMTP_USER,
                "--password",
                SMTP_PASSWORD,
                "--maildir",
            ])
            .arg(maildir.path())
            .stdin(Stdio::piped()) // closed when the test ends: the server exits
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start smtp_server.py");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let port = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.expect("read the server's stdout") {
                if let Some(port) = line.strip_prefix("READY ") {
                    return port.trim().parse::<u16>().expect("a port");
                }
            }
            panic!("smtp_server.py exited without READY");
        })
        .await
        .expect("smtp_server.py READY within 60 s");
        SmtpServer {
            port,
            maildir,
            _child: child,
        }
    }

    /// The Maildir it delivers to.
    pub fn maildir(&self) -> &Path {
        self.maildir.path()
    }

    /// The messages received so far (raw), oldest first.
    pub fn delivered(&self) -> Vec<Vec<u8>> {
        let mut files: Vec<_> = std::fs::read_dir(self.maildir.path().join("new"))
            .expect("Maildir new/")
            .map(|entry| entry.expect("entry").path())
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|p| std::fs::read(p).expect("read mail"))
            .collect()
    }
}

/// `controller/tests/support/smtp_server.py`.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../controller/tests/support/smtp_server.py")
}
