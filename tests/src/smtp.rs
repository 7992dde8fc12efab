//! A real SMTP server for tests, in the test process itself: the protocol is
//! the `mailin` crate's SMTP state machine (the one `mailin-embedded` serves),
//! driven here over tokio on a free loopback port. It requires AUTH (PLAIN or
//! LOGIN) with one user and password, without TLS (loopback only), and keeps
//! every message it accepts in memory, its envelope in front of it as
//! `X-MailFrom` and `X-RcptTo` headers. It needs nothing installed: the test
//! command passes on a machine with only the Rust toolchain.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use mailin::{Action, AuthMechanism, Handler, Response, SessionBuilder, response};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// The user the server accepts.
pub const SMTP_USER: &str = "worker";
/// Its password.
pub const SMTP_PASSWORD: &str = "smtp-pass-word";

/// Longest line a client may send (RFC 5321 allows 1000 octets with CRLF;
/// a little slack for clients that fold late).
const MAX_LINE: usize = 64 * 1024;

/// A running SMTP server; it stops accepting when dropped.
pub struct SmtpServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    mailbox: Mailbox,
    accept: tokio::task::JoinHandle<()>,
}

/// The messages accepted so far, raw, oldest first.
type Mailbox = Arc<Mutex<Vec<Vec<u8>>>>;

impl SmtpServer {
    /// Starts the server on a free port of 127.0.0.1, on the current tokio runtime.
    pub async fn start() -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the SMTP server");
        let port = listener.local_addr().expect("local address").port();
        let mailbox = Mailbox::default();
        let mut sessions = SessionBuilder::new("worker-test-smtp");
        sessions
            .enable_auth(AuthMechanism::Plain)
            .enable_auth(AuthMechanism::Login)
            // Plain SMTP on loopback: AUTH is offered without STARTTLS on purpose.
            .insecure_enable_plaintext_auth();
        let accept = {
            let mailbox = mailbox.clone();
            tokio::spawn(async move {
                while let Ok((stream, peer)) = listener.accept().await {
                    let session = sessions.clone();
                    let mailbox = mailbox.clone();
                    tokio::spawn(async move {
                        // A client that breaks off mid-session is its own business.
                        let _ = serve(stream, peer, &session, mailbox).await;
                    });
                }
            })
        };
        SmtpServer { port, mailbox, accept }
    }

    /// The messages received so far (raw), oldest first.
    pub fn delivered(&self) -> Vec<Vec<u8>> {
        self.mailbox.lock().expect("mailbox lock").clone()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// One SMTP session: greeting, then a response per line until QUIT or EOF.
async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    sessions: &SessionBuilder,
    mailbox: Mailbox,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut session = sessions.build(peer.ip(), Recorder::new(mailbox));
    write.write_all(&session.greeting().buffer()?).await?;
    let mut line = Vec::with_capacity(128);
    loop {
        line.clear();
        let n = (&mut read).take(MAX_LINE as u64).read_until(b'\n', &mut line).await?;
        if n == 0 {
            return Ok(());
        }
        let answer = session.process(&line);
        match answer.action {
            Action::NoReply => {}
            Action::Reply => write.write_all(&answer.buffer()?).await?,
            Action::Close | Action::UpgradeTls => {
                // TLS is never offered, so an upgrade request ends the session too.
                write.write_all(&answer.buffer()?).await?;
                return Ok(());
            }
        }
    }
}

/// Accepts exactly [`SMTP_USER`] / [`SMTP_PASSWORD`] and stores each message
/// in the mailbox when its DATA ends.
struct Recorder {
    mailbox: Mailbox,
    message: Vec<u8>,
}

impl Recorder {
    fn new(mailbox: Mailbox) -> Recorder {
        Recorder {
            mailbox,
            message: Vec::new(),
        }
    }

    fn check(user: &str, password: &str) -> Response {
        if user == SMTP_USER && password == SMTP_PASSWORD {
            response::AUTH_OK
        } else {
            response::INVALID_CREDENTIALS
        }
    }
}

impl Handler for Recorder {
    fn data_start(&mut self, _domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
        // The envelope, as headers in front of the message (as aiosmtpd's
        // Mailbox writes it), so a test can check whom it was sent to.
        self.message = format!("X-MailFrom: {from}\r\nX-RcptTo: {}\r\n", to.join(", ")).into_bytes();
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.message.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let message = std::mem::take(&mut self.message);
        self.mailbox.lock().expect("mailbox lock").push(message);
        response::OK
    }

    fn auth_plain(&mut self, _authorization_id: &str, authentication_id: &str, password: &str) -> Response {
        Recorder::check(authentication_id, password)
    }

    fn auth_login(&mut self, username: &str, password: &str) -> Response {
        Recorder::check(username, password)
    }

    fn helo(&mut self, _ip: IpAddr, _domain: &str) -> Response {
        response::OK
    }
}
