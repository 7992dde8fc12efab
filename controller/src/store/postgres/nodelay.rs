//! `TCP_NODELAY` on the store's PostgreSQL connections.
//!
//! sqlx 0.9.0 stopped disabling Nagle's algorithm on its TCP sockets (sqlx
//! issue #4335, fixed upstream in pull request #4336 but not released in a
//! 0.9 version at the time of writing). Without it, a write of two small
//! messages waits for the server's delayed ACK: every commit round on
//! PostgreSQL took ~47 ms whatever its size, and workload A ran at 1.3k
//! jobs/s over TCP against 10k over the Unix socket (docs/benchmarks.md,
//! round three). sqlx offers no hook to reach the socket, so after each new
//! connection [`set_on_database_sockets`] sets the option on every TCP socket
//! of this process whose peer is the database's port: setting it on a socket
//! that has it already (or on another socket to that port) changes nothing
//! harmful. Linux only (it walks `/proc/self/fd`); elsewhere it does nothing.

/// Sets `TCP_NODELAY` on each TCP socket of this process connected to `port`.
#[cfg(target_os = "linux")]
pub(super) fn set_on_database_sockets(port: u16) {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<libc::c_int>().ok())
        else {
            continue;
        };
        if peer_port(fd) == Some(port) {
            let one: libc::c_int = 1;
            // SAFETY: plain syscalls on a descriptor number; on a descriptor
            // closed (or reused) meanwhile they fail or set a harmless option.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::IPPROTO_TCP,
                    libc::TCP_NODELAY,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
    }
}

/// Without `/proc/self/fd`, nothing is done (see the module docs).
#[cfg(not(target_os = "linux"))]
pub(super) fn set_on_database_sockets(_port: u16) {}

/// The peer port of `fd` when it is an IPv4 or IPv6 socket with a peer.
#[cfg(target_os = "linux")]
fn peer_port(fd: libc::c_int) -> Option<u16> {
    // SAFETY: `addr` is large enough for any address (sockaddr_storage) and
    // `len` says so; the kernel writes at most that much.
    unsafe {
        let mut addr: libc::sockaddr_storage = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        if libc::getpeername(fd, (&mut addr as *mut libc::sockaddr_storage).cast(), &mut len) != 0 {
            return None;
        }
        match libc::c_int::from(addr.ss_family) {
            libc::AF_INET => {
                let v4 = &*(&addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>();
                Some(u16::from_be(v4.sin_port))
            }
            libc::AF_INET6 => {
                let v6 = &*(&addr as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>();
                Some(u16::from_be(v6.sin6_port))
            }
            _ => None,
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::os::fd::AsRawFd;

    /// The option is set on a socket connected to the port, and only there.
    #[test]
    fn nodelay_is_set_on_sockets_to_the_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let to_db = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let elsewhere = std::net::TcpStream::connect(other.local_addr().unwrap()).unwrap();
        let nodelay = |s: &std::net::TcpStream| {
            let mut value: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: reads one int option into `value`.
            unsafe {
                libc::getsockopt(
                    s.as_raw_fd(),
                    libc::IPPROTO_TCP,
                    libc::TCP_NODELAY,
                    (&mut value as *mut libc::c_int).cast(),
                    &mut len,
                );
            }
            value != 0
        };
        assert!(!nodelay(&to_db) && !nodelay(&elsewhere));
        super::set_on_database_sockets(listener.local_addr().unwrap().port());
        assert!(nodelay(&to_db), "the database socket has TCP_NODELAY");
        assert!(!nodelay(&elsewhere), "other sockets are left alone");
    }
}
