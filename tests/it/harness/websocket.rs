//! A tiny real WebSocket echo origin (tokio-tungstenite) on loopback.
//!
//! Every accepted connection completes the WebSocket handshake on any path and echoes text and
//! binary messages back unchanged; pings are answered by tungstenite, a close is returned.

use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// A running WebSocket echo server, stopped on drop.
pub struct WsEchoUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    handshakes: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl WsEchoUpstream {
    /// Starts an echo server on a free loopback port.
    pub async fn start() -> WsEchoUpstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind websocket upstream");
        let addr = listener.local_addr().expect("websocket upstream addr");
        let handshakes = Arc::new(AtomicUsize::new(0));
        let count = handshakes.clone();
        let task = super::accept_loop(listener, move |sock| {
            let count = count.clone();
            async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(sock).await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                while let Some(Ok(msg)) = ws.next().await {
                    let echo = match msg {
                        Message::Text(_) | Message::Binary(_) => msg,
                        Message::Close(_) => break,
                        _ => continue,
                    };
                    if ws.send(echo).await.is_err() {
                        break;
                    }
                }
                let _ = ws.close(None).await;
            }
        });
        WsEchoUpstream {
            addr,
            handshakes,
            task,
        }
    }

    /// WebSocket handshakes completed so far.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }
}

impl Drop for WsEchoUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}
