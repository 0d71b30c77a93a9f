//! Raw HTTP/1.1 over a tokio `TcpStream`: write exact bytes, read exact responses.
//!
//! For tests that need control a client library does not give: malformed requests, several
//! requests on one known connection, or watching when the gateway closes the connection.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One parsed HTTP/1.x response.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// The status code.
    pub status: u16,
    /// The status line, e.g. `HTTP/1.1 200 OK`.
    pub status_line: String,
    /// Header names (lower-cased) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The decoded body (chunked framing removed).
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A raw client connection that keeps the bytes read past the end of a response.
pub struct RawConn {
    /// The socket.
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl RawConn {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> RawConn {
        let stream = TcpStream::connect(addr).await.expect("connect to gateway");
        RawConn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connects to `addr` from the local address `from` (port chosen by the kernel), e.g.
    /// `127.0.0.2` to be a peer other than `127.0.0.1` on loopback (Linux routes all of
    /// `127.0.0.0/8` to `lo`).
    pub async fn connect_from(from: std::net::IpAddr, addr: SocketAddr) -> RawConn {
        let socket = match from {
            std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        }
        .expect("client socket");
        socket
            .bind(SocketAddr::new(from, 0))
            .unwrap_or_else(|e| panic!("bind the client to {from}: {e}"));
        let stream = socket
            .connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect to gateway from {from}: {e}"));
        RawConn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Writes bytes; a write error (peer already closed) is returned, not panicked on.
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    async fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads one response, failing after `limit`.
    pub async fn read_response(&mut self, limit: Duration) -> io::Result<RawResponse> {
        match tokio::time::timeout(limit, self.read_response_inner()).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no complete response within {limit:?}"),
            )),
        }
    }

    async fn read_response_inner(&mut self) -> io::Result<RawResponse> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            if self.fill().await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "connection closed before a full response header: {:?}",
                        String::from_utf8_lossy(&self.buf)
                    ),
                ));
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default().to_string();
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other(format!("bad status line {status_line:?}")))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let mut resp = RawResponse {
            status,
            status_line,
            headers,
            body: Vec::new(),
        };
        let chunked = resp
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        if status < 200 || status == 204 || status == 304 {
            return Ok(resp);
        }
        if chunked {
            resp.body = self.read_chunked().await?;
        } else if let Some(len) = resp.header("content-length") {
            let len: usize = len
                .parse()
                .map_err(|_| io::Error::other(format!("bad content-length {len:?}")))?;
            while self.buf.len() < len {
                if self.fill().await? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed inside the body",
                    ));
                }
            }
            resp.body = self.buf.drain(..len).collect();
        } else {
            while self.fill().await? > 0 {}
            resp.body = std::mem::take(&mut self.buf);
        }
        Ok(resp)
    }

    async fn read_chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.buf, b"\r\n") {
                    break i;
                }
                if self.fill().await? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "closed in chunk size",
                    ));
                }
            };
            let size_text = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| io::Error::other(format!("bad chunk size {size_text:?}")))?;
            self.buf.drain(..line_end + 2);
            if size == 0 {
                // Trailers (ignored) up to the empty line.
                loop {
                    if let Some(i) = find(&self.buf, b"\r\n") {
                        let empty = i == 0;
                        self.buf.drain(..i + 2);
                        if empty {
                            return Ok(body);
                        }
                    } else if self.fill().await? == 0 {
                        return Ok(body);
                    }
                }
            }
            while self.buf.len() < size + 2 {
                if self.fill().await? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "closed inside a chunk",
                    ));
                }
            }
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
        }
    }

    /// Reads until the peer closes the connection or `limit` passes. Returns what was read
    /// (including bytes left over from earlier responses) and whether the connection closed
    /// (EOF or reset) within the limit.
    pub async fn read_until_closed(&mut self, limit: Duration) -> (Vec<u8>, bool) {
        let closed = tokio::time::timeout(limit, async {
            loop {
                match self.fill().await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok();
        (std::mem::take(&mut self.buf), closed)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A minimal `GET path` request with `Host` and no body.
pub fn get_request(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: gateway.test\r\n\r\n")
}
