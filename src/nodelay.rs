//! sqlx 0.9.0 no longer sets `TCP_NODELAY` on its sockets (transact-rs/sqlx#4335, fixed after
//! that release): a statement whose messages leave in two segments then waits for the
//! server's delayed ACK, ~40 ms, so a purge batch of a dozen statements took half a second.
//! Until a release carries the fix, the pool sets it on every new connection's socket.

/// Sets `TCP_NODELAY` on this process's TCP sockets connected to `port` (the database's).
#[cfg(target_os = "linux")]
pub fn set_on_sockets_to(port: u16) {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    for entry in fds.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if peer_port(fd) == Some(port) {
            let one: libc::c_int = 1;
            // SAFETY: a plain setsockopt on a descriptor of this process; it fails harmlessly
            // if the descriptor was closed or reused meanwhile.
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

#[cfg(not(target_os = "linux"))]
pub fn set_on_sockets_to(_port: u16) {}

/// The remote port of a connected TCP socket, None for anything else.
#[cfg(target_os = "linux")]
fn peer_port(fd: i32) -> Option<u16> {
    // SAFETY: getpeername writes at most `len` bytes into the zeroed storage; non-sockets and
    // unconnected sockets return an error, which yields None.
    unsafe {
        let mut addr: libc::sockaddr_storage = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        if libc::getpeername(
            fd,
            (&mut addr as *mut libc::sockaddr_storage).cast(),
            &mut len,
        ) != 0
        {
            return None;
        }
        match i32::from(addr.ss_family) {
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
