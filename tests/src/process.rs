//! A child process that is killed and reaped when its guard is dropped.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Owns a child process: stdout lines go to a channel, stderr to a file.
/// Dropping the guard sends SIGKILL to the child's process group and waits
/// for it; if the test is panicking, the tail of its stderr is printed.
pub struct ProcGuard {
    name: String,
    child: Child,
    exited: Option<ExitStatus>,
    stderr_path: PathBuf,
}

impl ProcGuard {
    /// Spawns `cmd` in its own process group; returns the guard and a channel
    /// of its stdout lines (closed at EOF).
    pub fn spawn(name: &str, mut cmd: Command, stderr_path: PathBuf) -> (Self, mpsc::Receiver<String>) {
        let stderr = std::fs::File::create(&stderr_path).expect("create stderr log");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .process_group(0);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawning {name} ({cmd:?}): {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    // Nobody listens any more: keep draining.
                }
            }
        });
        (
            Self {
                name: name.to_string(),
                child,
                exited: None,
                stderr_path,
            },
            rx,
        )
    }

    /// The process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `sig` to the process (not its group).
    pub fn signal(&self, sig: i32) {
        if self.exited.is_none() {
            // SAFETY: kill(2) with a pid we spawned and have not reaped yet.
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, sig);
            }
        }
    }

    /// The exit status if the process has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().expect("try_wait");
        }
        self.exited
    }

    /// Waits at most `timeout` for the exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL; returns the exit status.
    pub fn terminate(&mut self, grace: Duration) -> ExitStatus {
        self.signal(libc::SIGTERM);
        if let Some(s) = self.wait_timeout(grace) {
            return s;
        }
        eprintln!("[harness] {} ignored SIGTERM for {grace:?}; killing it", self.name);
        self.kill()
    }

    /// SIGKILL to the process group; returns the exit status.
    pub fn kill(&mut self) -> ExitStatus {
        if let Some(s) = self.exited {
            return s;
        }
        // SAFETY: kill(2) on the process group of a child we spawned with
        // process_group(0) and have not reaped yet.
        unsafe {
            libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL);
        }
        let s = self.child.wait().expect("wait");
        self.exited = Some(s);
        s
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr_all(&self) -> String {
        std::fs::read(&self.stderr_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `max` bytes of stderr.
    pub fn stderr_tail(&self, max: u64) -> String {
        let Ok(mut f) = std::fs::File::open(&self.stderr_path) else {
            return String::new();
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
        let mut buf = Vec::new();
        let _ = f.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl Drop for ProcGuard {
    fn drop(&mut self) {
        if self.exited.is_none() {
            self.kill();
        }
        if std::thread::panicking() {
            eprintln!(
                "----- {} (pid {}, {:?}) stderr tail ({}):\n{}\n-----",
                self.name,
                self.child.id(),
                self.exited,
                self.stderr_path.display(),
                self.stderr_tail(6000)
            );
        }
    }
}
