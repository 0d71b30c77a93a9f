//! `avx-gateway reload`: asks the running gateway to reload through `POST /reload` and
//! reports the outcome in the exit code, which a bare SIGHUP cannot (systemd's ExecReload).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// How long a reload may take: compiling hashes passwords and reads key files.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Sends `POST /reload` to the admin listener named in the config file at `path`; returns
/// the gateway's answer, as `Err` unless it is a 2xx.
pub fn request_reload(path: &str) -> Result<String, String> {
    let source = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    // Only `admin:` is read here, and loosely: the gateway itself validates the whole file
    // and reports where it is wrong.
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&source).map_err(|e| format!("{path}: {e}"))?;
    let admin = doc
        .get("admin")
        .ok_or_else(|| format!("{path}: no admin: section, so no POST /reload to call"))?;
    let admin: crate::config::AdminConfig =
        serde_yaml::from_value(admin.clone()).map_err(|e| format!("{path}: admin: {e}"))?;
    // The running gateway checks the token it was loaded with: when rotating it, the old one
    // comes from the environment (the same variable avx-gateway-upgrade reads).
    let from_env = std::env::var("AVX_GATEWAY_ADMIN_TOKEN").ok();
    let token = from_env.as_deref().or(admin.token.as_deref());
    let addr = connect_address(&admin.address)?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("cannot reach the admin listener at {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
        .map_err(|e| format!("{addr}: {e}"))?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!(
        "POST /reload HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("{addr}: {e}"))?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .map_err(|e| format!("{addr}: no answer to POST /reload: {e}"))?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{addr}: not an HTTP answer: {head}"))?;
    let body = body.trim_end().to_string();
    if (200..300).contains(&status) {
        Ok(body)
    } else {
        Err(format!("reload failed ({status}): {body}"))
    }
}

/// Where to connect for a listener bound to `address`: an unspecified address (all
/// interfaces) is reached on loopback.
fn connect_address(address: &str) -> Result<SocketAddr, String> {
    let mut addr = address
        .to_socket_addrs()
        .map_err(|e| format!("admin.address {address:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("admin.address {address:?} resolves to nothing"))?;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_addresses_are_reached_on_loopback() {
        assert_eq!(
            connect_address("0.0.0.0:9091").unwrap().to_string(),
            "127.0.0.1:9091"
        );
        assert_eq!(
            connect_address("[::]:9091").unwrap().to_string(),
            "[::1]:9091"
        );
        assert_eq!(
            connect_address("127.0.0.2:1").unwrap().to_string(),
            "127.0.0.2:1"
        );
    }
}
