//! A real S3-compatible server for the backup tests: moto's server mode
//! (PyPI `moto[server]`, `python3 -m moto.server`) on a free loopback port,
//! killed with the guard. Where moto is not installed the test is skipped
//! with a notice (and fails under CI, see [`crate::skip`]; `.ci/run`
//! installs it).
//!
//! moto accepts unsigned requests, so the test drives it with plain HTTP/1.0
//! ([`S3Server::request`]): create a bucket, put, get and list objects.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{ENV_TAG, ProcGuard, TestEnv};

/// The credentials the tests give the agent and `workerctl` (moto takes any).
pub const AWS_ENV: &[(&str, &str)] = &[
    ("AWS_ACCESS_KEY_ID", "worker-test"),
    ("AWS_SECRET_ACCESS_KEY", "worker-test-secret"),
    ("AWS_REGION", "us-east-1"),
];

/// A running moto server.
pub struct S3Server {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    addr: SocketAddr,
    _proc: ProcGuard,
}

/// An answer of the server.
#[derive(Debug)]
pub struct S3Answer {
    /// Status code.
    pub status: u16,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl S3Server {
    /// Starts moto in `env`'s directory, or returns `None` after a skip
    /// notice when moto is not installed.
    pub async fn start(env: &TestEnv) -> Option<S3Server> {
        let probe = Command::new("python3").args(["-c", "import moto.server"]).output();
        if !probe.is_ok_and(|o| o.status.success()) {
            crate::skip::skip_or_fail(
                "moto's S3 server is not installed (pip install 'moto[server]'; python3 -c 'import moto.server' must work)",
            );
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut cmd = Command::new("python3");
        cmd.args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .current_dir(env.path())
            .env(ENV_TAG, env.path());
        let (proc, _stdout) = ProcGuard::spawn("moto", cmd, env.path().join("moto.stderr"));
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let server = S3Server {
            endpoint: format!("http://{addr}"),
            addr,
            _proc: proc,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(answer) = server.try_request("GET", "/", &[]).await
                && answer.status < 500
            {
                return Some(server);
            }
            assert!(
                Instant::now() < deadline,
                "moto did not answer on {addr} within 30 s; its stderr is in {}",
                env.path().join("moto.stderr").display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn try_request(&self, method: &str, path: &str, body: &[u8]) -> std::io::Result<S3Answer> {
        let mut stream = TcpStream::connect(self.addr).await?;
        let head = format!(
            "{method} {path} HTTP/1.0\r\nHost: {}\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| std::io::Error::other("no end of headers"))?;
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other("bad status line"))?;
        Ok(S3Answer {
            status,
            body: raw[end + 4..].to_vec(),
        })
    }

    /// `method path` with `body` (panics when the server does not answer).
    pub async fn request(&self, method: &str, path: &str, body: &[u8]) -> S3Answer {
        tokio::time::timeout(Duration::from_secs(10), self.try_request(method, path, body))
            .await
            .unwrap_or_else(|_| panic!("{method} {path}: no answer from moto within 10 s"))
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Creates `bucket`.
    pub async fn create_bucket(&self, bucket: &str) {
        let answer = self.request("PUT", &format!("/{bucket}"), &[]).await;
        assert_eq!(answer.status, 200, "creating bucket {bucket}: {answer:?}");
    }

    /// Stores `body` as `bucket/key`.
    pub async fn put(&self, bucket: &str, key: &str, body: &[u8]) {
        let answer = self.request("PUT", &format!("/{bucket}/{key}"), body).await;
        assert_eq!(answer.status, 200, "putting {bucket}/{key}: {answer:?}");
    }

    /// The bytes of `bucket/key`.
    pub async fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        let answer = self.request("GET", &format!("/{bucket}/{key}"), &[]).await;
        assert_eq!(answer.status, 200, "getting {bucket}/{key}");
        answer.body
    }

    /// Every key of `bucket`, sorted.
    pub async fn keys(&self, bucket: &str) -> Vec<String> {
        let answer = self.request("GET", &format!("/{bucket}?list-type=2"), &[]).await;
        assert_eq!(answer.status, 200, "listing {bucket}");
        let text = String::from_utf8_lossy(&answer.body);
        let mut keys: Vec<String> = text
            .split("<Key>")
            .skip(1)
            .filter_map(|rest| rest.split("</Key>").next())
            .map(str::to_string)
            .collect();
        keys.sort();
        keys
    }
}
