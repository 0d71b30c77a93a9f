//! A misbehaving raw-TCP origin on loopback, for the upstream fault matrix.
//!
//! Each [`FaultyUpstream`] misbehaves in one [`Fault`] mode on every connection. It counts the
//! connections it accepted and those still open, so a test can see whether the gateway let go
//! of its side.

use super::free_addr;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// How the origin misbehaves.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Nothing listens on the address: every connect is refused.
    ConnectionRefused,
    /// Accepts, then resets the connection (`SO_LINGER` 0, close) without reading.
    ResetOnAccept,
    /// Reads the request and never answers; closes only when the peer does.
    Hang,
    /// A valid `200` header with `Content-Length: body_len` at once, then the body one byte
    /// per `gap`, then close.
    SlowDrip {
        /// Body length announced and eventually sent.
        body_len: usize,
        /// Pause before each body byte.
        gap: Duration,
    },
    /// Reads the request, answers with these bytes, closes.
    Malformed(&'static [u8]),
    /// A `200` header with `Content-Length: 100000`, 1000 body bytes, then close.
    CloseMidBody,
}

/// Connection counters of one faulty origin.
#[derive(Default)]
struct FaultState {
    accepted: AtomicUsize,
    open: AtomicUsize,
}

/// Decrements the open-connection gauge when a connection handler ends.
struct OpenGuard(Arc<FaultState>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A running faulty origin, stopped on drop.
pub struct FaultyUpstream {
    /// Where it listens (for [`Fault::ConnectionRefused`], an address nothing listens on).
    pub addr: SocketAddr,
    /// Its mode.
    pub fault: Fault,
    state: Arc<FaultState>,
    task: Option<JoinHandle<()>>,
}

impl FaultyUpstream {
    /// Starts an origin misbehaving as `fault` on a free loopback port.
    pub async fn start(fault: Fault) -> FaultyUpstream {
        let state = Arc::new(FaultState::default());
        if let Fault::ConnectionRefused = fault {
            return FaultyUpstream {
                addr: free_addr(),
                fault,
                state,
                task: None,
            };
        }
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind faulty upstream");
        let addr = listener.local_addr().expect("faulty upstream addr");
        let st = state.clone();
        let task = super::accept_loop(listener, move |sock| {
            st.accepted.fetch_add(1, Ordering::SeqCst);
            st.open.fetch_add(1, Ordering::SeqCst);
            let guard = OpenGuard(st.clone());
            async move {
                misbehave(fault, sock).await;
                drop(guard);
            }
        });
        FaultyUpstream {
            addr,
            fault,
            state,
            task: Some(task),
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Connections not yet closed (by either side).
    pub fn open(&self) -> usize {
        self.state.open.load(Ordering::SeqCst)
    }
}

impl Drop for FaultyUpstream {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Reads until the end of a request header (bodiless requests only); false on EOF or error.
async fn read_request(sock: &mut TcpStream) -> bool {
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match sock.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => seen.extend_from_slice(&chunk[..n]),
        }
        if seen.windows(4).any(|w| w == b"\r\n\r\n") {
            return true;
        }
    }
}

/// Reads and discards until the peer closes.
async fn drain_until_closed(sock: &mut TcpStream) {
    let mut chunk = [0u8; 4096];
    while let Ok(n) = sock.read(&mut chunk).await {
        if n == 0 {
            break;
        }
    }
}

async fn misbehave(fault: Fault, mut sock: TcpStream) {
    match fault {
        Fault::ConnectionRefused => {}
        Fault::ResetOnAccept => {
            // Closing with a zero linger sends RST instead of FIN.
            let _ = sock.set_zero_linger();
            drop(sock);
        }
        Fault::Hang => {
            if read_request(&mut sock).await {
                drain_until_closed(&mut sock).await;
            }
        }
        Fault::SlowDrip { body_len, gap } => {
            if !read_request(&mut sock).await {
                return;
            }
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {body_len}\r\n\r\n");
            if sock.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            for i in 0..body_len {
                tokio::time::sleep(gap).await;
                if sock.write_all(&[b'a' + (i % 26) as u8]).await.is_err() {
                    return;
                }
            }
            let _ = sock.shutdown().await;
        }
        Fault::Malformed(bytes) => {
            if read_request(&mut sock).await {
                let _ = sock.write_all(bytes).await;
                let _ = sock.shutdown().await;
            }
        }
        Fault::CloseMidBody => {
            if read_request(&mut sock).await {
                let mut resp = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n".to_vec();
                resp.extend_from_slice(&[b'x'; 1000]);
                let _ = sock.write_all(&resp).await;
                let _ = sock.shutdown().await;
            }
        }
    }
}
